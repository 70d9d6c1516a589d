"""The course's evidence: a committed multi-seed benchmark read back, with its intervals and its verdict.

A single seed says little about a method: on the pendulum the same method's seeds spread over tens of normalized
points. So notebook 05 ends with the pre-registered experiments (``benchmarks/protocols/``) whose results are
committed under ``benchmarks/results/<name>/learning.json``: per arm the run scores by seed, the mean and IQM with
bootstrap 95 % intervals and the sample SD; against CQL the mean paired difference with its Student-t interval, the
verdict that interval supports (an interim one while planned seeds are missing; the protocol's decision is
:meth:`Evidence.decision`) and the probability of improvement. The statistics are those of the
benchmark's own report (:mod:`kfc_lite.sweep.report`, :mod:`kfc_lite.stats`), so the notebook and
``learning.md`` cannot disagree.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from kfc_lite import stats

#: how the tables and figures name each arm; a grid point of a sweep (``s4rl[noise_sigma=0.022]``) keeps its setting
LABELS = {
    "cql": "CQL",
    "s4rl": "S4RL",
    "kfc": "KFC",
    "kfc++": "KFC++",
    "kfc-gauged": "KFC gauged",
    "kfc++-gauged": "KFC++ gauged",
}

#: the arm whose comparison with the baseline the protocols' decision rule decides; every other comparison is
#: reported with its interval and no decision
DECISION_ARM = "kfc++"


def label(arm: str) -> str:
    base, bracket, rest = arm.partition("[")
    return LABELS.get(base, base) + (f" [{rest}" if bracket else "")


def results_dir(name: str, root: str | pathlib.Path | None = None) -> pathlib.Path:
    """``benchmarks/results/<name>`` of the repository: under ``root``, else the one this library was installed
    from (an editable install, ``make lab``), else the working directory's or one of its parents."""
    here = pathlib.Path.cwd().resolve()
    roots = (
        [pathlib.Path(root)] if root is not None else [pathlib.Path(__file__).resolve().parents[1], here, *here.parents]
    )
    for r in roots:
        folder = r / "benchmarks" / "results" / name
        if (folder / "learning.json").is_file():
            return folder
    raise FileNotFoundError(
        f"no benchmarks/results/{name}/learning.json under {', '.join(str(r) for r in roots[:3])}: the committed "
        "results come with a clone of the course's repository (make lab, Binder, or the Colab set-up cell clone it); "
        "pass root= the clone's folder, or run the experiment yourself (benchmarks/NOTES.md)"
    )


