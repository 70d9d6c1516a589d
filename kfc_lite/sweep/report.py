"""The learning benchmark's report: a sweep's run folders in; ``learning.json``, ``.md`` and ``.png`` out.

``learning.json`` holds the records (evaluations, run scores, per-run and per-dataset diagnostics);
``learning.md`` the tables of scores with their uncertainty, the comparison with CQL, the diagnostics, the command,
the budget and the machine; ``learning.png`` the learning curves. The numbers in them (run scores, summaries across
seeds, paired comparisons, the records' format) come from :mod:`kfc_lite.sweep.scores`, whose public names are
re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import re

import numpy as np

from kfc_lite import stats
from kfc_lite.sweep.budgets import Budget
from kfc_lite.sweep.scores import (
    aggregate,
    compare,
    evaluations,
    ordered_methods,
    results_records,
    run_scores,
    score_records,
    split_records,
    summarize,
)

__all__ = [
    # the report (this module)
    "PAPER_V0",
    "score_tables",
    "diagnostics_tables",
    "write_report",
    "plot",
    "carried_diagnostics",
    "collect_records",
    "report_meta",
    "write_sweep_report",
    "machine",
    # the numbers in it (kfc_lite.sweep.scores)
    "ordered_methods",
    "evaluations",
    "run_scores",
    "score_records",
    "summarize",
    "compare",
    "aggregate",
    "results_records",
    "split_records",
]

#: Paper, Table 1 (D4RL v0 data, docs/paper.md): for orientation only, never comparable to a replica.
PAPER_V0 = {
    "halfcheetah-medium": {"cql": 44.4, "s4rl": 48.8, "kfc": 55.9, "kfc++": 59.1},
    "hopper-medium": {"cql": 58.0, "s4rl": 78.9, "kfc": 90.6, "kfc++": 94.2},
    "walker2d-medium": {"cql": 79.2, "s4rl": 93.6, "kfc": 102.1, "kfc++": 108.0},
}


def machine(threads: bool = True) -> str:
    """The report's machine line: the CPU and how many logical CPUs, the GPU if any, torch and (``threads``) the
    number of threads this process gives it, python."""
    import torch

    from kfc_lite.info import cpu_name

    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; torch {torch.__version__}"
        + (f" with {torch.get_num_threads()} thread(s)" if threads else "")
        + f"; python {platform.python_version()}"
    )


def _ci(x) -> str:
    return f"[{x.low:.1f}, {x.high:.1f}]" if x is not None else "-"


def score_tables(summary: dict, planned_seeds: tuple = ()) -> list[str]:
    """The markdown of the score table, the comparison with CQL and the aggregate over datasets. A comparison on
    fewer than the ``planned_seeds`` (a sweep still running) gives an interim verdict, and the table says so."""
    planned = set(planned_seeds)
    comparisons = compare(summary)
    interim = {key for key, c in comparisons.items() if not planned <= set(c["seeds"])}
    lines = [
        "| dataset | method | n | scores by seed | mean [95% CI] | IQM [95% CI] | sample SD | paper v0 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (ds, m), s in summary.items():
        paper = PAPER_V0.get(ds.replace("-replica", ""), {}).get(m, "-")
        by_seed = ", ".join(f"{v:.1f}" for v in s["scores"].values())
        sd = f"{s['sd']:.1f}" if s["sd"] is not None else "-"
        lines.append(
            f"| {ds} | {m} | {s['n']} | {by_seed} | {s['mean']:.1f} {_ci(s['mean_ci'])} | "
            f"{s['iqm']:.1f} {_ci(s['iqm_ci'])} | {sd} | {paper} |"
        )
    lines += [
        "",
        "### Against CQL, seed by seed",
        "",
        "Each method minus CQL on the seeds both finished: the mean paired difference with its Student-t 95% "
        'interval and the verdict it supports ("not distinguishable" when the interval includes 0; a '
        "percentile bootstrap, used for the means above, would call a difference between two equal methods 1 "
        "time in 4 at 3 seeds), and the probability of improvement P(method > CQL) over all pairs of runs "
        "(ties 1/2; 0.5: neither tends to win) with a paired-bootstrap 95% interval. At a few seeds that interval "
        "is as narrow as the means', and when every run of one method beats every run of the other it collapses "
        "to [1.00, 1.00] or [0.00, 0.00]: the runs so far do not overlap, which is not a certainty. Fewer than 2 "
        "shared seeds give no interval.",
    ]
    if interim:
        lines += [
            "",
            f"**Interim**: a verdict marked *interim* rests on fewer seeds than the planned {sorted(planned)}: it is "
            "read off the seeds both methods have finished so far, and it is not a pre-registered decision, which "
            "waits for every planned seed.",
        ]
    lines += [
        "",
        "| dataset | method | seeds | mean difference vs CQL [95% t interval] | verdict | P(method > CQL) [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for (ds, m), c in comparisons.items():
        if c["paired"] is None:
            lines.append(f"| {ds} | {m} | {c['seeds']} | - | too few seeds | - |")
            continue
        d, p = c["paired"].difference, c["improvement"]
        verdict = f"*interim*: {c['paired'].verdict}" if (ds, m) in interim else c["paired"].verdict
        lines.append(
            f"| {ds} | {m} | {c['seeds']} | {d.estimate:+.1f} {_ci(d)} | {verdict} | "
            f"{p.estimate:.2f} [{p.low:.2f}, {p.high:.2f}] |"
        )
    agg = aggregate(summary)
    if agg:
        lines += [
            "",
            "### Over all datasets",
            "",
            "Scores pooled over the datasets of the table (methods with at least 2 finished seeds on each), "
            "with a stratified bootstrap: seeds are resampled within each dataset. Datasets with more seeds "
            "weigh more.",
            "",
            "| method | seeds per dataset | mean [95% CI] | IQM [95% CI] |",
            "|---|---|---|---|",
        ]
        for m, a in agg.items():
            lines.append(f"| {m} | {', '.join(str(n) for n in a['n'].values())} | {a['mean_ci']} | {a['iqm_ci']} |")
    return lines


def diagnostics_tables(diag: dict, koopman: dict) -> list[str]:
    """The markdown of the Koopman model and augmentation diagnostics."""
    lines = ["## Diagnostics", ""]
    if not koopman:  # a sweep of CQL and S4RL arms only: an empty table would look like a model that went missing
        lines.append("Koopman model: none; no run of these results used one.")
    else:
        lines += [
            "Koopman model per dataset: one-step error relative to predicting no change (||f(s,a) - s'|| / "
            "||s' - s||, 5000 transitions of the data; < 1 is better than a constant state), reconstruction offset "
            "||D(E(s)) - s|| (the shift a plain symmetry adds to every state even at sigma = 0), validation losses, "
            "training length.",
            "",
            "| dataset | relative one-step error | reconstruction offset (mean state norm) | val forward MSE "
            "| val recon MSE | val 10-step RMS | epochs (steps) | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for ds, k in sorted(koopman.items()):
        offset = f"{k['reconstruction_offset']:.3g} ({k['state_norm']:.3g})" if "reconstruction_offset" in k else "-"
        lines.append(
            f"| {ds} | {k['relative_one_step_error']:.3f} | {offset} | {k['val_forward']:.4g} | {k['val_recon']:.4g} | "
            f"{k['val_multistep']:.4g} | {k['epochs']} ({k['steps']}) | {k['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Augmentation per method (means over the logged steps and seeds): mean ||s~ - s||, share of samples "
        "moved by a symmetry, fall-back rate (the Koopman branch was drawn but the eigen-decomposition failed "
        "the guard, so noise was used), commutation error; CQL's Lagrange weight, Q on data and the TD loss (on "
        "the augmented states: a shift that is not a transition of the system raises it).",
        "",
        "| dataset | method | state shift | Koopman fraction | fall-back rate | commutation error | CQL weight "
        "| Q(data) | TD loss | wall s per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in sorted({k[0] for k in diag}):
        for m in ordered_methods(m for (d, m, _) in diag if d == ds):
            ds_rows = [v for (d, mm, _), v in diag.items() if d == ds and mm == m]
            if not ds_rows:
                continue

            def avg(key, fmt="{:.3g}", *, rows=ds_rows):
                vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
                return fmt.format(float(np.mean(vals))) if vals else "-"

            lines.append(
                f"| {ds} | {m} | {avg('aug_state_shift')} | {avg('aug_koopman_fraction', '{:.2f}')} | "
                f"{avg('aug_fallback_rate', '{:.3f}')} | {avg('aug_commutation_error')} | {avg('cql_weight')} | "
                f"{avg('q_data', '{:.1f}')} | {avg('td_loss', '{:.3g}')} | {avg('wall_s', '{:.0f}')} |"
            )
    return lines


def write_report(
    results: pathlib.Path,
    budget: Budget,
    records: list[dict],
    diag: dict,
    koopman: dict,
    meta: dict,
    carried_diagnostics: str | None = None,
) -> pathlib.Path:
    """learning.json, learning.md and learning.png; ``carried_diagnostics``: the diagnostics section of an earlier
    report, kept when the records hold none (a results file written before they did)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "learning.json").write_text(json.dumps(results_records(records, budget, diag, koopman), indent=1) + "\n")
    summary = summarize(records, budget)
    label = (
        "**CPU-budget result, not a reproduction**: " if budget.name != "full" else ""
    ) + f"budget `{budget.name}`: {budget.steps} gradient steps per run"
    run_wall = (
        f"{meta['run_wall_s'] / 60:.1f} min in the runs' training loops over all calls"
        if meta.get("run_wall_s") is not None
        else "the runs' training time is not in the records"
    )
    lines = (
        [
            "# Learning benchmark: CQL, S4RL, KFC, KFC++ on D4RL replicas",
            "",
            f"{label}, seeds {list(budget.seeds)}, evaluation every {budget.eval_every} steps with "
            f"{budget.eval_episodes} episodes"
            + (f" cut at {budget.eval_max_steps} steps" if budget.eval_max_steps else "")
            + f". **Score of a run = the mean of its last {budget.last_k} evaluations** (D4RL normalized score, "
            "deterministic policy; the `score` records of learning.json); only finished runs count. Across seeds: "
            "mean and IQM (interquartile mean; with fewer than 4 seeds nothing is trimmed and it equals the mean) "
            "with percentile-bootstrap 95% intervals, and the sample SD (`kfc_lite.stats`; "
            f"{stats.N_RESAMPLES:,} resamples, seed {stats.BOOTSTRAP_SEED}). "
            "With 2-3 seeds an interval spans about the range of the seeds and covers "
            "less than 95% of the time: read it as a lower bound on the uncertainty. Behaviour-cloning warm-up: "
            + (
                f"{budget.bc_fraction:.0%} of the steps"
                if budget.bc_fraction is not None
                else "40,000 steps (the KFC code)"
            )
            + f". Precision {budget.precision} ('auto': fp32 for every method and device)"
            + ". Koopman model pre-trained once per dataset and shared by KFC and KFC++ "
            f"({budget.koopman or 'paper defaults'}).",
            "",
            f"* command: `{meta['command']}`",
        ]
        + ([f"* note: {meta['note']}"] if meta.get("note") else [])
        + [
            f"* machine: {meta['machine']}",
            f"* wall time: {meta['wall_s'] / 60:.1f} min this call; {run_wall}",
            f"* written: {meta['written']}",
            "",
            "Datasets are **replicas** built with our own behaviour policies (`kfc_lite.data.replicas`, policies/): a "
            "score on them is not a score on D4RL, and the paper's v0 numbers are shown for orientation only.",
            "",
        ]
    )
    lines += score_tables(summary, budget.seeds)
    if not diag and not koopman and carried_diagnostics is not None:
        lines += ["", carried_diagnostics.rstrip("\n")]
    else:
        lines += [""] + diagnostics_tables(diag, koopman)
    lines.append("")
    md = results / "learning.md"
    md.write_text("\n".join(lines) + "\n")
    plot(results / "learning.png", records, budget)
    return md


