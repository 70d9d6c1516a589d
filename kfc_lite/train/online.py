"""Online SAC in a gymnasium environment: the behaviour policies of the course's replica datasets.

Same agent as the offline loop (:class:`~kfc_lite.rl.sac.SACCQL`, preset ``online-sac``), the same run folder rules
(:mod:`kfc_lite.train.run_folder`: one owner, verified checkpoints).
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from kfc_lite.train import run_folder
from kfc_lite.train.records import append_metrics, rng_state, set_rng_state, write_json_atomic
from kfc_lite.train.result import RunResult
from kfc_lite.train.run_folder import RunExistsError
from kfc_lite.validators import integer

__all__ = ["train_online_sac", "ONLINE_CHECKPOINT_FORMAT"]

ONLINE_CHECKPOINT_FORMAT = "kfc-lite-online-checkpoint"


def train_online_sac(
    env_name: str,
    steps: int,
    seed: int = 0,
    out=None,
    config=None,
    *,
    start_steps: int = 10_000,
    buffer_size: int = 1_000_000,
    eval_every: int = 10_000,
    eval_episodes: int = 5,
    checkpoint_every: int = 50_000,
    max_episode_steps: int | None = None,
    device="auto",
    progress: bool = True,
    resume: bool = False,
) -> RunResult:
    """Plain online SAC in a gymnasium environment, on the same networks as the offline agent.

    The agent is :class:`~kfc_lite.rl.sac.SACCQL` with the ``online-sac`` preset (no penalty, no warm-up, auto-tuned
    entropy) unless ``config`` says otherwise. The first ``start_steps`` actions are uniform random; then one gradient
    step per environment step. Every evaluation saves ``policies/step_<N>.pt`` with its score, so behaviour policies of
    a chosen quality ("medium": about a third of expert) can be picked afterwards.

    Checkpoints hold the agent, the replay buffer and the RNG states; a resumed run starts a fresh episode
    (MuJoCo's mid-episode state is not saved), so unlike offline training it is not bit-exact.
    """
    from kfc_lite.rl.sac import SACConfig
    from kfc_lite.settings import resolve_device, tune_cpu_allocator

    integer("steps", steps, 1)
    integer("start_steps", start_steps, 0)
    config = SACConfig.preset("online-sac") if config is None else config
    if config.use_cql:
        raise ValueError(
            "train_online_sac runs plain SAC: pass a config with online=True or cql_weight=0 "
            "(SACConfig.preset('online-sac'))"
        )
    device = resolve_device(device)
    tune_cpu_allocator()  # a training run's step temporaries stay in the heap (no page faults each step)
    run_dir = pathlib.Path(out if out is not None else os.path.join("runs", f"online-sac-{env_name}-seed{seed}"))
    ckpt_path = run_dir / "checkpoint.pt"
    with run_folder.owned(run_dir, create=True):
        if not resume and ckpt_path.exists():
            raise RunExistsError(f"{run_dir} already holds a run: pass resume=True or another out folder")
        found = run_folder.load_checkpoint(run_dir, ONLINE_CHECKPOINT_FORMAT) if resume else None
        return _train_online_sac(
            env_name,
            steps,
            seed,
            run_dir,
            config,
            device,
            found,
            start_steps=start_steps,
            buffer_size=buffer_size,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            checkpoint_every=checkpoint_every,
            max_episode_steps=max_episode_steps,
            progress=progress,
        )


def _train_online_sac(
    env_name,
    steps,
    seed,
    run_dir,
    config,
    device,
    found,
    *,
    start_steps,
    buffer_size,
    eval_every,
    eval_episodes,
    checkpoint_every,
    max_episode_steps,
    progress,
) -> RunResult:
    """train_online_sac() in a folder this process owns; ``found`` is the checkpoint to resume from (or None)."""
    from tqdm.auto import tqdm

    from kfc_lite.envs import make_env
    from kfc_lite.rl.policy import save_policy
    from kfc_lite.rl.replay import ReplayBuffer
    from kfc_lite.rl.sac import SACCQL
    from kfc_lite.settings import release_cpu_memory, seed_everything

    seed_everything(seed)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    env = make_env(env_name, seed=seed, **kwargs)
    ds, da = env.observation_space.shape[0], env.action_space.shape[0]
    if not (np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)):
        raise ValueError(f"{env_name}: the tanh policy acts in [-1, 1], this environment's action box differs")
    agent = SACCQL(ds, da, config, device)
    buffer = ReplayBuffer(ds, da, min(buffer_size, steps), device, seed=seed)
    start = 0
    if found is not None:
        ckpt = found.obj
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        set_rng_state(ckpt["rng"], device)
        start = int(ckpt["step"])
        run_folder.repair_metrics(run_dir / "metrics.jsonl", start)
    write_json_atomic(
        {
            "online": True,
            "env": env_name,
            "steps": steps,
            "seed": seed,
            "start_steps": start_steps,
            "sac": agent.config.to_dict(),
            "state_dim": ds,
            "action_dim": da,
        },
        run_dir / "config.json",
    )
    act_rng = np.random.default_rng(seed + start)
    obs, _ = env.reset(seed=seed + start)
    ep_return, evals, rows = 0.0, [], []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=f"online SAC on {env_name}", unit="step", disable=not progress)
    try:
        for step in range(start + 1, steps + 1):
            # act (uniformly at random for the first start_steps), store the transition, then one update
            if step <= start_steps:
                action = act_rng.uniform(-1, 1, size=da).astype(np.float32)
            else:
                action = agent.act(obs, deterministic=False)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)  # a time-out is not a terminal: keep bootstrapping
            ep_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()
                bar.set_postfix(episode_return=f"{ep_return:.0f}", refresh=False)
                ep_return = 0.0
            if step > start_steps:
                m = agent.update(buffer.sample(config.batch_size), metrics=step % 1000 == 0)
                if m:
                    m.update(kind="train", step=step)
                    rows.append(m)
                    append_metrics(run_dir, m)
            if eval_episodes and (step == steps or (eval_every and step % eval_every == 0)):
                evals.append(_evaluate_online(agent, env_name, run_dir, step, eval_episodes, seed, max_episode_steps))
            if step == steps or (checkpoint_every and step % checkpoint_every == 0):
                _checkpoint_online(agent, buffer, run_dir, step, device)
            bar.update(1)
    finally:
        bar.close()
        env.close()
        release_cpu_memory()
    elapsed = time.perf_counter() - t0
    policy_path = save_policy(
        agent, run_dir / "policy.pt", meta={"step": steps, "env": env_name, "algorithm": "online SAC"}
    )
    return RunResult(
        run_dir=run_dir,
        config=None,
        metrics=rows,
        evals=evals,
        policy_path=policy_path,
        steps_per_second=(steps - start) / elapsed,
        agent=agent,
    )


def _evaluate_online(agent, env_name, run_dir, step, episodes, seed, max_episode_steps) -> dict:
    """An ``eval`` line of metrics.jsonl and ``policies/step_<N>.pt`` with its score (seeds apart from training's)."""
    from kfc_lite.envs import evaluate
    from kfc_lite.rl.policy import save_policy

    res = evaluate(agent, env_name, episodes=episodes, seed=seed + 1000, max_episode_steps=max_episode_steps)
    row = {
        "kind": "eval",
        "step": step,
        "return": res["mean_return"],
        "normalized": res["mean_normalized"],
        "returns": [float(x) for x in res["returns"]],
    }
    append_metrics(run_dir, row)
    meta = {"step": step, "env": env_name, "return": row["return"], "normalized": row["normalized"]}
    save_policy(agent, run_dir / "policies" / f"step_{step}.pt", meta={**meta, "algorithm": "online SAC"})
    return row


def _checkpoint_online(agent, buffer, run_dir, step: int, device) -> None:
    """The agent, the replay buffer and every RNG state, verified (:mod:`kfc_lite.files`)."""
    from kfc_lite.files import save_verified

    payload = {
        "format": ONLINE_CHECKPOINT_FORMAT,
        "step": step,
        "agent": agent.state_dict(),
        "buffer": buffer.state_dict(),
        "rng": rng_state(device),
    }
    save_verified(payload, run_dir / "checkpoint.pt", label=f"step {step}")
