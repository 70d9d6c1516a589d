"""``kfc-lite sweep SPEC``: run a sweep file on Ray (see kfc_lite.sweep and docs/sweeps.md)."""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys


def _cmd_sweep(args: argparse.Namespace) -> int:
    from kfc_lite.sweep.sweep_file import load_spec

    spec = load_spec(args.spec)  # every error of the file is found here, before Ray starts
    trials = spec.trials()
    if args.dry_run:
        print(
            f"sweep {spec.name}: {len(trials)} trials, budget {spec.budget.name} ({spec.budget.steps} steps), "
            f"each on {spec.resources.cpus:g} CPU(s) and {spec.resources.gpus:g} GPU(s); out {spec.out}"
        )
        for t in trials:
            print(f"  {t.name}")
        return 0
    command = shlex.join(["kfc-lite", "sweep", *sys.argv[2:]]) if len(sys.argv) > 2 else f"kfc-lite sweep {args.spec}"
    if args.report_only:
        from kfc_lite.sweep.report import write_sweep_report

        if not spec.out.is_dir():
            raise SystemExit(f"{spec.out} does not exist: the sweep has no run folders to report (run it first)")
        md = write_sweep_report(spec, pathlib.Path(args.results or spec.out / "results"), command, 0.0, args.note)
        print(md.read_text())
        return 0
    from kfc_lite.sweep.runner import run_sweep

    outcome = run_sweep(
        spec,
        address=args.address,
        resume=args.resume,
        local_cpus=args.cpus,
        results=args.results,
        command=command,
        table_every_s=args.table_every,
        note=args.note,
    )
    return 1 if outcome.unfinished else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a sweep file (datasets x methods x seeds x settings) on Ray",
        description="Run every trial of a sweep file on Ray Tune: an embedded Ray instance, or "
        "the cluster at --address / RAY_ADDRESS. Each trial is a `kfc-lite train` run "
        "folder under the sweep's out; the learning table and plot go to "
        "<out>/results.",
    )
    p.add_argument("spec", help="the sweep file (YAML)")
    p.add_argument(
        "--address", default=None, help="a Ray cluster, host:port (default: RAY_ADDRESS, else an embedded Ray instance)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue a sweep whose driver stopped: only unfinished trials run"
    )
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray instance (default: all)")
    p.add_argument(
        "--results", default=None, help="where learning.json, learning.md and learning.png go (default: <out>/results)"
    )
    p.add_argument("--table-every", type=float, default=10.0, help="seconds between two prints of the live table")
    p.add_argument("--dry-run", action="store_true", help="check the sweep file and list its trials; run nothing")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the results (finished runs scored) from the run folders there are; train nothing",
    )
    p.add_argument("--note", default="", help="a line for the report (e.g. which runs it holds, and why)")
    p.set_defaults(func=_cmd_sweep)
