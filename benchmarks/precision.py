"""Does bf16 autocast change learning? Short offline CQL runs in fp32 and bf16, two seeds each, same data.

    .venv/bin/python benchmarks/precision.py                         # hopper-random-replica, 400 steps
    .venv/bin/python benchmarks/precision.py --dataset path.hdf5 --steps 2000 --seeds 0 1 2

Every run starts from the same seed-determined networks and batches in both precisions (the sampler and the
agent are seeded alike), so the fp32-bf16 gap of one seed is set against the gap between two seeds of the
same precision: if bf16 changes learning less than the seed does, the curves of one seed overlap across
precisions while the seeds separate. Logs the step's losses and Q-values every ``--log-every`` steps; writes
``benchmarks/results/precision.png`` (curves), ``precision.json`` (raw) and ``precision.md`` (the gaps).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

from _timing import write_results

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
KEYS = ("td_loss", "cql_gap", "q_data", "actor_loss")


def run(q: dict, precision: str, seed: int, a) -> list[dict]:
    from kfc_lite.rl.replay import TransitionSampler
    from kfc_lite.rl.sac import SACCQL, SACConfig
    from kfc_lite.settings import seed_everything

    seed_everything(seed)
    ds, da = q["observations"].shape[1], q["actions"].shape[1]
    cfg = SACConfig.preset("kfc-code", hidden=(256, 256, 256), bc_steps=a.bc_steps, precision=precision)
    agent = SACCQL(ds, da, cfg, device="cpu")
    sampler = TransitionSampler(q, cfg.batch_size, "cpu", seed=seed)
    rows = []
    for step in range(1, a.steps + 1):
        m = agent.update(sampler.sample(), metrics=step % a.log_every == 0)
        if m:
            rows.append({k: m[k] for k in ("step",) + KEYS})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="hopper-random-replica", help="a dataset name or HDF5 path (kfc_lite.data.load)")
    p.add_argument("--transitions", type=int, default=100_000, help="use the first N transitions")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--bc-steps", type=int, default=100, help="behaviour-cloning warm-up steps (the preset has 40k)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from kfc_lite import data as kdata

    torch.set_num_threads(a.threads)
    q = kdata.qlearning_dataset(kdata.load(a.dataset, progress=False))
    q = {k: np.ascontiguousarray(v[: a.transitions]) for k, v in q.items()}
    runs, seconds = {}, {}
    for seed in a.seeds:
        for precision in ("fp32", "bf16"):
            t0 = time.time()
            runs[f"{precision}-seed{seed}"] = run(q, precision, seed, a)
            seconds[f"{precision}-seed{seed}"] = time.time() - t0
            print(f"{precision} seed {seed}: {seconds[f'{precision}-seed{seed}']:.0f} s", file=sys.stderr)

    # gaps: mean over logged steps of |curve A - curve B| / mean |curve|, per quantity
    def gap(x, y, key):
        u = np.array([r[key] for r in runs[x]])
        v = np.array([r[key] for r in runs[y]])
        return float(np.mean(np.abs(u - v)) / max(np.mean(np.abs(u)), 1e-12))

    s0, s1 = a.seeds[0], a.seeds[1] if len(a.seeds) > 1 else None
    lines = ["| quantity | fp32 vs bf16, seed " + " | fp32 vs bf16, seed ".join(map(str, a.seeds))
             + (f" | seed {s0} vs seed {s1}, fp32 | seed {s0} vs seed {s1}, bf16 |" if s1 is not None else " |"),
             "|---" * (1 + len(a.seeds) + (2 if s1 is not None else 0)) + "|"]
    summary = {}
    for key in KEYS:
        prec = [gap(f"fp32-seed{s}", f"bf16-seed{s}", key) for s in a.seeds]
        seedg = [gap(f"fp32-seed{s0}", f"fp32-seed{s1}", key), gap(f"bf16-seed{s0}", f"bf16-seed{s1}", key)] if s1 is not None else []
        summary[key] = {"precision_gap": prec, "seed_gap": seedg}
        lines.append(f"| {key} | " + " | ".join(f"{g:.3f}" for g in prec + seedg) + " |")
    text = (f"# bf16 autocast vs fp32: learning curves\n\nCommand: `{' '.join(['precision.py'] + (argv or sys.argv[1:]))}`; "
            f"torch {torch.__version__}; CQL (kfc-code preset, 3x256, BC warm-up {a.bc_steps} steps) on the first "
            f"{len(q['observations'])} transitions of {a.dataset}, {a.steps} steps, {a.threads} thread(s).\n\n"
            "Relative gap between two curves = mean over logged steps of |A - B| / mean |A|. bf16 changes learning "
            "less than the seed does when the precision gaps are below the seed gaps.\n\n" + "\n".join(lines) + "\n\n"
            "Wall time per run (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + "\n")
    out = pathlib.Path(a.out)
    write_results(out, "precision", text, {"runs": runs, "summary": summary, "seconds": seconds})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, KEYS):
        for i, seed in enumerate(a.seeds):
            for precision, style in (("fp32", "-"), ("bf16", "--")):
                rows = runs[f"{precision}-seed{seed}"]
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], style, color=colors[i % len(colors)],
                        label=f"{precision}, seed {seed}")
        ax.set_title(key)
        ax.set_xlabel("gradient step")
        ax.set_ylabel(key.replace("_", " ") + (" (return units)" if key.startswith("q") else ""))
        if a.bc_steps:
            ax.axvline(a.bc_steps, color="0.7", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"CQL on {a.dataset}: fp32 (solid) vs bf16 autocast (dashed); grey line: end of BC warm-up")
    fig.tight_layout()
    fig.savefig(out / "precision.png", dpi=110)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
