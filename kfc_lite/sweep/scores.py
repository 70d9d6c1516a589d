"""A sweep's scores: from the evaluations of its runs to the numbers the learning benchmark reports.

The numbers are those the field reports (:mod:`kfc_lite.stats`): a run's score is the mean of its last ``last_k``
evaluations (``stats.run_score``); across seeds, per dataset and method, the number of finished seeds, the mean and
the IQM with bootstrap 95% intervals and the sample SD; against CQL, seed by seed, the mean paired difference with
its Student-t interval and verdict and the probability of improvement; over all datasets, the stratified mean and
IQM. The records of ``learning.json`` are built and taken apart here too: a list of records, each with a ``kind``:
``eval``, one per evaluation; ``score``, one per finished run; ``run``, one per run: its training diagnostics and
wall time; ``koopman``, one per dataset: the shared model's diagnostics. Two sweeps' records become one file with
``merge_records``, which refuses to mix runs of the same name; one sweep trained in two sittings that could not
share run folders becomes one file with ``add_seeds``. :mod:`kfc_lite.sweep.report` writes these
numbers as the report's tables and plot.
"""

from __future__ import annotations

from kfc_lite import stats
from kfc_lite.sweep.budgets import Budget
from kfc_lite.sweep.spec import ALL_METHODS

__all__ = [
    "ordered_methods",
    "evaluations",
    "run_scores",
    "score_records",
    "summarize",
    "compare",
    "aggregate",
    "results_records",
    "split_records",
    "merge_records",
    "add_seeds",
]


def _method_key(method: str) -> tuple:
    """The four methods in the paper's order, then the variants;
    a grid point (``cql[q_lr=0.0001]``) after its method."""
    base = method.partition("[")[0]
    return (ALL_METHODS.index(base) if base in ALL_METHODS else len(ALL_METHODS), method)


def ordered_methods(methods) -> list[str]:
    return sorted(set(methods), key=_method_key)


def evaluations(records: list[dict]) -> list[dict]:
    """The per-evaluation records (files written before records had a ``kind`` hold only those)."""
    return [r if "kind" in r else {"kind": "eval", **r} for r in records if r.get("kind", "eval") == "eval"]


def run_scores(records: list[dict], budget: Budget) -> dict:
    """(dataset, method) -> {seed: score} over finished runs;
    a run's score is ``stats.run_score`` of its evaluations."""
    evals = evaluations(records)
    runs = {}
    for r in evals:
        runs.setdefault((r["dataset"], r["method"], r["seed"]), []).append(r)
    out = {}
    for (ds, m, seed), ev in runs.items():
        ev.sort(key=lambda r: r["steps"])
        if ev[-1]["steps"] >= budget.steps:  # an unfinished run has no score yet
            out.setdefault((ds, m), {})[seed] = stats.run_score([r["normalized_score"] for r in ev], budget.last_k)
    return {k: dict(sorted(out[k].items())) for k in sorted(out, key=lambda k: (k[0], *_method_key(k[1])))}


def score_records(records: list[dict], budget: Budget) -> list[dict]:
    """One ``score`` record per finished run: the number the tables are computed from."""
    size = {(r["dataset"], r["method"], r["seed"]): r.get("dataset_size") for r in evaluations(records)}
    return [
        {
            "kind": "score",
            "dataset": ds,
            "dataset_size": size[(ds, m, seed)],
            "method": m,
            "seed": seed,
            "score": score,
            "last_k": budget.last_k,
            "steps": budget.steps,
            "budget": budget.name,
        }
        for (ds, m), per_seed in run_scores(records, budget).items()
        for seed, score in per_seed.items()
    ]


def summarize(records: list[dict], budget: Budget) -> dict:
    """(dataset, method) -> the run scores by seed and their mean, IQM (with 95% intervals when n >= 2) and
    sample SD."""
    out = {}
    for key, per_seed in run_scores(records, budget).items():
        x = list(per_seed.values())
        enough = len(x) >= 2  # an interval or a spread needs two runs
        out[key] = {
            "n": len(x),
            "scores": per_seed,
            "mean": stats.mean(x),
            "iqm": stats.iqm(x),
            "mean_ci": stats.mean_ci(x) if enough else None,
            "iqm_ci": stats.iqm_ci(x) if enough else None,
            "sd": stats.sample_sd(x) if enough else None,
        }
    return out


def compare(summary: dict, baseline: str = "cql") -> dict:
    """(dataset, method) -> each method against ``baseline`` on the seeds both finished (paired), when there are two."""
    out = {}
    for (ds, m), s in summary.items():
        base = summary.get((ds, baseline))
        if m == baseline or base is None:
            continue
        seeds = sorted(set(s["scores"]) & set(base["scores"]))
        a, b = ({k: x["scores"][k] for k in seeds} for x in (s, base))
        enough = len(seeds) >= 2
        out[(ds, m)] = {
            "seeds": seeds,
            "paired": stats.paired_difference(a, b, names=(m, baseline)) if enough else None,
            "improvement": stats.probability_of_improvement(a, b) if enough else None,
        }
    return out


