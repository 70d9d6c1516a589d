"""What a training batch holds, and the checks :meth:`kfc_lite.rl.sac.SACCQL.update` makes of it and of the
augmented states it is given, so that a wrong batch fails with its reason before any gradient is computed."""

from __future__ import annotations

import torch

#: What an agent's update reads from a batch; other keys (``indices``) pass unread.
BATCH_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


def check_batch(batch: dict, state_dim: int, action_dim: int, device: torch.device) -> None:
    """Refuse a batch that lacks a key, has the wrong shapes for the agent, or lies on another device."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"the batch has no {missing}; a batch holds {list(BATCH_KEYS)}")
    s, a = batch["observations"], batch["actions"]
    if s.ndim != 2 or s.shape[1] != state_dim or a.ndim != 2 or a.shape[1] != action_dim:
        raise ValueError(
            f"this agent takes observations (B, {state_dim}) and actions (B, {action_dim}), "
            f"got {tuple(s.shape)} and {tuple(a.shape)}"
        )
    if batch["rewards"].shape != (s.shape[0],) or batch["terminals"].shape != (s.shape[0],):
        raise ValueError(
            f"rewards and terminals must have shape ({s.shape[0]},), got "
            f"{tuple(batch['rewards'].shape)} and {tuple(batch['terminals'].shape)}"
        )
    if s.device != device:
        raise ValueError(f"the batch is on {s.device} but the agent on {device}: sample batches on the agent's device")


def augmented_states(batch: dict, augmented: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s~, s~')``: the augmented batch's states, checked against the batch, or the batch's own."""
    s, s_next = batch["observations"], batch["next_observations"]
    if augmented is None:
        return s, s_next
    if not isinstance(augmented, dict) or any(k not in augmented for k in ("observations", "next_observations")):
        raise TypeError(
            "augmented must be the dict an augmenter returns for this batch (augmenter(batch)), with "
            f"'observations' and 'next_observations'; got {type(augmented).__name__}"
        )
    s_aug, s_next_aug = augmented["observations"], augmented["next_observations"]
    if s_aug.shape != s.shape or s_next_aug.shape != s_next.shape or s_aug.device != s.device:
        raise ValueError(
            f"the augmented states {tuple(s_aug.shape)} on {s_aug.device} do not match the batch's "
            f"{tuple(s.shape)} on {s.device}: pass augmenter(batch) of this very batch"
        )
    return s_aug, s_next_aug
