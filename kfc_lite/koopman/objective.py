"""What Koopman pre-training optimises, and with which settings (docs/paper.md, 'The Koopman forward model').

The loss is one-step only, with no latent-consistency and no multi-step term:

    L = Huber( D(K(a_t) E(s_t)), s_{t+1} ) + 10 * Huber( D(E(x~)), x~ ),   x~ = x + N(0, 0.06^2),  x in [s_t; s_{t+1}]

Here: :class:`KoopmanTrainConfig`, every number of the paper's pre-training as a default, and the loss as small
functions, one per term (:func:`prediction_loss`, :func:`reconstruction_loss`, the opt-in
:func:`latent_consistency_loss`), summed by :func:`koopman_loss`.

Sibling modules: :mod:`kfc_lite.koopman.transitions` checks the data and splits it, :mod:`kfc_lite.koopman.multistep`
measures open-loop error, :mod:`kfc_lite.koopman.fit` is the training loop (:func:`~kfc_lite.koopman.fit.fit_koopman`,
which re-exports the names here) and :mod:`kfc_lite.koopman.pretraining_checkpoint` saves and resumes it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kfc_lite.koopman.model import KoopmanForwardModel

__all__ = [
    "KoopmanTrainConfig",
    "huber",
    "prediction_loss",
    "reconstruction_loss",
    "latent_consistency_loss",
    "koopman_loss",
]


@dataclass
class KoopmanTrainConfig:
    """Every number of the paper's Koopman pre-training, as a default. Validated on creation.

    ``max_steps`` and ``max_epochs`` cap a run (quick mode, tests); ``early_stopping=False`` turns the paper's
    ratio rule off. ``multistep_k`` is the horizon of the logged validation multi-step error, and the length
    of the contiguous segments the split keeps together (see :func:`~kfc_lite.koopman.transitions.split_indices`).
    """

    latent_dim: int = 32
    hidden_dim: int = 512
    batch_size: int = 256
    lr: float = 3e-4
    recon_weight: float = 10.0
    noise_std: float = 0.06
    train_fraction: float = 0.7
    seed: int = 0
    max_epochs: int = 400
    max_steps: int | None = None
    lr_decay_start: int = 101
    lr_decay_every: int = 50
    lr_decay_factor: float = 0.5
    early_stopping: bool = True
    early_stop_start: int = 75
    early_stop_window: int = 5
    #: stop when (recon ratio <= a and forward ratio <= b), or forward ratio <= c, or recon ratio <= d
    stop_recon_and_forward: tuple = (0.90, 0.92)
    stop_forward: float = 0.90
    stop_recon: float = 0.90
    multistep_k: int = 10
    #: opt-in extension, NOT in the paper (docs/paper.md, 'The Koopman forward model'): weight of
    #: Huber(K(a) E(s), E(s')). 0 (the paper) leaves K(a) free wherever the decoder does not look, which spoils
    #: open-loop rollouts.
    latent_weight: float = 0.0
    #: at most this many validation segments enter the logged multi-step error (it is a diagnostic, keep it cheap)
    multistep_max_segments: int = 512
    split_by_segments: bool = True

    def __post_init__(self):
        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if allow_none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(
                    f"KoopmanTrainConfig.{name} must be a positive integer{' or None' if allow_none else ''}, got {v!r}"
                )

        for name in (
            "latent_dim",
            "hidden_dim",
            "batch_size",
            "max_epochs",
            "lr_decay_start",
            "lr_decay_every",
            "early_stop_start",
            "early_stop_window",
            "multistep_k",
            "multistep_max_segments",
        ):
            positive_int(name)
        positive_int("max_steps", allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"KoopmanTrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"KoopmanTrainConfig.lr must be a positive number, got {self.lr!r} (the paper uses 3e-4)")
        if not (math.isfinite(self.recon_weight) and self.recon_weight >= 0):
            raise ValueError(
                f"KoopmanTrainConfig.recon_weight must be >= 0, got {self.recon_weight!r} (the paper uses 10)"
            )
        if not (math.isfinite(self.latent_weight) and self.latent_weight >= 0):
            raise ValueError(
                f"KoopmanTrainConfig.latent_weight must be >= 0, got {self.latent_weight!r} (0 = the paper's loss)"
            )
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"KoopmanTrainConfig.noise_std must be >= 0, got {self.noise_std!r} (the paper uses 0.06)")
        if not (0 < self.train_fraction < 1):
            raise ValueError(
                f"KoopmanTrainConfig.train_fraction must lie strictly between 0 and 1, got {self.train_fraction!r} "
                "(the paper uses 0.7: a validation set is needed for early stopping)"
            )
        if not (0 < self.lr_decay_factor <= 1):
            raise ValueError(f"KoopmanTrainConfig.lr_decay_factor must lie in (0, 1], got {self.lr_decay_factor!r}")
        ratios = [*self.stop_recon_and_forward, self.stop_forward, self.stop_recon]
        if len(self.stop_recon_and_forward) != 2 or not all(0 < r <= 1.5 for r in ratios):
            raise ValueError(
                f"KoopmanTrainConfig stopping ratios must be positive and near 1, got "
                f"stop_recon_and_forward={self.stop_recon_and_forward}, stop_forward={self.stop_forward}, "
                f"stop_recon={self.stop_recon}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- losses -----------------------------------------------------------------------------------------------------
def huber(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PyTorch's ``smooth_l1_loss`` with beta 1, the mean over all elements: the paper's "Huber"."""
    return F.smooth_l1_loss(prediction, target, beta=1.0)


def prediction_loss(model: KoopmanForwardModel, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """Decoded one-step prediction: ``Huber(D(K(a) E(s)), s')``."""
    return huber(model(s, a), s_next)


def reconstruction_loss(
    model: KoopmanForwardModel,
    s: torch.Tensor,
    s_next: torch.Tensor,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Auto-encoding of jittered states: ``Huber(D(E(x~)), x~)`` with ``x~ = [s; s'] + N(0, noise_std^2)``.

    The target is the jittered input itself, not the clean state (as in the original code): the noise
    makes the auto-encoder cover a neighbourhood of the data, which is where the symmetry-shifted states of
    KFC will land, rather than denoise.
    """
    x = torch.cat([s, s_next], dim=0)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_tilde = x + noise_std * noise
    return huber(model.decode(model.encode(x_tilde)), x_tilde)


def latent_consistency_loss(
    model: KoopmanForwardModel, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor
) -> torch.Tensor:
    """``Huber(K(a) E(s), E(s'))``: an opt-in extension, not part of the paper's objective.

    The paper's loss only asks that ``D(K(a) E(s))`` be right; ``K(a) E(s)`` may land anywhere the decoder maps
    to ``s'``, including off the set of encoded states, so a second application of ``K`` is never trained.
    This term asks the latent itself to evolve linearly, which is what multi-step rollouts need.
    """
    return huber(model.latent_step(model.encode(s), a), model.encode(s_next))


def koopman_loss(model, s, a, s_next, config: KoopmanTrainConfig, generator=None):
    """The training objective, and its two parts (forward, reconstruction) as floats for logging."""
    forward = prediction_loss(model, s, a, s_next)
    recon = reconstruction_loss(model, s, s_next, config.noise_std, generator)
    total = forward + config.recon_weight * recon
    if config.latent_weight > 0:
        total = total + config.latent_weight * latent_consistency_loss(model, s, a, s_next)
    return total, forward.detach(), recon.detach()
