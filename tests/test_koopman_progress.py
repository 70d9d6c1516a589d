"""benchmarks/koopman_progress.py: a running pre-training's checkpoint measured without touching it, one row per
epoch, and the finished model after it."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("koopman_progress", ROOT / "benchmarks" / "koopman_progress.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_rows_per_epoch_then_the_final_model(dataset, tmp_path):
    from kfc_lite import data as kdata
    from kfc_lite.koopman import KoopmanForwardModel, KoopmanTrainConfig, fit_koopman, save_koopman
    from kfc_lite.sweep.prepare import model_errors

    script = _script()
    q = kdata.qlearning_dataset(kdata.load(dataset))
    partial, results = tmp_path / "koopman.partial.pt", tmp_path / "results"
    config = KoopmanTrainConfig(latent_dim=4, hidden_dim=16, max_epochs=3, early_stopping=False, multistep_k=2)
    model, history = fit_koopman(q, config, device="cpu", progress=False, checkpoint=partial)
    args = ["--checkpoint", str(partial), "--data", dataset, "--results", str(results)]
    before = partial.read_bytes()

    script.main(args)
    script.main(args)  # the same epoch again: measured once
    rows = json.loads((results / "koopman_progress.json").read_text())
    # the last epoch is not checkpointed (the caller saves the model), so the checkpoint holds the one before
    saved = torch.load(partial, weights_only=False)
    assert saved["epoch"] == history["epoch"][-2]
    assert [(r["epoch"], r["finished"]) for r in rows] == [(saved["epoch"], False)]
    at_checkpoint = KoopmanForwardModel(11, 3, 4, 16)
    at_checkpoint.load_state_dict(saved["model"])
    offset = model_errors(at_checkpoint.eval(), q)["reconstruction_offset"]
    assert rows[0]["reconstruction_offset"] == pytest.approx(offset)
    assert rows[0]["val_recon"] == pytest.approx(history["val_recon"][-2])
    assert partial.read_bytes() == before  # read-only

    final = tmp_path / "koopman.pt"
    save_koopman(model, final, history=history)
    script.main(["--checkpoint", str(final), "--data", dataset, "--results", str(results)])
    rows = json.loads((results / "koopman_progress.json").read_text())
    last = int(history["epoch"][-1])
    assert [(r["epoch"], r["finished"]) for r in rows] == [(saved["epoch"], False), (last, True)]
    assert rows[1]["reconstruction_offset"] == pytest.approx(
        model_errors(model.cpu().eval(), q)["reconstruction_offset"]
    )
    table = (results / "koopman_progress.md").read_text()
    assert f"| {last} (final) |" in table and f"| {saved['epoch']} |" in table


def test_a_missing_checkpoint_is_a_sentence(dataset, tmp_path):
    with pytest.raises(SystemExit, match="has the pre-training started"):
        _script().main(["--checkpoint", str(tmp_path / "koopman.partial.pt"), "--data", dataset, "--results", "x"])
