"""The learning benchmark: CQL, S4RL, KFC and KFC++ on the same replica datasets, seeds and gradient-step budget.

    # the committed CPU-budget results (resumable: rerun the same command after an interruption)
    .venv/bin/python benchmarks/learning.py --budget cpu
    # the same on a Ray cluster (run folders on storage every node sees; docs/sweeps.md)
    .venv/bin/python benchmarks/learning.py --budget cpu --address HEAD:6379 --runs /shared/runs/learning
    # the paper's budget, for a GPU (1M gradient steps, full-size replicas, 5 seeds)
    .venv/bin/python benchmarks/learning.py --budget full --device cuda
    # only write the table and the plot from the runs there are
    .venv/bin/python benchmarks/learning.py --budget cpu --report-only
    # rewrite the table and the plot from a results file (no run folders needed)
    .venv/bin/python benchmarks/learning.py --from-json benchmarks/results/cpu-long/learning.json
    # add more seeds of its arms, trained in another sitting into a second results folder
    .venv/bin/python benchmarks/learning.py --from-json A/learning.json --add-seeds C/learning.json
    # add a second sweep's arm to it (a fixed ``set`` names its runs by the method alone: rename them)
    .venv/bin/python benchmarks/learning.py --from-json A/learning.json --merge B/learning.json \
        --rename "s4rl=s4rl[noise_sigma=0.013406]"

The benchmark is a sweep (``kfc_lite.sweep``, the engine of ``kfc-lite sweep``): every run is a Ray Tune trial, on
an embedded Ray instance or the cluster at ``--address``, and the tables and the plot are the sweep's report
(``kfc_lite.sweep.report``). This file only turns a budget and the options into that sweep.

Every dataset is a replica (``kfc_lite.data.replicas``; ``name`` or ``name:size``), built once into
``runs/learning/data/`` when missing. The Koopman model is pre-trained once per dataset (seed 0) and the same file
is given to every KFC and KFC++ run (``TrainConfig.koopman_path``), so the two differ only in how they sample
symmetries. Every run lives in ``runs/learning/<budget>-<steps>steps/<dataset>/<method>-seed<seed>/``
(``kfc_lite.train`` run folders): a finished run is skipped, an interrupted one resumes from its checkpoint.

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
import os
import pathlib
import sys
import time

from kfc_lite.sweep.budgets import BUDGETS, Budget
from kfc_lite.sweep.report import (  # noqa: F401  (the report's functions are reached through this script too)
    PAPER_V0,
    aggregate,
    carried_diagnostics,
    compare,
    evaluations,
    report_meta,
    run_scores,
    score_records,
    score_tables,
    split_records,
    summarize,
    write_report,
)
from kfc_lite.sweep.scores import add_seeds, merge_records
from kfc_lite.sweep.spec import ALL_METHODS, METHODS, VARIANTS, base_method  # noqa: F401

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_dataset(spec: str) -> tuple[str, int | None]:
    """``'hopper-medium-replica:100000'`` -> ``('hopper-medium-replica', 100000)``."""
    from kfc_lite.sweep.spec import parse_dataset as parse

    ds = parse(spec)
    return ds.name, ds.size


def sweep_spec(budget: Budget, methods, runs: pathlib.Path, device: str, prepare_cpus: float | None = None):
    """The benchmark as a sweep: the budget's datasets and seeds, one run folder per (dataset, method, seed).

    ``prepare_cpus``: the CPUs of a dataset's preparation (the Koopman pre-training takes hours on D4RL's sizes and
    no trial of that dataset can start before it); None: one, as a trial."""
    from kfc_lite.sweep.sweep_file import spec_from_dict

    return spec_from_dict(
        {
            "name": f"learning-{budget.name}",
            "out": str(runs / f"{budget.name}-{budget.steps}steps"),
            "data": str(runs / "data"),
            "datasets": list(budget.datasets),
            "methods": list(methods),
            "seeds": list(budget.seeds),
            "budget": budget,
            "koopman": dict(budget.koopman),
            "device": device,
            "resources": {"cpus": 1, "gpus": 0 if device == "cpu" else 1, "prepare_cpus": prepare_cpus},
        }
    )


def command(argv) -> str:
    """The command as typed, without the note (printed on its own line)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--note" in words:
        i = words.index("--note")
        del words[i : i + 2]
    return " ".join([os.path.relpath(sys.argv[0], ROOT) if argv is None else "benchmarks/learning.py"] + words)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), help="default: cpu, or the budget named in --from-json")
    p.add_argument("--full", action="store_true", help="the same as --budget full (the paper's budget, for a GPU)")
    p.add_argument("--datasets", nargs="+", help="replica names, optionally name:size (default: the budget's)")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        default=list(METHODS),
        help="default: the four methods; kfc-gauged and kfc++-gauged are diagnostic variants",
    )
    p.add_argument("--seeds", nargs="+", type=int, help="default: the budget's")
    p.add_argument("--steps", type=int, help="gradient steps per run (default: the budget's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default=str(ROOT / "runs" / "learning"), help="run folders and built datasets")
    p.add_argument(
        "--results", help="where learning.json/.md/.png go (default: benchmarks/results, or the folder of --from-json)"
    )
    p.add_argument(
        "--address",
        default=None,
        help="a Ray cluster, host:port (default: RAY_ADDRESS, else an embedded Ray instance on this machine)",
    )
    p.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="CPUs of the embedded Ray instance, i.e. runs trained at once (default: all)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="write the results from the runs there are; train nothing"
    )
    p.add_argument(
        "--from-json", help="rewrite the results from this learning.json instead of the run folders; train nothing"
    )
    p.add_argument(
        "--merge",
        metavar="FILE",
        help="with --from-json: add this second learning.json's runs (a second sweep); the merged file is written",
    )
    p.add_argument(
        "--add-seeds",
        metavar="FILE",
        help="with --from-json: add this learning.json's runs as more seeds of the same arms (the same sweep trained "
        "in another sitting, e.g. after its run folders were lost); the merged file is written",
    )
    p.add_argument(
        "--retrained-model",
        action="store_true",
        help="with --add-seeds: its KFC runs used a Koopman model trained again, which differs from the first "
        "file's in its last digits; both models are reported, each with the seeds it served",
    )
    p.add_argument(
        "--rename",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="with --merge: the second file's method OLD is named NEW in the merged results",
    )
    p.add_argument("--note", default="", help="a line for the report (e.g. which calls trained the runs)")
    args = p.parse_args(argv)

    if (args.merge or args.rename or args.add_seeds) and not args.from_json:
        p.error(
            "--merge, --add-seeds and --rename add a second results file to the one --from-json names: "
            "give --from-json too"
        )
    if args.retrained_model and not args.add_seeds:
        p.error("--retrained-model describes the runs of --add-seeds FILE: give --add-seeds FILE too")
    if args.rename and not args.merge:
        p.error("--rename names the methods of the --merge file: give --merge FILE too")
    if not all("=" in pair for pair in args.rename):
        p.error(f"--rename takes OLD=NEW pairs, e.g. s4rl=s4rl[noise_sigma=0.013406]; got {args.rename}")
    rename = dict(pair.split("=", 1) for pair in args.rename)
    if len(rename) != len(args.rename):
        p.error(f"--rename names one method twice: {args.rename}")
    loaded = json.loads(pathlib.Path(args.from_json).read_text()) if args.from_json else None
    if args.add_seeds:
        try:
            more = json.loads(pathlib.Path(args.add_seeds).read_text())
            loaded, dropped = add_seeds(loaded, more, retrained_model=args.retrained_model)
        except ValueError as e:
            p.error(f"--add-seeds {args.add_seeds}: {e}")
        for ds, m, seed in dropped:
            print(f"{ds} {m} seed {seed}: the unfinished run of {args.from_json} is replaced by {args.add_seeds}'s")
    if args.merge:
        try:
            loaded = merge_records(loaded, json.loads(pathlib.Path(args.merge).read_text()), rename)
        except ValueError as e:
            p.error(f"--merge {args.merge}: {e}")
    name = "full" if args.full else args.budget
    if loaded is not None:
        named = {r["budget"] for r in evaluations(loaded)}
        if len(named) != 1 or (name is not None and named != {name}):
            p.error(f"{args.from_json} holds budgets {sorted(named)}; expected one" + (f": {name}" if name else ""))
        name = named.pop()
    budget = BUDGETS[name or "cpu"]
    over = {
        k: v
        for k, v in (
            ("datasets", tuple(args.datasets) if args.datasets else None),
            ("seeds", tuple(args.seeds) if args.seeds else None),
            ("steps", args.steps),
        )
        if v
    }
    budget = dataclasses.replace(budget, **over)
    runs = pathlib.Path(args.runs)
    results = pathlib.Path(
        args.results or (pathlib.Path(args.from_json).parent if args.from_json else HERE / "results")
    )
    if loaded is not None:
        records, diag, koopman = split_records(loaded)
        meta, carried = report_meta(command(argv), diag, 0.0, args.note), None
        if not diag and not koopman:  # a file from before the diagnostics were records: keep the report's
            carried, meta["run_wall_s"] = carried_diagnostics(results / "learning.md")
        md = write_report(results, budget, records, diag, koopman, meta, carried)
        print(md.read_text())
        return 0
    # on this machine (no --address), a dataset's preparation may use every CPU the embedded instance has
    local = args.address is None and not os.environ.get("RAY_ADDRESS")
    spec = sweep_spec(budget, args.methods, runs, args.device, (args.cpus or os.cpu_count()) if local else None)
    t0 = time.perf_counter()
    if args.report_only:
        from kfc_lite.sweep.report import write_sweep_report

        md = write_sweep_report(spec, results, command(argv), time.perf_counter() - t0, args.note)
    else:
        from kfc_lite.sweep.runner import run_sweep

        # resume=True: rerunning the command continues the runs there are and skips the finished ones
        outcome = run_sweep(
            spec,
            address=args.address,
            resume=True,
            local_cpus=args.cpus,
            results=results,
            command=command(argv),
            note=args.note,
        )
        md = outcome.report
        if outcome.unfinished:
            print(md.read_text())
            print(
                f"unfinished: {', '.join(outcome.unfinished)}: rerun the same command to resume them", file=sys.stderr
            )
            return 1
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