@dataclasses.dataclass
class Evidence:
    """One benchmark's results: the run scores of every arm and what they support against a baseline."""

    name: str
    dataset: str
    steps: int  #: gradient steps of every run
    last_k: int  #: a run's score is the mean of its last ``last_k`` evaluations (``stats.run_score``)
    scores: dict  #: arm -> {seed: run score}
    baseline: str = "cql"
    #: the seeds the protocol plans for every arm (its budget's); empty when the results do not name a known budget
    planned_seeds: tuple = ()

    @property
    def arms(self) -> list[str]:
        return list(self.scores)

    def finished(self, arm: str) -> list[int]:
        """The seeds of ``arm`` whose runs have finished."""
        return sorted(self.scores.get(arm, {}))

    def progress(self, expected_arms=()) -> str:
        """Which runs have finished, arm by arm, against the protocol's seeds; ``expected_arms`` (the protocol's)
        are listed first, in their order, even before their first run has finished, which the results alone cannot
        show; then any other arm the results hold."""
        of = f" of {len(self.planned_seeds)} planned" if self.planned_seeds else ""
        expected_arms = list(expected_arms)  # read twice below
        arms = [*expected_arms, *(a for a in self.arms if a not in expected_arms)]
        parts = [f"{label(a)} {len(self.finished(a))}{of} (seeds {_seed_list(self.finished(a))})" for a in arms]
        return f"finished runs on {self.dataset}: " + "; ".join(parts)

    def interim(self, arm: str, baseline: str | None = None) -> bool:
        """Whether ``arm``'s comparison with the baseline still waits for planned seeds: a verdict read off the
        seeds both have finished so far, not the protocol's decision (False when the results plan no seeds)."""
        return not set(self.planned_seeds) <= set(self.paired(arm, baseline)[0])

    def interval(self, arm: str, statistic: str = "mean") -> stats.Interval:
        """The arm's mean or IQM over its seeds with a stratified-bootstrap 95 % interval."""
        x = list(self.scores[arm].values())
        return stats.mean_ci(x) if statistic == "mean" else stats.iqm_ci(x)

    def paired(self, arm: str, baseline: str | None = None) -> tuple[dict, dict]:
        """``arm``'s and the baseline's run scores (seed -> score) on the seeds both finished (none for an arm
        without a finished run)."""
        a, base = self.scores.get(arm, {}), self.scores.get(baseline or self.baseline, {})
        seeds = sorted(set(a) & set(base))
        return {s: a[s] for s in seeds}, {s: base[s] for s in seeds}

    def against(self, arm: str, baseline: str | None = None) -> stats.Comparison:
        """``arm`` minus the baseline, seed by seed: the mean difference, its Student-t 95 % interval, the verdict."""
        return stats.paired_difference(
            *self.paired(arm, baseline), names=(label(arm), label(baseline or self.baseline))
        )

    def improvement(self, arm: str, baseline: str | None = None) -> stats.Interval:
        """P(a run of ``arm`` scores above a run of the baseline), with its bootstrap interval over shared seeds."""
        return stats.probability_of_improvement(*self.paired(arm, baseline))

    def table(self) -> list[dict]:
        """One row per arm: n, mean [CI], IQM [CI], sample SD and, for the other arms, the paired difference (and
        whether its verdict is an interim one, :meth:`interim`).

        An interval or a spread needs two runs: with one finished seed they are None, and a comparison needs two
        seeds both arms have finished (a running experiment's partial results read the same way)."""
        rows = []
        for arm, per_seed in self.scores.items():
            x = list(per_seed.values())
            several = len(x) >= 2
            row = {
                "arm": label(arm),
                "n": len(x),
                "mean": self.interval(arm, "mean") if several else None,
                "iqm": self.interval(arm, "iqm") if several else None,
                "sd": stats.sample_sd(x) if several else None,
            }
            if arm != self.baseline and self.baseline in self.scores and len(self.paired(arm)[0]) >= 2:
                row["vs_baseline"] = self.against(arm)
                row["p_improvement"] = self.improvement(arm)
                row["interim"] = self.interim(arm)
            rows.append(row)
        return rows

    def decision(self, arm: str = DECISION_ARM) -> str | None:
        """The protocol's decision rule for ``arm`` against the baseline: "helps", "hurts" or "is not
        distinguishable from <baseline>", by the paired t interval over the planned seeds (and those only); None
        until both have finished every planned seed, or when the results name no known budget (a decision on
        other seeds would be a different, unregistered test)."""
        a, base = self.paired(arm)
        if not self.planned_seeds or not set(self.planned_seeds) <= set(a):
            return None
        planned = sorted(self.planned_seeds)
        d = stats.paired_difference({s: a[s] for s in planned}, {s: base[s] for s in planned}).difference
        return (
            "helps" if d.low > 0 else "hurts" if d.high < 0 else f"is not distinguishable from {label(self.baseline)}"
        )

    def format_table(self) -> str:
        """:meth:`table` as fixed-width text (what notebook 05 prints): "n/a" where one run cannot give a spread,
        and "interim:" before a verdict that still waits for planned seeds."""

        def cell(x, width):
            return f"{'n/a' if x is None else str(x):>{width}}"

        base = label(self.baseline)
        header = f"{'arm':<30} {'n':>3} {'mean [95% CI]':>20} {'IQM [95% CI]':>20} {'SD':>6}"
        lines = [f"{header}   minus {base}, paired [95% t CI]"]
        for row in self.table():
            diff = row.get("vs_baseline")
            interim = "interim: " if row.get("interim") else ""
            versus = f"{diff.difference}  ({interim}{diff.verdict})" if diff else ""
            sd = "n/a" if row["sd"] is None else f"{row['sd']:.1f}"
            lines.append(
                f"{row['arm']:<30} {row['n']:>3} {cell(row['mean'], 20)} {cell(row['iqm'], 20)} {sd:>6}   {versus}"
            )
        return "\n".join(lines)

    def sentence(self, arm: str, baseline: str | None = None) -> str:
        """The comparison in one sentence, its interval included, worded by the interval (never by the mean alone).

        While the experiment runs, the sentence says how many of the planned seeds it rests on and that the
        protocol's decision waits for the rest; with fewer than two shared seeds it says only that."""
        base = label(baseline or self.baseline)
        shared = set(self.paired(arm, baseline)[0])
        n, planned = len(shared), set(self.planned_seeds)
        done = len(shared & planned)
        # only the primary comparison has a decision to wait for; the others are reported without one
        primary = arm == DECISION_ARM and (baseline or self.baseline) == self.baseline
        rest = (
            "the protocol's decision waits for all of them"
            if primary
            else f"the protocol decides on {label(DECISION_ARM)} against {label(self.baseline)} only"
        )
        waiting = f"{done} of {len(planned)} planned seeds so far; {rest}"
        partial = bool(planned) and not planned <= shared
        if n < 2:
            return (
                f"{label(arm)} and {base} on {self.dataset}: {n} seed(s) finished by both, too few for an interval"
                + (f" ({waiting})" if partial else "")
            )
        d = self.against(arm, baseline).difference
        what = "scores above" if d.low > 0 else "scores below" if d.high < 0 else "is not distinguishable from"
        return (
            f"{label(arm)} {what} {base} on {self.dataset}: mean paired difference {d.estimate:+.1f} normalized "
            f"points, 95 % interval [{d.low:+.1f}, {d.high:+.1f}] over {d.n} seeds"
            + (f" ({waiting})" if partial else "")
        )


