"""Time d3rlpy's CQL on synthetic D4RL-shaped data; run by throughput.py in d3rlpy's own environment.

Prints one JSON record (``--serve``: timed blocks on request, as ``_kfc_worker.py``). Not imported by kfc_lite:
d3rlpy pins gymnasium==1.0.0, so it lives in a virtual environment of its own (see throughput.py).
"""

import json
import pathlib
import resource
import statistics
import sys
import time

import numpy as np
import torch
from _timing import measure, worker_parser


def main():
    p = worker_parser()
    p.add_argument(
        "--tune-malloc",
        action="store_true",
        help="apply kfc_lite's C-allocator setting (kfc_lite.settings.tune_cpu_allocator) to d3rlpy too",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.tune_malloc:  # kfc_lite.settings needs only NumPy, which this environment has
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
        from kfc_lite.settings import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("--tune-malloc: the allocator setting is not available here (glibc on Linux only)")
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    rng = np.random.default_rng(a.seed)
    obs = rng.standard_normal((a.n, a.state_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (a.n, a.action_dim)).astype(np.float32)
    rew = rng.standard_normal(a.n).astype(np.float32)
    term = np.zeros(a.n, dtype=np.float32)
    timeouts = np.zeros(a.n, dtype=np.float32)
    timeouts[999::1000] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(obs, act, rew, term, timeouts=timeouts)
    enc = VectorEncoderFactory(a.hidden)
    # The KFC code's CQL: policy lr 1e-4, Q lr 3e-4, 10 sampled actions, Lagrangian threshold 10, weight 10.
    cql = d3rlpy.algos.CQLConfig(
        actor_learning_rate=1e-4,
        critic_learning_rate=3e-4,
        batch_size=256,
        n_action_samples=10,
        alpha_threshold=10.0,
        conservative_weight=10.0,
        actor_encoder_factory=enc,
        critic_encoder_factory=enc,
    ).create(device="cpu:0")
    cql.build_with_dataset(dataset)
    batches = [dataset.sample_transition_batch(256) for _ in range(a.warmup + a.steps)]
    for b in batches[: a.warmup]:
        cql.update(b)

    def block() -> float:
        t0 = time.perf_counter()
        for b in batches[a.warmup :]:
            cql.update(b)
        return time.perf_counter() - t0

    rates = measure(block, a.steps, a.repeats, a.serve)
    name = f"d3rlpy {d3rlpy.__version__}" + (" (kfc_lite's malloc setting)" if a.tune_malloc else "")
    print(
        json.dumps(
            {
                "implementation": name,
                "method": "cql",
                "precision": "fp32",
                "device": "cpu",
                "threads": a.threads,
                "steps_per_second": statistics.median(rates),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