def aggregate(summary: dict) -> dict:
    """method -> mean and IQM pooled over every dataset of the table, stratified by dataset (methods run on all)."""
    datasets = sorted({ds for ds, _ in summary})
    out = {}
    for m in dict.fromkeys(m for _, m in summary):
        strata = {ds: list(summary[(ds, m)]["scores"].values()) for ds in datasets if (ds, m) in summary}
        if len(datasets) > 1 and len(strata) == len(datasets) and all(len(x) >= 2 for x in strata.values()):
            out[m] = {
                "n": {ds: len(x) for ds, x in strata.items()},
                "mean_ci": stats.mean_ci(strata),
                "iqm_ci": stats.iqm_ci(strata),
            }
    return out


def results_records(records: list[dict], budget: Budget, diag: dict, koopman: dict) -> list[dict]:
    """Everything ``learning.json`` holds: evaluations, run scores, per-run diagnostics, per-dataset Koopman models."""
    return (
        evaluations(records)
        + score_records(records, budget)
        + [{"kind": "run", "dataset": ds, "method": m, "seed": seed, **d} for (ds, m, seed), d in diag.items()]
        + [{"kind": "koopman", "dataset": ds, **info} for ds, info in sorted(koopman.items())]
    )


def split_records(records: list[dict]) -> tuple[list[dict], dict, dict]:
    """The inverse of ``results_records``: evaluations, diagnostics by (dataset, method, seed), Koopman by dataset."""
    skip = ("kind", "dataset", "method", "seed")
    diag = {
        (r["dataset"], r["method"], r["seed"]): {k: v for k, v in r.items() if k not in skip}
        for r in records
        if r.get("kind") == "run"
    }
    koopman = {}
    for r in records:
        if r.get("kind") == "koopman":
            # a model that served some seeds only (``add_seeds``) keeps its dataset in its record, which
            # ``results_records`` writes back over the key
            seeds = r.get("seeds")
            key = r["dataset"] + (f" (the model of seed(s) {', '.join(map(str, seeds))})" if seeds else "")
            koopman[key] = {k: v for k, v in r.items() if k not in skip or (seeds and k == "dataset")}
    return evaluations(records), diag, koopman


def merge_records(first: list[dict], second: list[dict], rename: dict[str, str] | None = None) -> list[dict]:
    """One ``learning.json`` from two sweeps' records (say, a second sweep that adds an arm to the first).

    ``rename`` names the second sweep's methods in the merged file: a sweep with a fixed ``set`` names its runs by
    their method alone (``s4rl``), so an arm that differs from the first sweep's only by its settings must be
    renamed (``{"s4rl": "s4rl[noise_sigma=0.013]"}``) to stay apart from it. The merge adds arms and nothing else:
    it refuses, naming the arms and the fix, to add runs to an arm the first file holds (merging one sweep twice
    included), to mix budgets, or to keep two different Koopman models of one dataset. The score records are
    recomputed from the evaluations, so only evaluations, run diagnostics and Koopman records are kept.
    """
    rename = dict(rename or {})
    second_methods = {r["method"] for r in second if "method" in r}
    unknown = sorted(set(rename) - second_methods)
    if unknown:
        raise ValueError(
            f"--rename names {unknown}, which the second file does not hold; it holds {sorted(second_methods)}"
        )
    named = {m: rename.get(m, m) for m in second_methods}
    if "" in named.values() or len(set(named.values())) < len(named):
        raise ValueError(f"--rename must give the second file's arms distinct, non-empty names; it gives {named}")
    _check_one_budget(first, second)
    # the records do not hold an arm's settings, so two sweeps' runs of one name could be two different arms: a
    # merge only adds arms, it never adds runs to an arm the first file holds
    shared = sorted({r["method"] for r in first if "method" in r} & set(named.values()))
    if shared:
        raise ValueError(
            f"both files hold the arm(s) {shared}: merging would put the second sweep's runs under the first one's "
            "arm, which the records cannot show to have the same settings; if the second sweep is a different arm, "
            "name it with --rename OLD=NEW"
        )
    renamed = [{**r, "method": named[r["method"]]} if "method" in r else dict(r) for r in second]
    return _joined(first, renamed)


