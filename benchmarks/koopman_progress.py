"""How a long Koopman pre-training is doing: its reconstruction offset and one-step error, read while it runs.

    .venv/bin/python benchmarks/koopman_progress.py \
        --checkpoint runs/learning/hopper-1m-10000steps/hopper-medium-replica-full/koopman.partial.pt \
        --data runs/learning/data/hopper-medium-replica-full.hdf5 \
        --results benchmarks/results/hopper-medium-1m

On D4RL's sizes the paper's pre-training takes hours. It keeps a checkpoint after every epoch (``koopman.partial.pt``,
then ``koopman.pt`` once it is done); this script loads the latest one, read-only, and measures the model on 5,000
non-terminal transitions of the data (seed 0, as the sweep's ``koopman.json``): the mean reconstruction offset
``||D(E(s)) - s||`` (what every plain KFC/KFC++ move carries, docs/koopman-quality.md) and the one-step error
relative to predicting no change. Each call adds one row per new epoch to ``koopman_progress.json`` and rewrites
``koopman_progress.md`` in ``--results``; an epoch already there is not measured again, so the table can be
brought up to date at any time without touching the running job.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys

import torch

from kfc_lite import data as kdata
from kfc_lite.files import load_verified
from kfc_lite.koopman import KoopmanForwardModel, load_koopman
from kfc_lite.sweep.prepare import model_errors

#: the history columns shown beside the measured ones (the last value of each, at the checkpoint's epoch)
HISTORY_COLUMNS = ("train_forward", "train_recon", "val_forward", "val_recon", "val_multistep")


def load_model(checkpoint: pathlib.Path, state_dim: int, action_dim: int):
    """The model and its pre-training history from a pre-training checkpoint or a finished ``koopman.pt``."""
    if checkpoint.name.endswith(".partial.pt"):
        found = load_verified(checkpoint, what="Koopman pre-training checkpoint")
        if found is None:
            raise SystemExit(f"no checkpoint at {checkpoint} (nor its .prev.pt): has the pre-training started?")
        state = found.obj
        cfg = state["config"]
        model = KoopmanForwardModel(state_dim, action_dim, cfg["latent_dim"], cfg["hidden_dim"])
        model.load_state_dict(state["model"])
        return model.eval(), state["history"], False
    if not checkpoint.is_file():
        raise SystemExit(f"no model at {checkpoint}")
    model = load_koopman(checkpoint, map_location="cpu", state_dim=state_dim, action_dim=action_dim)
    return model.eval(), model.extra.get("history") or {}, True


def progress_row(model, history: dict, q: dict, finished: bool) -> dict:
    row = {
        "epoch": int(history["epoch"][-1]),
        "steps": int(history["steps"][-1]),
        "finished": finished,
        "stopped": history.get("stopped") if finished else None,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    row.update({k: float(history[k][-1]) for k in HISTORY_COLUMNS if history.get(k)})
    with torch.no_grad():
        row.update(model_errors(model, q))
    return row


def write_table(rows: list[dict], out: pathlib.Path, checkpoint: pathlib.Path, data: pathlib.Path) -> None:
    lines = [
        "# Koopman pre-training, as it goes",
        "",
        f"Checkpoint `{checkpoint.name}` of the run folder `{checkpoint.parent.name}`, measured on 5,000 "
        f"non-terminal transitions of `{data.name}` (seed 0) by `benchmarks/koopman_progress.py`. Offset: mean "
        "||D(E(s)) - s||, the move every plain KFC/KFC++ augmentation carries (docs/koopman-quality.md); one-step "
        "error: ||f(s, a) - s'|| / ||s' - s||, below 1 is better than predicting no change.",
        "",
        "| epoch | steps | val. forward loss | val. reconstruction loss | offset | offset / mean norm of s | "
        "one-step error | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['epoch']}{' (final)' if r['finished'] else ''} | {r['steps']:,} | "
            f"{r.get('val_forward', float('nan')):.4g} | {r.get('val_recon', float('nan')):.4g} | "
            f"{r['reconstruction_offset']:.4f} | "
            f"{r['reconstruction_offset'] / r['state_norm']:.4f} | {r['relative_one_step_error']:.3f} | "
            f"{r['measured_at']} |"
        )
    (out / "koopman_progress.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=pathlib.Path, help="koopman.partial.pt or koopman.pt")
    p.add_argument("--data", required=True, type=pathlib.Path, help="the HDF5 file the model is trained on")
    p.add_argument("--results", required=True, type=pathlib.Path, help="folder of koopman_progress.json/.md")
    a = p.parse_args(argv)
    if not a.data.is_file():
        raise SystemExit(f"no data file {a.data}")
    q = kdata.qlearning_dataset(kdata.load(a.data))
    model, history, finished = load_model(a.checkpoint, q["observations"].shape[1], q["actions"].shape[1])
    a.results.mkdir(parents=True, exist_ok=True)
    log = a.results / "koopman_progress.json"
    rows = json.loads(log.read_text()) if log.is_file() else []
    epoch = int(history["epoch"][-1])
    if any(r["epoch"] == epoch and r["finished"] == finished for r in rows):
        print(f"epoch {epoch} is already in {log}: nothing new to measure", file=sys.stderr)
    else:
        rows.append(progress_row(model, history, q, finished))
        rows.sort(key=lambda r: (r["epoch"], r["finished"]))
        log.write_text(json.dumps(rows, indent=1) + "\n")
    write_table(rows, a.results, a.checkpoint, a.data)
    print((a.results / "koopman_progress.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
