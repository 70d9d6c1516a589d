"""Does bf16 autocast change learning? Short offline runs in fp32 and bf16, two seeds each, same data, per method.

    .venv/bin/python benchmarks/precision.py                         # CQL on hopper-random-replica, 400 steps
    .venv/bin/python benchmarks/precision.py --methods cql s4rl kfc kfc++ --steps 300
    .venv/bin/python benchmarks/precision.py --dataset path.hdf5 --steps 2000 --seeds 0 1 2
    .venv/bin/python benchmarks/precision.py --methods cql s4rl kfc kfc++ --steps 300 --bf16 emulated

``--bf16 emulated`` runs bf16 autocast with its matrix products computed as bf16 hardware computes them but on
fp32 kernels (``bf16_emulation.py``): the way to run this check on a CPU without bf16 instructions, where torch's
own bf16 products are some 20 times slower than fp32.

The augmented methods get their augmentation as the training loop gives it (``augmented = augmenter(batch)``,
then ``agent.update(batch, augmented)``); KFC and KFC++ share one Koopman model, pre-trained here on the same
transitions with ``--koopman-steps`` steps (its quality does not matter for this question: what matters is
whether the critic resolves the shifts in both precisions alike).

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


def run(q: dict, method: str, precision: str, seed: int, a, model=None) -> tuple[list[dict], int]:
    """The logged rows of one run, and how many matrix products it computed in emulated bf16 (0 unless emulated)."""
    import contextlib

    from bf16_emulation import EmulatedBf16Products

    from kfc_lite.rl.augment import make_augmenter
    from kfc_lite.rl.replay import TransitionSampler
    from kfc_lite.rl.sac import SACCQL, SACConfig
    from kfc_lite.settings import seed_everything

    seed_everything(seed)
    ds, da = q["observations"].shape[1], q["actions"].shape[1]
    cfg = SACConfig.preset("kfc-code", hidden=tuple(a.hidden), bc_steps=a.bc_steps, precision=precision)
    agent = SACCQL(ds, da, cfg, device="cpu")
    augmenter = make_augmenter(method, model if method in ("kfc", "kfc++") else None)
    sampler = TransitionSampler(q, cfg.batch_size, "cpu", seed=seed)
    rows = []
    emulate = precision == "bf16" and a.bf16 == "emulated"
    with EmulatedBf16Products() if emulate else contextlib.nullcontext() as mode:
        for step in range(1, a.steps + 1):
            batch = sampler.sample()
            m = agent.update(batch, augmenter(batch), metrics=step % a.log_every == 0)
            if m:
                rows.append({k: m[k] for k in ("step",) + KEYS})
    return rows, (mode.products if emulate else 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dataset", default="hopper-random-replica", help="a dataset name or HDF5 path (kfc_lite.data.load)"
    )
    p.add_argument("--transitions", type=int, default=100_000, help="use the first N transitions")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--bc-steps", type=int, default=100, help="behaviour-cloning warm-up steps (the preset has 40k)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256], help="the networks' hidden layers")
    p.add_argument("--methods", nargs="+", default=["cql"], choices=["cql", "s4rl", "kfc", "kfc++"])
    p.add_argument("--koopman-steps", type=int, default=2000, help="pre-training steps of the KFC methods' model")
    p.add_argument(
        "--bf16",
        choices=["native", "emulated"],
        default="native",
        help="torch's own bf16 products, or their emulation on fp32 kernels (bf16_emulation.py)",
    )
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    if len(a.seeds) < 2:
        p.error("--seeds needs two seeds at least: the precision gap is judged against the gap between seeds")
    import numpy as np
    import torch

    from kfc_lite import data as kdata

    torch.set_num_threads(a.threads)
    q = kdata.qlearning_dataset(kdata.load(a.dataset, progress=False))
    q = {k: np.ascontiguousarray(v[: a.transitions]) for k, v in q.items()}
    model = None
    if {"kfc", "kfc++"} & set(a.methods):
        from kfc_lite.koopman import fit_koopman
        from kfc_lite.koopman.fit import KoopmanTrainConfig

        kcfg = KoopmanTrainConfig(seed=0, max_steps=a.koopman_steps, early_stopping=False)
        model, _ = fit_koopman(q, kcfg, device="cpu", progress=False)
        model = model.eval()
    runs, seconds, emulated = {}, {}, {}
    for method in a.methods:
        for seed in a.seeds:
            for precision in ("fp32", "bf16"):
                name = f"{method}-{precision}-seed{seed}"
                t0 = time.time()
                runs[name], emulated[name] = run(q, method, precision, seed, a, model)
                seconds[name] = time.time() - t0
                print(f"{name}: {seconds[name]:.0f} s", file=sys.stderr)

    # gaps: mean over logged steps of |curve A - curve B| / mean |curve|, per quantity
    def gap(x, y, key):
        u = np.array([r[key] for r in runs[x]])
        v = np.array([r[key] for r in runs[y]])
        return float(np.mean(np.abs(u - v)) / max(np.mean(np.abs(u)), 1e-12))

    s0, s1 = a.seeds[0], a.seeds[1]
    header = (
        "| method | quantity | fp32 vs bf16, seed "
        + " | fp32 vs bf16, seed ".join(map(str, a.seeds))
        + f" | seed {s0} vs seed {s1}, fp32 | seed {s0} vs seed {s1}, bf16 | bf16 within the seed gap |"
    )
    lines = [header, "|---" * (5 + len(a.seeds)) + "|"]
    summary = {}
    for method in a.methods:
        for key in KEYS:
            prec = [gap(f"{method}-fp32-seed{s}", f"{method}-bf16-seed{s}", key) for s in a.seeds]
            seedg = [
                gap(f"{method}-fp32-seed{s0}", f"{method}-fp32-seed{s1}", key),
                gap(f"{method}-bf16-seed{s0}", f"{method}-bf16-seed{s1}", key),
            ]
            within = max(prec) < min(seedg)
            summary.setdefault(method, {})[key] = {"precision_gap": prec, "seed_gap": seedg, "within": within}
            lines.append(
                f"| {method} | {key} | "
                + " | ".join(f"{g:.3f}" for g in prec + seedg)
                + f" | {'yes' if within else '**no**'} |"
            )
    text = (
        "# bf16 autocast vs fp32: learning curves\n\n"
        f"Command: `{' '.join(['precision.py'] + (argv or sys.argv[1:]))}`; torch {torch.__version__}; "
        f"{', '.join(a.methods)} (kfc-code preset, {'x'.join(map(str, a.hidden))}, "
        f"BC warm-up {a.bc_steps} steps"
        + (f"; KFC's Koopman model {a.koopman_steps} steps" if model is not None else "")
        + ") on the first "
        f"{len(q['observations'])} transitions of {a.dataset}, {a.steps} steps, {a.threads} thread(s).\n\n"
        + (
            "bf16 emulated: autocast on, its matrix products computed on bf16-rounded operands with fp32 "
            "accumulation and a bf16 result, as bf16 hardware computes them (`benchmarks/bf16_emulation.py`; "
            "`tests/test_bf16_emulation.py` compares it with torch's own bf16 products).\n\n"
            if a.bf16 == "emulated"
            else ""
        )
        + "Relative gap between two curves = mean over logged steps of |A - B| / mean |A|. bf16 changes learning "
        "less than the seed does when every precision gap is below both seed gaps (last column).\n\n"
        + "\n".join(lines)
        + "\n\n"
        "Wall time per run (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + "\n"
    )
    out = pathlib.Path(a.out)
    write_results(
        out, "precision", text, {"runs": runs, "summary": summary, "seconds": seconds, "emulated_products": emulated}
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(a.methods), len(KEYS), figsize=(4 * len(KEYS), 3.2 * len(a.methods)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for method, row_axes in zip(a.methods, axes):
        for ax, key in zip(row_axes, KEYS):
            for i, seed in enumerate(a.seeds):
                for precision, style in (("fp32", "-"), ("bf16", "--")):
                    rows = runs[f"{method}-{precision}-seed{seed}"]
                    ax.plot(
                        [r["step"] for r in rows],
                        [r[key] for r in rows],
                        style,
                        color=colors[i % len(colors)],
                        label=f"{precision}, seed {seed}",
                    )
            ax.set_title(f"{method}: {key}")
            ax.set_xlabel("gradient step")
            ax.set_ylabel(key.replace("_", " ") + (" (return units)" if key.startswith("q") else ""))
            if a.bc_steps:
                ax.axvline(a.bc_steps, color="0.7", lw=0.8)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{a.dataset}: fp32 (solid) vs bf16 autocast (dashed); grey line: end of BC warm-up")
    fig.tight_layout()
    fig.savefig(out / "precision.png", dpi=110)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
