"""The D4RL data layer: registry and scores, HDF5 schema and its errors, qlearning_dataset, generated datasets,
environments and the ``kfc-lite data`` commands. Everything runs on small crafted or generated files."""

import os
import pathlib
import sys
import tracemalloc
import types

import numpy as np
import pytest

from kfc_lite import data as kdata
from kfc_lite.data import (
    DatasetError,
    RandomPolicy,
    collect,
    episode_returns,
    load,
    load_hdf5,
    normalized_score,
    qlearning_dataset,
    registry,
    split_episodes,
    validate,
    write_hdf5,
)
from kfc_lite.envs import env_family, evaluate, gym_id, make_env

D4RL_DIMS = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}


# ----------------------------------------------------------------------------------------------- registry, scores
def test_registry_covers_d4rl_mujoco_and_replicas():
    assert len(registry.names(version="v0")) == len(registry.names(version="v2")) == 15
    assert len([n for n in registry.names(version="replica") if registry.get(n).env in registry.ENVS]) == 15
    files = [registry.get(n).file_name for n in registry.DATASETS]
    assert len(set(files)) == len(files), "two datasets would share a cache file"
    for name, info in registry.DATASETS.items():
        lo, hi = info.ref_min_score, info.ref_max_score
        assert np.isfinite(lo) and np.isfinite(hi) and lo < hi, name
        assert info.max_episode_steps == (1000 if info.env in registry.ENVS else 200)  # pendulum's episodes: 200
        assert info.checksum is None  # D4RL publishes no checksums
        if info.replica:
            assert info.url is None
        else:
            assert info.url.startswith("http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco")
            assert info.url.endswith("/" + info.file_name)


def test_registry_uses_d4rl_file_names():
    assert registry.get("hopper-medium-replay-v0").file_name == "hopper_mixed.hdf5"
    assert registry.get("walker2d-medium-replay-v0").file_name == "walker_mixed.hdf5"
    assert registry.get("halfcheetah-medium-expert-v0").url.endswith("/gym_mujoco/halfcheetah_medium_expert.hdf5")
    assert registry.get("walker2d-medium-replay-v2").url.endswith("/gym_mujoco_v2/walker2d_medium_replay-v2.hdf5")
    assert registry.get("Hopper-Medium-V2").name == "hopper-medium-v2"  # case-insensitive


@pytest.mark.parametrize("family", ["halfcheetah", "hopper", "walker2d"])
def test_every_registry_env_can_be_made_with_d4rl_dimensions(family):
    env = make_env(family, seed=0)
    try:
        assert (env.observation_space.shape[0], env.action_space.shape[0]) == D4RL_DIMS[family]
        assert env.spec.max_episode_steps == 1000
        assert {registry.get(n).gym_id for n in registry.names(env=family)} == {env.spec.id}
    finally:
        env.close()


def test_unknown_names_list_close_matches():
    with pytest.raises(KeyError) as err:
        registry.get("hoper-medium-v2")
    assert "'hopper-medium-v2'" in str(err.value) and "kfc-lite data list" in str(err.value)
    with pytest.raises(ValueError, match="halfcheetah-random"):
        registry.get("halfcheeta-random-v2")
    with pytest.raises(ValueError, match="unknown"):
        normalized_score("ant-medium-v2", 100.0)


def test_normalized_scores_of_known_values():
    assert normalized_score("hopper-medium-v2", 3234.3) == pytest.approx(100.0)
    assert normalized_score("hopper", -20.272305) == pytest.approx(0.0)
    assert normalized_score("Hopper-v5", (3234.3 - 20.272305) / 2) == pytest.approx(50.0)
    hc = normalized_score("halfcheetah-medium-v0", 5000.0)
    assert isinstance(hc, float) and hc == pytest.approx(100 * (5000 + 280.178953) / (12135.0 + 280.178953))
    w = normalized_score("walker2d-expert-replica", np.array([1.629008, 4592.3]))
    assert isinstance(w, np.ndarray) and np.allclose(w, [0.0, 100.0])
    assert normalized_score("walker2d", [4592.3]).shape == (1,)
    assert registry.reference_scores("HalfCheetah-v4") == (-280.178953, 12135.0)


