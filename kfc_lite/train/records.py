"""What both training loops write besides the rules of :mod:`kfc_lite.train.run_folder`: a metrics line, a JSON file
replaced whole, and every random generator's state, which a checkpoint holds so that a resumed run draws what an
uninterrupted one would."""

from __future__ import annotations

import json
import math
import os
import pathlib
import random

import numpy as np

__all__ = ["json_line", "append_metrics", "write_json_atomic", "rng_state", "set_rng_state"]


def json_line(row: dict) -> str:
    """One strict-JSON line: NaN and infinities (e.g. a statistic with no samples yet) become null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean) + "\n"


def append_metrics(run_dir: pathlib.Path, row: dict) -> None:
    """One more line of the run's ``metrics.jsonl`` (a ``train`` or an ``eval`` row)."""
    with open(pathlib.Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json_line(row))


def write_json_atomic(obj, path: pathlib.Path) -> None:
    """``path`` holds ``obj`` as JSON, written beside it and renamed, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def rng_state(device) -> dict:
    """Every random generator a step draws from (Python, NumPy, torch's CPU and, on CUDA, the device's)."""
    import torch

    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device) -> None:
    """Put back what :func:`rng_state` saved."""
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
