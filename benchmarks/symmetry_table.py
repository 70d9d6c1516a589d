"""The symmetry table of KFC/KFC++: its build time, its size, and the error of each storage dtype.

    .venv/bin/python benchmarks/symmetry_table.py                       # 1M transitions, every core, KFC++
    .venv/bin/python benchmarks/symmetry_table.py --n 100000 --workers 1 2
    python benchmarks/symmetry_table.py --device cuda                   # on a GPU machine (gpu_check.sh)

Operators and latent codes come from a paper-sized ``KoopmanForwardModel`` (latent 32, hidden 512) on
halfcheetah-shaped random data (17-d states, 6-d actions). With ``--koopman FILE`` (a ``save_koopman`` file) the
errors are measured on that trained model instead, whose operators are closer to each other and to the unit
circle than a random model's.

1. **Build**: the whole table of ``--n`` rows (``kfc_lite.symmetry_table.symmetry_table``, float16 storage as
   training uses), once per entry of ``--workers``, each into a fresh folder: seconds, rows per second and the
   minutes a 1M-row table takes at that rate.
2. **Storage**: on ``--sample`` rows, for float32, float16 and bfloat16 storage: bytes per row and for 1M rows,
   the commutation error of the symmetry a row applies, and, against the per-batch construction that decomposes
   ``K(a)`` in the step (same ``eps``), the relative error of the moved latent state and of the augmented state
   (both relative to the size of the shift they carry).

Results: a table on stdout and ``symmetry_table.md`` / ``symmetry_table.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from _timing import write_results

from kfc_lite.info import cpu_name


def storage_errors(model, data: dict, variant: str, sample: int, seed: int = 0) -> list[dict]:
    """Errors of each storage dtype against the per-batch construction, on the first ``sample`` rows."""
    import torch

    from kfc_lite.symmetry import kfc_symmetry, kfcpp_symmetry
    from kfc_lite.symmetry_table import STORAGE_DTYPES, TableSettings, build_rows, moved_latents

    device = next(model.parameters()).device
    s, a, s2 = (
        torch.as_tensor(data[k][:sample], device=device) for k in ("observations", "actions", "next_observations")
    )
    g = torch.Generator().manual_seed(seed)
    n = model.latent_dim
    eps = torch.randn(sample, n, generator=g) * 3e-3 if variant == "kfc++" else torch.randn(sample, generator=g)
    eps = eps.to(device)
    with torch.no_grad():
        K = model.operator(a)
        sigma, valid = kfcpp_symmetry(K, eps) if variant == "kfc++" else kfc_symmetry(K, eps)
        z = model.encode(torch.stack([s, s2], dim=1))
        want = z + (sigma.unsqueeze(1) @ z.unsqueeze(-1)).squeeze(-1)
        x_want, x0 = model.decode(want), model.decode(z)
        out = []
        for storage in STORAGE_DTYPES:
            rows = build_rows(model, s, a, s2, TableSettings(variant=variant, storage=storage), storage_round=True)
            got = moved_latents(rows, eps)
            ok = valid & rows.valid
            latent_err = ((got - want).norm(dim=-1) / (want - z).norm(dim=-1))[ok]
            state_err = ((model.decode(got) - x_want).norm(dim=-1) / (x_want - x0).norm(dim=-1))[ok]
            size = STORAGE_DTYPES[storage].itemsize
            m = n if variant == "kfc++" else 2
            per_row = 2 * n * 4 + n * m * size + 1 + 4 + ((n * 2 * size + n) if variant == "kfc++" else 0)
            out.append(
                {
                    "variant": variant,
                    "storage": storage,
                    "bytes_per_row": per_row,
                    "gb_per_million_rows": per_row * 1e6 / 2**30,
                    "commutation_error_median": float(rows.commutation[ok].median()),
                    "commutation_error_max": float(rows.commutation[ok].max()),
                    "latent_error_median": float(latent_err.median()),
                    "latent_error_max": float(latent_err.max()),
                    "state_error_median": float(state_err.median()),
                    "state_error_max": float(state_err.max()),
                    "verdicts_as_per_batch": float((rows.valid == valid).float().mean()),
                    "fallback_rate": 1 - float(rows.valid.float().mean()),
                }
            )
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rows of the built table")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="build threads (default: every core)")
    p.add_argument("--variants", nargs="+", default=["kfc++"], choices=["kfc++", "kfc"])
    p.add_argument("--sample", type=int, default=4096, help="rows on which the storage errors are measured")
    p.add_argument("--koopman", help="a trained Koopman model (save_koopman file) instead of random weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--state-dim", type=int, default=17)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from kfc_lite.koopman import KoopmanForwardModel, load_koopman
    from kfc_lite.settings import available_cores
    from kfc_lite.symmetry_table import TableSettings, symmetry_table

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: this torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    if a.koopman:
        model = load_koopman(a.koopman, map_location=a.device)
        ds, da = model.state_dim, model.action_dim
    else:
        ds, da = a.state_dim, a.action_dim
        model = KoopmanForwardModel(ds, da).to(a.device)
    model = model.eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.standard_normal((a.n, ds), dtype=np.float32),
        "actions": rng.uniform(-1, 1, (a.n, da)).astype(np.float32),
        "next_observations": rng.standard_normal((a.n, ds), dtype=np.float32),
    }
    workers = a.workers or [available_cores()]
    builds = []
    for variant in a.variants:
        for w in workers:
            folder = tempfile.mkdtemp(prefix="kfc-table-bench-")
            try:
                t0 = time.perf_counter()
                table = symmetry_table(
                    model, data, TableSettings(variant=variant, storage="float16"), folder, workers=w, progress=True
                )
                seconds = time.perf_counter() - t0  # key, build, checksums and load
                builds.append(
                    {
                        "variant": variant,
                        "rows": a.n,
                        "workers": w,
                        "device": a.device,
                        "seconds": seconds,
                        "build_seconds": table.build_seconds,
                        "rows_per_second": a.n / seconds,
                        "minutes_per_million_rows": 1e6 / (a.n / seconds) / 60,
                        "bytes_per_row": table.bytes_per_row,
                        "fallback_rate": table.fallback_rate,
                    }
                )
                print(builds[-1], file=sys.stderr)
            finally:
                del table
                shutil.rmtree(folder, ignore_errors=True)
    errors = [row for variant in a.variants for row in storage_errors(model, data, variant, min(a.sample, a.n))]

    lines = [
        "# The symmetry table: build time, size and storage error\n",
        f"Command: `{' '.join(['symmetry_table.py'] + (argv if argv is not None else sys.argv[1:]))}`  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs ({available_cores()} usable); torch "
        f"{torch.__version__}; device {a.device}; model: "
        f"{a.koopman or 'paper-sized KoopmanForwardModel with random weights'} ({ds}-d states, {da}-d actions, "
        f"latent {model.latent_dim})\n",
        "## Build (float16 storage; seconds include the key, the checksums and loading the result)\n",
        "| variant | rows | workers | device | seconds | rows/s | minutes per 1M rows | bytes per row "
        "| fall-back rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in builds:
        lines.append(
            f"| {b['variant']} | {b['rows']} | {b['workers']} | {b['device']} | {b['seconds']:.1f} | "
            f"{b['rows_per_second']:.0f} | {b['minutes_per_million_rows']:.2f} | {b['bytes_per_row']} | "
            f"{b['fallback_rate']:.4f} |"
        )
    lines += [
        "",
        f"## Storage dtype (on {min(a.sample, a.n)} rows; errors relative to the size of the shift, against "
        "the per-batch construction with the same eps)\n",
        "| variant | storage | bytes per row | GiB per 1M rows | commutation error (median / max) | "
        "moved-latent error (median / max) | augmented-state error (median / max) | verdicts as per batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in errors:
        lines.append(
            f"| {e['variant']} | {e['storage']} | {e['bytes_per_row']} | {e['gb_per_million_rows']:.2f} | "
            f"{e['commutation_error_median']:.1e} / {e['commutation_error_max']:.1e} | "
            f"{e['latent_error_median']:.1e} / {e['latent_error_max']:.1e} | "
            f"{e['state_error_median']:.1e} / {e['state_error_max']:.1e} | {e['verdicts_as_per_batch']:.4f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(a.out, "symmetry_table", text, {"builds": builds, "storage": errors})
    return 0


if __name__ == "__main__":
    sys.exit(main())
