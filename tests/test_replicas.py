"""Replica recipes (kfc_lite.data.replicas) and the committed behaviour policies (policies/)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

from kfc_lite.data import load, qlearning_dataset, split_episodes
from kfc_lite.data.replay_recipe import _episode_bounds
from kfc_lite.data.replicas import concatenate, file_sha256, make_replica, replay_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"


def _behaviour(monkeypatch, root: pathlib.Path):
    """policies/behaviour.py as a module, its folders moved under ``root``."""
    spec = importlib.util.spec_from_file_location("behaviour_script", POLICIES / "behaviour.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", root)
    monkeypatch.setattr(mod, "RUNS", root / "runs" / "behaviour")
    monkeypatch.setattr(mod, "POLICIES", root / "policies")
    (root / "policies").mkdir(parents=True, exist_ok=True)
    return mod


# ------------------------------------------------------------------------------------ replay buffer recipe
def _fake_buffer(tmp_path, episodes, cut_last: bool, step=None, size=None):
    """An online checkpoint whose buffer holds ``episodes``: (length, ends_in_terminal, continues_after)."""
    import torch

    obs, nxt, term = [], [], []
    counter = 0.0
    for length, terminal in episodes:
        start = counter * 100.0
        for t in range(length):
            obs.append([start + t, 0.0])
            nxt.append([start + t + 1, 0.0])
            term.append(terminal and t == length - 1)
        counter += 1
    n = len(obs)
    data = {
        "observations": torch.tensor(obs, dtype=torch.float32),
        "next_observations": torch.tensor(nxt, dtype=torch.float32),
        "actions": torch.zeros(n, 1),
        "rewards": torch.arange(n, dtype=torch.float32),
        "terminals": torch.tensor(term),
    }
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "format": "kfc-lite-online-checkpoint",
            "step": step or n,
            "buffer": {"data": data, "pos": n, "size": size or n, "generator": torch.Generator().get_state()},
        },
        path,
    )
    return path, n


def test_replay_flags_terminals_timeouts_and_cuts(tmp_path):
    # a fall after 3 steps, a full 5-step episode that also fell on its last step, one cut after 2 steps (a
    # resumed run started afresh), one full 5-step episode, and a cut by the end of the buffer
    path, n = _fake_buffer(tmp_path, [(3, True), (5, True), (2, False), (5, False), (3, False)], cut_last=True)
    d = replay_dataset(path, n, max_episode_steps=5)
    assert np.flatnonzero(d["terminals"]).tolist() == [2]
    assert np.flatnonzero(d["timeouts"]).tolist() == [7, 9, 14]  # the time-out wins on row 7
    assert not (d["terminals"] & d["timeouts"]).any()
    starts, ends, complete = split_episodes(d)
    assert starts.tolist() == [0, 3, 8, 10, 15] and complete.tolist() == [True] * 4 + [False]
    q = qlearning_dataset(d)
    # D4RL drops time-out rows and the last row; every kept row's s' is its own successor or a terminal's
    assert len(q["observations"]) == n - 3 - 1
    ok = (q["next_observations"][:, 0] == q["observations"][:, 0] + 1) | q["terminals"]
    assert ok.all()
    # up_to_step: the first rows, in the order recorded
    d8 = replay_dataset(path, 8, max_episode_steps=5)
    np.testing.assert_array_equal(d8["rewards"], np.arange(8))
    assert d8["timeouts"].tolist()[-1] is True and d8["metadata/replay_up_to_step"] == 8


def test_replay_subsample_keeps_whole_episodes(tmp_path):
    path, n = _fake_buffer(tmp_path, [(4, True)] * 10, cut_last=False)
    d = replay_dataset(path, n, size=20, max_episode_steps=1000)
    assert len(d["observations"]) == 20
    # every second episode: starts at 0, 8, 16, ... and each is whole (4 rows, ending in its terminal)
    np.testing.assert_array_equal(d["observations"][::4, 0], [0, 200, 400, 600, 800])
    assert np.flatnonzero(d["terminals"]).tolist() == [3, 7, 11, 15, 19]


def test_replay_errors(tmp_path):
    path, n = _fake_buffer(tmp_path, [(4, True)] * 3, cut_last=False)
    with pytest.raises(ValueError, match="between 1 and the checkpoint's step"):
        replay_dataset(path, n + 1)
    path, n = _fake_buffer(tmp_path, [(4, True)] * 3, cut_last=False, step=50, size=12)
    with pytest.raises(ValueError, match="wrapped"):
        replay_dataset(path, 5)
    bad = tmp_path / "other.pt"
    import torch

    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="not an online SAC checkpoint"):
        replay_dataset(bad, 1)


def test_concatenate_flags_the_seam_only():
    a = {
        "observations": np.zeros((3, 1)),
        "terminals": np.zeros(3, bool),
        "timeouts": np.zeros(3, bool),
        "metadata/x": "a",
    }
    b = {"observations": np.ones((2, 1)), "terminals": np.array([False, True]), "timeouts": np.zeros(2, bool)}
    c = concatenate([a, b])
    assert c["timeouts"].tolist() == [False, False, True, False, False]
    assert c["terminals"].tolist() == [False, False, False, False, True] and "metadata/x" not in c
    assert not a["timeouts"].any()  # the parts are not changed


def test_episode_bounds_of_a_single_cut_episode():
    obs = np.arange(4, dtype=np.float32)[:, None]
    _, _, term, tout = _episode_bounds(obs, obs + 1, np.zeros(4, bool), 1000)
    assert not term.any() and not tout.any()


# ------------------------------------------------------------------------------------ end to end, tiny
def test_recipes_end_to_end_from_a_tiny_online_run(tmp_path, monkeypatch):
    """Online SAC -> select (card) -> every replica recipe at a tiny size -> load -> qlearning_dataset."""
    from kfc_lite.cli import main
    from kfc_lite.train import train_online_sac

    bh = _behaviour(monkeypatch, tmp_path)
    run = bh.run_dir("hopper", 0)
    train_online_sac(
        "hopper",
        90,
        seed=0,
        out=run,
        start_steps=60,
        eval_every=45,
        eval_episodes=1,
        checkpoint_every=45,
        max_episode_steps=25,
        progress=False,
    )
    monkeypatch.setattr(bh, "EVAL_EPISODES", 2)
    for level, step in (("medium", 45), ("expert", 90)):
        assert bh.main(["select", "hopper", level, "--step", str(step)]) == 0
    card = json.loads((tmp_path / "policies" / "hopper-medium.json").read_text())
    assert card["training_steps"] == 45 and card["replay_up_to_step"] == 45
    assert card["sha256"] == file_sha256(tmp_path / "policies" / "hopper-medium.pt")
    assert card["replay_buffer"] == "runs/behaviour/hopper-sac-seed0/checkpoint.pt"
    assert "behaviour.py train hopper --steps 90" in card["command"]

    monkeypatch.setenv("KFC_POLICIES_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    sizes = {"random": 60, "medium": 60, "expert": 60, "medium-expert": 80, "medium-replay": None}
    for kind, size in sizes.items():
        argv = ["data", "make", f"hopper-{kind}-replica", "--no-progress"] + (["--size", str(size)] if size else [])
        assert main(argv) == 0, kind
        d = load(f"hopper-{kind}-replica")  # from the cache, by name
        assert d["metadata/replica"] is True and d["metadata/recipe"] == f"hopper-{kind}-replica"
        assert "metadata/versions/gymnasium" in d and "metadata/versions/mujoco" in d
        assert len(d["observations"]) == (size or 45)
        q = qlearning_dataset(d)
        assert len(q["observations"]) >= (size or 45) // 2
        cards = json.loads(d["metadata/policy_card"])
        if kind in ("medium", "expert", "medium-expert"):
            assert [c["level"] for c in cards] == (["medium", "expert"] if kind == "medium-expert" else [kind])
            assert all(c["sha256"].startswith("sha256:") for c in cards)
    rep = load("hopper-medium-replay-replica")
    assert cards and json.loads(rep["metadata/policy_card"])[0]["name"] == "hopper-medium"
    # the replay data are the first 45 steps the run recorded: the 25-step time limit shows as a time-out
    assert rep["timeouts"][24] and not rep["terminals"][24]
    me = load("hopper-medium-expert-replica")
    assert me["timeouts"][39] or me["terminals"][39]  # the seam between the parts ends an episode

    # a replaced policy file no longer matches its card
    (tmp_path / "policies" / "hopper-medium.pt").write_bytes(b"not the policy")
    with pytest.raises(ValueError, match="does not match its card"):
        make_replica("hopper-medium-replica", size=5, progress=False)


def test_recipe_errors(tmp_path, monkeypatch, capsys):
    from kfc_lite.cli import main

    monkeypatch.setenv("KFC_POLICIES_DIR", str(tmp_path / "none"))
    for argv, message in [
        (["data", "make", "hopper-expert-replica", "--size", "5"], "needs a behaviour policy"),
        (["data", "make", "walker2d-medium-expert-replica", "--size", "5"], "walker2d-medium needs a behaviour policy"),
        (["data", "make", "hopper-medium-replay-replica"], "needs a behaviour policy"),
        (
            ["data", "make", "hopper-medium-replay-replica", "--buffer", str(tmp_path / "x.pt"), "--up-to-step", "3"],
            "replay buffer",
        ),
        (["data", "make", "hopper-medium-replay", "--size", "5"], "unknown recipe"),
        (["data", "make", "hopper-random-replica", "--size", "-1"], "--size"),
    ]:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv


# ------------------------------------------------------------------------------------ committed policies
CARDS = sorted(POLICIES.glob("*.json"))


def test_policy_cards_exist_for_hopper_medium():
    assert (POLICIES / "hopper-medium.json").is_file() and (POLICIES / "hopper-medium.pt").is_file()


@pytest.mark.parametrize("card_file", CARDS, ids=[c.stem for c in CARDS])
def test_committed_policy_cards_match_their_files(card_file):
    from kfc_lite.data.registry import GYM_IDS, normalized_score
    from kfc_lite.envs import make_env
    from kfc_lite.rl import load_policy

    card = json.loads(card_file.read_text())
    pt = card_file.with_name(card["policy_file"])
    assert card["name"] == card_file.stem == pt.stem == f"{card['env']}-{card['level']}"
    assert file_sha256(pt) == card["sha256"]
    env = make_env(card["env"])
    pol = load_policy(pt, state_dim=env.observation_space.shape[0], action_dim=env.action_space.shape[0])
    env.close()
    assert card["gym_id"] == GYM_IDS[card["env"]]
    assert pol.meta["step"] == card["training_steps"] and pol.meta["env"] == card["env"]
    for mode in ("sampled", "deterministic"):
        ev = card["evaluation"][mode]
        r = np.asarray(ev["returns"])
        assert len(r) == card["evaluation"]["episodes"] == 20
        assert ev["mean_return"] == pytest.approx(r.mean(), abs=0.01) and ev["std_return"] == pytest.approx(
            r.std(), abs=0.01
        )
        assert ev["mean_normalized"] == pytest.approx(normalized_score(card["env"], r).mean(), abs=0.01)
    md = card_file.with_suffix(".md").read_text()
    assert card["sha256"] in md and card["command"] in md
    assert f"{card['evaluation']['sampled']['mean_return']:.1f}" in md
    if card["level"] == "medium":
        ckpt = ROOT / card["replay_buffer"]
        if ckpt.is_file():  # the run folder is git-ignored: check the buffer only where it exists
            spec = importlib.util.spec_from_file_location("behaviour_script", POLICIES / "behaviour.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            assert mod.replay_fingerprint(ckpt, card["replay_up_to_step"]) == card["replay_sha256"]
