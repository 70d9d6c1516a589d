"""The sweep file (kfc_lite.sweep.sweep_file) and the sweep it makes (kfc_lite.sweep.spec): its trials, and every
kind of mistake refused before anything starts."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from kfc_lite.sweep.spec import SweepSpecError
from kfc_lite.sweep.sweep_file import load_spec, spec_from_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _raw(tmp_path, **extra) -> dict:
    return {
        "out": str(tmp_path / "out"),
        "datasets": ["hopper-random-replica:2000"],
        "methods": ["cql", "kfc++"],
        "seeds": [0, 1],
        "budget": "tiny",
        **extra,
    }


def test_trials_are_the_grid_of_datasets_methods_seeds_and_set_lists(tmp_path):
    spec = spec_from_dict(
        _raw(
            tmp_path,
            datasets=["hopper-random-replica:2000", "walker2d-random-replica"],
            set={"q_lr": [1e-4, 3e-4], "batch_size": 64, "hidden": [[32, 32]]},
        )
    )
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2 * 2  # datasets x methods x seeds x q_lr; batch_size and hidden are fixed
    names = [t.name for t in trials]
    assert len(set(names)) == len(names)
    assert "hopper-random-replica-2000/kfcpp-q_lr=0.0001-seed1" in names
    assert "walker2d-random-replica-full/cql-q_lr=0.0003-seed0" in names
    assert [t.seed for t in trials[:8]] == [0] * 8  # seeds outermost
    cfg = spec.train_config(next(t for t in trials if t.name == "hopper-random-replica-2000/kfcpp-q_lr=0.0001-seed1"))
    assert cfg.method == "kfc++" and cfg.seed == 1 and cfg.steps == 12 and cfg.checkpoint_every == 6
    assert cfg.sac.q_lr == 1e-4 and cfg.sac.batch_size == 64 and cfg.sac.hidden == (32, 32)
    assert cfg.sac.bc_steps == 0  # 4% of 12 steps, rounded
    assert cfg.koopman_path == str(tmp_path / "out" / "hopper-random-replica-2000" / "koopman.pt")
    assert cfg.dataset == str(tmp_path / "out" / "data" / "hopper-random-replica-2000.hdf5")
    assert cfg.out == str(tmp_path / "out" / "hopper-random-replica-2000" / "kfcpp-q_lr=0.0001-seed1")
    cql = spec.train_config(trials[0])
    assert cql.method == "cql" and cql.koopman_path is None


def test_yaml_reads_exponents_as_numbers_and_budgets_derive_from_named_ones(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"out: {tmp_path / 'o'}\nmethods: [cql]\nbudget: {{base: tiny, steps: 24}}\n"
        "set:\n  q_lr: 1e-4\nresources: {{cpus: 2, gpus: 0.25}}\n".replace("{{", "{").replace("}}", "}")
    )
    spec = load_spec(path)
    assert spec.sets["q_lr"] == 1e-4 and isinstance(spec.sets["q_lr"], float)
    assert spec.budget.steps == 24 and spec.budget.eval_every == 6 and spec.budget.name == "tiny+"
    assert spec.resources.gpus == 0.25 and spec.device == "cuda"  # a GPU share means a GPU run
    assert spec.seeds == (0,) and [d.label for d in spec.datasets] == ["hopper-random-replica-2000"]  # the budget's


@pytest.mark.parametrize(
    "change, message",
    [
        ({"datasets": ["hopper-medum-replica"]}, "unknown recipe|unknown dataset"),
        ({"datasets": ["hopper-mediun-v2"]}, "unknown dataset 'hopper-mediun-v2'"),
        ({"datasets": ["missing/file.hdf5"]}, "no file"),
        ({"methods": ["cql", "sac"]}, r"unknown method\(s\) \['sac'\]"),
        ({"seeds": [0, "1"]}, "seeds: every entry is a whole number"),
        ({"budget": "huge"}, "unknown budget 'huge'"),
        ({"budget": {"base": "tiny", "steps": "ten"}}, "budget.steps must be an integer >= 1, got 'ten'"),
        ({"budget": {"base": "tiny", "last_k": 5}}, "scored by its last 5 evaluations"),
        ({"budget": {"base": "tiny", "stepz": 3}}, r"budget: unknown key\(s\) \['stepz'\]"),
        ({"sets": {}}, r"unknown key\(s\) \['sets'\]"),
        ({"set": {"q_learning_rate": 1e-4}}, "unknown setting 'q_learning_rate'"),
        ({"set": {"q_lr": "fast"}}, "q_lr"),
        ({"set": {"noise_sigma": [0.1, "x"]}}, "noise_sigma"),
        ({"set": {"steps": 5}}, "steps is set by the sweep itself: use budget"),
        ({"set": {"augment.gauged": True}}, r"augment.gauged is set by the sweep itself: use methods \(kfc-gauged"),
        ({"set": {"sac.precision": "bf16"}}, "sac.precision is set by the sweep itself: use budget"),
        ({"set": {"koopman.max_steps": 5}}, "put its settings under koopman:"),
        ({"koopman": {"max_stepz": 5}}, "koopman:"),
        ({"resources": {"cpus": 1, "gpu": 1}}, "resources: a mapping with cpus and gpus"),
        ({"resources": {"cpus": 0}}, "resources.cpus must be >= 0.01"),
        ({"resources": {"cpus": 1, "prepare_cpus": 0}}, "resources.prepare_cpus must be >= 0.01"),
        ({"resources": {"cpus": 1, "prepare": 2}}, "optionally prepare_cpus"),
        ({"device": "cuda"}, "needs a GPU, but resources.gpus is 0"),
        ({"max_failures": -1}, "max_failures must be an integer >= 0"),
        ({"out": None}, "out: the output root"),
    ],
)
def test_a_bad_sweep_file_is_refused_with_the_reason(tmp_path, change, message):
    raw = _raw(tmp_path, **change)
    if change.get("out", "") is None:
        raw.pop("out")
    with pytest.raises(SweepSpecError, match=message):
        spec_from_dict(raw)


def test_the_command_refuses_a_bad_file_before_starting_anything(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(_raw(tmp_path, methods=["cql", "kfc+++"])))
    run = subprocess.run(
        [sys.executable, "-m", "kfc_lite", "sweep", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 1
    assert f"kfc-lite sweep: error: sweep file {path}: methods: unknown method(s) ['kfc+++']" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing was created
    listing = subprocess.run(
        [sys.executable, "-m", "kfc_lite", "sweep", "--dry-run", str(path.with_name("ok.yaml"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listing.returncode == 1 and "no sweep file" in listing.stderr
    path.with_name("ok.yaml").write_text(json.dumps(_raw(tmp_path)))
    listing = subprocess.run(
        [sys.executable, "-m", "kfc_lite", "sweep", "--dry-run", str(path.with_name("ok.yaml"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listing.returncode == 0 and "4 trials" in listing.stdout and "kfcpp-seed1" in listing.stdout
