"""Training speed and memory, side by side: kfc_lite's CQL, S4RL, KFC, KFC++ against d3rlpy's CQL.

    .venv/bin/python benchmarks/throughput.py               # 1 and 2 threads, fp32 and bf16, all methods, d3rlpy
    .venv/bin/python benchmarks/throughput.py --threads 1 --no-d3rlpy --steps 20

Every configuration runs in a subprocess of its own (so peak RSS is its own) on the same synthetic
halfcheetah-shaped data (17-d states, 6-d actions, 100k transitions), batch 256, actor and two critics
of 3x256, 10 sampled actions per source in the penalty. d3rlpy 2.8.1 pins gymnasium==1.0.0, so it is
installed by this script into a virtual environment of its own (``benchmarks/.venv-d3rlpy``, git-ignored),
never into the project's.

Interleaved timing: all workers of one thread count start and warm up, then take turns, one timed block of
``--steps`` updates each per round, for ``--repeats`` rounds (only one worker runs at a time). Each
configuration therefore sees the same machine load, and the ratios (to d3rlpy's CQL, to kfc_lite's CQL at the
same precision) are medians of per-round ratios: robust to a shared machine whose load drifts over minutes.
Results: a table on stdout and in ``benchmarks/results/throughput.md``, raw
records in ``benchmarks/results/throughput.json``.

``--baseline REV`` also times kfc_lite as it was at git revision ``REV`` (exported with ``git archive`` into
``benchmarks/.baseline/<commit>/``, git-ignored, and imported there by the same worker script), in the same
rounds: the table's "× baseline" column is then the speed-up of the working tree over that revision, the way
to measure one change on a shared machine.

KFC and KFC++ read their symmetries from the data's symmetry table (``kfc_lite.symmetry_table``), built before
the timing over every core and cached in ``benchmarks/.cache/`` (git-ignored), so the workers of one thread
count share it; the table's build time and bytes per row are in the records and the table.

kfc_lite sets the C allocator so that a step's large temporaries stay in the heap
(``kfc_lite.settings.tune_cpu_allocator``: no page faults each step); d3rlpy runs as installed, and, unless
``--no-d3rlpy-tuned``, once more with the same setting, so the table shows how much of the lead is that
setting (the "× d3rlpy CQL" column is always against d3rlpy as installed).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from _timing import write_results

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
D3RLPY_VENV = HERE / ".venv-d3rlpy"
D3RLPY_SPEC = ["torch==2.13.0", "d3rlpy==2.8.1"]
BASELINES = HERE / ".baseline"
TABLE_CACHE = HERE / ".cache" / "symmetry-tables"


def export_baseline(rev: str) -> tuple[pathlib.Path, str]:
    """kfc_lite as it was at git revision ``rev``, exported under benchmarks/.baseline/<commit>/ (once)."""

    def git(*args, **kw):
        return subprocess.run(["git", "-C", str(HERE.parent), *args], check=True, capture_output=True, **kw)

    try:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}", text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise SystemExit(
            f"--baseline {rev}: not a git revision of this repository ({e}); give a commit, a tag or e.g. HEAD~1"
        ) from None
    dest = BASELINES / commit
    if not (dest / "kfc_lite" / "__init__.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = git("archive", commit, "kfc_lite").stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, commit[:10]


def ensure_d3rlpy() -> pathlib.Path:
    py = D3RLPY_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(D3RLPY_VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import d3rlpy"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {' '.join(D3RLPY_SPEC)} into {D3RLPY_VENV} ...", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *D3RLPY_SPEC], check=True)
    return py


class Worker:
    """One configuration in its own process, serving timed blocks on request (``--serve``)."""

    def __init__(
        self, python: str, script: pathlib.Path, args: list[str], threads: int, kfc_lite_dir: pathlib.Path | None = None
    ):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if kfc_lite_dir is not None:  # a baseline: its kfc_lite comes first on the path (the script's folder aside)
            env["PYTHONPATH"] = os.pathsep.join([str(kfc_lite_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.name, self.args = f"{script.name} {' '.join(args)}", list(args)
        self.proc = subprocess.Popen(
            [python, str(script), *args, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.seconds: list[float] = []

    def _read(self) -> dict:
        while True:  # skip anything a library prints on stdout (d3rlpy logs there)
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                raise RuntimeError(f"{self.name} failed:\n{err[-3000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def ready(self) -> None:
        self._read()

    def run_block(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self.seconds.append(self._read()["seconds"])
        return self.seconds[-1]

    def stop(self) -> dict:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        record = self._read()
        self.proc.wait()
        return record


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[i] / den[i]`` (times of two workers in the same round)."""
    return statistics.median(n / d for n, d in zip(num, den))


def table(records: list[dict]) -> str:
    baseline = any(r.get("x_baseline") is not None for r in records)
    rows = [
        "| implementation | method | precision | device | threads | steps/s | × d3rlpy CQL "
        "| step time × kfc_lite CQL | " + ("× baseline | " if baseline else "") + "peak RSS MB |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if baseline else "") + "---|",
    ]
    for r in records:
        x_d3 = f"{r['x_d3rlpy_cql']:.2f}" if r.get("x_d3rlpy_cql") is not None else "n/a"
        x_cql = f"{r['step_time_x_cql']:.2f}" if r.get("step_time_x_cql") is not None else "–"
        dev = f" (peak device {r['peak_device_mb']:.0f} MB)" if "peak_device_mb" in r else ""
        x_base = (f"{r['x_baseline']:.2f} | " if r.get("x_baseline") is not None else "– | ") if baseline else ""
        method = r["method"]
        rows.append(
            f"| {r['implementation']} | {method} | {r['precision']} | {r['device']} | {r['threads']} | "
            f"{r['steps_per_second']:.2f} | {x_d3} | {x_cql} | {x_base}{r['peak_rss_mb']:.0f}{dev} |"
        )
    return "\n".join(rows)


