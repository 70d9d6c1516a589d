"""The cost of KFC/KFC++'s eigen-decomposition: one batch of ``K(a)`` operators, on the host and on a GPU.

    .venv/bin/python benchmarks/eig.py                        # batch 256, latent 32, workers 1 and 2
    python benchmarks/eig.py --device cuda --workers 1 15     # on a GPU machine (benchmarks/gpu_check.sh)

Every KFC/KFC++ batch decomposes the 32x32 operator ``K(a)`` of each of its transitions (``torch.linalg.eig``
plus the guard's inverse and condition bound: :func:`kfc_lite.symmetry.eigendecompose`). LAPACK's ``geev``
takes one matrix at a time on one core, so this is the floor of a KFC step's cost wherever the step itself is
cheap: a bf16 CPU step, or any GPU step. The script times, on the same operators (a paper-sized
``KoopmanForwardModel`` with random weights, random actions):

* ``host, 1 worker``: the whole batch on one thread, the call a lookahead worker makes (milliseconds of one
  core per batch);
* ``host, N workers``: the batch's decomposition spread over N threads of a :func:`kfc_lite.settings.thread_pool`
  (what ``LookaheadSampler(workers=N)`` sustains per batch when nothing else runs);
* ``torch.linalg.eig`` alone (no guard) on the host, and on the device with ``--device cuda`` (recent torch
  builds dispatch a CUDA ``eig`` to cuSOLVER's ``geev``; kfc_lite decomposes on the host so that CPU and GPU
  runs take the same steps, and this row says what that choice costs).

It prints a table (median of ``--repeats`` timings after a warm-up) with the hours of decomposition per 1M
steps, the paper's run length, and writes ``eig.md`` / ``eig.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _timing import write_results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--state-dim", type=int, default=17)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    a = p.parse_args()
    for name in ("batch", "latent", "repeats", "state_dim", "action_dim"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if any(w < 1 for w in a.workers):
        p.error("--workers takes positive thread counts")

    import torch

    from kfc_lite.koopman import KoopmanForwardModel
    from kfc_lite.settings import thread_pool
    from kfc_lite.symmetry import eigendecompose

    if not (a.device == "cpu" or a.device.startswith("cuda")):
        p.error(f"--device {a.device}: give cpu or cuda[:N] (the host rows always run; cuda adds the device's)")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {a.device}: this torch has no CUDA device (torch {torch.__version__}); run on the CPU")
    torch.manual_seed(0)
    model = KoopmanForwardModel(a.state_dim, a.action_dim, latent_dim=a.latent).eval().requires_grad_(False)
    with torch.no_grad():
        K = model.operator(torch.rand(a.batch, a.action_dim) * 2 - 1).contiguous()

    def timed(fn, sync=lambda: None) -> float:
        fn()
        sync()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    rows = []

    def add(what: str, ms: float, cores) -> None:
        rows.append({"what": what, "ms_per_batch": ms, "cores": cores,
                     "hours_per_1M_steps": ms * 1e6 / 1e3 / 3600, "batch": a.batch, "latent": a.latent})

    torch.set_num_threads(1)
    add("host torch.linalg.eig alone, 1 thread", timed(lambda: torch.linalg.eig(K)), 1)
    add("host eigendecompose (eig + inverse + guard), 1 worker",
        timed(lambda: eigendecompose(K, exact_cond=False, split=False)), 1)
    for workers in a.workers:
        if workers == 1:
            continue
        parts = torch.tensor_split(K, workers)
        with thread_pool(workers, 1, "eig-bench") as pool:
            ms = timed(lambda: list(pool.map(lambda k: eigendecompose(k, exact_cond=False, split=False), parts)))
        add(f"host eigendecompose, batch split over {workers} workers", ms, workers)
    if a.device != "cpu":
        dev = torch.device(a.device)
        Kd = K.to(dev)
        sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
        add(f"{a.device} torch.linalg.eig alone", timed(lambda: torch.linalg.eig(Kd), sync), "device")
        add(f"{a.device} eigendecompose (eig + inverse + guard)",
            timed(lambda: eigendecompose(Kd, exact_cond=False, split=False), sync), "device")

    head = (f"# Eigen-decomposition of one batch of K(a)\n\n"
            f"Batch {a.batch} operators of {a.latent}x{a.latent} (float32), {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} logical CPUs, torch {torch.__version__}; median of {a.repeats} after a warm-up.\n"
            f"Hours per 1M steps = the decomposition alone, one batch per step, at that rate.\n\n")
    lines = ["| what | cores | ms per batch | hours per 1M steps |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['cores']} | {r['ms_per_batch']:.1f} | {r['hours_per_1M_steps']:.1f} |" for r in rows]
    text = head + "\n".join(lines) + "\n"
    print(text)
    write_results(a.out, "eig", text, rows)


if __name__ == "__main__":
    main()
