"""Generate D4RL-format datasets locally: roll a behaviour policy out in the matching gymnasium MuJoCo env.

This follows D4RL's ``scripts/generation/mujoco/collect_data.py``:

* episodes end at a true termination (``terminals``) or after 1000 steps (``timeouts``); at step 1000 the
  time-out wins, even if the robot also fell, so the two flags never both hold on one row (as in D4RL);
* ``infos/qpos`` and ``infos/qvel`` are the simulator state *before* the step, i.e. the state of ``observations``
  (MuJoCo environments only: the pendulum's observation already is its whole state);
* ``next_observations`` is the true next observation, also on terminal rows;
* ``infos/action_log_probs`` is log pi(a|s) of the recorded action when the policy can tell it;
* the random recipe draws actions uniformly from the action box; its log-probability is -log(volume of the box);
* the file stops after exactly ``n_steps`` rows, so the last episode may be cut (neither flag on its last row).

The first episode starts from ``env.reset(seed=seed)`` and later resets continue that seeded stream, so a seed
and a deterministic-for-its-seed policy give the same file every time.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from kfc_lite.data import registry
from kfc_lite.data.hdf5 import write_hdf5


class RandomPolicy:
    """D4RL's random behaviour policy: actions uniform in the action box, with their log-probability.

    A uniform density has no mode, so ``deterministic`` is ignored: every call draws a fresh action. The draws
    come from the policy's own generator (``seed``), so they do not depend on the environment's seed.
    """

    algorithm = "random (uniform in the action box)"

    def __init__(self, action_space, seed: int | None = 0):
        self.low = np.asarray(action_space.low, dtype=np.float64)
        self.high = np.asarray(action_space.high, dtype=np.float64)
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise ValueError("RandomPolicy needs a bounded action box; this action space has infinite bounds")
        self.shape = tuple(action_space.shape)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.log_prob = float(-np.sum(np.log(self.high - self.low)))

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, size=self.shape).astype(np.float32)

    def act_with_log_prob(self, obs):
        return self.act(obs), self.log_prob

    def __repr__(self) -> str:
        return f"RandomPolicy(uniform, seed={self.seed})"


def _behaviour(policy):
    """``obs -> (action, log_prob or None)`` for any policy shape we accept (duck typing)."""
    if hasattr(policy, "act_with_log_prob"):

        def step(obs):
            action, log_prob = policy.act_with_log_prob(obs)
            return action, float(np.asarray(log_prob).reshape(-1)[0]) if np.size(log_prob) == 1 else log_prob

        return step, True
    if hasattr(policy, "act"):
        return (lambda obs: (policy.act(obs, deterministic=False), None)), False
    if callable(policy):
        return (lambda obs: (policy(obs), None)), False
    raise TypeError(
        f"a behaviour policy needs act_with_log_prob(obs), act(obs, deterministic) or to be callable; "
        f"got {type(policy).__name__}"
    )


def _dataset_name(env_name: str) -> str:
    """The replica name the data stand in for (``hopper-random`` -> ``hopper-random-replica``), else the family."""
    key = env_name.strip().lower()
    if registry.is_known(key):
        info = registry.get(key)
        return f"{info.env}-{info.kind}-replica"
    m = re.fullmatch(r"(" + "|".join(registry.FAMILIES) + r")-(" + "|".join(registry.KINDS) + r")(-replica)?", key)
    if m:
        return f"{m.group(1)}-{m.group(2)}-replica"
    return registry.family_of(env_name)


def _versions() -> dict:
    import gymnasium

    import kfc_lite

    out = {"kfc_lite": kfc_lite.__version__, "gymnasium": gymnasium.__version__, "numpy": np.__version__}
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def collect(
    env_name: str,
    policy,
    n_steps: int,
    seed: int = 0,
    path=None,
    progress: bool = True,
    *,
    max_episode_steps: int = registry.MAX_EPISODE_STEPS,
    policy_name: str | None = None,
) -> dict:
    """Roll ``policy`` out for exactly ``n_steps`` transitions and return (and, with ``path``, write) the dataset.

    ``env_name`` is a recipe or dataset name (``halfcheetah-random``, ``hopper-medium-replica``), a family or a
    gymnasium id. ``policy`` is a :class:`RandomPolicy`, an object from ``kfc_lite.rl.load_policy`` (anything with
    ``act_with_log_prob(obs) -> (action, log_prob)`` and/or ``act(obs, deterministic)``), or a callable
    ``obs -> action``. Stochastic policies are sampled (``deterministic=False``), as D4RL's were.
    """
    from tqdm.auto import tqdm

    from kfc_lite.envs import _check_action, make_env

    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_steps, seed = int(n_steps), int(seed)
    if "torch" in sys.modules:  # a torch policy samples with torch's generator: seed it too (no import otherwise)
        sys.modules["torch"].manual_seed(seed)
    env = make_env(env_name, max_episode_steps=max_episode_steps)
    step_policy, has_log_prob = _behaviour(policy)
    sim = getattr(env.unwrapped, "data", None)  # MuJoCo's simulator state; None for other environments
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    out = {
        "observations": np.empty((n_steps, obs_dim), np.float32),
        "actions": np.empty((n_steps, act_dim), np.float32),
        "next_observations": np.empty((n_steps, obs_dim), np.float32),
        "rewards": np.empty(n_steps, np.float32),
        "terminals": np.zeros(n_steps, bool),
        "timeouts": np.zeros(n_steps, bool),
    }
    if sim is not None:
        out["infos/qpos"] = np.empty((n_steps, sim.qpos.size), np.float32)
        out["infos/qvel"] = np.empty((n_steps, sim.qvel.size), np.float32)
    log_probs = np.empty(n_steps, np.float32) if has_log_prob else None
    obs, _ = env.reset(seed=seed)
    t = 0
    bar = tqdm(total=n_steps, desc=f"collect {env_name}", unit="step", disable=not progress)
    try:
        for i in range(n_steps):
            action, log_prob = step_policy(np.asarray(obs, dtype=np.float32))
            action = _check_action(action, env.action_space, "collect")
            if sim is not None:
                out["infos/qpos"][i] = sim.qpos
                out["infos/qvel"][i] = sim.qvel
            next_obs, reward, terminated, truncated, _ = env.step(action)
            t += 1
            out["observations"][i] = obs
            out["actions"][i] = action
            out["next_observations"][i] = next_obs
            out["rewards"][i] = reward
            if log_probs is not None:
                log_probs[i] = log_prob
            if t >= max_episode_steps:
                out["timeouts"][i] = True  # D4RL: the time-out wins over a fall on the very last step
            elif terminated:
                out["terminals"][i] = True
            elif truncated:  # pragma: no cover - a wrapper with a shorter limit than max_episode_steps
                out["timeouts"][i] = True
            if out["terminals"][i] or out["timeouts"][i]:
                bar.update(t)
                obs, _ = env.reset()
                t = 0
            else:
                obs = next_obs
        bar.update(t)
    finally:
        bar.close()
        env.close()
    if log_probs is not None:
        out["infos/action_log_probs"] = log_probs
    name = policy_name or (repr(policy) if isinstance(policy, RandomPolicy) else type(policy).__name__)
    out["metadata/env_id"] = env.spec.id
    out["metadata/d4rl_env"] = _dataset_name(env_name)
    out["metadata/policy"] = str(name)
    out["metadata/seed"] = seed
    out["metadata/replica"] = True
    out["metadata/max_episode_steps"] = int(max_episode_steps)
    if getattr(policy, "algorithm", None):
        out["metadata/algorithm"] = str(policy.algorithm)
    for key, version in _versions().items():
        out[f"metadata/versions/{key}"] = str(version)
    if path is not None:
        write_hdf5(out, path)
    return out
