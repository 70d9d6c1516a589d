"""Memory of training on a large dataset: peak RSS of ``kfc_lite.train`` against the dataset's own size.

    .venv/bin/python benchmarks/memory.py                    # 1M transitions, CQL and KFC++, a few steps
    .venv/bin/python benchmarks/memory.py --n 200000 --methods cql

Writes a D4RL-format file of ``--n`` random halfcheetah-shaped transitions (17-d states, 6-d actions,
episodes of 1000 steps with time-outs, and ``next_observations`` as kfc-lite's generated files have), then
runs ``kfc_lite.train.train`` for ``--steps`` gradient steps in a fresh process per method: the real path,
file -> ``load`` -> ``qlearning_dataset`` -> ``TransitionSampler`` -> agent (and, for KFC++, the Koopman model
fitted for ``--koopman-steps`` steps on the same data). The same runs on a small file of ``--small`` transitions
give the process's memory without the data (torch, networks, optimiser, activations of a step); the
difference between the two peaks is what the data costs, compared with the file's array bytes:

    data cost ratio = (peak RSS(n) - peak RSS(small)) / (array bytes(n) - array bytes(small))

Target: at most 1.5, i.e. training holds at most 1.5x the dataset's own size plus the networks. KFC and KFC++
also hold their symmetry table (``kfc_lite.symmetry_table``: a few KB per transition), by design: the table's
size and build time are reported beside the ratio, and the ratio is also given without it. ``kfc++:mapped``
runs KFC++ with the table memory-mapped from disk (``table_memory_gb=0``) instead of read into memory.
Results: ``benchmarks/results/memory.md`` and ``memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from _timing import write_results

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def make_file(path: pathlib.Path, n: int, seed: int = 0) -> int:
    """A D4RL-format HDF5 file of ``n`` random transitions; returns the bytes of its arrays."""
    import numpy as np

    from kfc_lite.data.hdf5 import write_hdf5

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 17), dtype=np.float32)
    data = {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, 6)).astype(np.float32),
        "rewards": rng.standard_normal(n, dtype=np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": (np.arange(n) % 1000) == 999,
        "next_observations": np.concatenate([obs[1:], obs[-1:]]),
        "metadata/d4rl_env": "halfcheetah",
    }
    size = sum(v.nbytes for v in data.values() if hasattr(v, "nbytes"))
    write_hdf5(data, path, compression=None)
    return size


def child(args) -> None:
    """One training run in this process; prints peak RSS (MB) as JSON."""
    import resource

    from kfc_lite.koopman.fit import KoopmanTrainConfig
    from kfc_lite.rl.config import SACConfig
    from kfc_lite.train import AugmentConfig, TrainConfig, train

    method, _, mode = args.method.partition(":")
    cfg = TrainConfig(
        dataset=args.file,
        method=method,
        env="halfcheetah",
        steps=args.steps,
        seed=0,
        device="cpu",
        out=args.out,
        eval_episodes=0,
        eval_every=0,
        log_every=args.steps,
        checkpoint_every=0,
        sac=SACConfig(precision="fp32", compile=False),
        koopman=KoopmanTrainConfig(max_steps=args.koopman_steps, max_epochs=1) if method in ("kfc", "kfc++") else None,
        augment=AugmentConfig(table_memory_gb=0.0 if mode == "mapped" else 8.0),
    )
    t0 = time.time()
    train(cfg, progress=False)
    table = json.loads((pathlib.Path(args.out) / "result.json").read_text()).get("symmetry_table")
    print(
        json.dumps(
            {
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": time.time() - t0,
                "table": table,
            }
        )
    )


def run_child(file: pathlib.Path, method: str, a, out: pathlib.Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--file",
        str(file),
        "--method",
        method,
        "--steps",
        str(a.steps),
        "--koopman-steps",
        str(a.koopman_steps),
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"training on {file.name} with {method} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--small", type=int, default=20_000)
    p.add_argument("--methods", nargs="+", default=["cql", "kfc++", "kfc++:mapped"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--koopman-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    # internal: one run in a child process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a)
        return 0
    if a.small >= a.n:
        raise SystemExit(f"--small ({a.small}) must be smaller than --n ({a.n})")
    records = []
    with tempfile.TemporaryDirectory(prefix="kfc-memory-") as tmp:
        tmp = pathlib.Path(tmp)
        sizes = {}
        for n in (a.small, a.n):
            sizes[n] = make_file(tmp / f"random-{n}.hdf5", n)
        for method in a.methods:
            peaks = {
                n: run_child(tmp / f"random-{n}.hdf5", method, a, tmp / f"run-{method}-{n}") for n in (a.small, a.n)
            }
            data_mb = (sizes[a.n] - sizes[a.small]) / 2**20
            extra_mb = peaks[a.n]["peak_rss_mb"] - peaks[a.small]["peak_rss_mb"]
            table, small_table = peaks[a.n]["table"], peaks[a.small]["table"]
            held = lambda t: 0.0 if t is None or t["mapped"] else t["bytes"] / 2**20
            table_mb = held(table) - held(small_table)  # what the table adds to the process, mapped: nothing held
            rec = {
                "method": method,
                "transitions": a.n,
                "file_array_mb": sizes[a.n] / 2**20,
                "peak_rss_mb": peaks[a.n]["peak_rss_mb"],
                "small_transitions": a.small,
                "small_file_array_mb": sizes[a.small] / 2**20,
                "small_peak_rss_mb": peaks[a.small]["peak_rss_mb"],
                "data_cost_ratio": extra_mb / data_mb,
                "data_cost_ratio_without_table": (extra_mb - table_mb) / data_mb,
                "table": table,
                "steps": a.steps,
                "threads": a.threads,
            }
            records.append(rec)
            print(json.dumps(rec), file=sys.stderr)
    import torch

    rows = [
        "| method | transitions | file arrays MB | peak RSS MB | peak RSS MB, small file | data cost ratio | "
        "without the table | symmetry table |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        t = r["table"]
        table = (
            "–"
            if t is None
            else (
                f"{t['bytes'] / 2**20:.0f} MB ({t['bytes_per_row']} B a row, "
                f"{t['bytes_per_row'] * 1e6 / 2**30:.2f} GiB per 1M rows), built in "
                f"{t['build_seconds']:.0f} s, {'memory-mapped' if t['mapped'] else 'in memory'}"
            )
        )
        rows.append(
            f"| {r['method']} | {r['transitions']} | {r['file_array_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['small_peak_rss_mb']:.0f} ({r['small_transitions']}) | {r['data_cost_ratio']:.2f} | "
            f"{r['data_cost_ratio_without_table']:.2f} | {table} |"
        )
    text = (
        f"# Memory: peak RSS of kfc_lite.train against the dataset's size\n\n"
        f"Command: `{' '.join(['memory.py'] + (argv or sys.argv[1:]))}`; torch {torch.__version__}; "
        f"{a.steps} gradient steps per run, CPU, fp32. Data cost ratio = (peak RSS - peak RSS on the small file) / "
        f"(file arrays - small file arrays); target <= 1.5.\n\n" + "\n".join(rows) + "\n"
    )
    print(text)
    write_results(a.out, "memory", text, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
