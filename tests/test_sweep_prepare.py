"""A sweep's per-dataset Koopman pre-training (kfc_lite.sweep.prepare), without Ray: stopped during it, the sweep
continues from its last epoch and ends with the same model as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from kfc_lite import data as kdata
from kfc_lite.sweep.prepare import ensure_koopman
from kfc_lite.sweep.sweep_file import spec_from_dict

KOOPMAN = {"max_epochs": 4, "early_stopping": False, "hidden_dim": 16, "latent_dim": 4, "batch_size": 64}


def spec(tmp_path, dataset, name, **changes):
    """A one-dataset KFC++ sweep at the tiny budget; ``changes`` are keys of the sweep file."""
    raw = {
        "name": name,
        "out": str(tmp_path / name),
        "datasets": [dataset],
        "methods": ["kfc++"],
        "seeds": [0],
        "budget": "tiny",
        "koopman": KOOPMAN,
        "device": "cpu",
    }
    return spec_from_dict({**raw, **changes})


def test_a_sweep_stopped_during_koopman_pretraining_continues_from_its_last_epoch(tmp_path, dataset, monkeypatch):
    from kfc_lite.koopman import fit as fit_module

    q = kdata.qlearning_dataset(kdata.load(dataset))
    straight, stopped = spec(tmp_path, dataset, "straight"), spec(tmp_path, dataset, "stopped")
    (ds,) = straight.datasets
    ensure_koopman(straight, ds, q, "cpu")
    real, calls = fit_module.multistep_error, []

    def stop_in_epoch_3(*a, **k):  # the machine goes away during the third epoch
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit_module, "multistep_error", stop_in_epoch_3)
    (ds_stopped,) = stopped.datasets
    with pytest.raises(KeyboardInterrupt):
        ensure_koopman(stopped, ds_stopped, q, "cpu")
    monkeypatch.setattr(fit_module, "multistep_error", real)
    partial = stopped.koopman_path(ds_stopped).with_name("koopman.partial.pt")
    assert torch.load(partial, weights_only=True)["epoch"] == 2
    first_stretch = torch.load(partial, weights_only=True)["history"]["seconds"]
    assert len(first_stretch) == 2 and all(t > 0 for t in first_stretch)
    assert not stopped.koopman_path(ds_stopped).exists()

    info = ensure_koopman(stopped, ds_stopped, q, "cpu")
    assert info["epochs"] == 4 and not partial.exists() and not partial.with_suffix(".sha256").exists()
    a = torch.load(straight.koopman_path(ds), weights_only=True)["state_dict"]
    b = torch.load(stopped.koopman_path(ds_stopped), weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the reported wall time is the whole pre-training's, the epochs before the stop included
    from kfc_lite.koopman import load_koopman

    timed = load_koopman(stopped.koopman_path(ds_stopped), map_location="cpu").extra["history"]["seconds"]
    assert timed[:2] == first_stretch and len(timed) == 4 and info["wall_s"] >= sum(timed)


def test_preparation_takes_its_cpu_share_as_threads_and_gives_them_back(tmp_path, dataset, monkeypatch):
    """``resources.prepare_cpus`` is the preparation's torch thread count while it runs, not after it."""
    from kfc_lite.sweep import prepare as prepare_module

    two = spec(tmp_path, dataset, "two", methods=["cql"], resources={"cpus": 1, "prepare_cpus": 2})
    assert two.resources.preparation_cpus == 2 and spec(tmp_path, dataset, "one").resources.preparation_cpus == 1
    seen = []
    monkeypatch.setattr(prepare_module, "ensure_data", lambda *a: seen.append(torch.get_num_threads()) or dataset)
    torch.set_num_threads(1)
    try:
        prepare_module.prepare_dataset(two, two.datasets[0])
        assert seen == [2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_a_resumed_sweep_may_run_on_other_resources_but_not_with_other_settings(tmp_path, dataset):
    from kfc_lite.sweep.runner import SWEEP_FILE, check_out_folder

    first = spec(tmp_path, dataset, "s")
    first.out.mkdir(parents=True)
    (first.out / SWEEP_FILE).write_text(json.dumps(first.to_json()))
    check_out_folder(spec(tmp_path, dataset, "s", resources={"cpus": 2, "prepare_cpus": 2}), resume=True)
    with pytest.raises(ValueError, match="started with different seeds"):
        check_out_folder(spec(tmp_path, dataset, "s", seeds=[0, 1]), resume=True)


def test_a_resumed_sweep_runs_its_unfinished_trials_in_the_sweeps_order(tmp_path, dataset):
    """Seeds outermost, whichever trials finished before: not the order a restored Tune state happens to list."""
    from kfc_lite.sweep.runner import experiment_name, unfinished_trials

    s = spec(tmp_path, dataset, "order", methods=["cql", "kfc++"], seeds=[0, 1, 2])
    names = [t.name.split("/")[-1] for t in s.trials()]
    assert names == ["cql-seed0", "kfcpp-seed0", "cql-seed1", "kfcpp-seed1", "cql-seed2", "kfcpp-seed2"]
    for t in s.trials():
        if t.name.endswith(("kfcpp-seed0", "cql-seed2")):  # finished before the driver stopped
            s.run_dir(t).mkdir(parents=True)
            (s.run_dir(t) / "result.json").write_text(json.dumps({"step": s.budget.steps}))
        elif t.name.endswith("kfcpp-seed1"):  # stopped half-way: it has a result of fewer steps
            s.run_dir(t).mkdir(parents=True)
            (s.run_dir(t) / "result.json").write_text(json.dumps({"step": s.budget.steps // 2}))
    left = [t.name.split("/")[-1] for t in unfinished_trials(s)]
    assert left == ["cql-seed0", "cql-seed1", "kfcpp-seed1", "kfcpp-seed2"]
    # every start of the sweep gets a Tune experiment of its own; none is reused or overwritten
    storage = tmp_path / "tune"
    assert experiment_name(storage, "order") == "order"
    (storage / "order").mkdir(parents=True)
    assert experiment_name(storage, "order") == "order-resume-2"
    (storage / "order-resume-2").mkdir()
    assert experiment_name(storage, "order") == "order-resume-3"
