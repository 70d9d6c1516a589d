"""The KFC paper's results, as data: the rows of Table 1 that could be recovered, with their dataset version.

Source: ``docs/paper.md``, 'Table 1, as far as recovered' (Weissenbacher et al., ICML 2022, Table 1). Only five
rows of Table 1 could be recovered; their values are D4RL normalized scores (percent) on **-v0** datasets. The CQL
column equals the CQL paper's (Kumar et al. 2020) numbers for the same rows. Scores on ``-v2`` datasets, or on the
locally generated ``-replica`` datasets of kfc-lite, are not comparable with these numbers: report the version with
every number (:func:`compare` does).

The CQL paper's values for other rows are kept apart in :data:`CQL_PAPER_UNVERIFIED`: they were written down from
memory and are marked "verify before use" in the notes. The often-quoted "81.8 average" for KFC could not be
traced to a set of tasks and is deliberately not recorded here.

    >>> from kfc_lite import paper
    >>> paper.table1_row("hopper-medium").scores["kfc++"]
    94.2
    >>> paper.table1_row("hopper-medium-v2")      # a v2 name finds the v0 row; compare() says the versions differ
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Table1Row",
    "TABLE1",
    "METHODS",
    "CQL_PAPER_UNVERIFIED",
    "table1_row",
    "task_of",
    "version_of",
    "compare",
    "format_comparison",
    "final_score",
]

#: The columns of Table 1, in the paper's order (S4RL-(N) is Gaussian noise, S4RL-(Adv) adversarial noise).
METHODS = ("cql", "s4rl", "s4rl-adv", "kfc", "kfc++")


@dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1: a task, its dataset version, and the normalized score of each method."""

    task: str  #: e.g. ``hopper-medium`` (D4RL name without the version)
    version: str  #: the dataset version the numbers were measured on (``v0`` for all recovered rows)
    scores: dict = field(default_factory=dict)  #: method (see :data:`METHODS`) -> D4RL normalized score (%)
    source: str = "KFC paper, Table 1 (rows recovered in docs/paper.md)"

    @property
    def dataset(self) -> str:
        """The full D4RL dataset name, e.g. ``hopper-medium-v0``."""
        return f"{self.task}-{self.version}"


def _row(task, cql, s4rl, s4rl_adv, kfc, kfcpp) -> Table1Row:
    return Table1Row(task, "v0", dict(zip(METHODS, (cql, s4rl, s4rl_adv, kfc, kfcpp))))


#: The five recovered rows of Table 1 (D4RL normalized scores, %, on -v0 datasets).
TABLE1: tuple[Table1Row, ...] = (
    _row("antmaze-umaze", 74.0, 91.3, 94.1, 96.9, 99.8),
    _row("halfcheetah-medium", 44.4, 48.8, 48.6, 55.9, 59.1),
    _row("hopper-medium", 58.0, 78.9, 81.3, 90.6, 94.2),
    _row("walker2d-medium", 79.2, 93.6, 93.1, 102.1, 108.0),
    _row("kitchen-complete", 43.8, 77.1, 88.1, 94.1, 94.9),
)

#: CQL-paper scores (-v0) for rows whose KFC numbers were not recovered. Written down from memory in the notes
#: ("recollection, verify before use"): shown only as context, never as the paper's claim.
CQL_PAPER_UNVERIFIED: dict[str, float] = {
    "halfcheetah-random": 35.4,
    "hopper-random": 10.8,
    "walker2d-random": 7.0,
    "halfcheetah-medium-replay": 46.2,
    "hopper-medium-replay": 48.6,
    "walker2d-medium-replay": 26.7,
    "halfcheetah-medium-expert": 62.4,
    "hopper-medium-expert": 111.0,
    "walker2d-medium-expert": 98.7,
    "halfcheetah-expert": 104.8,
    "hopper-expert": 109.9,
    "walker2d-expert": 153.9,
}

_VERSION = re.compile(r"^(?P<task>.+?)-(?P<version>v\d+|replica)$")


def task_of(dataset: str) -> str:
    """``hopper-medium-v2`` -> ``hopper-medium``; ``hopper-medium-replica`` -> ``hopper-medium``; a file path's stem."""
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"expected a dataset name such as 'hopper-medium-v2', got {dataset!r}")
    name = re.split(r"[\\/]", dataset.strip())[-1].lower()
    name = re.sub(r"\.(hdf5|h5)$", "", name).replace("_", "-")
    m = _VERSION.match(name)
    return m.group("task") if m else name


def version_of(dataset: str) -> str | None:
    """``v0``, ``v2``, ``replica`` (kfc-lite's locally generated stand-ins), or None when the name carries none."""
    name = re.split(r"[\\/]", str(dataset).strip())[-1].lower()
    name = re.sub(r"\.(hdf5|h5)$", "", name).replace("_", "-")
    m = _VERSION.match(name)
    return m.group("version") if m else None