# ------------------------------------------------------------------------------------------- qlearning_dataset
def d4rl_qlearning_loop(data, terminate_on_end=False, max_episode_steps=1000):
    """D4RL's qlearning_dataset, transcribed as the plain loop (the reference the vectorized one must match)."""
    n = len(data["rewards"])
    obs, next_obs, act, rew, done = [], [], [], [], []
    episode_step = 0
    for i in range(n - 1):
        done_bool = bool(data["terminals"][i])
        if "timeouts" in data:
            final_timestep = data["timeouts"][i]
        else:
            final_timestep = episode_step == max_episode_steps - 1
        if (not terminate_on_end) and final_timestep:
            episode_step = 0
            continue
        if done_bool or final_timestep:
            episode_step = 0
        obs.append(data["observations"][i])
        next_obs.append(data["observations"][i + 1])
        act.append(data["actions"][i])
        rew.append(data["rewards"][i])
        done.append(done_bool)
        episode_step += 1
    return {
        "observations": np.array(obs, np.float32).reshape(-1, data["observations"].shape[1]),
        "actions": np.array(act, np.float32).reshape(-1, data["actions"].shape[1]),
        "next_observations": np.array(next_obs, np.float32).reshape(-1, data["observations"].shape[1]),
        "rewards": np.array(rew, np.float32),
        "terminals": np.array(done, bool),
    }


def crafted(n, *, timeouts=True, seed=0, p_terminal=0.05, p_timeout=0.05):
    rng = np.random.default_rng(seed)
    d = {
        "observations": rng.normal(size=(n, 3)),
        "actions": rng.normal(size=(n, 2)),
        "rewards": rng.normal(size=n),
        "terminals": rng.random(n) < p_terminal,
    }
    if timeouts:
        d["timeouts"] = (rng.random(n) < p_timeout) & ~d["terminals"]
    return d


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_qlearning_by_hand():
    # two episodes: a time-out after 3 steps, then a terminal, then an episode cut by the end of the file
    obs = np.arange(8, dtype=np.float64)[:, None]
    d = {
        "observations": obs,
        "actions": obs * 10,
        "rewards": np.arange(8.0),
        "terminals": np.array([0, 0, 0, 0, 1, 0, 0, 0], bool),
        "timeouts": np.array([0, 0, 1, 0, 0, 0, 0, 0], bool),
    }
    q = qlearning_dataset(d)
    np.testing.assert_array_equal(q["observations"][:, 0], [0, 1, 3, 4, 5, 6])  # row 2 (time-out) and 7 (last) go
    np.testing.assert_array_equal(q["next_observations"][:, 0], [1, 2, 4, 5, 6, 7])  # s' from the next row...
    np.testing.assert_array_equal(q["terminals"], [0, 0, 0, 1, 0, 0])  # ...even after the terminal (row 4 -> 5)
    assert q["observations"].dtype == np.float32 and q["rewards"].dtype == np.float32 and q["terminals"].dtype == bool
    q2 = qlearning_dataset(d, terminate_on_end=True)
    np.testing.assert_array_equal(q2["observations"][:, 0], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(q2["terminals"], [0, 0, 0, 0, 1, 0, 0])  # a time-out is never "done"
    d["next_observations"] = obs + 0.5
    q3 = qlearning_dataset(d, use_next_observations=True)
    np.testing.assert_array_equal(q3["next_observations"][:, 0], [0.5, 1.5, 3.5, 4.5, 5.5, 6.5])
    np.testing.assert_array_equal(q3["observations"], q["observations"])


@pytest.mark.parametrize("timeouts", [True, False])
@pytest.mark.parametrize("terminate_on_end", [False, True])
def test_qlearning_matches_d4rl_loop(timeouts, terminate_on_end):
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 80))
        steps = int(rng.integers(2, 9))  # short episodes exercise D4RL's step counter without timeouts
        d = crafted(n, timeouts=timeouts, seed=seed, p_terminal=float(rng.uniform(0, 0.4)))
        got = qlearning_dataset(d, terminate_on_end, max_episode_steps=steps)
        assert_same(got, d4rl_qlearning_loop(d, terminate_on_end, max_episode_steps=steps))


def test_qlearning_without_timeouts_uses_1000_step_episodes():
    d = crafted(2500, timeouts=False, p_terminal=0.0)
    q = qlearning_dataset(d)
    assert len(q["rewards"]) == 2500 - 1 - 2  # rows 999 and 1999 are time-outs, the last row has no successor
    assert_same(q, d4rl_qlearning_loop(d))
    d["terminals"][[100, 1500]] = True
    assert_same(qlearning_dataset(d), d4rl_qlearning_loop(d))