def plot(path: pathlib.Path, records: list[dict], budget: Budget) -> list[tuple[str, str]]:
    """Learning curves of every arm, one panel per dataset, saved to ``path``; returns the (dataset, arm) pairs
    drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = evaluations(records)
    datasets = sorted({r["dataset"] for r in records})
    drawn: list[tuple[str, str]] = []
    if not datasets:
        return drawn
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for m in ordered_methods(r["method"] for r in records if r["dataset"] == ds):
            rows = [r for r in records if r["dataset"] == ds and r["method"] == m]
            steps = sorted({r["steps"] for r in rows})
            curves = [[r["normalized_score"] for r in rows if r["steps"] == s] for s in steps]
            mean = np.array([np.mean(c) for c in curves])
            # the sample SD, as in the table; a step only one seed has reached gets no band
            sd = np.array([np.std(c, ddof=1) if len(c) > 1 else 0.0 for c in curves])
            ax.plot(steps, mean, marker="o", label=m)
            ax.fill_between(steps, mean - sd, mean + sd, alpha=0.2)
        ax.set_title(f"{ds} ({budget.name} budget)")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("normalized score\n(mean +- sample SD over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        drawn += [(ds, line.get_label()) for line in ax.get_lines()]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def carried_diagnostics(md: pathlib.Path) -> tuple[str | None, float | None]:
    """An earlier report's diagnostics section (marked as kept) and its total training time in seconds, if any."""
    text = md.read_text() if md.is_file() else ""
    wall = re.search(r"([0-9.]+) min in the runs' training loops", text)
    wall_s = float(wall.group(1)) * 60 if wall else None
    start = text.find("## Diagnostics")
    if start < 0:
        return None, wall_s
    body = text[start:].removeprefix("## Diagnostics").lstrip("\n")
    kept = (
        "(Kept from the previous report: the results file holds no per-run diagnostics, and the run folders they "
        "were read from are gone.)"
    )
    return "## Diagnostics\n\n" + ("" if body.startswith(kept) else kept + "\n\n") + body, wall_s


