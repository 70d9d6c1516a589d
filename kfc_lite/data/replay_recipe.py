"""D4RL's medium-replay recipe: a replica made of an online SAC run's replay buffer, in the order recorded.

The buffer keeps transitions, not episodes, so the episode ends are recovered from the rows themselves
(:func:`_episode_bounds`): a row ends its episode when it is terminal or when the next row does not continue it.
A smaller replica (``size``) keeps every k-th whole episode, so that it has the run's mix of early and late
behaviour.

Sibling modules: :mod:`kfc_lite.data.replicas` makes every recipe and calls :func:`replay_dataset` for this one
(and re-exports it); :mod:`kfc_lite.data.policy_cards` holds the behaviour policies of the other recipes.
"""

from __future__ import annotations

import numpy as np

from kfc_lite.data import registry

__all__ = ["replay_dataset"]


def _episode_bounds(obs, next_obs, terminals, max_episode_steps: int):
    """Split rows recorded in order into episodes: ``(starts, ends)`` (ends exclusive) and the flags to store.

    A row ends its episode when it is a true terminal or when the next row does not continue it
    (``next_observations[i] != observations[i + 1]``: a reset after a time-out, or after a resumed run started a
    fresh episode). Flags follow D4RL: ``timeouts`` on a row that ends an episode without a terminal, and on the
    1000th step even if the robot also fell there (the time-out wins); the very last row is left unflagged when
    the buffer cuts its episode.
    """
    n = len(obs)
    cont = np.all(next_obs[:-1] == obs[1:], axis=1)  # row i is followed by row i+1 of the same episode
    end = np.zeros(n, dtype=bool)
    end[:-1] = terminals[:-1] | ~cont
    end[-1] = bool(terminals[-1])
    ends = np.flatnonzero(end) + 1
    starts = np.concatenate([[0], ends])
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    else:
        starts = starts[:-1]
    lengths = ends - starts
    term = np.zeros(n, dtype=bool)
    tout = np.zeros(n, dtype=bool)
    for e, length in zip(ends, lengths):
        last = e - 1
        if last == n - 1 and not terminals[last]:
            continue  # cut by the end of the buffer: neither flag, as D4RL's files end
        if length >= max_episode_steps or not terminals[last]:
            tout[last] = True
        else:
            term[last] = True
    return starts, ends, term, tout


def replay_dataset(
    checkpoint,
    up_to_step: int,
    *,
    size: int | None = None,
    max_episode_steps: int = registry.MAX_EPISODE_STEPS,
) -> dict:
    """D4RL's medium-replay recipe: the transitions of an online SAC run's replay buffer up to ``up_to_step``.

    ``checkpoint`` is the run's ``checkpoint.pt`` (:func:`kfc_lite.train.train_online_sac`); its buffer must still
    hold step 1 (the run has not wrapped its ring buffer). Rows stay in the order recorded; episode ends are
    recovered as :func:`_episode_bounds` describes. ``size`` keeps every k-th whole episode (see the docstring of
    :mod:`kfc_lite.data.replicas`) and cuts at exactly ``size`` rows. The buffer holds no simulator states or
    log-probabilities, so the file has no ``infos/*`` (D4RL's v0 replay files had none either).
    """
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "kfc-lite-online-checkpoint":
        raise ValueError(f"{checkpoint} is not an online SAC checkpoint (kfc_lite.train.train_online_sac)")
    buf, step = ckpt["buffer"], int(ckpt["step"])
    if not isinstance(up_to_step, (int, np.integer)) or not 1 <= up_to_step <= step:
        raise ValueError(
            f"up_to_step must be between 1 and the checkpoint's step {step}, got {up_to_step!r}: the "
            "buffer holds only the steps the run has taken"
        )
    if int(buf["size"]) < step:
        raise ValueError(
            f"{checkpoint}: the replay buffer holds {buf['size']} of the run's {step} steps (the ring "
            "buffer wrapped), so the first transitions are gone; train with a buffer at least as large "
            "as the step count"
        )
    data = {k: v[:up_to_step].numpy() for k, v in buf["data"].items()}
    obs, next_obs = data["observations"], data["next_observations"]
    starts, ends, term, tout = _episode_bounds(obs, next_obs, data["terminals"].astype(bool), max_episode_steps)
    out = {
        "observations": obs,
        "actions": data["actions"],
        "next_observations": next_obs,
        "rewards": data["rewards"],
        "terminals": term,
        "timeouts": tout,
    }
    if size is not None and size < up_to_step:
        if size < 1:
            raise ValueError(f"size must be a positive number of transitions, got {size}")
        k = int(np.ceil(up_to_step / size))
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts[::k], ends[::k])])
        if len(rows) < size:  # every k-th episode fell short (unequal lengths): fill with the others, in order
            rest = np.setdiff1d(np.arange(up_to_step), rows)
            rows = np.sort(np.concatenate([rows, rest[: size - len(rows)]]))
        rows = rows[:size]
        out = {key: v[rows] for key, v in out.items()}
        # a kept episode followed by one that is not its own continuation must end with a flag
        _, _, term2, tout2 = _episode_bounds(
            out["observations"], out["next_observations"], out["terminals"], max_episode_steps
        )
        out["terminals"], out["timeouts"] = out["terminals"] | term2, (out["timeouts"] | tout2) & ~out["terminals"]
    out["metadata/replay_checkpoint_step"] = step
    out["metadata/replay_up_to_step"] = int(up_to_step)
    return out