def test_qlearning_errors():
    with pytest.raises(DatasetError, match="no 'terminals'"):
        qlearning_dataset({"observations": np.zeros((3, 1)), "actions": np.zeros((3, 1)), "rewards": np.zeros(3)})
    with pytest.raises(DatasetError, match="next_observations"):
        qlearning_dataset(crafted(5), use_next_observations=True)


# -------------------------------------------------------------------------------------------- HDF5 and validate
def test_hdf5_round_trip_decodes_strings_scalars_and_squeezes(tmp_path):
    d = crafted(50)
    d["rewards"] = d["rewards"][:, None]  # (N, 1), as in some old D4RL files
    d["infos/qpos"] = np.ones((50, 4), np.float32)
    d["metadata/algorithm"] = "SAC"
    d["metadata/iteration"] = 7
    write_hdf5(d, tmp_path / "x.hdf5")
    out = load(str(tmp_path / "x.hdf5"))
    assert out["metadata/algorithm"] == "SAC" and out["metadata/iteration"] == 7
    assert out["rewards"].shape == (50,) and out["infos/qpos"].shape == (50, 4)
    np.testing.assert_array_equal(out["observations"], d["observations"])
    assert out["terminals"].dtype == bool


def bad(**changes):
    d = crafted(20)
    for k, v in changes.items():
        if v is None:
            del d[k]
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rewards=None), "missing key.*rewards"),
        (dict(actions=np.zeros((19, 2))), "lengths disagree.*'actions' has 19"),
        (dict(timeouts=np.zeros(21, bool)), "lengths disagree.*'timeouts' has 21"),
        (dict(observations=np.zeros(20)), "'observations' has shape \\(20,\\)"),
        (dict(terminals=np.zeros((20, 2), bool)), "'terminals' has shape"),
        (
            dict(observations=np.where(np.arange(60).reshape(20, 3) == 37, np.nan, 1.0)),
            "'observations' holds NaN at row 12, column 1 \\(the first NaN or inf\\)",
        ),
        (dict(rewards=np.r_[np.zeros(19), np.inf]), "'rewards' holds inf at row 19 \\(the first NaN or inf\\)"),
        (dict(terminals=np.r_[np.zeros(7), np.nan, np.zeros(12)]), "'terminals' holds NaN at row 7"),
        (dict(timeouts=np.r_[np.zeros(3), -np.inf, np.zeros(16)]), "'timeouts' holds -inf at row 3"),
        (
            dict(observations=np.where(np.arange(60).reshape(20, 3) == 17, 1e30, 1.0)),
            "'observations' holds 1e\\+30 at row 5, column 2, beyond the bound \\|x\\| <= 1e\\+06.*not clipped",
        ),
        (
            dict(actions=np.where(np.arange(40).reshape(20, 2) == 9, -2e6, 0.5)),
            "'actions' holds -2e\\+06 at row 4, column 1",
        ),
        (dict(rewards=np.r_[np.zeros(11), 1.5e6, np.zeros(8)]), "'rewards' holds 1.5e\\+06 at row 11"),
        (dict(terminals=np.r_[np.zeros(4), 2.0, np.zeros(15)]), "'terminals' is a flag but holds 2.0 at row 4"),
        (
            dict(timeouts=np.r_[np.zeros(9, np.int64), -1, np.zeros(10, np.int64)]),
            "'timeouts' is a flag but holds -1 at row 9",
        ),
    ],
)
def test_validate_names_key_and_problem(changes, message):
    with pytest.raises(DatasetError, match=message) as err:
        validate(bad(**changes), "my_file.hdf5")
    assert str(err.value).startswith("my_file.hdf5")


def test_validate_accepts_the_bound_and_numeric_flags():
    d = crafted(20)
    d["observations"][3, 1], d["rewards"][2] = 1e6, -1e6  # on the bound: accepted, and not changed
    d["terminals"] = d["terminals"].astype(np.float32)  # flags written as 0.0/1.0 or 0/1 are fine
    d["timeouts"] = d["timeouts"].astype(np.int64)
    out = validate(d, "f")
    assert out["observations"][3, 1] == 1e6 and out["rewards"][2] == -1e6
    d["observations"][3, 1] = np.nextafter(1e6, np.inf)
    with pytest.raises(DatasetError, match="row 3, column 1, beyond the bound"):
        validate(d, "f")