def _seed_list(seeds: list[int]) -> str:
    """``[0, 1, 2, 4]`` as "0-2, 4"."""
    if not seeds:
        return "none"
    runs, start = [], seeds[0]
    for prev, cur in zip(seeds, [*seeds[1:], None], strict=True):
        if cur != prev + 1:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(runs)


def load(name: str, root: str | pathlib.Path | None = None) -> Evidence:
    """The committed results ``benchmarks/results/<name>/learning.json`` as :class:`Evidence` (its ``score`` records:
    one per finished run, the numbers the benchmark's tables were computed from)."""
    records = json.loads((results_dir(name, root) / "learning.json").read_text())
    runs = [r for r in records if r.get("kind") == "score"]
    if not runs:
        raise ValueError(
            f"benchmarks/results/{name}/learning.json holds no finished run (no 'score' record): rewrite "
            "it with benchmarks/learning.py --report-only once runs have finished"
        )
    datasets = {r["dataset"] for r in runs}
    if len(datasets) != 1:
        raise ValueError(f"benchmarks/results/{name} holds several datasets {sorted(datasets)}; Evidence reads one")
    design = {(r["steps"], r["last_k"]) for r in runs}
    if len(design) != 1:
        raise ValueError(f"benchmarks/results/{name} mixes runs of different budgets (steps, last_k) {sorted(design)}")
    from kfc_lite.sweep.budgets import BUDGETS
    from kfc_lite.sweep.scores import ordered_methods

    scores = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        scores.setdefault(r["method"], {})[r["seed"]] = r["score"]
    ((steps, last_k),) = design
    budgets = {r.get("budget") for r in runs}
    budget = budgets.pop() if len(budgets) == 1 else None
    planned = tuple(BUDGETS[budget].seeds) if budget in BUDGETS else ()
    return Evidence(
        name,
        datasets.pop(),
        steps,
        last_k,
        {m: scores[m] for m in ordered_methods(scores)},
        planned_seeds=planned,
    )
