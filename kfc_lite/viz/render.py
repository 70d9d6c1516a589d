"""MuJoCo states drawn as pictures: halfcheetah, hopper and walker2d rendered offscreen.

MuJoCo renders offscreen through EGL (a GPU or Mesa's software EGL) or OSMesa. The system needs
``libegl1`` (or ``libosmesa6`` with ``MUJOCO_GL=osmesa``); ``binder/apt.txt`` installs both. Without a
working renderer every function here falls back to a per-dimension bar plot of the state and says so
in one line, so a notebook never stops on a missing graphics library.

A D4RL observation leaves out the torso's x position (``qpos[0]``): we put the body at x = 0 and take
``qpos[1:]`` and ``qvel`` from the observation, which is exactly how the observation was built.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

_RENDER_OK: bool | None = None
#: D4RL family -> gymnasium id used for drawing (the same ids as the data layer's registry)
_ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}


def _env_id(name: str) -> str:
    low = name.lower()
    for family, env_id in _ENV_IDS.items():
        if low.startswith(family) or low == env_id.lower():
            return env_id
    raise ValueError(f"cannot draw {name!r}: rendering knows {sorted(_ENV_IDS)} (or their gymnasium ids)")


def _make(env_name: str, width: int, height: int):
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    from kfc_lite.settings import silence_mujoco_log

    silence_mujoco_log()
    return gym.make(_env_id(env_name), render_mode="rgb_array", width=width, height=height)


def renderer_available() -> bool:
    """Whether MuJoCo can render offscreen here (checked once, by drawing one small frame)."""
    global _RENDER_OK
    if _RENDER_OK is None:
        try:
            env = _make("hopper", 32, 24)
            env.reset(seed=0)
            frame = env.render()
            env.close()
            _RENDER_OK = frame is not None and frame.size > 0
        except Exception:  # any missing GL library shows up here, under several exception types
            _RENDER_OK = False
    return _RENDER_OK


def set_state_from_observation(env, observation: np.ndarray) -> None:
    """Put the simulator of a gymnasium MuJoCo env in the state an observation describes (torso x = 0)."""
    u = env.unwrapped
    nq, nv = u.model.nq, u.model.nv
    obs = np.asarray(observation, dtype=np.float64).ravel()
    if obs.size != nq - 1 + nv:
        raise ValueError(
            f"an observation of {obs.size} numbers does not fit {u.spec.id if u.spec else 'this env'} "
            f"(expected {nq - 1 + nv}: qpos without x, then qvel)"
        )
    qpos = np.concatenate([[0.0], obs[: nq - 1]])
    u.set_state(qpos, obs[nq - 1 :])


def render_observations(env_name: str, observations, width: int = 320, height: int = 240) -> list[np.ndarray] | None:
    """RGB frames, one per observation, or ``None`` when no offscreen renderer is available."""
    if not renderer_available():
        return None
    env = _make(env_name, width, height)
    env.reset(seed=0)
    frames = []
    for obs in np.atleast_2d(np.asarray(observations)):
        set_state_from_observation(env, obs)
        frames.append(env.render().copy())
    env.close()
    return frames


def _bars(ax, states, labels, title):
    states = np.atleast_2d(states)
    d = states.shape[1]
    width = 0.8 / len(states)
    for k, (s, lab) in enumerate(zip(states, labels)):
        ax.bar(np.arange(d) + k * width, s, width=width, label=lab)
    ax.set_xlabel("state dimension")
    ax.set_ylabel("value (observation units)")
    ax.set_title(title)
    ax.legend()


def compare_states(env_name: str, state, transformed, labels=("original", "transformed"), fig=None):
    """A state and its symmetry-transformed twin side by side, as pictures (or bars without a renderer)."""
    import matplotlib.pyplot as plt

    frames = render_observations(env_name, np.stack([state, transformed]))
    if frames is None:
        print(
            "No offscreen MuJoCo renderer here (install libegl1 or libosmesa6): drawing the state dimensions instead."
        )
        fig = fig or plt.figure(figsize=(8, 3.5))
        _bars(fig.add_subplot(1, 1, 1), np.stack([state, transformed]), labels, f"{env_name}: state dimensions")
        return fig
    fig = fig or plt.figure(figsize=(8, 3.5))
    diff = float(np.linalg.norm(np.asarray(transformed) - np.asarray(state)))
    for k, (frame, lab) in enumerate(zip(frames, labels)):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(frame)
        ax.set_axis_off()
        ax.set_title(lab)
    fig.suptitle(f"{env_name}: state vs transformed state (|Δs| = {diff:.3g})")
    return fig


def animate_trajectory(env_name: str, observations, transformed=None, interval_ms: int = 50):
    """A Matplotlib animation of a trajectory (and, beside it, its transformed twin).

    Returns ``(animation, html)``: in a notebook show ``IPython.display.HTML(html)``. Without a renderer
    it animates the bar plot of the state dimensions instead.
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    obs = np.atleast_2d(np.asarray(observations))
    sets = [obs] if transformed is None else [obs, np.atleast_2d(np.asarray(transformed))]
    frames = [render_observations(env_name, s) for s in sets]
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    titles = ["original", "transformed"]
    if frames[0] is None:
        print(
            "No offscreen MuJoCo renderer here (install libegl1 or libosmesa6): animating the state dimensions instead."
        )
        lo, hi = min(s.min() for s in sets), max(s.max() for s in sets)
        bars = []
        for ax, s, t in zip(axes[0], sets, titles):
            bars.append(ax.bar(np.arange(s.shape[1]), s[0]))
            ax.set_ylim(lo, hi)
            ax.set_title(t)
            ax.set_xlabel("state dimension")
            ax.set_ylabel("value")

        def step(i):
            for bar, s in zip(bars, sets):
                for rect, h in zip(bar, s[i]):
                    rect.set_height(h)
            return [r for b in bars for r in b]
    else:
        images = []
        for ax, f, t in zip(axes[0], frames, titles):
            images.append(ax.imshow(f[0]))
            ax.set_axis_off()
            ax.set_title(t)

        def step(i):
            for im, f in zip(images, frames):
                im.set_data(f[i])
            return images

    fig.suptitle(f"{env_name}: {len(obs)} steps")
    anim = animation.FuncAnimation(fig, step, frames=len(obs), interval=interval_ms, blit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = anim.to_jshtml()
    plt.close(fig)
    return anim, html