def table1_row(dataset: str) -> Table1Row | None:
    """The recovered Table 1 row for a dataset name (any version, or a bare task), or None if it was not recovered."""
    task = task_of(dataset)
    for row in TABLE1:
        if row.task == task:
            return row
    return None


def compare(dataset: str, ours: dict, against: str | None = None) -> list[dict]:
    """Our scores next to the paper's, one dict per method, with both dataset versions and whether they match.

    ``ours`` maps a method (``cql``, ``s4rl``, ``kfc``, ``kfc++``) to our D4RL normalized score (%) on ``dataset``.
    ``against`` names the Table 1 row to put beside them (default: the row of ``dataset``'s own task), e.g.
    ``"hopper-medium-v0"`` when a quick run on another dataset stands in for it.
    Each entry: ``method``, ``ours``, ``ours_dataset``, ``paper`` (None when the row or column was not recovered),
    ``paper_dataset``, ``comparable`` (same task and same version; a replica or a v2 dataset is never comparable
    with the paper's v0 numbers), and ``note``.
    """
    if not isinstance(ours, dict):
        raise TypeError(f"ours must map a method name to a normalized score, got {type(ours).__name__}")
    row = table1_row(dataset if against is None else against)
    if against is not None and row is None:
        raise ValueError(
            f"Table 1 has no recovered row for {against!r}; the recovered rows are "
            f"{', '.join(r.dataset for r in TABLE1)}"
        )
    same_task = row is not None and task_of(dataset) == row.task
    version = version_of(dataset)
    out = []
    for method, score in ours.items():
        key = str(method).strip().lower()
        if key == "s4rl-n":
            key = "s4rl"
        paper = row.scores.get(key) if row is not None else None
        comparable = same_task and paper is not None and version == row.version
        if row is None:
            note = f"the paper's row for {task_of(dataset)} was not recovered"
            cql = CQL_PAPER_UNVERIFIED.get(task_of(dataset))
            if key == "cql" and cql is not None:
                note += f" (CQL paper, v0, unverified recollection: {cql})"
        elif not same_task:
            note = f"a different task ({task_of(dataset)} vs the paper's {row.task}): not comparable"
        elif paper is None:
            note = f"Table 1 has no column {method!r}; its columns are {', '.join(METHODS)}"
        elif version == "replica":
            note = "ours is on a locally generated replica, not on D4RL data: not comparable"
        elif version != row.version:
            note = (
                f"dataset versions differ ({version or 'unknown'} vs the paper's {row.version}): "
                "not directly comparable"
            )
        else:
            note = "same task and dataset version"
        out.append(
            {
                "method": method,
                "ours": None if score is None else float(score),
                "ours_dataset": dataset,
                "paper": paper,
                "paper_dataset": row.dataset if row is not None else None,
                "comparable": comparable,
                "note": note,
            }
        )
    return out


def format_comparison(rows: list[dict]) -> str:
    """A plain-text table of :func:`compare`'s output (the dataset version beside every number)."""
    lines = [f"{'method':<8} {'ours':>8}  {'on':<28} {'paper':>7}  {'on':<22} note"]
    for r in rows:
        ours = "—" if r["ours"] is None or r["ours"] != r["ours"] else f"{r['ours']:.1f}"
        paper = "—" if r["paper"] is None else f"{r['paper']:.1f}"
        on = re.split(r"[\\/]", str(r["ours_dataset"]))[-1]
        lines.append(f"{r['method']:<8} {ours:>8}  {on:<28} {paper:>7}  {r['paper_dataset'] or '—':<22} {r['note']}")
    return "\n".join(lines)


def final_score(eval_rows, last: int = 1) -> float:
    """The score to put next to the paper's: the mean ``normalized`` of the last ``last`` evaluations (by step).

    ``eval_rows`` are the ``{"kind": "eval", "step", "normalized", ...}`` rows of a run's ``metrics.jsonl``
    (:func:`kfc_lite.train.read_metrics`, or ``RunResult.evals``), in any order. Averaging a few final
    evaluations is less noisy than the last one alone and, unlike the best one over training, does not select
    on the test episodes (docs/paper.md, 'Evaluation protocol').
    """
    rows = [r for r in eval_rows if r.get("kind", "eval") == "eval"]
    if not rows:
        raise ValueError("no evaluation rows: did the run evaluate (eval_episodes > 0)?")
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive number of evaluations, got {last!r}")
    rows = sorted(rows, key=lambda r: r["step"])[-last:]
    values = [float("nan") if r.get("normalized") is None else float(r["normalized"]) for r in rows]
    return float(sum(values) / len(values))
