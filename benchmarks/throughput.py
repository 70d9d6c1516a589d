"""Training speed and memory, side by side: kfc_lite's CQL, S4RL, KFC, KFC++ against d3rlpy's CQL.

    .venv/bin/python benchmarks/throughput.py               # 2 threads, fp32 and bf16, all methods, d3rlpy
    .venv/bin/python benchmarks/throughput.py --threads 1 --no-d3rlpy --steps 20

Every measurement runs in a fresh subprocess (so peak RSS is its own) on the same synthetic
halfcheetah-shaped data (17-d states, 6-d actions, 100k transitions), batch 256, actor and two critics
of 3x256, 10 sampled actions per source in the penalty. d3rlpy 2.8.1 pins gymnasium==1.0.0, so it is
installed by this script into a virtual environment of its own (``benchmarks/.venv-d3rlpy``, git-ignored),
never into the project's. Results: a table on stdout and in ``benchmarks/results/throughput.md``, raw
records in ``benchmarks/results/throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
D3RLPY_VENV = HERE / ".venv-d3rlpy"
D3RLPY_SPEC = ["torch==2.13.0", "d3rlpy==2.8.1"]


def ensure_d3rlpy() -> pathlib.Path:
    py = D3RLPY_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(D3RLPY_VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import d3rlpy"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {' '.join(D3RLPY_SPEC)} into {D3RLPY_VENV} ...", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *D3RLPY_SPEC], check=True)
    return py


def run_worker(python: str, script: pathlib.Path, args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([python, str(script), *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(records: list[dict]) -> str:
    base = {r["threads"]: r["steps_per_second"] for r in records if r["implementation"].startswith("d3rlpy")}
    cql = {(r["threads"], r["precision"]): r["steps_per_second"] for r in records
           if r["implementation"] == "kfc_lite" and r["method"] == "cql"}
    rows = ["| implementation | method | precision | device | threads | steps/s | × d3rlpy CQL | step time × kfc_lite CQL | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        b = base.get(r["threads"])
        c = cql.get((r["threads"], r["precision"]))
        rows.append(f"| {r['implementation']} | {r['method']} | {r['precision']} | {r['device']} | {r['threads']} | "
                    f"{r['steps_per_second']:.2f} | {r['steps_per_second'] / b:.2f} | " if b else
                    f"| {r['implementation']} | {r['method']} | {r['precision']} | {r['device']} | {r['threads']} | "
                    f"{r['steps_per_second']:.2f} | n/a | ")
        rows[-1] += (f"{c / r['steps_per_second']:.2f} | " if c and r["implementation"] == "kfc_lite" else "– | ")
        rows[-1] += f"{r['peak_rss_mb']:.0f} |"
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--methods", nargs="+", default=["cql", "s4rl", "kfc", "kfc++"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy (it needs its own environment)")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    common = ["--steps", str(a.steps), "--repeats", str(a.repeats), "--n", str(a.n)]
    records = []
    t0 = time.time()
    for threads in a.threads:
        if not a.no_d3rlpy:
            py = ensure_d3rlpy()
            records.append(run_worker(str(py), HERE / "_d3rlpy_worker.py", common + ["--threads", str(threads)], threads))
            print(json.dumps(records[-1]), file=sys.stderr)
        for precision in a.precisions:
            for method in a.methods:
                records.append(run_worker(sys.executable, HERE / "_kfc_worker.py",
                                          common + ["--threads", str(threads), "--method", method,
                                                    "--precision", precision, "--device", a.device], threads))
                print(json.dumps(records[-1]), file=sys.stderr)
    import torch

    head = (f"# Throughput: gradient steps per second\n\nCommand: `{' '.join([pathlib.Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}`  \n"
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
            f"device {a.device}; wall time {time.time() - t0:.0f} s  \n"
            f"Workload: batch 256, actor and 2 critics of 3x256, 10 sampled actions per source, 17-d states, 6-d actions, "
            f"{a.n} transitions; median of {a.repeats} repeats of {a.steps} steps after warm-up.\n\n")
    text = head + table(records) + "\n"
    print(text)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.md").write_text(text)
    (out / "throughput.json").write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
