"""What README.md and the results' READMEs say about the experiments is what the committed results hold.

Their tables and verdicts are written by hand (a results README explains as much as it reports), so they can drift
from ``learning.json`` when runs are added or rerun. These tests recompute every number of those tables with
:mod:`kfc_lite.evidence` and check every stated decision against the protocol's rule, so a README can only be
committed with the numbers and the verdict of the results beside it.
"""

import re

import pytest
from conftest import ROOT

from kfc_lite import evidence, stats

#: the experiments with a committed protocol and results
EXPERIMENTS = sorted(
    p.stem
    for p in (ROOT / "benchmarks" / "protocols").glob("*.md")
    if (ROOT / "benchmarks" / "results" / p.stem / "learning.json").is_file()
)
NO_DECISION = "no decision yet"
#: the verdicts of the decision rule (kfc_lite.evidence.Evidence.decision), as the texts must word them
VERDICTS = {"helps", "hurts", "is not distinguishable from CQL"}


def arm_of(row_label: str, arms: list[str]) -> str:
    """The results' arm a README row names: "KFC++ (the paper's plain form)" is kfc++, "S4RL matched (...)" and
    "S4RL, noise as large as the symmetry's move" are the sweep's s4rl[noise_sigma=...] arm."""
    text = row_label.lower()
    if "matched" in text or "as large as" in text:
        matched = [a for a in arms if a.startswith("s4rl[")]
        assert len(matched) == 1, f"README row {row_label!r} means the matched S4RL arm; the results hold {matched}"
        return matched[0]
    name = re.sub(r"\(.*?\)", "", row_label).strip()
    by_label = {evidence.label(a): a for a in arms}
    assert name in by_label, f"README row {row_label!r} names no arm of the results ({arms})"
    return by_label[name]


def expected_cells(ev: evidence.Evidence, arm: str) -> dict:
    """The cells of one arm's row, keyed by how the column's header starts, formatted as the READMEs write them; a
    statistic that one run (or one shared seed) cannot give may be written "-" or "n/a"."""
    x = list(ev.scores[arm].values())
    several = len(x) >= 2
    none = ("-", "n/a")
    cells = {
        "mean [95%": (str(ev.interval(arm, "mean")),) if several else none,
        "IQM [95%": (str(ev.interval(arm, "iqm")),) if several else none,
        "sample SD": (f"{stats.sample_sd(x):.1f}",) if several else none,
        "minus CQL": none,
        "P(arm > CQL)": none,
    }
    if arm != ev.baseline and len(ev.paired(arm)[0]) >= 2:
        d, p = ev.against(arm).difference, ev.improvement(arm)
        cells["minus CQL"] = (f"{d.estimate:+.1f} [{d.low:+.1f}, {d.high:+.1f}]",)
        cells["P(arm > CQL)"] = (f"{p.estimate:.2f} [{p.low:.2f}, {p.high:.2f}]",)
    return cells


def evidence_tables(text: str):
    """(experiment, header, rows) of each table in ``text`` whose header has a "mean [95% ..." column; the experiment
    is the last one the text names (by its protocol or results folder) before the table."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("|") and "mean [95%" in line):
            continue
        before = "\n".join(lines[:i])
        named = [(before.rfind(name), name) for name in EXPERIMENTS if name in before]
        assert named, f"the table at line {i + 1} follows no mention of an experiment ({EXPERIMENTS})"
        header = [c.strip() for c in line.strip("|").split("|")]
        rows = []
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows.append([c.strip() for c in row.strip("|").split("|")])
        yield max(named)[1], header, rows


def texts_with_tables():
    yield "README.md", (ROOT / "README.md").read_text()
    for name in EXPERIMENTS:
        path = ROOT / "benchmarks" / "results" / name / "README.md"
        if path.is_file():
            yield str(path.relative_to(ROOT)), path.read_text()


def test_there_are_experiments_to_check():
    assert "pendulum-medium-5k" in EXPERIMENTS and "hopper-medium-1m" in EXPERIMENTS


@pytest.mark.parametrize("where,text", list(texts_with_tables()), ids=lambda x: x if x.endswith(".md") else "")
def test_every_table_of_results_has_the_numbers_of_the_committed_runs(where, text):
    for name, header, rows in evidence_tables(text):
        ev = evidence.load(name, root=ROOT)
        assert len(rows) == len(ev.arms), f"{where}: the {name} table has {len(rows)} rows, the results {ev.arms}"
        for row in rows:
            assert len(row) == len(header), f"{where}: the {name} table's row {row[0]!r} has {len(row)} cells"
            arm = arm_of(row[0], ev.arms)
            expected = expected_cells(ev, arm)
            for column, cell in zip(header[1:], row[1:], strict=True):
                keys = [k for k in expected if column.startswith(k)]
                assert len(keys) == 1, f"{where}: column {column!r} of the {name} table is not one this test knows"
                assert cell in expected[keys[0]], (
                    f"{where}, {name}, {row[0]}, {column}: {cell} in the text, "
                    f"{' or '.join(expected[keys[0]])} from benchmarks/results/{name}/learning.json"
                )


def segment(text: str, name: str) -> str:
    """The part of ``text`` about experiment ``name``: from its first mention up to the first mention of another."""
    starts = sorted((text.find(n), n) for n in EXPERIMENTS if n in text)
    for (start, n), nxt in zip(starts, [*starts[1:], (len(text), None)], strict=True):
        if n == name:
            return text[start : nxt[0]]
    raise AssertionError(f"the text never names {name}")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_readmes_state_the_decision_the_results_support(name):
    """A decided experiment's verdict is the rule's (and no text still says it waits); an undecided one says so."""
    decision = evidence.load(name, root=ROOT).decision()
    readme = (ROOT / "README.md").read_text()
    heading = "## Does KFC help?"
    assert heading in readme, f"README.md has no section {heading!r}: the test reads the experiments' verdicts there"
    section = readme.split(heading)[1].split("\n## ")[0]
    texts = {"README.md": segment(section, name)}
    results_readme = ROOT / "benchmarks" / "results" / name / "README.md"
    if results_readme.is_file():
        texts[str(results_readme.relative_to(ROOT))] = results_readme.read_text()
    for where, text in texts.items():
        plain = " ".join(text.replace("**", "").lower().split())  # a phrase may break across lines
        if decision is None:
            assert NO_DECISION in plain, f"{where} must say that {name} has {NO_DECISION}: its runs are not all in"
        else:
            assert NO_DECISION not in plain, f"{where} still says {name} has {NO_DECISION}; the rule says {decision}"
            said = f"kfc++ {decision.lower()}"
            assert said in plain, f"{where} must state {name}'s verdict in the rule's words: 'KFC++ {decision}'"
            for other in VERDICTS - {decision}:
                wrong = f"kfc++ {other.lower()}"
                assert wrong not in plain, f"{where} says 'KFC++ {other}' of {name}; the rule says {decision}"
