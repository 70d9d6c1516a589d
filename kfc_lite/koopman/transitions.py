"""Logged transitions for Koopman pre-training: checking them, chaining rows into trajectory segments, splitting.

:func:`validate_transitions` turns a transitions dict (NumPy or torch) into checked NumPy arrays. Rows that
continue one another (:func:`chain_links`) form stretches of trajectory; :func:`chained_segments` cuts them into
non-overlapping k-row segments, and :func:`split_indices` uses those to make the seeded 70/30 train/validation
split, keeping whole segments on the validation side so that multi-step error can be measured there.

Sibling modules: :mod:`kfc_lite.koopman.multistep` measures the error on those segments,
:mod:`kfc_lite.koopman.objective` holds the config and the loss, and :mod:`kfc_lite.koopman.fit` the training loop
(which re-exports the names here).
"""

from __future__ import annotations

import numpy as np
import torch

from kfc_lite.koopman.objective import KoopmanTrainConfig

__all__ = ["REQUIRED_KEYS", "validate_transitions", "chain_links", "chained_segments", "split_indices"]

REQUIRED_KEYS = ("observations", "actions", "next_observations", "terminals")


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def validate_transitions(transitions: dict) -> dict:
    """Check the transitions dict and return NumPy arrays; raise a clear error on anything off.

    Needed: ``observations`` (N, d_s), ``actions`` (N, d_a), ``next_observations`` (N, d_s), ``terminals`` (N,).
    Optional: ``timeouts`` (N,), ``episode_starts`` (N,). All finite, all with the same N.
    """
    if not isinstance(transitions, dict):
        raise TypeError(f"transitions must be a dict with keys {REQUIRED_KEYS}, got {type(transitions).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in transitions]
    if missing:
        raise KeyError(
            f"transitions lack {missing}: a dict with {list(REQUIRED_KEYS)} is needed "
            "(d4rl.qlearning_dataset and kfc_lite.koopman.gym_transitions give one)"
        )
    out = {k: _as_numpy(transitions[k]) for k in REQUIRED_KEYS}
    for k in ("timeouts", "episode_starts"):
        if k in transitions and transitions[k] is not None:
            out[k] = _as_numpy(transitions[k]).astype(bool).reshape(-1)
    obs, act, nxt = out["observations"], out["actions"], out["next_observations"]
    if obs.ndim != 2:
        raise ValueError(f"observations must have shape (N, state_dim), got {obs.shape}")
    if act.ndim == 1:
        act = out["actions"] = act[:, None]
    if act.ndim != 2:
        raise ValueError(f"actions must have shape (N, action_dim), got {act.shape}")
    if nxt.shape != obs.shape:
        raise ValueError(f"next_observations has shape {nxt.shape} but observations has {obs.shape}: they must match")
    out["terminals"] = out["terminals"].reshape(-1).astype(bool)
    n = obs.shape[0]
    for k, v in out.items():
        if v.shape[0] != n:
            raise ValueError(
                f"{k} has {v.shape[0]} rows but observations has {n}: every array needs one row per transition"
            )
    for k in ("observations", "actions", "next_observations"):
        bad = ~np.isfinite(out[k])
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{k} contains NaN or inf in {len(rows)} row(s) (first: row {rows[0]}): "
                "remove or repair those transitions before training"
            )
    if n == 0:
        raise ValueError("transitions are empty")
    return out


def chain_links(data: dict) -> np.ndarray:
    """``links[i]`` is True when row ``i+1`` continues row ``i`` (length N-1).

    Row i+1 continues row i when it starts where row i ended (``next_observations[i] == observations[i+1]``
    exactly), row i is neither terminal nor a timeout, and row i+1 does not start an episode.
    """
    obs, nxt = data["observations"], data["next_observations"]
    links = np.all(nxt[:-1] == obs[1:], axis=1) & ~data["terminals"][:-1]
    if "timeouts" in data:
        links &= ~data["timeouts"][:-1]
    if "episode_starts" in data:
        links &= ~data["episode_starts"][1:]
    return links


def chained_segments(data: dict, k: int) -> np.ndarray:
    """Non-overlapping stretches of ``k`` consecutive chained, non-terminal rows: an (S, k) array of row indices.

    Scans the rows in order and takes a window ``i .. i+k-1`` whenever its rows chain (:func:`chain_links`) and
    none is terminal, then goes on after it; otherwise it moves one row on. Used for the split's validation
    segments and for the multi-step error of :func:`kfc_lite.koopman.report.koopman_report`.
    """
    usable = ~data["terminals"]
    n = usable.shape[0]
    if n < k:
        return np.zeros((0, k), dtype=np.int64)
    links = chain_links(data)
    # run_id increments whenever the chain breaks, so equal ids are one contiguous stretch
    run_id = np.concatenate([[0], np.cumsum(~links)])
    starts = []
    i = 0
    while i + k <= n:
        if run_id[i] == run_id[i + k - 1] and usable[i : i + k].all():
            starts.append(i)
            i += k
        else:
            i += 1
    if not starts:
        return np.zeros((0, k), dtype=np.int64)
    return np.asarray(starts, dtype=np.int64)[:, None] + np.arange(k)[None, :]


def split_indices(data: dict, config: KoopmanTrainConfig):
    """The seeded 70/30 split of usable rows, and the contiguous validation segments of ``multistep_k`` rows.

    Rows with ``terminals=True`` are left out (see :func:`~kfc_lite.koopman.fit.fit_koopman`). With
    ``split_by_segments`` (default), the rows are first cut into consecutive chunks of ``multistep_k`` chained rows
    (:func:`chain_links`); each chunk goes to train or validation as a whole, with probability ``train_fraction``,
    and leftover rows (episode tails, unchained data) are assigned one by one the same way. So it is still a random
    70/30 split of transitions, the paper's split when nothing is chained, but the validation set contains whole
    k-step stretches of trajectory on which multi-step error can be measured: a per-row split would leave almost
    none (a run of k validation rows has probability 0.3^k) and neighbouring rows, nearly duplicates, would straddle
    the split.

    Returns ``(train_rows, val_rows, val_segments)``, the last an (S, k) array of row indices, each row a
    contiguous chained stretch inside the validation set.
    """
    rng = np.random.default_rng(config.seed)
    usable = ~data["terminals"]
    n = usable.shape[0]
    k = config.multistep_k
    in_train = np.zeros(n, dtype=bool)
    segments = np.zeros((0, k), dtype=np.int64)
    assigned = np.zeros(n, dtype=bool)
    if config.split_by_segments and k > 1 and n > k:
        chunks = chained_segments(data, k)
        if len(chunks):
            to_train = rng.random(len(chunks)) < config.train_fraction
            in_train[chunks[to_train].ravel()] = True
            assigned[chunks.ravel()] = True
            segments = chunks[~to_train]
    rest = np.flatnonzero(~assigned & usable)
    in_train[rest[rng.random(len(rest)) < config.train_fraction]] = True
    train_rows = np.flatnonzero(in_train & usable)
    val_rows = np.flatnonzero(~in_train & usable)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(
            f"the split left {len(train_rows)} training and {len(val_rows)} validation rows out of "
            f"{int(usable.sum())} usable ones: give more transitions"
        )
    return train_rows, val_rows, segments
