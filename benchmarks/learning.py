"""The learning benchmark: CQL, S4RL, KFC and KFC++ on the same replica datasets, seeds and gradient-step budget.

    # the committed CPU-budget results (resumable: rerun the same command after an interruption)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning.py --budget cpu
    # the paper's budget, for a GPU (1M gradient steps, full-size replicas, 5 seeds)
    .venv/bin/python benchmarks/learning.py --budget full --device cuda
    # only write the table and the plot from the runs there are
    .venv/bin/python benchmarks/learning.py --budget cpu --report-only
    # rewrite the table and the plot from a results file (no run folders needed)
    .venv/bin/python benchmarks/learning.py --from-json benchmarks/results/cpu-long/learning.json

Every dataset is a replica (``kfc_lite.data.replicas``; ``name`` or ``name:size``), built once into
``runs/learning/data/`` when missing. The Koopman model is pre-trained once per dataset (seed 0) and the same file
is given to every KFC and KFC++ run (``TrainConfig.koopman_path``), so the two differ only in how they sample
symmetries. Every run lives in ``runs/learning/<budget>-<steps>steps/<dataset>/<method>-seed<seed>/`` (``kfc_lite.train``
run folders): a finished run is skipped, an interrupted one resumes from its checkpoint.

Scores are D4RL normalized scores of the deterministic policy. A run's score is the mean of its last ``last_k``
evaluations (``kfc_lite.stats.run_score``): the one definition the json records and every table use. Across seeds the
table reports what the field reports (``kfc_lite.stats``): per dataset and method the number of finished seeds, the
mean and the IQM with stratified-bootstrap 95% intervals and the sample SD, and against CQL, seed by seed, the mean
difference with its interval and verdict and the probability of improvement. Results go to ``benchmarks/results/``
(``--results``): ``learning.json`` (a list of records, each with a ``kind``: ``eval``, one per evaluation: dataset,
method, seed, steps, normalized_score, return, budget; ``score``, one per finished run: its score and ``last_k``;
``run``, one per run: its training diagnostics and wall time; ``koopman``, one per dataset: the shared model's
diagnostics), ``learning.md`` (the tables, with the command, the budget, the machine and the wall time, and
diagnostics: the Koopman model's one-step error on the data and the KFC augmenters' symmetry shift and fall-back rate)
and ``learning.png`` (learning curves: mean and sample SD over seeds). ``--from-json`` rewrites the report from such a
file when the run folders are gone.

Why the CPU budget scales the warm-up: the KFC code clones the behaviour policy for the first 40,000 of its 1M
steps (4%). With a few thousand steps that warm-up would be the whole run, and every method would be the same
behaviour cloning, so the budget keeps the 4% share (``bc_steps = 0.04 * steps``) instead of the 40,000.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import re
import sys
import time

import numpy as np

from kfc_lite import stats

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = ("cql", "s4rl", "kfc", "kfc++")
#: diagnostic variants, not run by default: the residual ("gauged") symmetry s + D((I+sigma)E(s)) - D(E(s)), which
#: leaves out the decoder's reconstruction offset D(E(s)) - s that the plain form adds to every augmented state
VARIANTS = ("kfc-gauged", "kfc++-gauged")
ALL_METHODS = METHODS + VARIANTS


def base_method(method: str) -> str:
    return method.removesuffix("-gauged")

#: Paper, Table 1 (D4RL v0 data, kfc-paper.md section 5): for orientation only, never comparable to a replica.
PAPER_V0 = {"halfcheetah-medium": {"cql": 44.4, "s4rl": 48.8, "kfc": 55.9, "kfc++": 59.1},
            "hopper-medium": {"cql": 58.0, "s4rl": 78.9, "kfc": 90.6, "kfc++": 94.2},
            "walker2d-medium": {"cql": 79.2, "s4rl": 93.6, "kfc": 102.1, "kfc++": 108.0}}


@dataclasses.dataclass
class Budget:
    """What one benchmark spends: data, seeds, steps, evaluation, Koopman pre-training."""

    name: str
    datasets: tuple
    seeds: tuple
    steps: int
    eval_every: int
    eval_episodes: int
    last_k: int
    eval_max_steps: int | None = None
    bc_fraction: float | None = 0.04  #: None: the preset's own bc_steps (40,000)
    koopman: dict = dataclasses.field(default_factory=dict)
    log_every: int = 250
    precision: str = "auto"  #: TrainConfig.precision: "auto" is fp32 for every method on every device


BUDGETS = {
    # the test suite's: seconds, end to end, on any data (a random replica needs no behaviour policy)
    "tiny": Budget("tiny", ("hopper-random-replica:2000",), (0,), steps=12, eval_every=6, eval_episodes=1,
                   last_k=2, eval_max_steps=20, koopman=dict(max_steps=10, hidden_dim=32, early_stopping=False),
                   log_every=6),
    # what fits a shared 2-core machine in about an hour per dataset (bf16 autocast ran CQL steps about 1.8x faster
    # than fp32 there: 3-12 steps/s depending on the load): a CPU-budget result, not a reproduction
    "cpu": Budget("cpu", ("hopper-medium-replay-replica", "halfcheetah-medium-replica:100000",
                          "hopper-medium-replica:100000"), (0, 1, 2),
                  steps=1000, eval_every=250, eval_episodes=5, last_k=2, precision="bf16",
                  koopman=dict(max_steps=1000, early_stopping=False)),
    # a longer CPU run, resumed over sessions (one core: ~15 min per CQL run, ~30 per KFC run in bf16; 24 runs): ten
    # times the steps and a Koopman model pre-trained ten times longer. At 1000 steps the halfcheetah policies had
    # not left the random level (normalized ~0 against the data's 40.8), so the `cpu` budget cannot rank the methods
    # there. The three datasets are the medium rows of the paper's Table 1 that could be recovered (kfc-paper.md
    # section 5). Write its results elsewhere: --results benchmarks/results/cpu-long
    "cpu-long": Budget("cpu-long", ("halfcheetah-medium-replica:100000", "hopper-medium-replica:100000",
                                    "walker2d-medium-replica:100000"), (0, 1, 2),
                       steps=10_000, eval_every=2000, eval_episodes=5, last_k=2, precision="bf16", log_every=500,
                       koopman=dict(max_steps=10_000, early_stopping=False)),
    # the paper's: 1M gradient steps, full-size replicas, evaluation every 5k steps (kfc-paper.md section 4)
    "full": Budget("full", ("hopper-medium-replica", "halfcheetah-medium-replica", "walker2d-medium-replica",
                            "hopper-medium-replay-replica", "halfcheetah-medium-replay-replica",
                            "walker2d-medium-replay-replica"), (0, 1, 2, 3, 4),
                   steps=1_000_000, eval_every=5000, eval_episodes=10, last_k=10, bc_fraction=None, log_every=1000),
}


# -- data and the shared Koopman model ----------------------------------------------------------------------
def parse_dataset(spec: str) -> tuple[str, int | None]:
    name, _, size = spec.partition(":")
    from kfc_lite.data.replicas import parse_recipe

    env, kind = parse_recipe(name)
    return f"{env}-{kind}-replica", (int(size) if size else None)


def dataset_file(runs: pathlib.Path, spec: str, progress: bool) -> pathlib.Path:
    """The replica's HDF5 file under ``runs/data``, built (seed 0) the first time."""
    from kfc_lite.data.replicas import make_replica

    name, size = parse_dataset(spec)
    path = runs / "data" / f"{name}-{size or 'full'}.hdf5"
    if not path.is_file():
        print(f"building {name} ({size or 'D4RL size'} transitions) -> {path}", flush=True)
        make_replica(name, size=size, seed=0, out=path, progress=progress)
    return path


