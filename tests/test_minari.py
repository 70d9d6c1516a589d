"""The Minari path of kfc_lite.data.load, against the real ``minari`` package (a dev dependency).

Each test writes a Minari dataset of a few hand-made episodes into its own folder (``MINARI_DATASETS_PATH``) with
``minari.create_dataset_from_buffers`` and reads it back through kfc-lite. Minari reads local datasets without the
network; ``HF_HUB_OFFLINE`` makes sure nothing tries to reach its servers.
"""

import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from kfc_lite.data import DatasetError, episode_returns, load, qlearning_dataset
from kfc_lite.data.errors import UnknownDatasetError
from kfc_lite.envs import env_family

DATASET_ID = "kfc/hopper/hand-made-v0"
#: (steps, ends in a termination rather than a truncation)
EPISODES = [(3, True), (5, False), (2, True)]


@pytest.fixture()
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "minari"


def hand_made(seed=0):
    """Hopper-sized episodes whose values say where they come from: observation row t of episode i is
    [i, t, t, ...] + 0.5, actions and rewards are drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i, (steps, terminated) in enumerate(EPISODES):
        obs = np.zeros((steps + 1, 11))
        obs[:, 0] = i
        obs[:, 1:] = np.arange(steps + 1)[:, None]
        obs += 0.5
        flags = np.zeros(steps, bool)
        episodes.append(
            dict(
                id=i,
                observations=obs,
                actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
                rewards=rng.normal(size=steps),
                terminations=flags | (np.arange(steps) == steps - 1) & terminated,
                truncations=flags | (np.arange(steps) == steps - 1) & (not terminated),
            )
        )
    return episodes


def create(dataset_id, episodes, observation_space=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari asks for an author, a code link and a description: not here
        return minari.create_dataset_from_buffers(
            dataset_id,
            [
                EpisodeBuffer(
                    **{k: (list(v) if k in ("rewards", "terminations", "truncations") else v) for k, v in ep.items()}
                )
                for ep in episodes
            ],
            env="Hopper-v4",
            algorithm_name="hand-made",
            observation_space=observation_space or gym.spaces.Box(-np.inf, np.inf, (11,), np.float64),
            action_space=gym.spaces.Box(-1, 1, (3,), np.float32),
        )


def test_minari_dataset_converts_to_d4rl_rows(minari_root):
    episodes = hand_made()
    create(DATASET_ID, episodes)
    assert (minari_root / DATASET_ID / "data").is_dir()  # really written by minari, where we pointed it
    d = load(DATASET_ID)
    n = sum(steps for steps, _ in EPISODES)
    assert d["observations"].shape == (n, 11) and d["actions"].shape == (n, 3) and d["rewards"].shape == (n,)
    assert d["observations"].dtype == np.float32
    np.testing.assert_array_equal(d["observations"], np.concatenate([ep["observations"][:-1] for ep in episodes]))
    # the true next state, also at the end of an episode (not the next episode's first state)
    np.testing.assert_array_equal(d["next_observations"], np.concatenate([ep["observations"][1:] for ep in episodes]))
    np.testing.assert_array_equal(d["actions"], np.concatenate([ep["actions"] for ep in episodes]))
    np.testing.assert_allclose(d["rewards"], np.concatenate([ep["rewards"] for ep in episodes]), rtol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(d["terminals"]), [2, 9])  # episodes 0 and 2 end in a fall
    np.testing.assert_array_equal(np.flatnonzero(d["timeouts"]), [7])  # episode 1 is cut by the time limit
    assert d["metadata/minari_id"] == DATASET_ID and d["metadata/env_id"] == "Hopper-v4"
    assert env_family(d) == "hopper"
    returns, lengths = episode_returns(d)
    np.testing.assert_array_equal(lengths, [3, 5, 2])
    np.testing.assert_allclose(returns, [ep["rewards"].sum() for ep in episodes], rtol=1e-5)
    q = qlearning_dataset(d)
    assert len(q["observations"]) == n - 2  # D4RL's rule drops the time-out row and the last row, keeps terminals
    np.testing.assert_array_equal(np.flatnonzero(q["terminals"]), [2])


def test_cli_info_reads_a_minari_dataset(minari_root, capsys):
    from kfc_lite.cli import main

    create(DATASET_ID, hand_made())
    assert main(["data", "info", DATASET_ID]) == 0
    out = capsys.readouterr().out
    assert "transitions: 10" in out and "episodes: 3 (3 complete)" in out and "normalized score (hopper)" in out


def test_bad_values_in_a_minari_dataset_are_refused_with_the_row(minari_root, capsys):
    from kfc_lite.cli import main

    episodes = hand_made()
    episodes[1]["observations"][2, 4] = np.nan  # episode 1 starts at row 3: its observation 2 is row 5
    create("kfc/hopper/nan-v0", episodes)
    assert main(["data", "info", "kfc/hopper/nan-v0"]) == 1
    err = capsys.readouterr().err
    assert "minari dataset kfc/hopper/nan-v0: 'observations' holds NaN at row 5, column 4" in err
    episodes = hand_made()
    episodes[2]["observations"][0, 0] = 1e30
    create("kfc/hopper/huge-v0", episodes)
    with pytest.raises(DatasetError, match="'observations' holds 1e\\+30 at row 8, column 0, beyond the bound"):
        load("kfc/hopper/huge-v0")


def test_dict_observations_are_refused(minari_root):
    episodes = hand_made()
    for ep in episodes:
        ep["observations"] = {"joints": ep["observations"]}
    space = gym.spaces.Dict({"joints": gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)})
    create("kfc/hopper/dict-v0", episodes, observation_space=space)
    with pytest.raises(DatasetError, match="observations are a dict \\(joints\\)"):
        load("kfc/hopper/dict-v0")


def test_an_id_that_is_nowhere_names_every_place_looked(minari_root, capsys):
    from kfc_lite.cli import main

    create(DATASET_ID, hand_made())
    with pytest.raises(
        UnknownDatasetError, match=f"Did you mean 'hopper-medium-v2'.*nor a Minari dataset in {minari_root}"
    ):
        load("hoper-medium-v2")
    assert main(["data", "info", "kfc/hopper/absent-v0"]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset 'kfc/hopper/absent-v0'" in err and "Traceback" not in err


def test_a_download_minari_cannot_make_is_a_sentence(minari_root, capsys):
    """Downloading needs minari's [hf] extra and a network; without either, the reason, not a traceback."""
    from kfc_lite.cli import main

    assert main(["data", "info", "kfc/hopper/absent-v0", "--download"]) == 1
    err = capsys.readouterr().err
    assert f"minari dataset kfc/hopper/absent-v0: not in {minari_root}, and Minari could not download it" in err
    assert "Traceback" not in err and not minari_root.joinpath("kfc", "hopper", "absent-v0", "data").exists()