def measure(threads: int, a, common: list[str]) -> list[dict]:
    """Start every worker of one thread count, let them warm up, then time them in turns."""
    # (worker, method: None for d3rlpy as installed, "d3rlpy" for it with the malloc setting; precision;
    # baseline label or None)
    workers: list[tuple[Worker, str | None, str, str | None]] = []
    if not a.no_d3rlpy:
        py = ensure_d3rlpy()
        workers.append(
            (
                Worker(str(py), HERE / "_d3rlpy_worker.py", common + ["--threads", str(threads)], threads),
                None,
                "fp32",
                None,
            )
        )
        if not a.no_d3rlpy_tuned:
            workers.append(
                (
                    Worker(
                        str(py),
                        HERE / "_d3rlpy_worker.py",
                        common + ["--threads", str(threads), "--tune-malloc"],
                        threads,
                    ),
                    "d3rlpy",
                    "fp32",
                    None,
                )
            )
    trees = [(None, None)] + ([export_baseline(a.baseline)[::-1]] if a.baseline else [])
    for precision in a.precisions:
        for method in a.methods:
            args = (
                common
                + [
                    "--threads",
                    str(threads),
                    "--method",
                    method,
                    "--precision",
                    precision,
                    "--device",
                    a.device,
                    "--table-storage",
                    a.table_storage,
                    "--table-cache",
                    str(TABLE_CACHE),
                ]
                + (["--compile"] if a.compile else [])
            )
            for label, tree in trees:  # each configuration also at the baseline revision, if one is given
                workers.append(
                    (
                        Worker(sys.executable, HERE / "_kfc_worker.py", args, threads, kfc_lite_dir=tree),
                        method,
                        precision,
                        label,
                    )
                )
    for w, *_ in workers:  # warm-ups run one after another too (each waits for its "run")
        w.ready()
    for i in range(a.repeats):
        for w, *_ in workers:
            w.run_block()
        print(f"threads {threads}: round {i + 1}/{a.repeats} done", file=sys.stderr)
    d3 = next((w for w, m, _, _ in workers if m is None), None)  # d3rlpy as installed
    cql = {p: w for w, m, p, b in workers if m == "cql" and b is None}
    base = {(m, p): w for w, m, p, b in workers if b is not None}
    records = []
    for w, method, precision, label in workers:
        rec = w.stop()
        if label is not None:
            rec["implementation"] = f"kfc_lite@{label}"
        rec["rounds_seconds"] = w.seconds
        rec["x_d3rlpy_cql"] = paired_ratio(d3.seconds, w.seconds) if d3 is not None else None
        rec["step_time_x_cql"] = (
            paired_ratio(w.seconds, cql[precision].seconds)
            if method not in (None, "d3rlpy") and label is None and precision in cql
            else None
        )
        key = (method, precision)
        rec["x_baseline"] = paired_ratio(base[key].seconds, w.seconds) if label is None and key in base else None
        records.append(rec)
        print(json.dumps(rec), file=sys.stderr)
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--methods", nargs="+", default=["cql", "s4rl", "kfc", "kfc++"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (kfc_lite workers)")
    p.add_argument("--steps", type=int, default=20, help="updates per timed block")
    p.add_argument("--repeats", type=int, default=5, help="rounds of interleaved blocks (medians over rounds)")
    p.add_argument("--warmup", type=int, default=10, help="untimed updates before the first block, per worker")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument(
        "--table-storage",
        default="float16",
        choices=["float16", "float32", "bfloat16"],
        help="KFC/KFC++: dtype of the symmetry table's bases (default float16, as training)",
    )
    p.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy (it needs its own environment)")
    p.add_argument(
        "--no-d3rlpy-tuned", action="store_true", help="skip the second d3rlpy run with kfc_lite's C-allocator setting"
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also time kfc_lite at this git revision (e.g. HEAD~1), interleaved: the table gains a speed-up column",
    )
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    common = ["--steps", str(a.steps), "--n", str(a.n), "--warmup", str(a.warmup)]
    t0, load0 = time.time(), os.getloadavg()
    records = []
    for threads in a.threads:
        records += measure(threads, a, common)
    load1 = os.getloadavg()
    import torch

    from kfc_lite.info import cpu_name

    cpu = cpu_name()
    head = (
        "# Throughput: gradient steps per second\n\n"
        f"Command: `{' '.join([pathlib.Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}`  \n"
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
        f"device {a.device}; wall time {time.time() - t0:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end (the machine is shared)  \n"
        f"Workload: batch 256, actor and 2 critics of 3x256, 10 sampled actions per source, 17-d states, 6-d actions, "
        f"{a.n} transitions; {a.repeats} interleaved rounds of {a.steps} steps after {a.warmup} warm-up steps; "
        f"steps/s is the median over rounds, ratios are medians of per-round ratios.\n\n"
    )
    # (build times are not shown: the workers of a thread count start, and build their tables, side by side;
    # benchmarks/symmetry_table.py measures the build alone)
    sizes = sorted(
        {
            (r["method"], r["symmetry_table"]["rows"], r["symmetry_table"]["bytes_per_row"])
            for r in records
            if r.get("symmetry_table")
        }
    )
    notes = "".join(
        f"\n{method}: symmetry table of {rows} rows, {per_row} bytes a row, built before the timing "
        "(its build time: benchmarks/results/symmetry_table.md)  "
        for method, rows, per_row in sizes
    )
    text = head + table(records) + "\n" + notes + "\n"
    print(text)
    write_results(a.out, "throughput", text, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
