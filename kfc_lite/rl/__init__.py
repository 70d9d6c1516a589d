"""Offline RL: networks, SAC+CQL, augmenters (none, S4RL noise, KFC, KFC++), policies.

Names are imported lazily from their submodules.
"""

from kfc_lite._lazy import lazy_exports

_EXPORTS = {
    # augmenters: the interface and the model-free ones (plain_augment.py), KFC and KFC++ (koopman_augment.py),
    # one by method name (augment.py, which also re-exports the others)
    "Augmenter": "plain_augment",
    "NoAugmentation": "plain_augment",
    "GaussianNoise": "plain_augment",
    "KoopmanAugmenter": "koopman_augment",
    "make_augmenter": "augment",
    # networks.py
    "CriticEnsemble": "networks",
    "TanhGaussianActor": "networks",
    # config.py: every hyperparameter, and named settings of them
    "SACConfig": "config",
    "PRESETS": "config",
    # sac.py: SAC + CQL, the fast step
    "SACCQL": "sac",
    # reference.py: the same step written plainly, to read first
    "ReferenceSACCQL": "reference",
    # policy.py: saved policies
    "save_policy": "policy",
    "load_policy": "policy",
    "Policy": "policy",
    # replay.py: batches from device-resident transitions (offline) and a ring buffer (online)
    "TransitionSampler": "replay",
    "ReplayBuffer": "replay",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
