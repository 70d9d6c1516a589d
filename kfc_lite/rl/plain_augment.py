"""The augmenter interface and the two augmenters that need no model: none (plain CQL) and S4RL's Gaussian noise.

What is here:

* :class:`Augmenter`, the base class: ``augmenter(batch) -> batch`` on a dict of torch tensors, which replaces
  ``observations`` and ``next_observations`` and passes every other key through, and keeps running ``stats``
  (how far states moved, how often the Koopman branch was taken) and a ``state_dict`` for resuming;
* :class:`NoAugmentation` (method "cql") and :class:`GaussianNoise` (method "s4rl"), with the noise itself in
  :func:`gaussian_noise`, which the Koopman augmenter also uses for the samples it does not move by a symmetry.

Sibling modules: :mod:`kfc_lite.rl.koopman_augment` holds the Koopman augmenter (KFC, KFC++), built on this base
class; :mod:`kfc_lite.rl.augment` is the front door, with :func:`~kfc_lite.rl.augment.make_augmenter` (an
augmenter by method name) and every public name of the three modules.
"""

from __future__ import annotations

import torch

from kfc_lite.validators import number

__all__ = ["Augmenter", "NoAugmentation", "GaussianNoise", "gaussian_noise", "S4RL_SIGMA", "STATE_KEYS"]

#: S4RL's Gaussian noise scale in raw state units (the authors' ``noise_sigma``, "paper S4RL").
S4RL_SIGMA = 3e-3

# The only keys an augmenter changes; actions, rewards and done flags stay as logged.
STATE_KEYS = ("observations", "next_observations")


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict):
        raise TypeError(f"a batch is a dict of torch tensors, got {type(batch).__name__}")
    missing = [k for k in STATE_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"the batch has no {missing}: an augmenter needs 'observations' and 'next_observations' "
            f"(keys present: {sorted(batch)})"
        )
    s, s_next = batch["observations"], batch["next_observations"]
    for name, x in zip(STATE_KEYS, (s, s_next), strict=False):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"batch['{name}'] must be a torch tensor, got {type(x).__name__}; "
                "convert with torch.as_tensor(x, device=...)"
            )
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(
                f"batch['{name}'] must be a floating-point tensor of shape (batch, state_dim), got "
                f"{tuple(x.shape)} {x.dtype}"
            )
    if s.shape != s_next.shape:
        raise ValueError(f"observations {tuple(s.shape)} and next_observations {tuple(s_next.shape)} differ in shape")
    if s.device != s_next.device:
        raise ValueError(f"observations are on {s.device} but next_observations on {s_next.device}")
    return s, s_next


class _RunningMean:
    """A running mean whose sums stay on the tensors' device: adding never waits for the GPU; reading does."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor, count=None) -> None:
        """Add ``values.sum()``; ``count`` (an int or a device tensor) defaults to ``values.numel()``."""
        self.total = self.total + values.detach().double().sum()
        self.count = self.count + (values.numel() if count is None else count)

    @property
    def mean(self) -> float:
        count = float(self.count)
        return float(self.total) / count if count else float("nan")


class Augmenter:
    """Base class: ``augment(batch) -> batch`` (also ``augmenter(batch)``), running ``stats``, ``reset_stats()``.

    ``stats`` (running since the last reset): ``batches``, ``samples``, ``state_shift`` (mean Euclidean
    norm of ``s~ - s`` over all samples), ``next_state_shift`` (same for ``s'``), ``koopman_fraction``
    (share of samples moved by a symmetry), ``fallback_rate`` (share of the samples that drew the Koopman
    branch but fell back to noise because their eigen-decomposition failed the guard) and
    ``commutation_error`` (mean relative commutator of the symmetries used).
    """

    name = "base"

    def __init__(self):
        self.reset_stats()

    def reset_stats(self) -> None:
        self._batches = 0
        self._samples = 0
        self._koopman_drawn = 0
        self._koopman_used = 0
        self._shift = _RunningMean()
        self._next_shift = _RunningMean()
        self._commutation = _RunningMean()

    @property
    def stats(self) -> dict:
        drawn = int(self._koopman_drawn)
        used = int(self._koopman_used)
        return {
            "batches": self._batches,
            "samples": self._samples,
            "state_shift": self._shift.mean,
            "next_state_shift": self._next_shift.mean,
            "koopman_fraction": used / self._samples if self._samples else float("nan"),
            "fallback_rate": (drawn - used) / drawn if drawn else 0.0,
            "fallbacks": drawn - used,
            "commutation_error": self._commutation.mean,
        }

    def _record(self, s, s_new, s_next, s_next_new) -> None:
        self._batches += 1
        self._samples += s.shape[0]
        self._shift.add(torch.linalg.vector_norm((s_new - s).detach(), dim=-1))
        self._next_shift.add(torch.linalg.vector_norm((s_next_new - s_next).detach(), dim=-1))

    def _transform(self, s: torch.Tensor, s_next: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The state a resumed run needs beyond torch's global RNG: none here (the Koopman augmenter keeps its
        branch generator's, :class:`~kfc_lite.rl.koopman_augment.KoopmanAugmenter`)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"an augmenter's state is the dict its state_dict() gave, got {type(state).__name__}")
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state, got one with {sorted(state)}: was it saved by "
                "another method's augmenter?"
            )

    def augment(self, batch: dict) -> dict:
        """A new dict: ``batch`` with ``observations`` and ``next_observations`` replaced, all else as is."""
        s, s_next = _check_batch(batch)
        with torch.no_grad():
            s_new, s_next_new = self._transform(s, s_next, batch)
        self._record(s, s_new, s_next, s_next_new)
        out = dict(batch)
        out["observations"], out["next_observations"] = s_new, s_next_new
        return out

    __call__ = augment

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAugmentation(Augmenter):
    """Plain CQL: the batch unchanged (a new dict holding the same tensors)."""

    name = "none"

    def _transform(self, s, s_next, batch):
        return s, s_next


def gaussian_noise(s: torch.Tensor, s_next: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """S4RL noise: ``s + N(0, sigma^2)`` and ``s' + N(0, sigma^2)`` with *independent* draws (as the authors'
    CQL-Noise baseline does; it is not a transition of the system, only a neighbourhood of the data)."""
    return s + sigma * torch.randn_like(s), s_next + sigma * torch.randn_like(s_next)


class GaussianNoise(Augmenter):
    """S4RL-N: independent zero-mean Gaussian noise on ``s`` and ``s'`` (``sigma`` in raw state units)."""

    name = "s4rl"

    def __init__(self, sigma: float = S4RL_SIGMA):
        self.sigma = number("sigma (raw state units)", sigma, 0.0)
        super().__init__()

    def _transform(self, s, s_next, batch):
        return gaussian_noise(s, s_next, self.sigma)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:g})"
