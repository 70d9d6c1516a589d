"""The training loop (kfc_lite.train): every method end to end on a tiny generated dataset, through train() and the
CLI; bit-exact resume; bad configs; online SAC; learning-curve figures (kfc_lite.viz.rl)."""

import dataclasses
import json
import pathlib

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from conftest import checkpoint_tensors

from kfc_lite.cli import main as cli_main
from kfc_lite.files import save_verified
from kfc_lite.koopman.fit import KoopmanTrainConfig
from kfc_lite.rl.config import SACConfig
from kfc_lite.train import (
    METHODS,
    AugmentConfig,
    TrainConfig,
    read_metrics,
    train,
    train_online_sac,
)
from kfc_lite.train.run_folder import RunFolderError

TINY_SAC = {"hidden": [16, 16], "batch_size": 32, "bc_steps": 4}
TINY_KOOPMAN = {"latent_dim": 4, "hidden_dim": 16, "max_steps": 10, "max_epochs": 2, "multistep_k": 2}


def tiny_config(dataset, out, method="kfc++", sac_changes=None, **kw):
    """A run of seconds: tiny networks and Koopman model; ``sac_changes`` are SACConfig fields over TINY_SAC."""
    base = dict(
        dataset=dataset,
        method=method,
        out=str(out),
        steps=12,
        device="cpu",
        eval_every=6,
        eval_episodes=1,
        eval_max_steps=15,
        log_every=3,
        checkpoint_every=6,
        sac=SACConfig.preset("kfc-code", **{**TINY_SAC, **(sac_changes or {})}),
        koopman=KoopmanTrainConfig(**TINY_KOOPMAN) if method in ("kfc", "kfc++") else None,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_and_writes_a_run_folder(dataset, tmp_path, method):
    result = train(tiny_config(dataset, tmp_path / method, method), progress=False)
    run = tmp_path / method
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "policy.pt", "result.json", "policies"} <= names
    assert ("koopman.pt" in names) == (method in ("kfc", "kfc++"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["env"] == "hopper-random-replica" and cfg["state_dim"] == 11 and cfg["action_dim"] == 3
    assert TrainConfig.from_dict(cfg["train"]) == result.config
    train_rows, eval_rows = read_metrics(run, "train"), read_metrics(run, "eval")
    assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
    assert [r["step"] for r in eval_rows] == [6, 12]
    last = train_rows[-1]
    for key in (
        "critic_loss",
        "td_loss",
        "cql_penalty",
        "cql_weight",
        "actor_loss",
        "q_data",
        "q_random",
        "steps_per_second",
        "aug_samples",
    ):
        assert isinstance(last[key], float) and np.isfinite(last[key]), key
    shift = last["aug_state_shift"]
    assert (shift == 0.0) if method == "cql" else (shift > 0.0)
    if method in ("kfc", "kfc++"):
        assert last["aug_koopman_fraction"] >= 0.0 and last["aug_commutation_error"] < 1e-3
    ev = eval_rows[-1]
    assert len(ev["returns"]) == 1 and 1 <= ev["lengths"][0] <= 15 and np.isfinite(ev["normalized"])
    assert result.final_normalized == ev["normalized"] and result.agent.step == 12
    from kfc_lite.rl import load_policy

    pol = load_policy(run / "policy.pt", state_dim=11, action_dim=3)
    obs = np.zeros((2, 11), np.float32)
    np.testing.assert_array_equal(pol.act(obs), result.agent.act(obs))
    assert pol.meta["step"] == 12 and pol.meta["method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_cli_train_and_eval(dataset, tmp_path, capsys, method):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        dataset,
        "--method",
        method,
        "--steps",
        "6",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "eval_episodes=1",
        "--set",
        "eval_max_steps=10",
        "--set",
        "log_every=3",
        "--set",
        "hidden=[16,16]",
        "--set",
        "batch_size=16",
        "--set",
        "bc_steps=2",
    ]
    if method in ("kfc", "kfc++"):
        args += [
            "--set",
            "koopman.max_steps=5",
            "--set",
            "koopman.hidden_dim=16",
            "--set",
            "koopman.latent_dim=4",
            "--set",
            "koopman.multistep_k=2",
            "--set",
            "table_storage=float32",
        ]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 6 and np.isfinite(summary["final_normalized"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["sac"]["hidden"] == [16, 16] and saved["sac"]["bc_steps"] == 2 and saved["train"]["method"] == method
    if method in ("kfc", "kfc++"):
        assert saved["train"]["augment"]["table_storage"] == "float32"
        table = json.loads((out / "result.json").read_text())["symmetry_table"]
        assert table["rows"] == saved["transitions"] and table["build_seconds"] > 0
        assert table["settings"]["storage"] == "float32" and table["settings"]["variant"] == method
        assert pathlib.Path(table["path"]).parent == out  # beside the run's Koopman model
    assert cli_main(["eval", str(out), "--episodes", "2", "--max-episode-steps", "10"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["episodes"] == 2 and len(ev["returns"]) == 2 and ev["env"] == "hopper-random-replica"


@pytest.mark.parametrize("method", ["kfc++", "s4rl"])
def test_stop_and_resume_is_bit_exact(dataset, tmp_path, method):
    """12 steps in one go == 6 steps, stop, resume to 12 (the RNG streams of sampler, augmenter and actor included)."""
    one = tiny_config(dataset, tmp_path / "one", method, sac_changes=dict(bc_steps=8))
    train(one, progress=False)
    first = tiny_config(dataset, tmp_path / "two", method, steps=6, sac_changes=dict(bc_steps=8))
    train(first, progress=False)
    # a run that died after a later (unsaved) log line: resume must drop it from metrics.jsonl
    with open(tmp_path / "two" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 9, "critic_loss": 0.0}) + "\n")
    resumed = train(
        tiny_config(dataset, tmp_path / "two", method, steps=12, sac_changes=dict(bc_steps=8)),
        resume=True,
        progress=False,
    )
    assert resumed.agent.step == 12
    step_a, a = checkpoint_tensors(tmp_path / "one" / "checkpoint.pt")
    step_b, b = checkpoint_tensors(tmp_path / "two" / "checkpoint.pt")
    assert step_a == step_b == 12 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_second"} for r in rows]
    assert strip(read_metrics(tmp_path / "one")) == strip(read_metrics(tmp_path / "two"))
    assert (tmp_path / "one" / "koopman.pt").exists() == (method == "kfc++")


def test_checkpoint_without_the_augmenters_state_resumes_with_a_warning(dataset, tmp_path):
    """A checkpoint written before it held the Koopman branch draw's generator still resumes, and says that the
    run cannot repeat an uninterrupted one."""
    train(tiny_config(dataset, tmp_path / "old", steps=6), progress=False)
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["augmenter"]) == {"branch_generator"}
    del ckpt["augmenter"]
    save_verified(ckpt, path, label="step 6, without the augmenter's state")
    with pytest.warns(RuntimeWarning, match="branch draw"):
        resumed = train(tiny_config(dataset, tmp_path / "old", steps=8), resume=True, progress=False)
    assert resumed.agent.step == 8


def test_resume_guards(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "run", "cql", steps=3)
    train(cfg, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, progress=False)
    changed = tiny_config(dataset, tmp_path / "run", "cql", steps=6, seed=1)
    with pytest.raises(ValueError, match="seed"):
        train(changed, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_config(dataset, tmp_path / "empty", "cql"), resume=True, progress=False)
    # the CLI resumes from the saved config: only --steps is given
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert read_metrics(tmp_path / "run", "train")[-1]["step"] == 6


def test_pretrained_koopman_file_is_used_as_is(dataset, tmp_path):
    from kfc_lite.koopman import KoopmanForwardModel, load_koopman, save_koopman

    torch.manual_seed(3)
    model = KoopmanForwardModel(11, 3, latent_dim=4, hidden_dim=8)
    save_koopman(model, tmp_path / "k.pt")
    cfg = tiny_config(dataset, tmp_path / "run", "kfc", steps=3, koopman=None, koopman_path=str(tmp_path / "k.pt"))
    result = train(cfg, progress=False)
    assert result.koopman_history is None  # not trained
    used = load_koopman(tmp_path / "run" / "koopman.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(used.state_dict()[k], v)
    save_koopman(KoopmanForwardModel(5, 3, latent_dim=4, hidden_dim=8), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="state_dim"):
        train(
            tiny_config(dataset, tmp_path / "run2", "kfc", koopman=None, koopman_path=str(tmp_path / "wrong.pt")),
            progress=False,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="kfc+++"), "unknown method"),
        (dict(steps=0), "steps"),
        (dict(sampling="random"), "sampling"),
        (dict(sac={"q_lr": 1e-3}), r"TrainConfig.sac must be a SACConfig, e.g. sac=SACConfig.preset"),
        (dict(augment={"noise_sigma": 1e-2}), "TrainConfig.augment must be an AugmentConfig"),
        (dict(koopman={"max_epochs": 4}), "TrainConfig.koopman must be a KoopmanTrainConfig"),
        (dict(method="cql", koopman_path="k.pt"), "only used by kfc"),
        (dict(koopman=KoopmanTrainConfig(), koopman_path="k.pt"), "either koopman_path"),
        (dict(koopman_gate="loud"), "koopman_gate"),
    ],
)
def test_bad_configs(kwargs, match):
    base = dict(dataset="hopper-medium-v2", out="runs/x")
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        TrainConfig(**base)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SACConfig(q_lr=-1e-3), "q_lr"),
        (lambda: SACConfig(precision="fp16"), "precision"),
        (lambda: SACConfig.preset("cql"), "preset"),
        (lambda: AugmentConfig(p_koopman=1.5), "p_koopman"),
        (lambda: AugmentConfig(per="episode"), "per"),
        (lambda: AugmentConfig(table_storage="float8"), "table_storage"),
        (lambda: AugmentConfig(table_memory_gb=-1), "table_memory_gb"),
        (lambda: TrainConfig(dataset="d").with_overrides(qlr=1e-3), "unknown setting 'qlr'"),
        (lambda: TrainConfig(dataset="d").with_overrides(**{"sac.qlr": 1e-3}), "SACConfig has no such field"),
        (lambda: TrainConfig(dataset="d").with_overrides(**{"koopman.latent": 4}), "KoopmanTrainConfig has no"),
        (lambda: TrainConfig.from_dict({"dataset": "d", "sac": {"qlr": 1e-3}}), "did you mean 'q_lr'"),
        (lambda: TrainConfig.from_dict({"dataset": "d", "learning_rate": 1}), "no field"),
    ],
)
def test_bad_nested_settings(make, match):
    """Each nested config checks its own fields, and a flat key that fits none of them is named."""
    with pytest.raises(ValueError, match=match):
        make()