def test_validate_empty_and_not_a_dict():
    with pytest.raises(DatasetError, match="empty"):
        validate({k: v[:0] for k, v in crafted(5).items()}, "f")
    with pytest.raises(DatasetError, match="expected a dict"):
        validate([1, 2], "f")


def test_truncated_and_non_hdf5_files(tmp_path):
    write_hdf5(crafted(2000), tmp_path / "ok.hdf5", compression=None)
    raw = (tmp_path / "ok.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="cut.hdf5.*truncated.*download it again"):
        load(str(tmp_path / "cut.hdf5"))
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(DatasetError, match="text.hdf5 is not a readable HDF5 file"):
        load_hdf5(tmp_path / "text.hdf5")
    with pytest.raises(FileNotFoundError, match="no dataset file"):
        load(str(tmp_path / "absent.hdf5"))
    write_hdf5({"observations": np.zeros((3, 2))}, tmp_path / "partial.hdf5")
    with pytest.raises(DatasetError, match="partial.hdf5: missing key"):
        load(str(tmp_path / "partial.hdf5"))


def test_loading_holds_at_most_two_copies(tmp_path):
    n, dim = 200_000, 17
    rng = np.random.default_rng(0)
    d = {
        "observations": rng.normal(size=(n, dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 6)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    size = sum(v.nbytes for v in d.values())
    write_hdf5(d, tmp_path / "big.hdf5", compression=None)
    del d
    tracemalloc.start()
    try:
        out = load(str(tmp_path / "big.hdf5"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out["observations"].shape == (n, dim)
    assert peak < 2 * size, f"loading {size / 2**20:.1f} MiB peaked at {peak / 2**20:.1f} MiB"


def test_episode_split():
    d = {
        "rewards": np.ones(10),
        "terminals": np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool),
        "timeouts": np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool),
    }
    starts, ends, complete = split_episodes(d)
    np.testing.assert_array_equal(starts, [0, 3, 6]) and np.testing.assert_array_equal(ends, [3, 6, 10])
    np.testing.assert_array_equal(complete, [True, True, False])
    returns, lengths = episode_returns(d, complete_only=True)
    np.testing.assert_array_equal(returns, [3, 3]) and np.testing.assert_array_equal(lengths, [3, 3])
    del d["timeouts"]
    _, ends, _ = split_episodes(d, max_episode_steps=4)
    np.testing.assert_array_equal(ends, [3, 7, 10])


# ---------------------------------------------------------------------------------------------- generated data
@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "hc.hdf5"
    policy = RandomPolicy(make_env("halfcheetah").action_space, seed=3)
    data = collect("halfcheetah-random", policy, 2500, seed=3, path=path, progress=False)
    return path, data


def test_generated_file_round_trips_through_load(cheetah):
    path, data = cheetah
    loaded = load(str(path))
    assert loaded.keys() == data.keys()
    for k, v in data.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(loaded[k], v, err_msg=k)
        else:
            assert loaded[k] == v, k
    assert loaded["metadata/env_id"] == "HalfCheetah-v4" and loaded["metadata/replica"] is True
    assert env_family(loaded) == "halfcheetah"
    np.testing.assert_array_equal(np.flatnonzero(loaded["timeouts"]), [999, 1999])  # 1000-step episodes
    assert not loaded["terminals"].any()  # HalfCheetah never terminates
    np.testing.assert_allclose(loaded["infos/action_log_probs"], -6 * np.log(2.0), rtol=1e-6)
    # the stored next observation is the next row's observation inside an episode
    inside = ~loaded["timeouts"][:-1]
    np.testing.assert_array_equal(loaded["next_observations"][:-1][inside], loaded["observations"][1:][inside])
    # qpos is the state *before* the step: HalfCheetah observes qpos[1:] then qvel
    np.testing.assert_allclose(loaded["observations"][:, :8], loaded["infos/qpos"][:, 1:], atol=1e-6)
    returns, _ = episode_returns(loaded, complete_only=True)
    assert np.all(normalized_score("halfcheetah", returns) < 5)  # random data scores near 0, by definition


def test_generated_file_reads_like_d4rl_get_dataset(cheetah):
    """D4RL's OfflineEnv.get_dataset, transcribed: every key read with [:] (scalars with [()]), then its checks."""
    import h5py

    path, _ = cheetah
    found = {}
    with h5py.File(path, "r") as f:
        keys = []
        f.visititems(lambda name, item: keys.append(name) if isinstance(item, h5py.Dataset) else None)
        for k in keys:
            try:
                found[k] = f[k][:]
            except ValueError:
                found[k] = f[k][()]
    env = make_env("halfcheetah-random-v2")
    n = found["observations"].shape[0]
    assert found["observations"].shape[1:] == env.observation_space.shape
    assert found["actions"].shape[1:] == env.action_space.shape
    assert found["rewards"].shape == (n,) and found["terminals"].shape == (n,) and found["timeouts"].shape == (n,)
    assert found["observations"].dtype == np.float32 and found["terminals"].dtype == bool
    assert found["metadata/env_id"] == b"HalfCheetah-v4"  # D4RL gets bytes; load_hdf5 decodes them


def test_generated_returns_match_a_replay_of_the_seed(cheetah):
    _, data = cheetah
    env = make_env("halfcheetah")
    policy = RandomPolicy(env.action_space, seed=3)
    returns, total, t = [], 0.0, 0
    obs, _ = env.reset(seed=3)
    for _ in range(2500):
        obs, r, terminated, truncated, _ = env.step(policy.act(obs))
        total, t = total + r, t + 1
        if terminated or truncated:
            returns.append(total)
            total, t = 0.0, 0
            obs, _ = env.reset()
    returns.append(total)
    got, lengths = episode_returns(data)
    np.testing.assert_allclose(got, returns, rtol=1e-5)
    np.testing.assert_array_equal(lengths, [1000, 1000, 500])


def test_hopper_terminals_and_determinism(tmp_path):
    def run():
        policy = RandomPolicy(make_env("hopper").action_space, seed=0)
        return collect("hopper-random-v2", policy, 400, seed=0, progress=False)

    a, b = run(), run()
    for k in ("observations", "actions", "rewards", "terminals", "infos/qpos"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["terminals"].sum() >= 5 and not a["timeouts"].any()  # a random hopper falls within tens of steps
    t = np.flatnonzero(a["terminals"][:-1])
    # on a terminal row the stored next observation is the fall, not the next episode's start
    assert not np.allclose(a["next_observations"][t], a["observations"][t + 1])
    assert a["metadata/d4rl_env"] == "hopper-random-replica"
    q = qlearning_dataset(a)
    assert q["terminals"].sum() == len(t)


class ActOnly:
    """A policy with act() only, like a deterministic controller."""

    def act(self, obs, deterministic=True):
        return -0.1 * np.ones(3, np.float32)


def test_collect_accepts_policy_objects_and_rejects_bad_input():
    d = collect("Hopper-v4", ActOnly(), 30, seed=1, progress=False)
    assert "infos/action_log_probs" not in d and np.all(d["actions"] == -0.1)
    assert d["metadata/policy"] == "ActOnly" and d["metadata/d4rl_env"] == "hopper"
    d = collect("hopper-medium-replica", lambda obs: np.zeros(3), 5, seed=1, progress=False)
    assert d["metadata/d4rl_env"] == "hopper-medium-replica"
    with pytest.raises(ValueError, match="shape \\(2,\\).*expects \\(3,\\)"):
        collect("hopper", lambda obs: np.zeros(2), 5, progress=False)
    with pytest.raises(ValueError, match="n_steps"):
        collect("hopper", ActOnly(), 0, progress=False)
    with pytest.raises(TypeError, match="behaviour policy"):
        collect("hopper", object(), 5, progress=False)


def test_make_replica_with_a_saved_policy(tmp_path, capsys):
    """The RL module's policy files plug into collect: log-probs recorded, same seed -> same file."""
    torch = pytest.importorskip("torch")
    from kfc_lite.cli import main
    from kfc_lite.rl.networks import TanhGaussianActor
    from kfc_lite.rl.policy import save_policy

    torch.manual_seed(0)
    save_policy(TanhGaussianActor(11, 3, hidden=(16, 16)), tmp_path / "pi.pt", meta={"dataset": "hopper-medium-v2"})
    files = []
    for i in range(2):
        out = tmp_path / f"rep{i}.hdf5"
        assert (
            main(
                [
                    "data",
                    "make",
                    "hopper-medium-replica",
                    "--size",
                    "120",
                    "--seed",
                    "4",
                    "--out",
                    str(out),
                    "--policy",
                    str(tmp_path / "pi.pt"),
                    "--no-progress",
                ]
            )
            == 0
        )
        files.append(load(str(out)))
    a, b = files
    assert a["metadata/d4rl_env"] == "hopper-medium-replica" and a["metadata/policy"].endswith("pi.pt")
    assert np.all(np.abs(a["actions"]) <= 1) and np.all(np.isfinite(a["infos/action_log_probs"]))
    np.testing.assert_array_equal(a["actions"], b["actions"])
    np.testing.assert_array_equal(a["infos/action_log_probs"], b["infos/action_log_probs"])
    assert main(["data", "make", "hopper-random", "--size", "5", "--policy", str(tmp_path / "pi.pt")]) == 1
    assert "drop --policy" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- load by name, adapters
def test_load_by_name_from_cache(cheetah, tmp_path, monkeypatch):
    path, _ = cheetah
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="kfc-lite data make halfcheetah-random"):
        load("halfcheetah-random-replica")
    with pytest.raises(FileNotFoundError, match="kfc-lite data download halfcheetah-random-v2"):
        load("halfcheetah-random-v2")
    os.link(path, kdata.cache_path("halfcheetah-random-replica"))
    d = load("halfcheetah-random-replica")
    assert d["observations"].shape == (2500, 17)
    with pytest.raises(KeyError, match="halfcheetah-random"):
        load("halfcheeta-random-replica")


def test_minari_adapter_converts_episodes(monkeypatch):
    def episode(i, t, terminated):
        obs = np.arange((t + 1) * 2, dtype=np.float64).reshape(t + 1, 2) + 100 * i
        term, trunc = np.zeros(t, bool), np.zeros(t, bool)
        (term if terminated else trunc)[-1] = True
        return types.SimpleNamespace(
            id=i,
            observations=obs,
            actions=np.ones((t, 1)),
            rewards=np.full(t, 1.0 + i),
            terminations=term,
            truncations=trunc,
        )

    class FakeDataset:
        spec = types.SimpleNamespace(env_spec=types.SimpleNamespace(id="Hopper-v5"))

        def iterate_episodes(self):
            return iter([episode(0, 3, True), episode(1, 4, False)])

    calls = []
    fake = types.ModuleType("minari")
    fake.load_dataset = lambda dataset_id, download=False: calls.append((dataset_id, download)) or FakeDataset()
    monkeypatch.setitem(sys.modules, "minari", fake)
    monkeypatch.setitem(sys.modules, "d4rl", None)
    d = load("mujoco/hopper/medium-v0")
    assert calls == [("mujoco/hopper/medium-v0", False)]
    assert d["observations"].shape == (7, 2) and d["observations"].dtype == np.float32
    np.testing.assert_array_equal(d["next_observations"][:2], d["observations"][1:3])
    np.testing.assert_array_equal(d["next_observations"][2], [6, 7])  # the true s' at a termination...
    np.testing.assert_array_equal(d["observations"][3], [100, 101])  # ...not the next episode's first state
    np.testing.assert_array_equal(d["terminals"], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(d["timeouts"], [0, 0, 0, 0, 0, 0, 1])
    assert env_family(d) == "hopper" and d["metadata/env_id"] == "Hopper-v5"
    np.testing.assert_array_equal(episode_returns(d)[0], [3.0, 8.0])


def test_d4rl_package_adapter_for_names_outside_the_registry(monkeypatch):
    made = []

    class FakeOfflineEnv:
        def get_dataset(self):
            d = crafted(10)
            d["rewards"] = d["rewards"][:, None]  # D4RL squeezes (N, 1); so must we
            return d

    gym = types.ModuleType("gym")
    gym.make = lambda name: made.append(name) or FakeOfflineEnv()
    monkeypatch.setitem(sys.modules, "gym", gym)
    monkeypatch.setitem(sys.modules, "d4rl", types.ModuleType("d4rl"))
    d = load("antmaze-umaze-v0")
    assert made == ["antmaze-umaze-v0"] and d["rewards"].shape == (10,)
    assert d["metadata/d4rl_env"] == "antmaze-umaze-v0"


def test_unknown_name_without_optional_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)
    monkeypatch.setitem(sys.modules, "d4rl", None)
    with pytest.raises(KeyError, match="neither is installed"):
        load("antmaze-umaze-v0")


# ------------------------------------------------------------------------------------------------------- envs
def test_env_family_and_gym_ids():
    assert env_family("hopper-medium-replay-v0") == "hopper"
    assert env_family("Walker2d-v5") == "walker2d" and env_family("halfcheetah") == "halfcheetah"
    assert env_family({"metadata/env_id": "HalfCheetah-v4"}) == "halfcheetah"
    assert env_family({"metadata/d4rl_env": "walker2d-medium-v2"}) == "walker2d"
    with pytest.raises(ValueError, match="cannot tell"):
        env_family({"observations": np.zeros((2, 17))})
    assert gym_id("hopper-medium-v2") == "Hopper-v4" and gym_id("hopper-v5") == "Hopper-v5"


def test_evaluate_scores_episodes():
    class Zero:
        def act(self, obs, deterministic=True):
            assert deterministic and obs.ndim == 1
            return np.zeros(6, np.float32)

    out = evaluate(Zero(), "halfcheetah-medium-v2", episodes=2, seed=0, max_episode_steps=50)
    assert out["returns"].shape == (2,) and list(out["lengths"]) == [50, 50]
    np.testing.assert_allclose(out["normalized"], normalized_score("halfcheetah", out["returns"]))
    assert out["mean_normalized"] == pytest.approx(out["normalized"].mean())
    again = evaluate(lambda obs: np.zeros(6), "HalfCheetah-v4", episodes=2, seed=0, max_episode_steps=50)
    np.testing.assert_allclose(again["returns"], out["returns"])  # same seed, same start states
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda obs: np.zeros(2), "halfcheetah", episodes=1, max_episode_steps=5)
    other = evaluate(lambda obs: np.zeros(1), "Pendulum-v1", episodes=1, max_episode_steps=10)
    assert other["lengths"][0] == 10 and np.isnan(other["mean_normalized"])  # no D4RL reference returns


# -------------------------------------------------------------------------------------------------------- CLI
def test_cli_commands(tmp_path, capsys, monkeypatch):
    from kfc_lite.cli import main

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KFC_POLICIES_DIR", str(tmp_path / "no-policies"))  # as if no behaviour policy were committed
    assert main(["data", "list", "--env", "hopper", "--version", "v2"]) == 0
    out = capsys.readouterr().out
    assert "hopper-medium-replay-v2" in out and "Hopper-v4" in out and "halfcheetah" not in out.split("\n", 1)[1]
    out_file = tmp_path / "w.hdf5"
    assert (
        main(
            ["data", "make", "walker2d-random", "--size", "300", "--seed", "2", "--out", str(out_file), "--no-progress"]
        )
        == 0
    )
    assert load(str(out_file))["metadata/seed"] == 2
    assert main(["data", "make", "hopper-random", "--size", "200", "--no-progress"]) == 0  # into the cache
    capsys.readouterr()
    assert main(["data", "info", "hopper-random-replica"]) == 0
    out = capsys.readouterr().out
    assert "transitions: 200" in out and "normalized score (hopper)" in out and "episodes:" in out
    assert main(["data", "info", str(out_file)]) == 0
    assert "walker2d" in capsys.readouterr().out
    for argv, message in [
        (["data", "make", "hopper-medium", "--size", "10"], "unknown recipe"),
        (["data", "make", "hopper-medium-replica", "--size", "10"], "needs a behaviour policy"),
        (["data", "make", "hopper-random", "--size", "0"], "--size"),
        (["data", "info", "hoper-medium-v2"], "hopper-medium-v2"),
        (["data", "info", str(tmp_path / "missing.hdf5")], "no dataset file"),
        (["data", "download", "walker2d-random-replica"], "kfc-lite data make"),
    ]:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv


# ------------------------------------------------------------------------------------ user errors, through the CLI
def run_cli(argv, capsys):
    from kfc_lite.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(terminals=np.r_[np.zeros(7), np.nan, np.zeros(12)]), "'terminals' holds NaN at row 7"),
        (dict(timeouts=np.r_[np.zeros(3), np.nan, np.zeros(16)]), "'timeouts' holds NaN at row 3"),
        (
            dict(observations=np.where(np.arange(60).reshape(20, 3) == 50, 1e30, 0.0)),
            "'observations' holds 1e+30 at row 16, column 2, beyond the bound |x| <= 1e+06",
        ),
    ],
)
def test_cli_info_refuses_bad_values_and_keeps_the_file(tmp_path, capsys, change, message):
    d = crafted(20)
    d.update(change)
    path = tmp_path / "bad.hdf5"
    write_hdf5(d, path)
    before = path.read_bytes()
    code, out, err = run_cli(["data", "info", str(path)], capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"kfc-lite data: error: {path}: {message}") and "Traceback" not in err
    assert "delete the file and download it again" in err  # the fix
    assert path.read_bytes() == before


