"""What every trial of one dataset shares, made once: the data file, the Koopman model and its symmetry tables.

KFC and KFC++ runs of a dataset all use one Koopman model (pre-trained with seed 0, ``TrainConfig.koopman_path``), so
that two methods differ only in how they sample symmetries, and one symmetry table per augmenter setting, cached
beside the model (:mod:`kfc_lite.symmetry_table`). Making them inside the trials would train the same model once per
trial, and twenty trials racing to build one table would spend twenty times the work. The sweep runs
:func:`prepare_dataset` once per dataset as a Ray task before the trials of that dataset start.

Every file is written under a temporary name and renamed when complete, and ``koopman.json`` is written last: a
task whose node dies half-way leaves nothing that looks finished, and its retry starts the missing part again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import numpy as np


def _replace_atomic(write, path: pathlib.Path) -> None:
    """``write(tmp)`` then rename to ``path``: readers see the old file, no file, or the whole new one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_data(spec, ds, progress: bool = False) -> str:
    """The dataset as ``TrainConfig.dataset`` will name it; a replica is built (seed 0) the first time."""
    from kfc_lite import data as kdata

    path = spec.dataset_path(ds)
    if ds.kind == "replica":
        path = pathlib.Path(path)
        if not path.is_file():
            from kfc_lite.data.replicas import make_replica

            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"building {ds.name} ({ds.size or 'D4RL size'} transitions) -> {path}", flush=True)
            _replace_atomic(lambda tmp: make_replica(ds.name, size=ds.size, seed=0, out=tmp, progress=progress), path)
        return str(path)
    if ds.kind == "name":  # fetched into this node's dataset cache now, so that a missing file fails here
        kdata.load(ds.name, download=spec.download, progress=progress)
    return str(path)


def model_errors(model, q: dict, n: int = 5000) -> dict:
    """How well the frozen model fits the data, on ``n`` non-terminal transitions (seed 0).

    ``relative_one_step_error``: ||f(s,a) - s'|| / ||s' - s|| (means), < 1 is better than predicting no change;
    ``reconstruction_offset``: mean ||D(E(s)) - s||, the shift every plain (not gauged) symmetry adds to a state
    even with sigma = 0; ``state_norm``: mean ||s||, for scale.
    """
    import torch

    rng = np.random.default_rng(0)
    nonterm = np.flatnonzero(~q["terminals"])
    idx = rng.choice(nonterm, size=min(n, len(nonterm)), replace=False)
    s, a, s2 = (torch.as_tensor(q[k][idx]) for k in ("observations", "actions", "next_observations"))
    with torch.no_grad():
        pred = model(s, a)
        recon = model.decode(model.encode(s))
    return {
        "relative_one_step_error": float((pred - s2).norm(dim=1).mean() / (s2 - s).norm(dim=1).mean()),
        "reconstruction_offset": float((recon - s).norm(dim=1).mean()),
        "state_norm": float(s.norm(dim=1).mean()),
    }


def ensure_koopman(spec, ds, q: dict, device, progress: bool = False) -> dict:
    """Pre-train the dataset's Koopman model once (seed 0) and keep its diagnostics beside it (koopman.json).

    On D4RL's sizes the pre-training takes hours, so it keeps a checkpoint after every epoch
    (``koopman.partial.pt`` beside the model): a sweep stopped during it continues from its last epoch when run
    again, and the checkpoint is removed once the model is saved."""
    from kfc_lite.files import remove_verified
    from kfc_lite.koopman import fit_koopman, load_koopman, save_koopman
    from kfc_lite.koopman.fit import KoopmanTrainConfig

    path = spec.koopman_path(ds)
    info_path = path.with_name("koopman.json")
    if path.is_file() and info_path.is_file():
        return json.loads(info_path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    partial = path.with_name("koopman.partial.pt")
    config = KoopmanTrainConfig(**{"seed": 0, **spec.koopman})
    model, history = fit_koopman(q, config, device=device, progress=progress, checkpoint=partial)
    wall = time.perf_counter() - t0
    timed = history.get("seconds", [])
    if len(timed) == len(history["epoch"]):
        # every epoch timed: the whole pre-training over all its sittings (this call alone, when uninterrupted,
        # also counts what the epochs do not: the setup, the checkpoints, the final k-step curve)
        wall = max(wall, float(sum(timed)))
    _replace_atomic(lambda tmp: save_koopman(model, tmp, history=history, dataset=spec.dataset_path(ds)), path)
    remove_verified(partial)
    model = load_koopman(path, map_location="cpu")
    info = {
        **model_errors(model, q),
        "val_forward": float(history["val_forward"][-1]),
        "val_recon": float(history["val_recon"][-1]),
        "val_multistep": float(history["val_multistep"][-1]),
        "epochs": len(history["epoch"]),
        "steps": int(history["steps"][-1]),
        "stopped": history.get("stopped"),
        "wall_s": wall,
        "config": dict(spec.koopman),
    }
    _replace_atomic(lambda tmp: tmp.write_text(json.dumps(info, indent=1)), info_path)
    return info


def ensure_tables(spec, ds, q: dict, device, progress: bool = False) -> list[str]:
    """Build the symmetry table of every augmenter setting the dataset's KFC trials use (one per setting)."""
    from kfc_lite.koopman import load_koopman
    from kfc_lite.rl.augment import KoopmanAugmenter, make_augmenter
    from kfc_lite.symmetry_table import symmetry_table

    model = load_koopman(spec.koopman_path(ds), map_location=device).requires_grad_(False).eval()
    built, paths = set(), []
    for trial in spec.trials():
        if trial.dataset != ds:
            continue
        cfg = spec.train_config(trial)
        augmenter = make_augmenter(cfg.method, model, **cfg.augmenter_kwargs())
        if not isinstance(augmenter, KoopmanAugmenter):
            continue
        settings = dataclasses.replace(augmenter.table_settings, storage=cfg.augment.table_storage)
        if settings in built:
            continue
        built.add(settings)
        table = symmetry_table(
            model, q, settings, spec.dataset_dir(ds), memory_budget_gb=cfg.augment.table_memory_gb, progress=progress
        )
        paths.append(str(table.path))
    return paths


def prepare_dataset(spec, ds, progress: bool = False) -> dict:
    """Everything the trials of ``ds`` share; returns what was made (and the node it was made on)."""
    import torch

    # the task's CPU share as torch threads: a Ray task's process does not take it from the request by itself
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.preparation_cpus)))
    try:
        return _prepare_dataset(spec, ds, progress)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process keeps its own


def _prepare_dataset(spec, ds, progress: bool) -> dict:
    from kfc_lite import data as kdata
    from kfc_lite.settings import resolve_device

    t0 = time.perf_counter()
    data_path = ensure_data(spec, ds, progress)
    out = {"dataset": ds.label, "data": data_path, "koopman": None, "tables": []}
    if spec.needs_koopman():
        device = resolve_device(spec.device)
        q = kdata.qlearning_dataset(kdata.load(data_path, download=spec.download, progress=False))
        out["koopman"] = ensure_koopman(spec, ds, q, device, progress)
        out["tables"] = ensure_tables(spec, ds, q, device, progress)
    out["seconds"] = time.perf_counter() - t0
    return out
