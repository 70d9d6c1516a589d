"""Time one kfc_lite method (cql, s4rl, kfc, kfc++) on synthetic D4RL-shaped data; run by throughput.py.

Prints one JSON record. With ``--serve`` it warms up, then waits on stdin: each ``run`` line times one block
of ``--steps`` updates and answers ``{"seconds": ...}``; ``stop`` answers the final record. throughput.py
drives all workers this way in turns, so every configuration sees the same machine load (the machine is
shared; back-to-back runs of a few minutes each were up to 1.7x apart on the same code).

The Koopman model for kfc/kfc++ has the paper's size (latent 32, hidden 512) and
random weights: its cost, not its quality, is what is timed here. Batches come from a ``TransitionSampler``
(uniform, as d3rlpy's). KFC and KFC++ read their symmetries from the data's symmetry table, built (or loaded
from ``--table-cache``) before the timing; its build time is in the record. A baseline revision from before the
table decomposes each batch's ``K(a)`` in the step, as it did then.
"""

import json
import pathlib
import resource
import statistics
import time

import torch
from _timing import measure, worker_parser

import kfc_lite
from kfc_lite.koopman import KoopmanForwardModel
from kfc_lite.rl.augment import make_augmenter
from kfc_lite.rl.replay import TransitionSampler
from kfc_lite.rl.sac import SACCQL, SACConfig
from kfc_lite.settings import tune_cpu_allocator


def attach_table(augmenter, model, data, a) -> dict | None:
    """Build (or load) the data's symmetry table and give it to the augmenter; None where this kfc_lite (a
    baseline revision) has no table."""
    import dataclasses
    import tempfile

    try:
        from kfc_lite.symmetry_table import symmetry_table
    except ImportError:
        return None
    settings = dataclasses.replace(augmenter.table_settings, storage=a.table_storage)
    cache = a.table_cache or tempfile.mkdtemp(prefix="kfc-table-")
    host = {k: data[k].cpu().numpy() for k in ("observations", "actions", "next_observations")}
    table = symmetry_table(model, host, settings, cache, progress=False)
    augmenter.use_table(table.to(data["observations"].device))
    summary = table.summary()
    return {k: summary[k] for k in ("rows", "bytes_per_row", "build_seconds", "mapped", "fallback_rate")}


def main():
    p = worker_parser()
    p.add_argument("--method", default="cql")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--table-storage", default="float16", help="dtype of the symmetry table's bases (KFC, KFC++)")
    p.add_argument("--table-cache", default=None, help="folder of cached symmetry tables (default: a temporary one)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    n, ds, da = a.n, a.state_dim, a.action_dim
    data = {
        "observations": torch.randn(n, ds, device=dev),
        "actions": torch.rand(n, da, device=dev) * 2 - 1,
        "rewards": torch.randn(n, device=dev),
        "next_observations": torch.randn(n, ds, device=dev),
        "terminals": torch.zeros(n, dtype=torch.bool, device=dev),
    }
    model = None
    if a.method in ("kfc", "kfc++"):
        model = KoopmanForwardModel(ds, da).to(dev).eval().requires_grad_(False)
    augmenter = make_augmenter(a.method, model=model)
    table_info = None
    if model is not None:
        table_info = attach_table(augmenter, model, data, a)
    # bc_steps=0: time the regular (post-warm-up) step, which is what almost all of a run does.
    cfg = SACConfig.preset("kfc-code", hidden=tuple(a.hidden), precision=a.precision, compile=a.compile, bc_steps=0)
    tune_cpu_allocator()  # as a training run does (kfc_lite.train): the timed steps are a training run's steps
    agent = SACCQL(ds, da, cfg, device=dev)
    batches = TransitionSampler(data, 256, dev, seed=a.seed, mode="uniform")

    def step(agent, augmenter, batches):
        batch = batches.sample()
        agent.update(batch, augmenter(batch), metrics=False)

    for _ in range(a.warmup):
        step(agent, augmenter, batches)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def block() -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step(agent, augmenter, batches)
        sync()
        return time.perf_counter() - t0

    rates = measure(block, a.steps, a.repeats, a.serve)
    rec = {
        "implementation": "kfc_lite",
        "method": a.method,
        "precision": a.precision,
        "device": str(dev),
        "threads": a.threads,
        "symmetry_table": table_info,
        "steps_per_second": statistics.median(rates),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "kfc_lite_path": str(pathlib.Path(kfc_lite.__file__).parent),
    }
    if dev.type == "cuda":
        rec["peak_device_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