def koopman_file(run_root: pathlib.Path, data_path: pathlib.Path, budget: Budget, device: str,
                 progress: bool) -> tuple[pathlib.Path, dict]:
    """Pre-train the dataset's Koopman model once (seed 0) and keep its diagnostics beside it."""
    from kfc_lite import data as kdata
    from kfc_lite.koopman import fit_koopman, load_koopman, save_koopman
    from kfc_lite.koopman.fit import KoopmanTrainConfig

    path, info_path = run_root / "koopman.pt", run_root / "koopman.json"
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if "reconstruction_offset" not in info:  # files written before this diagnostic existed
            q = kdata.qlearning_dataset(kdata.load(str(data_path), progress=False))
            info.update(model_errors(load_koopman(path, map_location="cpu"), q))
            info_path.write_text(json.dumps(info, indent=1))
        return path, info
    # the same transitions kfc_lite.train pre-trains on (fit_koopman leaves terminal rows out)
    q = kdata.qlearning_dataset(kdata.load(str(data_path), progress=False))
    t0 = time.perf_counter()
    model, history = fit_koopman(q, KoopmanTrainConfig(seed=0, **budget.koopman), device=device, progress=progress)
    wall = time.perf_counter() - t0
    save_koopman(model, path, history=history, dataset=str(data_path))
    model = load_koopman(path, map_location="cpu")
    info = {**model_errors(model, q), "val_forward": float(history["val_forward"][-1]),
            "val_recon": float(history["val_recon"][-1]), "val_multistep": float(history["val_multistep"][-1]),
            "epochs": len(history["epoch"]), "steps": int(history["steps"][-1]), "stopped": history.get("stopped"),
            "wall_s": wall, "config": dict(budget.koopman)}
    info_path.write_text(json.dumps(info, indent=1))
    return path, info


