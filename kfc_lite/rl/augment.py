"""State augmenters for offline RL: none (CQL), S4RL Gaussian noise, and the Koopman symmetries (KFC, KFC++).

One interface: ``augmenter(batch) -> batch`` on a dict of torch tensors with ``observations``, ``actions``,
``rewards``, ``next_observations``, ``terminals`` and, for a batch drawn from a dataset, ``indices`` (its rows in
that dataset, with which the Koopman augmenter reads the dataset's symmetry table; other keys pass through). A
training step is ``augmented = augmenter(batch)`` then ``agent.update(batch, augmented)``; plain CQL's augmenter
is :class:`NoAugmentation`. Only ``observations`` and ``next_observations`` change; actions, rewards and done
flags stay as logged (docs/paper.md, 'Where augmented states go'; keeping the reward is the small-shift
approximation of the paper's section 3). Where the augmented states go (the critic's TD term and the data term
of the CQL penalty, not the actor) is the training loop's business.

Randomness comes from torch's global RNG on the batch's device, and every call draws the same tensors in
the same order whatever branch it takes. The one exception is the Koopman augmenter's choice of branch
(symmetry or noise), drawn from its own host generator, so that choosing it never waits for a GPU. Its state is
in :meth:`Augmenter.state_dict`, so a training loop that checkpoints both resumes exactly.

Where things are (this module is the front door: every name below imports from here too):

* :mod:`kfc_lite.rl.plain_augment`: the base class :class:`Augmenter` (interface, running stats, state), and
  the augmenters that need no model, :class:`NoAugmentation` and :class:`GaussianNoise`;
* :mod:`kfc_lite.rl.koopman_augment`: :class:`KoopmanAugmenter`, KFC and KFC++;
* here: :func:`make_augmenter`, the augmenter of a method by name.
"""

from __future__ import annotations

from kfc_lite.methods import METHODS
from kfc_lite.rl.koopman_augment import KFCPP_EPS_UNIT, KoopmanAugmenter
from kfc_lite.rl.plain_augment import (
    S4RL_SIGMA,
    STATE_KEYS,
    Augmenter,
    GaussianNoise,
    NoAugmentation,
    gaussian_noise,
)

__all__ = [
    "Augmenter",
    "NoAugmentation",
    "GaussianNoise",
    "KoopmanAugmenter",
    "make_augmenter",
    "METHODS",
    "S4RL_SIGMA",
    "KFCPP_EPS_UNIT",
    "gaussian_noise",
    "STATE_KEYS",
]


def make_augmenter(method: str, model=None, **kwargs) -> Augmenter:
    """The augmenter of a method: "cql" (none), "s4rl" (Gaussian noise), "kfc" or "kfc++" (needs ``model``).

    ``kwargs`` go to the augmenter's constructor (``sigma`` for S4RL; ``shift_sigma``, ``p_koopman``, ``per``,
    ``gauged``, ... for KFC and KFC++).
    """
    key = str(method).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown augmentation method {method!r}: choose one of {METHODS}")
    if key == "cql":
        if kwargs:
            raise TypeError(f"method 'cql' uses no augmentation and takes no options, got {sorted(kwargs)}")
        return NoAugmentation()
    if key == "s4rl":
        return GaussianNoise(**kwargs)
    if model is None:
        raise ValueError(
            f"method {key!r} moves states along symmetries of a Koopman model: pass model=... "
            "(train one with kfc_lite.koopman.fit_koopman, or load one with load_koopman)"
        )
    return KoopmanAugmenter(model, variant=key, **kwargs)
