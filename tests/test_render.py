"""MuJoCo states drawn as pictures, and the fall-back when no renderer is available."""

import numpy as np
import pytest

from kfc_lite.viz import render


def hopper_observation(seed=0):
    import gymnasium as gym

    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    env.close()
    return obs


def test_state_round_trips_through_the_simulator():
    import gymnasium as gym

    obs = hopper_observation()
    env = gym.make("Hopper-v5")
    env.reset(seed=1)
    render.set_state_from_observation(env, obs)
    again = env.unwrapped._get_obs()
    np.testing.assert_allclose(again, obs, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        render.set_state_from_observation(env, obs[:-1])


def test_unknown_environment_is_named():
    with pytest.raises(ValueError, match="cannot draw"):
        render._env_id("ant")


@pytest.mark.skipif(not render.renderer_available(), reason="no offscreen MuJoCo renderer (libegl1/libosmesa6) here")
def test_a_changed_state_draws_a_different_picture():
    obs = hopper_observation()
    moved = obs.copy()
    moved[1] += 0.5  # torso angle
    a, b = render.render_observations("hopper", np.stack([obs, moved]), width=96, height=72)
    assert a.shape == (72, 96, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_fallback_draws_bars_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(render, "_RENDER_OK", False)
    obs = hopper_observation()
    fig = render.compare_states("hopper", obs, obs + 0.1)
    assert "No offscreen MuJoCo renderer" in capsys.readouterr().out
    assert len(fig.axes[0].patches) == 2 * obs.size
    _, html = render.animate_trajectory("hopper", np.stack([obs, obs + 0.1, obs + 0.2]))
    assert "<script" in html


def test_compare_and_animate_with_whatever_renderer_is_here():
    obs = hopper_observation()
    fig = render.compare_states("hopper", obs, obs * 1.01)
    assert fig.axes
    _, html = render.animate_trajectory("hopper", np.stack([obs, obs]), transformed=np.stack([obs, obs]))
    assert "<script" in html