def model_errors(model, q: dict, n: int = 5000) -> dict:
    """How well the frozen model fits the data, on ``n`` non-terminal transitions (seed 0).

    ``relative_one_step_error``: ||f(s,a) - s'|| / ||s' - s|| (means), < 1 is better than predicting no change;
    ``reconstruction_offset``: mean ||D(E(s)) - s||, the shift every plain (not gauged) symmetry adds to a state
    even with sigma = 0; ``state_norm``: mean ||s||, for scale.
    """
    import torch

    rng = np.random.default_rng(0)
    nonterm = np.flatnonzero(~q["terminals"])
    idx = rng.choice(nonterm, size=min(n, len(nonterm)), replace=False)
    s, a, s2 = (torch.as_tensor(q[k][idx]) for k in ("observations", "actions", "next_observations"))
    with torch.no_grad():
        pred = model(s, a)
        recon = model.decode(model.encode(s))
    return {"relative_one_step_error": float((pred - s2).norm(dim=1).mean() / (s2 - s).norm(dim=1).mean()),
            "reconstruction_offset": float((recon - s).norm(dim=1).mean()),
            "state_norm": float(s.norm(dim=1).mean())}


# -- runs -------------------------------------------------------------------------------------------------
def run_one(run_root: pathlib.Path, data_path: pathlib.Path, method: str, seed: int, budget: Budget, device: str,
            koopman_path, progress: bool) -> pathlib.Path:
    from kfc_lite.train import TrainConfig, train

    out = run_root / f"{method.replace('+', 'p')}-seed{seed}"
    done = out / "result.json"
    if done.is_file() and json.loads(done.read_text())["step"] >= budget.steps:
        return out
    sac = {} if budget.bc_fraction is None else {"bc_steps": int(round(budget.bc_fraction * budget.steps))}
    cfg = TrainConfig(dataset=str(data_path), method=base_method(method), gauged=method.endswith("-gauged"), steps=budget.steps, seed=seed, device=device, out=str(out),
                      eval_every=budget.eval_every, eval_episodes=budget.eval_episodes,
                      eval_max_steps=budget.eval_max_steps, checkpoint_every=budget.eval_every,
                      log_every=budget.log_every, sac=sac, precision=budget.precision,
                      koopman_path=str(koopman_path) if base_method(method) in ("kfc", "kfc++") else None)
    resume = (out / "config.json").is_file()
    t0 = time.perf_counter()
    res = train(cfg, resume=resume, progress=progress)
    wall_file = out / "wall.json"
    spent = json.loads(wall_file.read_text())["wall_s"] if wall_file.is_file() and resume else 0.0
    wall_file.write_text(json.dumps({"wall_s": spent + time.perf_counter() - t0}))
    print(f"  {method:6s} seed {seed}: final normalized score {res.final_normalized:.1f} "
          f"({res.steps_per_second:.1f} steps/s)", flush=True)
    return out