def test_cli_make_refuses_an_existing_out_unless_told(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine.hdf5"
    write_hdf5(crafted(30), out)
    before = out.read_bytes()
    argv = ["data", "make", "hopper-random", "--size", "40", "--out", str(out), "--no-progress"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert f"{out} already exists and would be replaced: pass --overwrite" in err and "nothing was generated" in err
    assert out.read_bytes() == before
    assert run_cli(argv + ["--overwrite"], capsys)[0] == 0
    assert len(load(str(out))["observations"]) == 40
    # the default destination, the cache, is protected the same way
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    assert run_cli(["data", "make", "hopper-random", "--size", "30", "--no-progress"], capsys)[0] == 0
    cached = kdata.cache_path("hopper-random-replica")
    before = open(cached, "rb").read()
    code, _, err = run_cli(["data", "make", "hopper-random", "--size", "50", "--no-progress"], capsys)
    assert code == 1 and f"{cached} already exists" in err and open(cached, "rb").read() == before


def test_write_refuses_a_file_that_appears_meanwhile(tmp_path):
    from kfc_lite.data.errors import OutputExistsError

    out = tmp_path / "x.hdf5"
    out.write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_hdf5(crafted(5), out, overwrite=False)
    assert out.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["x.hdf5"]


_SLOW_WRITER = """
import sys, time
import h5py, numpy as np
from kfc_lite.data import write_hdf5

real = h5py.Group.create_dataset
def stuck(self, *args, **kwargs):  # the first array is written, then the process hangs until it is killed
    ds = real(self, *args, **kwargs)
    print("writing", flush=True)
    time.sleep(120)
    return ds
h5py.Group.create_dataset = stuck
write_hdf5({"observations": np.zeros((10, 3))}, sys.argv[1])
"""


def test_a_killed_write_leaves_no_temp_file_behind(tmp_path, capsys):
    import signal
    import subprocess

    out = tmp_path / "d.hdf5"
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        temp = tmp_path / f".d.hdf5.{writer.pid}.tmp"
        assert temp.exists()
        write_hdf5(crafted(5), out)  # a write while that one is still running leaves its temp file alone
        assert temp.exists()
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == -signal.SIGKILL and temp.exists()  # killed: no finally ran, its temp is still there
    code, _, _ = run_cli(
        ["data", "make", "hopper-random", "--size", "20", "--out", str(out), "--overwrite", "--no-progress"], capsys
    )
    assert code == 0
    assert os.listdir(tmp_path) == ["d.hdf5"]  # the next write of the file removed the dead writer's temp
    assert len(load(str(out))["observations"]) == 20


def test_load_by_name_checks_the_file_is_that_dataset(cheetah, tmp_path, monkeypatch, capsys):
    from kfc_lite.data.errors import DatasetMismatchError

    path, _ = cheetah  # halfcheetah random data, metadata/d4rl_env = halfcheetah-random-replica
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    walker = kdata.cache_path("walker2d-random-replica")
    os.link(path, walker)  # 17-D observations, 6-D actions: Walker2d's sizes too
    code, _, err = run_cli(["data", "info", "walker2d-random-replica"], capsys)
    assert code == 1 and f"{walker} is not walker2d-random-replica" in err
    assert "expected a file of walker2d-random-replica, found metadata/d4rl_env = 'halfcheetah-random-replica'" in err
    assert "kfc-lite data make walker2d-random-replica ... --overwrite" in err
    medium = kdata.cache_path("halfcheetah-medium-replica")
    os.link(path, medium)  # the right robot, but another dataset
    with pytest.raises(DatasetMismatchError, match="expected a file of halfcheetah-medium-replica"):
        load("halfcheetah-medium-replica")
    # without metadata, the body decides: HalfCheetah's first observation value is no torso height
    d = load(str(path))
    bare = {k: v for k, v in d.items() if not k.startswith("metadata/")}
    os.remove(walker)
    write_hdf5(bare, walker)
    with pytest.raises(
        DatasetMismatchError, match="expected walker2d data: a torso height above 0.6 m.*data of halfcheetah"
    ):
        load("walker2d-random-replica")
    assert os.path.exists(walker) and os.path.exists(medium)  # refused, never deleted
