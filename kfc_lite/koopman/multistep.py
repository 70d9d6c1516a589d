"""Open-loop multi-step prediction error of a Koopman model: the diagnostic that pre-training logs every epoch.

It does not enter the loss (the paper trains one step only), but it says whether ``K(a)`` can be applied more than
once, which the one-step loss does not ask for. :func:`multistep_error` takes segments of trajectory or one
trajectory; :func:`segments_to_arrays` turns the row indices of
:func:`~kfc_lite.koopman.transitions.chained_segments` into such segments.

Sibling modules: :mod:`kfc_lite.koopman.fit` logs it during training (and re-exports it),
:mod:`kfc_lite.koopman.report` reports it for a trained model.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from kfc_lite.koopman.model import KoopmanForwardModel

__all__ = ["multistep_error", "segments_to_arrays"]


@torch.no_grad()
def multistep_error(model: KoopmanForwardModel, observations, actions, k: int | None = None) -> np.ndarray:
    """Open-loop prediction error of ``model`` for horizons 1..k: a NumPy array of k RMS errors.

    Two input layouts:

    * segments: ``observations`` (S, k+1, d_s) and ``actions`` (S, k, d_a), each segment a contiguous stretch
      of one trajectory (``k`` defaults to the segments' length);
    * one trajectory: ``observations`` (T+1, d_s) and ``actions`` (T, d_a); every window of k steps is used.

    From each segment's first state, the model encodes once, steps ``K(a_t)`` in the latent space and decodes
    (:meth:`KoopmanForwardModel.rollout`). Entry ``h-1`` is the root of the mean squared error, over segments
    and state coordinates, of the h-step prediction.
    """
    # device and dtype from the first parameter, or buffer (a model with fixed matrices has no parameters)
    p = next(itertools.chain(model.parameters(), model.buffers()))
    obs = torch.as_tensor(np.asarray(observations) if not isinstance(observations, torch.Tensor) else observations)
    act = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
    obs, act = obs.to(p.device, p.dtype), act.to(p.device, p.dtype)
    if obs.dim() == 2:
        if act.dim() == 1:
            act = act[:, None]
        if act.dim() != 2 or obs.shape[0] != act.shape[0] + 1:
            raise ValueError(
                f"for one trajectory, observations must be (T+1, d_s) and actions (T, d_a); "
                f"got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        T = act.shape[0]
        if k is None:
            raise ValueError("give k, the horizon, for a single trajectory")
        if not 1 <= k <= T:
            raise ValueError(f"k={k} must lie between 1 and the trajectory's {T} steps")
        starts = torch.arange(T - k + 1, device=obs.device)
        idx = starts[:, None] + torch.arange(k + 1, device=obs.device)[None, :]
        obs, act = obs[idx], act[idx[:, :k]]
    elif obs.dim() == 3:
        if act.dim() != 3 or act.shape[:2] != (obs.shape[0], obs.shape[1] - 1):
            raise ValueError(
                f"for segments, observations must be (S, k+1, d_s) and actions (S, k, d_a); "
                f"got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        k = act.shape[1] if k is None else k
        if not 1 <= k <= act.shape[1]:
            raise ValueError(f"k={k} must lie between 1 and the segments' {act.shape[1]} steps")
        obs, act = obs[:, : k + 1], act[:, :k]
    else:
        raise ValueError(f"observations must be (T+1, d_s) or (S, k+1, d_s), got {tuple(obs.shape)}")
    was_training = model.training
    model.eval()
    pred = model.rollout(obs[:, 0], act)
    model.train(was_training)
    err = ((pred - obs[:, 1:]) ** 2).mean(dim=(0, 2)).sqrt()
    return err.cpu().numpy().astype(np.float64)


def segments_to_arrays(data: dict, segments: np.ndarray):
    """(S, k) row indices of chained rows -> observations (S, k+1, d_s) and actions (S, k, d_a)."""
    obs = np.concatenate([data["observations"][segments], data["next_observations"][segments[:, -1:]]], axis=1)
    return obs, data["actions"][segments]