def add_seeds(first: list[dict], second: list[dict], retrained_model: bool = False) -> tuple[list[dict], list[tuple]]:
    """One ``learning.json`` from a sweep's records and more seeds of the same arms, trained in another sitting.

    This is for one sweep trained in two sittings that cannot share run folders: say, the machine was replaced and
    its run folders went with it, so the seeds still to run were trained again into a second results file. Every
    run of ``second`` must be of an arm ``first`` holds (a new arm is a ``merge_records``) and of the same budget.
    A run ``first`` finished is never replaced: holding it twice is refused. A run ``first`` holds unfinished (no
    ``score`` record; its run folder was lost with its checkpoints) and ``second`` carried further is dropped from
    ``first`` for ``second``'s; those runs are returned as (dataset, method, seed) with the merged records, so the
    caller can say so.

    The KFC arms' Koopman model, trained again, is the same model only if its records are equal. They are not when
    the first training used another number of threads for some of its epochs (the order of a matrix product's sums
    changes, and after a few epochs the fourth digit): then the join is refused, unless ``retrained_model`` says
    that this is known. The second model's record is then kept beside the first, marked with the seeds whose runs
    it served (``"seeds"``), and the report shows both.
    """
    _check_one_budget(first, second)
    arm = lambda r: (r["dataset"], r["method"])
    run = lambda r: (r["dataset"], r["method"], r["seed"])
    new_arms = sorted({arm(r) for r in second if "method" in r} - {arm(r) for r in first if "method" in r})
    if new_arms:
        raise ValueError(
            f"the second file holds arm(s) the first does not: {new_arms}; more seeds go to arms the first file "
            "holds, a new arm is added with --merge FILE (and --rename)"
        )
    finished = {run(r) for r in first if r.get("kind") == "score"}
    last_step = lambda records: {
        k: max(r["steps"] for r in evaluations(records) if run(r) == k) for k in {run(r) for r in evaluations(records)}
    }
    reached, carried = last_step(first), last_step(second)
    twice = sorted(k for k in carried if k in finished or reached.get(k, -1) >= carried[k])
    if twice:
        raise ValueError(
            f"both files hold the run(s) {twice}, and the first file's got as far: a run is never replaced by "
            "another training of it (merging one file twice included); add only seeds the first file lacks"
        )
    # an unfinished run of the first file may have left only its diagnostics (a ``run`` record), no evaluation
    held = {run(r) for r in first if "method" in r and "seed" in r}
    dropped = sorted(k for k in carried if k in held)
    kept_first = [r for r in first if "seed" not in r or run(r) not in dropped]
    retrained = _other_models(kept_first, second)
    if retrained and not retrained_model:
        raise ValueError(
            f"the two files hold different Koopman models of {retrained[0]['dataset']}: a model trained again is the "
            "same only where its arithmetic was (the same number of threads in every epoch); if it was trained "
            "again, say so with --retrained-model and both models are reported, each with the seeds it served"
        )
    served = lambda dataset: sorted({x["seed"] for x in evaluations(second) if x["dataset"] == dataset})
    marked = [{**r, "seeds": served(r["dataset"])} if any(r is m for m in retrained) else r for r in second]
    return _joined(kept_first, marked), dropped


def _check_one_budget(first: list[dict], second: list[dict]) -> None:
    budgets = {side: {r["budget"] for r in evaluations(rs)} for side, rs in (("first", first), ("second", second))}
    if len(budgets["first"] | budgets["second"]) > 1:
        raise ValueError(
            f"the two files were trained at different budgets ({sorted(budgets['first'])} and "
            f"{sorted(budgets['second'])}): their scores cannot share a table; merge files of one budget"
        )


def _joined(first: list[dict], second: list[dict]) -> list[dict]:
    """The evaluations, run diagnostics and Koopman models of both files, each model kept once; a second model of a
    dataset is refused unless it is marked with the seeds it served (``add_seeds``). The score records are
    recomputed from the evaluations by whoever writes the report (``results_records``), so they are not kept."""
    other = _other_models(first, second)
    if other:
        raise ValueError(
            f"the two files hold different Koopman models of {other[0]['dataset']}: the runs of one table must share "
            "one model (benchmarks/learning.py trains it once per dataset)"
        )
    kept = lambda records: [r for r in records if r.get("kind", "eval") in ("eval", "run", "koopman")]
    held = {_model_key(r) for r in first if r.get("kind") == "koopman"}
    extra_models = [r for r in second if r.get("kind") == "koopman" and _model_key(r) not in held]
    return kept(first) + [r for r in kept(second) if r.get("kind") != "koopman"] + extra_models


def _model_key(record: dict) -> tuple:
    """A Koopman model's place in a file: its dataset, and the seeds it served where it served some only."""
    return record["dataset"], tuple(record.get("seeds", ()))


def _other_models(first: list[dict], second: list[dict]) -> list[dict]:
    """The ``koopman`` records of ``second`` that differ from ``first``'s model in the same place (``_model_key``)."""
    models = {_model_key(r): r for r in first if r.get("kind") == "koopman"}
    return [
        r
        for r in second
        if r.get("kind") == "koopman" and _model_key(r) in models and not _same_model(r, models[_model_key(r)])
    ]


def _same_model(a: dict, b: dict) -> bool:
    """Two ``koopman`` records of one model: equal but for the time its training took on each occasion."""
    timing = ("wall_s",)
    return {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