def test_dataset_that_does_not_fit_the_env(dataset, tmp_path):
    with pytest.raises(ValueError, match="dimension 11.*HalfCheetah"):
        train(tiny_config(dataset, tmp_path / "run", "cql", env="halfcheetah"), progress=False)


def test_cuda_without_a_gpu_is_a_clear_error(dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA"):
        train(tiny_config(dataset, tmp_path / "run", "cql", device="cuda"), progress=False)


def test_with_overrides_routes_keys():
    cfg = TrainConfig(dataset="hopper-medium-v2", out="runs/x", seed=2)
    new = cfg.with_overrides(
        steps=10, seed=3, q_lr=1e-3, noise_sigma=1e-2, **{"koopman.max_epochs": 5, "sac.bc_steps": 0}
    )
    assert new.steps == 10 and new.sac == SACConfig.preset("kfc-code", q_lr=1e-3, bc_steps=0)
    assert new.augment == AugmentConfig(noise_sigma=1e-2)
    # the Koopman schedule starts from the paper's, seeded by the run's seed as changed in the same call
    assert new.koopman == KoopmanTrainConfig(seed=3, max_epochs=5) and cfg.koopman is None
    assert cfg.koopman_config() == KoopmanTrainConfig(seed=2)
    assert new.sac_config("cpu").q_lr == 1e-3 and new.sac_config("cpu").precision == "fp32"
    assert new.sac_config("cuda").precision == "fp32" and new.sac_config("cuda").compile
    assert not new.sac_config("cpu").compile
    assert new.with_overrides(precision="bf16").sac_config("cpu").precision == "bf16"
    assert TrainConfig.from_dict(new.to_dict()) == new


#: a config.json "train" as runs wrote it before the configs were nested (the agent as a preset and its changes,
#: the augmentation's fields at the top level, the Koopman model's changes as a dict seeded by the run's seed)
FLAT_LAYOUT = {
    "dataset": "hopper-medium-v2",
    "method": "kfc++",
    "seed": 4,
    "out": "runs/x",
    "preset": "corl",
    "sac": {"bc_steps": 0, "hidden": [32, 32]},
    "precision": "bf16",
    "compile": "auto",
    "noise_sigma": 0.01,
    "shift_sigma": 2.0,
    "p_koopman": 0.5,
    "per": "sample",
    "gauged": True,
    "table_storage": "float32",
    "table_memory_gb": 1.0,
    "koopman": {"max_epochs": 5},
    "koopman_path": None,
    "koopman_gate": "off",
    "eig_workers": 2,
}


def test_a_config_json_of_the_flat_layout_reads_into_the_nested_one():
    with pytest.warns(UserWarning, match="eig_workers is no longer a setting"):
        cfg = TrainConfig.from_dict(FLAT_LAYOUT)
    assert cfg.sac == SACConfig.preset("corl", bc_steps=0, hidden=(32, 32), precision="bf16")
    assert cfg.augment == AugmentConfig(0.01, 2.0, 0.5, "sample", True, "float32", 1.0)
    assert cfg.koopman == KoopmanTrainConfig(seed=4, max_epochs=5) and cfg.koopman_gate == "off"
    # the same run, as the nested layout builds it from --set keys
    corl = {f"sac.{k}": v for k, v in SACConfig.preset("corl").to_dict().items()}
    corl.update({"sac.bc_steps": 0, "sac.hidden": [32, 32], "sac.precision": "bf16"})
    built = TrainConfig(dataset="hopper-medium-v2", seed=4, out="runs/x", koopman_gate="off").with_overrides(
        **corl,
        **{f"augment.{k}": v for k, v in dataclasses.asdict(cfg.augment).items()},
        **{"koopman.max_epochs": 5},
    )
    assert built == cfg
    flat_defaults = {k: FLAT_LAYOUT[k] for k in ("dataset", "method", "out")}
    flat_defaults.update(preset="kfc-code", sac={}, koopman={})
    assert TrainConfig.from_dict(flat_defaults) == TrainConfig(dataset="hopper-medium-v2", method="kfc++", out="runs/x")


def test_a_run_saved_in_the_flat_layout_resumes(dataset, tmp_path):
    """A run folder whose config.json predates the nested configs resumes, and still refuses a real change."""
    run = tmp_path / "run"
    train(tiny_config(dataset, run, "s4rl", steps=6), progress=False)
    saved = json.loads((run / "config.json").read_text())
    nested = saved["train"]
    flat = {k: v for k, v in nested.items() if k not in ("sac", "augment", "koopman")}
    sac = SACConfig.from_dict(nested["sac"])
    flat.update(nested["augment"], preset="kfc-code", koopman={}, precision=sac.precision, compile=sac.compile)
    flat["sac"] = {k: v for k, v in sac.to_dict().items() if k not in ("precision", "compile")}
    saved["train"] = flat
    (run / "config.json").write_text(json.dumps(saved))
    resumed = train(tiny_config(dataset, run, "s4rl", steps=12), resume=True, progress=False)
    assert resumed.agent.step == 12
    with pytest.raises(RunFolderError, match=r"augment.noise_sigma"):
        changed = tiny_config(dataset, run, "s4rl", steps=18, augment=AugmentConfig(noise_sigma=0.1))
        train(changed, resume=True, progress=False)


def test_online_sac_trains_and_resumes(tmp_path):
    from kfc_lite.rl.sac import SACConfig

    cfg = SACConfig.preset("online-sac", hidden=(16, 16), batch_size=16)
    run = dict(
        seed=0,
        out=tmp_path / "sac",
        config=cfg,
        start_steps=20,
        eval_every=20,
        eval_episodes=1,
        checkpoint_every=20,
        max_episode_steps=15,
        device="cpu",
        progress=False,
    )
    r = train_online_sac("hopper", 40, **run)
    assert r.agent.step == 20 and [e["step"] for e in r.evals] == [20, 40] and "online-sac" in repr(r)
    assert (tmp_path / "sac" / "policies" / "step_20.pt").exists() and (tmp_path / "sac" / "policy.pt").exists()
    r2 = train_online_sac("hopper", 60, resume=True, **run)
    assert r2.agent.step == 40 and [e["step"] for e in r2.evals] == [60]
    with pytest.raises(ValueError, match="plain SAC"):
        train_online_sac("hopper", 10, out=tmp_path / "x", config=SACConfig(), device="cpu", progress=False)


def test_learning_curve_figures(dataset, tmp_path):
    from kfc_lite.viz import rl as vrl

    dirs = []
    for method, seed in (("cql", 0), ("cql", 1), ("s4rl", 0)):
        out = tmp_path / f"{method}-{seed}"
        train(tiny_config(dataset, out, method, seed=seed, steps=6, eval_every=3), progress=False)
        dirs.append(out)
    fig = vrl.learning_curves(dirs)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["cql (2 seeds)", "s4rl (1 seed)"]
    assert ax.get_xlabel() == "gradient steps" and "normalized" in ax.get_ylabel() and ax.get_title()
    cql_line = ax.get_lines()[0]
    evals = [vrl.load_runs([d])[0]["eval"] for d in dirs[:2]]
    expect = np.mean([[e["normalized"] for e in ev] for ev in evals], axis=0)
    np.testing.assert_allclose(cql_line.get_ydata(), expect)
    assert len(fig.axes[0].collections) == 1  # the min-max band of the two cql seeds
    fig2 = vrl.plot_training_metrics(dirs[0])
    assert len(fig2.axes) == 4 and all(a.get_xlabel() == "gradient steps" for a in fig2.axes)
    fig3 = vrl.curves_explorer_update(dirs, "cql_gap", smooth=2)
    assert len(fig3.axes[0].get_lines()) == 3
    from kfc_lite.rl.sac import SACCQL, SACConfig

    agent = SACCQL(11, 3, SACConfig(hidden=(16, 16)), "cpu")
    q = vrl.q_on_actions(agent, np.zeros((5, 11)), np.zeros((5, 3)), n_random=4)
    assert q["data"].shape == (5,) and q["random"].shape == (5, 4) and q["policy"].shape == (5,)
    fig4 = vrl.plot_q_ood(q)
    assert fig4.axes[0].get_xlabel().startswith("Q(s, a)")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_cli_reports_bad_input_in_words(dataset, tmp_path, capsys):
    code = cli_main(["train", "--dataset", dataset, "--out", str(tmp_path / "r"), "--set", "learning_rate=1e-3"])
    assert code == 1 and "unknown setting 'learning_rate'" in capsys.readouterr().err
    code = cli_main(["train", "--out", str(tmp_path / "r2"), "--method", "cql"])
    assert code == 1 and "--dataset is required" in capsys.readouterr().err
    code = cli_main(["eval", str(tmp_path / "nothing")])
    assert code == 1 and "config.json" in capsys.readouterr().err
