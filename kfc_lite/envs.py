"""D4RL names -> gymnasium MuJoCo environments, evaluation rollouts and D4RL normalized scores.

Which gymnasium version stands in for D4RL's environments (``-v4``) and why is explained in
:mod:`kfc_lite.data.registry`. The library's own small task, ``pendulum``, is gymnasium's ``Pendulum-v1`` with its
torque box [-2, 2] rescaled to [-1, 1], the box every agent here acts in (docs/pendulum.md).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from kfc_lite.data import registry
from kfc_lite.data.errors import UnknownDatasetError
from kfc_lite.data.registry import normalized_score  # re-exported: envs is where evaluation lives

__all__ = ["env_family", "gym_id", "make_env", "evaluate", "normalized_score", "policy_fn"]

_METADATA_KEYS = ("metadata/d4rl_env", "metadata/env_id", "metadata/name", "metadata/minari_id")


def env_family(name_or_data) -> str:
    """``'hopper'``, ``'halfcheetah'``, ``'walker2d'`` or ``'pendulum'`` from a dataset name, a gymnasium id, or a
    loaded dict.

    A dict is read through its metadata (``metadata/d4rl_env``, ``metadata/env_id``, ...), which
    :func:`kfc_lite.data.load` and :func:`kfc_lite.data.collect.collect` write.
    """
    if isinstance(name_or_data, dict):
        for key in _METADATA_KEYS:
            value = name_or_data.get(key)
            if isinstance(value, str) and value:
                if key == "metadata/minari_id":  # mujoco/hopper/medium-v0
                    m = re.search(r"(halfcheetah|hopper|walker2d)", value.lower())
                    if m:
                        return m.group(1)
                    continue
                return registry.family_of(value)
        raise ValueError(
            "cannot tell which environment this dataset comes from: it has none of "
            f"{', '.join(_METADATA_KEYS)}. Load it by name (kfc_lite.data.load('hopper-medium-v2')) or "
            "pass the name yourself, e.g. env_family('hopper')."
        )
    return registry.family_of(name_or_data)


def gym_id(name: str) -> str:
    """The gymnasium id for a D4RL name or family; a gymnasium id is returned as it is (``Hopper-v5`` stays)."""
    if isinstance(name, str):
        key = name.strip()
        m = re.fullmatch(r"(halfcheetah|hopper|walker2d)-(v\d+)", key, flags=re.IGNORECASE)
        if m:  # any version of our three, spelled the way gymnasium does: hopper-v5 -> Hopper-v5
            return registry.GYM_IDS[m.group(1).lower()].rsplit("-", 1)[0] + "-" + m.group(2)
        if re.fullmatch(r"[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?-v\d+", key):  # another gymnasium id: Pendulum-v1
            return key
    return registry.GYM_IDS[registry.family_of(name)]


def make_env(name: str, seed: int | None = None, **kwargs):
    """The gymnasium environment for a dataset name (``hopper-medium-v2``), a family or a gymnasium id.

    A family whose gymnasium action box is not [-1, 1] (``pendulum``: torque in [-2, 2]) comes wrapped in
    gymnasium's ``RescaleAction``, so an action in [-1, 1] maps linearly onto the box; a gymnasium id
    (``Pendulum-v1``) is made exactly as gymnasium defines it.

    With ``seed``, the environment is reset once with it (and its action space seeded), so every later
    ``reset()`` without a seed continues one reproducible stream. Extra keyword arguments go to
    ``gymnasium.make`` (``render_mode='rgb_array'``, ``max_episode_steps=...``).
    """
    import gymnasium as gym

    from kfc_lite.settings import silence_mujoco_log

    silence_mujoco_log()
    env_id = gym_id(name)
    with warnings.catch_warnings():
        # our -v4 choice is deliberate (D4RL's dynamics); the "out of date" notice would only confuse learners
        warnings.filterwarnings("ignore", message=r".*is out of date.*")
        warnings.filterwarnings("ignore", message=r".*settotalmass.*")
        env = gym.make(env_id, **kwargs)
    if _rescaled(name):
        env = _unit_action_box(env)
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
    return env


def _rescaled(name: str) -> bool:
    try:
        return registry.family_of(name) in registry.RESCALED_ACTIONS
    except (KeyError, ValueError):  # another gymnasium id: made as gymnasium defines it
        return False


def _unit_action_box(env):
    """``env`` acting in [-1, 1]: the agent's tanh policy cannot reach a wider box, and a narrower one would clip."""
    from gymnasium.wrappers import RescaleAction

    shape = env.action_space.shape
    # float32 bounds, the action space's own dtype: float64 ones make gymnasium warn about lost precision
    return RescaleAction(env, np.full(shape, -1.0, np.float32), np.full(shape, 1.0, np.float32))


def policy_fn(policy):
    """``obs -> action`` for an object with ``act(obs, deterministic=True)`` or a plain callable."""
    if hasattr(policy, "act"):
        return lambda obs: policy.act(obs, deterministic=True)
    if callable(policy):
        return policy
    raise TypeError(
        f"policy must have act(obs, deterministic=True) or be a callable obs -> action, got {type(policy).__name__}"
    )


def _check_action(action, space, where: str) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32)
    if action.shape != space.shape:
        raise ValueError(
            f"{where}: the policy returned an action of shape {action.shape}, the environment "
            f"expects {space.shape}; return one 1-D action per 1-D observation"
        )
    if not np.all(np.isfinite(action)):
        raise ValueError(f"{where}: the policy returned a non-finite action {action}")
    return action


def evaluate(
    policy,
    env_name: str,
    episodes: int = 10,
    seed: int = 0,
    *,
    max_episode_steps: int | None = None,
    progress: bool = False,
) -> dict:
    """Roll ``policy`` out for ``episodes`` episodes and score them like D4RL.

    Episode ``i`` starts from ``reset(seed=seed + i)``, so two policies evaluated with one seed face the same
    start states. Actions are deterministic (``act(obs, deterministic=True)``). Returns ``returns``,
    ``lengths`` and ``normalized`` (arrays, one entry per episode) and ``mean_return``, ``mean_normalized``.
    On an environment without reference returns (any gymnasium id outside halfcheetah, hopper, walker2d,
    ``Pendulum-v1`` included: the library's pendulum is the family ``pendulum``) the normalized scores are NaN.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    act = policy_fn(policy)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    env = make_env(env_name, **kwargs)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    from tqdm.auto import trange

    try:
        for i in trange(episodes, desc=f"evaluate on {env_name}", disable=not progress):
            obs, _ = env.reset(seed=int(seed) + i)
            done, total, steps = False, 0.0, 0
            while not done:
                action = _check_action(act(np.asarray(obs, dtype=np.float32)), env.action_space, "evaluate")
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns[i], lengths[i] = total, steps
    finally:
        env.close()
    try:
        normalized = normalized_score(env_name, returns)
    except UnknownDatasetError:  # a bare gymnasium id (e.g. Pendulum-v1): there are no reference returns to scale by
        normalized = np.full(episodes, np.nan)
    return {
        "returns": returns,
        "lengths": lengths,
        "normalized": normalized,
        "mean_return": float(returns.mean()),
        "mean_normalized": float(normalized.mean()),
    }