# -- results ------------------------------------------------------------------------------------------------
def collect_records(runs: pathlib.Path, budget: Budget) -> tuple[list[dict], dict]:
    """One record per evaluation of every run folder that exists, and per-run diagnostics."""
    from kfc_lite.train import read_metrics

    records, diag = [], {}
    for spec in budget.datasets:
        name, size = parse_dataset(spec)
        root = runs / f"{budget.name}-{budget.steps}steps" / f"{name}-{size or 'full'}"
        for method in ALL_METHODS:
            for seed in budget.seeds:
                out = root / f"{method.replace('+', 'p')}-seed{seed}"
                if not (out / "metrics.jsonl").is_file():
                    continue
                rows = read_metrics(out)
                for r in rows:
                    if r["kind"] == "eval":
                        records.append({"kind": "eval", "dataset": name, "dataset_size": size, "method": method,
                                        "seed": seed,
                                        "steps": r["step"], "normalized_score": r["normalized"], "return": r["return"],
                                        "budget": budget.name})
                train_rows = [r for r in rows if r["kind"] == "train"]
                d = {}
                for key in ("aug_fallback_rate", "aug_state_shift", "aug_koopman_fraction", "aug_commutation_error",
                            "cql_weight", "q_data", "td_loss"):
                    vals = [r[key] for r in train_rows if r.get(key) is not None]
                    if vals:
                        d[key] = float(np.mean(vals))
                wall = out / "wall.json"
                d["wall_s"] = json.loads(wall.read_text())["wall_s"] if wall.is_file() else None
                diag[(name, method, seed)] = d
    return records, diag


def evaluations(records: list[dict]) -> list[dict]:
    """The per-evaluation records (files written before records had a ``kind`` hold only those)."""
    return [r if "kind" in r else {"kind": "eval", **r} for r in records if r.get("kind", "eval") == "eval"]


def run_scores(records: list[dict], budget: Budget) -> dict:
    """(dataset, method) -> {seed: score} over finished runs; a run's score is ``stats.run_score`` of its evaluations."""
    evals = evaluations(records)
    runs = {}
    for r in evals:
        runs.setdefault((r["dataset"], r["method"], r["seed"]), []).append(r)
    out = {}
    for (ds, m, seed), ev in runs.items():
        ev.sort(key=lambda r: r["steps"])
        if ev[-1]["steps"] >= budget.steps:  # an unfinished run has no score yet
            out.setdefault((ds, m), {})[seed] = stats.run_score([r["normalized_score"] for r in ev], budget.last_k)
    order = lambda k: (k[0], ALL_METHODS.index(k[1]) if k[1] in ALL_METHODS else len(ALL_METHODS), k[1])
    return {k: dict(sorted(out[k].items())) for k in sorted(out, key=order)}


def score_records(records: list[dict], budget: Budget) -> list[dict]:
    """One ``score`` record per finished run: the number the tables are computed from."""
    size = {(r["dataset"], r["method"], r["seed"]): r.get("dataset_size") for r in evaluations(records)}
    return [{"kind": "score", "dataset": ds, "dataset_size": size[(ds, m, seed)], "method": m, "seed": seed,
             "score": score, "last_k": budget.last_k, "steps": budget.steps, "budget": budget.name}
            for (ds, m), per_seed in run_scores(records, budget).items() for seed, score in per_seed.items()]


def summarize(records: list[dict], budget: Budget) -> dict:
    """(dataset, method) -> the run scores by seed and their mean, IQM (with 95% intervals when n >= 2) and sample SD."""
    out = {}
    for key, per_seed in run_scores(records, budget).items():
        x = list(per_seed.values())
        enough = len(x) >= 2  # an interval or a spread needs two runs
        out[key] = {"n": len(x), "scores": per_seed, "mean": stats.mean(x), "iqm": stats.iqm(x),
                    "mean_ci": stats.mean_ci(x) if enough else None, "iqm_ci": stats.iqm_ci(x) if enough else None,
                    "sd": stats.sample_sd(x) if enough else None}
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
        out[(ds, m)] = {"seeds": seeds,
                        "paired": stats.paired_difference(a, b, names=(m, baseline)) if enough else None,
                        "improvement": stats.probability_of_improvement(a, b) if enough else None}
    return out