# -- from a sweep's run folders ----------------------------------------------------------------------------
def collect_records(spec) -> tuple[list[dict], dict, dict]:
    """The evaluations of every trial's run folder that exists, per-run diagnostics, and the Koopman models' ones."""
    from kfc_lite.train import read_metrics

    records, diag, koopman = [], {}, {}
    for ds in spec.datasets:
        info = spec.dataset_dir(ds) / "koopman.json"
        if info.is_file():
            koopman[ds.report_name] = json.loads(info.read_text())
    for trial in spec.trials():
        out = spec.run_dir(trial)
        if not (out / "metrics.jsonl").is_file():
            continue
        name, method, seed = trial.dataset.report_name, trial.label, trial.seed
        rows = read_metrics(out)
        for r in rows:
            if r["kind"] == "eval":
                records.append(
                    {
                        "kind": "eval",
                        "dataset": name,
                        "dataset_size": trial.dataset.size,
                        "method": method,
                        "seed": seed,
                        "steps": r["step"],
                        "normalized_score": r["normalized"],
                        "return": r["return"],
                        "budget": spec.budget.name,
                    }
                )
        train_rows = [r for r in rows if r["kind"] == "train"]
        d = {}
        for key in (
            "aug_fallback_rate",
            "aug_state_shift",
            "aug_koopman_fraction",
            "aug_commutation_error",
            "cql_weight",
            "q_data",
            "td_loss",
        ):
            vals = [r[key] for r in train_rows if r.get(key) is not None]
            if vals:
                d[key] = float(np.mean(vals))
        wall = out / "wall.json"
        d["wall_s"] = json.loads(wall.read_text())["wall_s"] if wall.is_file() else None
        diag[(name, method, seed)] = d
    return records, diag, koopman


def report_meta(command: str, diag: dict, wall_s: float, note: str = "") -> dict:
    """The report's header: the command, the machine, the times."""
    import time

    walls = [d["wall_s"] for d in diag.values() if d.get("wall_s") is not None]
    return {
        "command": command,
        "machine": machine(),
        "wall_s": wall_s,
        "run_wall_s": sum(walls) if walls else None,
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": note,
    }


def write_sweep_report(spec, results: pathlib.Path, command: str, wall_s: float, note: str = "") -> pathlib.Path:
    """learning.json, learning.md and learning.png of a sweep, from its run folders (finished runs are scored)."""
    import dataclasses

    records, diag, koopman = collect_records(spec)
    budget = dataclasses.replace(spec.budget, datasets=tuple(d.entry for d in spec.datasets), seeds=spec.seeds)
    return write_report(pathlib.Path(results), budget, records, diag, koopman, report_meta(command, diag, wall_s, note))
