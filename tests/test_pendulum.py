"""The library's pendulum task (docs/pendulum.md): the environment, its reference returns, its replicas, the
identity checks on them, and a few training steps on them. Every test takes seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfc_lite.data import cache_path, load, qlearning_dataset, registry, write_hdf5
from kfc_lite.data.errors import DatasetMismatchError
from kfc_lite.data.identity import check_identity
from kfc_lite.data.replicas import PENDULUM_SIZES, default_size, load_card, make_replica
from kfc_lite.envs import env_family, evaluate, make_env

D4RL_KEYS = ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts")


# ---------------------------------------------------------------------------------------------- environment
def test_the_pendulum_acts_in_the_unit_box_and_an_action_of_one_is_the_full_torque():
    env = make_env("pendulum", seed=0)
    try:
        assert env.observation_space.shape == (3,) and env.spec.max_episode_steps == 200
        np.testing.assert_array_equal(env.action_space.low, [-1.0])
        np.testing.assert_array_equal(env.action_space.high, [1.0])
        for action, torque in ((1.0, 2.0), (-1.0, -2.0), (0.25, 0.5)):
            env.step(np.array([action], np.float32))
            assert env.unwrapped.last_u == pytest.approx(torque)  # gymnasium's own box is [-2, 2]
    finally:
        env.close()
    raw = make_env("Pendulum-v1")  # the gymnasium id is gymnasium's environment, unscaled
    try:
        assert raw.action_space.high[0] == pytest.approx(2.0)
    finally:
        raw.close()


def test_names_of_the_pendulum_task():
    assert env_family("pendulum-medium-replica") == env_family("pendulum") == "pendulum"
    assert registry.get("pendulum-medium-replica").gym_id == "Pendulum-v1"
    assert registry.max_episode_steps("pendulum-random-replica") == 200
    assert registry.max_episode_steps("hopper-medium-v2") == 1000
    assert set(registry.names(env="pendulum")) == {f"pendulum-{k}-replica" for k in registry.KINDS}
    with pytest.raises(KeyError, match="pendulum-medium-replica"):
        registry.get("pendulum-medium-v2")  # no D4RL file: replicas only


def test_reference_returns_score_0_and_100():
    lo, hi = registry.reference_scores("pendulum")
    assert lo < hi < 0  # pendulum rewards are costs: every return is negative
    np.testing.assert_allclose(registry.normalized_score("pendulum-medium-replica", [lo, hi]), [0.0, 100.0])
    assert registry.normalized_score("pendulum", (lo + hi) / 2) == pytest.approx(50.0)


def test_evaluation_scores_the_pendulum():
    out = evaluate(lambda obs: np.zeros(1, np.float32), "pendulum-medium-replica", episodes=2, seed=0)
    assert list(out["lengths"]) == [200, 200]
    np.testing.assert_allclose(out["normalized"], registry.normalized_score("pendulum", out["returns"]))
    # no torque at all does better than random actions (which add energy at random) but far worse than the expert
    assert 0 < out["mean_normalized"] < 80


# ---------------------------------------------------------------------------------------------- replicas
def test_random_replica_is_a_d4rl_file_with_200_step_episodes(tmp_path, monkeypatch):
    from kfc_lite.cli import main

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    assert main(["data", "make", "pendulum-random-replica", "--size", "450", "--no-progress"]) == 0
    d = load("pendulum-random-replica")  # from the cache, by name, through the identity checks
    assert all(k in d for k in D4RL_KEYS) and len(d["observations"]) == 450
    assert d["observations"].shape == (450, 3) and d["actions"].shape == (450, 1)
    assert np.abs(d["actions"]).max() <= 1.0 and np.abs(d["actions"]).max() > 0.9  # the whole unit box
    assert np.flatnonzero(d["timeouts"]).tolist() == [199, 399]  # the last episode is cut by the file: no flag
    assert not d["terminals"].any()  # the pendulum never terminates
    assert d["metadata/max_episode_steps"] == 200 and d["metadata/recipe"] == "pendulum-random-replica"
    # the observation is (cos, sin, angular velocity) of one angle
    np.testing.assert_allclose(np.hypot(d["observations"][:, 0], d["observations"][:, 1]), 1.0, atol=1e-5)
    q = qlearning_dataset(d)
    assert len(q["observations"]) == 449 - 2  # D4RL drops the time-out rows (and the last row, which has no s')
    np.testing.assert_array_equal(q["next_observations"][198], d["observations"][199])


def test_default_sizes_are_the_low_data_regime():
    assert default_size("pendulum", "medium") == PENDULUM_SIZES["medium"] == 5000
    assert default_size("hopper", "medium") == 1_000_000


def test_medium_replica_from_the_committed_policy():
    card = load_card("pendulum", "medium")
    d = make_replica("pendulum-medium-replica", size=400, progress=False)
    cards = json.loads(d["metadata/policy_card"])
    assert [c["sha256"] for c in cards] == [card["sha256"]]
    assert np.flatnonzero(d["timeouts"]).tolist() == [199, 399] and not d["terminals"].any()
    assert "infos/action_log_probs" in d and np.isfinite(d["infos/action_log_probs"]).all()


def test_the_medium_policy_is_about_a_third_to_a_half_of_expert():
    card = load_card("pendulum", "medium")
    assert 25 <= card["evaluation"]["sampled"]["mean_normalized"] <= 55
    expert = load_card("pendulum", "expert")
    assert expert["evaluation"]["deterministic"]["mean_normalized"] > 90


# ---------------------------------------------------------------------------------------------- identity
def test_identity_accepts_pendulum_files_and_rejects_others(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    pend = make_replica("pendulum-random-replica", size=250, progress=False)
    check_identity(pend, "pendulum-random-replica", "pendulum.hdf5")
    # an upright pendulum has cos(angle) near 1: the torso-height test of the MuJoCo bodies must not apply
    upright = {**pend, "observations": np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (250, 1))}
    check_identity(upright, "pendulum-random-replica", "upright.hdf5")

    hopper = make_replica("hopper-random-replica", size=30, progress=False)
    write_hdf5(hopper, cache_path("pendulum-random-replica"))  # a hopper file under the pendulum's name
    with pytest.raises(DatasetMismatchError, match=r"3-D observations and 1-D actions.*11-D observations"):
        load("pendulum-random-replica")
    with pytest.raises(DatasetMismatchError, match="pendulum-random-replica"):  # right sizes, another recipe's file
        check_identity(pend, "pendulum-medium-replica", "pendulum.hdf5")


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["cql", "s4rl", "kfc", "kfc++"])
def test_a_few_steps_of_every_method_on_the_pendulum(tmp_path, method):
    from kfc_lite.koopman.fit import KoopmanTrainConfig
    from kfc_lite.rl.config import SACConfig
    from kfc_lite.train import TrainConfig, train

    path = tmp_path / "pendulum.hdf5"
    make_replica("pendulum-random-replica", size=300, out=str(path), progress=False)
    koopman = KoopmanTrainConfig(latent_dim=4, hidden_dim=16, max_steps=5) if method in ("kfc", "kfc++") else None
    cfg = TrainConfig(
        dataset=str(path),
        method=method,
        steps=6,
        seed=0,
        out=str(tmp_path / "run"),
        eval_every=3,
        eval_episodes=1,
        eval_max_steps=20,
        checkpoint_every=0,
        log_every=3,
        sac=SACConfig.preset("kfc-code", hidden=(16, 16), batch_size=32, bc_steps=2),
        koopman=koopman,
        koopman_gate="off",
    )
    res = train(cfg, progress=False)
    if method in ("kfc", "kfc++"):  # the symmetries of a 3-d state's model were drawn and used
        assert 0 < res.metrics[-1]["aug_koopman_fraction"] <= 1
    assert json.loads((res.run_dir / "config.json").read_text())["env"] == "pendulum-random-replica"
    assert [e["step"] for e in res.evals] == [3, 6]
    assert all(np.isfinite(e["normalized"]) for e in res.evals)  # scored against the pendulum's references
    assert res.evals[-1]["normalized"] == pytest.approx(registry.normalized_score("pendulum", res.evals[-1]["return"]))