def aggregate(summary: dict) -> dict:
    """method -> mean and IQM pooled over every dataset of the table, stratified by dataset (methods run on all)."""
    datasets = sorted({ds for ds, _ in summary})
    out = {}
    for m in dict.fromkeys(m for _, m in summary):
        strata = {ds: list(summary[(ds, m)]["scores"].values()) for ds in datasets if (ds, m) in summary}
        if len(datasets) > 1 and len(strata) == len(datasets) and all(len(x) >= 2 for x in strata.values()):
            out[m] = {"n": {ds: len(x) for ds, x in strata.items()}, "mean_ci": stats.mean_ci(strata),
                      "iqm_ci": stats.iqm_ci(strata)}
    return out


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s); python {platform.python_version()}")


def results_records(records: list[dict], budget: Budget, diag: dict, koopman: dict) -> list[dict]:
    """Everything ``learning.json`` holds: evaluations, run scores, per-run diagnostics, per-dataset Koopman models."""
    return (evaluations(records) + score_records(records, budget)
            + [{"kind": "run", "dataset": ds, "method": m, "seed": seed, **d} for (ds, m, seed), d in diag.items()]
            + [{"kind": "koopman", "dataset": ds, **info} for ds, info in sorted(koopman.items())])


def split_records(records: list[dict]) -> tuple[list[dict], dict, dict]:
    """The inverse of ``results_records``: evaluations, diagnostics by (dataset, method, seed), Koopman by dataset."""
    skip = ("kind", "dataset", "method", "seed")
    diag = {(r["dataset"], r["method"], r["seed"]): {k: v for k, v in r.items() if k not in skip}
            for r in records if r.get("kind") == "run"}
    koopman = {r["dataset"]: {k: v for k, v in r.items() if k not in skip} for r in records
               if r.get("kind") == "koopman"}
    return evaluations(records), diag, koopman


def _ci(x) -> str:
    return f"[{x.low:.1f}, {x.high:.1f}]" if x is not None else "-"


def score_tables(summary: dict, budget: Budget) -> list[str]:
    """The markdown of the score table, the comparison with CQL and the aggregate over datasets."""
    lines = ["| dataset | method | n | scores by seed | mean [95% CI] | IQM [95% CI] | sample SD | paper v0 |",
             "|---|---|---|---|---|---|---|---|"]
    for (ds, m), s in summary.items():
        paper = PAPER_V0.get(ds.replace("-replica", ""), {}).get(m, "-")
        by_seed = ", ".join(f"{v:.1f}" for v in s["scores"].values())
        sd = f"{s['sd']:.1f}" if s["sd"] is not None else "-"
        lines.append(f"| {ds} | {m} | {s['n']} | {by_seed} | {s['mean']:.1f} {_ci(s['mean_ci'])} | "
                     f"{s['iqm']:.1f} {_ci(s['iqm_ci'])} | {sd} | {paper} |")
    lines += ["", "### Against CQL, seed by seed", "",
              "Each method minus CQL on the seeds both finished: the mean paired difference with its Student-t 95% "
              "interval and the verdict it supports (\"not distinguishable\" when the interval includes 0; a "
              "percentile bootstrap, used for the means above, would call a difference between two equal methods 1 "
              "time in 4 at 3 seeds), and the probability of improvement P(method > CQL) over all pairs of runs "
              "(ties 1/2; 0.5: neither tends to win) with a paired-bootstrap 95% interval, as narrow as the means' at "
              "this many seeds. Fewer than 2 shared seeds give no interval.", "",
              "| dataset | method | seeds | mean difference vs CQL [95% t interval] | verdict | P(method > CQL) [95% CI] |",
              "|---|---|---|---|---|---|"]
    for (ds, m), c in compare(summary).items():
        if c["paired"] is None:
            lines.append(f"| {ds} | {m} | {c['seeds']} | - | too few seeds | - |")
            continue
        d, p = c["paired"].difference, c["improvement"]
        lines.append(f"| {ds} | {m} | {c['seeds']} | {d.estimate:+.1f} {_ci(d)} | {c['paired'].verdict} | "
                     f"{p.estimate:.2f} [{p.low:.2f}, {p.high:.2f}] |")
    agg = aggregate(summary)
    if agg:
        lines += ["", "### Over all datasets", "",
                  "Scores pooled over the datasets of the table (methods with at least 2 finished seeds on each), "
                  "with a stratified bootstrap: seeds are resampled within each dataset. Datasets with more seeds "
                  "weigh more.", "",
                  "| method | seeds per dataset | mean [95% CI] | IQM [95% CI] |", "|---|---|---|---|"]
        for m, a in agg.items():
            lines.append(f"| {m} | {', '.join(str(n) for n in a['n'].values())} | {a['mean_ci']} | {a['iqm_ci']} |")
    return lines


def diagnostics_tables(diag: dict, koopman: dict) -> list[str]:
    """The markdown of the Koopman model and augmentation diagnostics."""
    lines = ["## Diagnostics", "",
             "Koopman model per dataset: one-step error relative to predicting no change (||f(s,a) - s'|| / ||s' - s||, "
             "5000 transitions of the data; < 1 is better than a constant state), reconstruction offset ||D(E(s)) - s|| "
             "(the shift a plain symmetry adds to every state even at sigma = 0), validation losses, training length.", "",
             "| dataset | relative one-step error | reconstruction offset (mean state norm) | val forward MSE | val recon MSE | val 10-step RMS | epochs (steps) | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for ds, k in sorted(koopman.items()):
        offset = f"{k['reconstruction_offset']:.3g} ({k['state_norm']:.3g})" if "reconstruction_offset" in k else "-"
        lines.append(f"| {ds} | {k['relative_one_step_error']:.3f} | {offset} | {k['val_forward']:.4g} | {k['val_recon']:.4g} | "
                     f"{k['val_multistep']:.4g} | {k['epochs']} ({k['steps']}) | {k['wall_s']:.0f} |")
    lines += ["", "Augmentation per method (means over the logged steps and seeds): mean ||s~ - s||, share of samples "
              "moved by a symmetry, fall-back rate (the Koopman branch was drawn but the eigen-decomposition failed "
              "the guard, so noise was used), commutation error; CQL's Lagrange weight, Q on data and the TD loss (on "
              "the augmented states: a shift that is not a transition of the system raises it).", "",
              "| dataset | method | state shift | Koopman fraction | fall-back rate | commutation error | CQL weight | Q(data) | TD loss | wall s per run |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in sorted({k[0] for k in diag}):
        for m in ALL_METHODS:
            ds_rows = [v for (d, mm, _), v in diag.items() if d == ds and mm == m]
            if not ds_rows:
                continue

            def avg(key, fmt="{:.3g}"):
                vals = [r[key] for r in ds_rows if r.get(key) is not None and math.isfinite(r[key])]
                return fmt.format(float(np.mean(vals))) if vals else "-"
            lines.append(f"| {ds} | {m} | {avg('aug_state_shift')} | {avg('aug_koopman_fraction', '{:.2f}')} | "
                         f"{avg('aug_fallback_rate', '{:.3f}')} | {avg('aug_commutation_error')} | {avg('cql_weight')} | "
                         f"{avg('q_data', '{:.1f}')} | {avg('td_loss', '{:.3g}')} | {avg('wall_s', '{:.0f}')} |")
    return lines


def write_report(results: pathlib.Path, budget: Budget, records: list[dict], diag: dict, koopman: dict,
                 meta: dict, carried_diagnostics: str | None = None) -> pathlib.Path:
    """learning.json, learning.md and learning.png; ``carried_diagnostics``: the diagnostics section of an earlier
    report, kept when the records hold none (a results file written before they did)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "learning.json").write_text(json.dumps(results_records(records, budget, diag, koopman), indent=1) + "\n")
    summary = summarize(records, budget)
    label = ("**CPU-budget result, not a reproduction**: " if budget.name != "full" else "") + \
        f"budget `{budget.name}`: {budget.steps} gradient steps per run"
    run_wall = (f"{meta['run_wall_s'] / 60:.1f} min in the runs' training loops over all calls"
                if meta.get("run_wall_s") is not None else "the runs' training time is not in the records")
    lines = ["# Learning benchmark: CQL, S4RL, KFC, KFC++ on D4RL replicas", "",
             f"{label}, seeds {list(budget.seeds)}, evaluation every {budget.eval_every} steps with "
             f"{budget.eval_episodes} episodes" + (f" cut at {budget.eval_max_steps} steps" if budget.eval_max_steps else "")
             + f". **Score of a run = the mean of its last {budget.last_k} evaluations** (D4RL normalized score, "
               "deterministic policy; the `score` records of learning.json); only finished runs count. Across seeds: "
               "mean and IQM (interquartile mean; with fewer than 4 seeds nothing is trimmed and it equals the mean) "
               "with percentile-bootstrap 95% intervals, and the sample SD (`kfc_lite.stats`; "
               f"{stats.N_RESAMPLES:,} resamples, seed {stats.BOOTSTRAP_SEED}). With 2-3 seeds an interval spans about the range of the seeds and covers "
               "less than 95% of the time: read it as a lower bound on the uncertainty. Behaviour-cloning warm-up: "
             + (f"{budget.bc_fraction:.0%} of the steps" if budget.bc_fraction is not None else "40,000 steps (the KFC code)")
             + f". Precision {budget.precision} ('auto': fp32 for every method and device)"
             + f". Koopman model pre-trained once per dataset and shared by KFC and KFC++ ({budget.koopman or 'paper defaults'}).",
             "", f"* command: `{meta['command']}`"] + ([f"* note: {meta['note']}"] if meta.get("note") else []) + [
             f"* machine: {meta['machine']}",
             f"* wall time: {meta['wall_s'] / 60:.1f} min this call; {run_wall}", f"* written: {meta['written']}", "",
             "Datasets are **replicas** built with our own behaviour policies (`kfc_lite.data.replicas`, policies/): a "
             "score on them is not a score on D4RL, and the paper's v0 numbers are shown for orientation only.", ""]
    lines += score_tables(summary, budget)
    if not diag and not koopman and carried_diagnostics is not None:
        lines += ["", carried_diagnostics.rstrip("\n")]
    else:
        lines += [""] + diagnostics_tables(diag, koopman)
    lines.append("")
    md = results / "learning.md"
    md.write_text("\n".join(lines) + "\n")
    plot(results / "learning.png", records, budget)
    return md


def plot(path: pathlib.Path, records: list[dict], budget: Budget) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = evaluations(records)
    datasets = sorted({r["dataset"] for r in records})
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for m in METHODS:
            rows = [r for r in records if r["dataset"] == ds and r["method"] == m]
            if not rows:
                continue
            steps = sorted({r["steps"] for r in rows})
            curves = [[r["normalized_score"] for r in rows if r["steps"] == s] for s in steps]
            mean = np.array([np.mean(c) for c in curves])
            # the sample SD, as in the table; a step only one seed has reached gets no band
            sd = np.array([np.std(c, ddof=1) if len(c) > 1 else 0.0 for c in curves])
            ax.plot(steps, mean, marker="o", label=m)
            ax.fill_between(steps, mean - sd, mean + sd, alpha=0.2)
        ax.set_title(f"{ds} ({budget.name} budget)")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("D4RL normalized score (mean +- sample SD over seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def carried_diagnostics(md: pathlib.Path) -> tuple[str | None, float | None]:
    """An earlier report's diagnostics section (marked as kept) and its total training time in seconds, if any."""
    text = md.read_text() if md.is_file() else ""
    wall = re.search(r"([0-9.]+) min in the runs' training loops", text)
    wall_s = float(wall.group(1)) * 60 if wall else None
    start = text.find("## Diagnostics")
    if start < 0:
        return None, wall_s
    body = text[start:].removeprefix("## Diagnostics").lstrip("\n")
    kept = ("(Kept from the previous report: the results file holds no per-run diagnostics, and the run folders they "
            "were read from are gone.)")
    return "## Diagnostics\n\n" + ("" if body.startswith(kept) else kept + "\n\n") + body, wall_s


def report_meta(args, argv, diag: dict, wall_s: float) -> dict:
    """The report's header: the command as typed (without the note, printed on its own line), machine, times."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--note" in words:
        i = words.index("--note")
        del words[i:i + 2]
    walls = [d["wall_s"] for d in diag.values() if d.get("wall_s") is not None]
    return {"command": " ".join([os.path.relpath(sys.argv[0], ROOT) if argv is None else "benchmarks/learning.py"]
                                + words),
            "machine": machine(), "wall_s": wall_s, "run_wall_s": sum(walls) if walls else None,
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": args.note}


# -- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), help="default: cpu, or the budget named in --from-json")
    p.add_argument("--full", action="store_true", help="the same as --budget full (the paper's budget, for a GPU)")
    p.add_argument("--datasets", nargs="+", help="replica names, optionally name:size (default: the budget's)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS),
                   help="default: the four methods; kfc-gauged and kfc++-gauged are diagnostic variants")
    p.add_argument("--seeds", nargs="+", type=int, help="default: the budget's")
    p.add_argument("--steps", type=int, help="gradient steps per run (default: the budget's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default=str(ROOT / "runs" / "learning"), help="run folders and built datasets")
    p.add_argument("--results", help="where learning.json/.md/.png go (default: benchmarks/results, or the folder of "
                                      "--from-json)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (one thread "
                                                         "each; use the number of free cores)")
    p.add_argument("--report-only", action="store_true", help="write the results from the runs there are; train nothing")
    p.add_argument("--from-json", help="rewrite the results from this learning.json instead of the run folders; "
                                       "train nothing")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--note", default="", help="a line for the report (e.g. which calls trained the runs)")
    args = p.parse_args(argv)

    loaded = json.loads(pathlib.Path(args.from_json).read_text()) if args.from_json else None
    name = "full" if args.full else args.budget
    if loaded is not None:
        named = {r["budget"] for r in evaluations(loaded)}
        if len(named) != 1 or (name is not None and named != {name}):
            p.error(f"{args.from_json} holds budgets {sorted(named)}; expected one" + (f": {name}" if name else ""))
        name = named.pop()
    budget = BUDGETS[name or "cpu"]
    over = {k: v for k, v in (("datasets", tuple(args.datasets) if args.datasets else None),
                              ("seeds", tuple(args.seeds) if args.seeds else None), ("steps", args.steps)) if v}
    budget = dataclasses.replace(budget, **over)
    runs = pathlib.Path(args.runs)
    results = pathlib.Path(args.results or (pathlib.Path(args.from_json).parent if args.from_json else HERE / "results"))
    if loaded is not None:
        records, diag, koopman = split_records(loaded)
        meta, carried = report_meta(args, argv, diag, 0.0), None
        if not diag and not koopman:  # a file from before the diagnostics were records: keep the report's
            carried, meta["run_wall_s"] = carried_diagnostics(results / "learning.md")
        md = write_report(results, budget, records, diag, koopman, meta, carried)
        print(md.read_text())
        return 0
    t0 = time.perf_counter()
    koopman = {}
    tasks = []
    for spec in budget.datasets:
        name, size = parse_dataset(spec)
        run_root = runs / f"{budget.name}-{budget.steps}steps" / f"{name}-{size or 'full'}"
        if args.report_only:
            info = run_root / "koopman.json"
            if info.is_file():
                koopman[name] = json.loads(info.read_text())
            continue
        data_path = dataset_file(runs, spec, args.progress)
        kpath = None
        if any(base_method(m) in ("kfc", "kfc++") for m in args.methods):
            kpath, koopman[name] = koopman_file(run_root, data_path, budget, args.device, args.progress)
            print(f"{name}: Koopman model relative one-step error {koopman[name]['relative_one_step_error']:.3f}",
                  flush=True)
        for seed in budget.seeds:  # seeds outermost: every method gets its seed-0 result before any seed 1
            for method in args.methods:
                tasks.append((run_root, data_path, method, seed, budget, args.device, kpath, args.progress))
    if args.jobs > 1 and len(tasks) > 1:
        import concurrent.futures
        import multiprocessing

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in [pool.submit(run_one, *t) for t in tasks]:
                f.result()
    else:
        for t in tasks:
            run_one(*t)
    records, diag = collect_records(runs, budget)
    meta = report_meta(args, argv, diag, time.perf_counter() - t0)
    md = write_report(results, budget, records, diag, koopman, meta)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
