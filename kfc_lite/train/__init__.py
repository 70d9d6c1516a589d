"""Training: one offline loop for every method (CQL, S4RL, KFC, KFC++), online SAC for behaviour policies.

    from kfc_lite.train import TrainConfig, train
    result = train(TrainConfig(dataset="hopper-medium-replica", method="kfc++", steps=100_000, out="runs/hopper"))
    result.evals[-1]["normalized"]      # D4RL normalized score of the last evaluation

One file per job, read in this order:

* :mod:`~kfc_lite.train.config`: :class:`TrainConfig`, what a run depends on (the agent's, the augmentation's and
  the Koopman model's typed configs among it), and its checks;
* :mod:`~kfc_lite.train.prepare`: the data, and for KFC and KFC++ the Koopman model, its report and symmetry table;
* :mod:`~kfc_lite.train.offline`: :func:`train`, the loop: ``augmented = augmenter(batch)``, then
  ``agent.update(batch, augmented)``, with logging, evaluation and checkpoints;
* :mod:`~kfc_lite.train.online`: :func:`train_online_sac`;
* :mod:`~kfc_lite.train.run_folder`: the folder both loops write and its rules (one owner, verified checkpoints);
* :mod:`~kfc_lite.train.records`: what both loops write (metrics lines, JSON files, RNG states);
* :mod:`~kfc_lite.train.result`: :class:`RunResult` and :func:`evaluate_run`;
* :mod:`~kfc_lite.train.cli`: ``kfc-lite train``, ``kfc-lite eval``, ``kfc-lite train-online``.
"""

from kfc_lite.methods import KOOPMAN_METHODS, METHODS
from kfc_lite.train.cli import register
from kfc_lite.train.config import KOOPMAN_GATES, REMOVED_FIELDS, RESUMABLE_CHANGES, AugmentConfig, TrainConfig
from kfc_lite.train.offline import CHECKPOINT_FORMAT, train
from kfc_lite.train.online import ONLINE_CHECKPOINT_FORMAT, train_online_sac
from kfc_lite.train.result import RunResult, evaluate_run
from kfc_lite.train.run_folder import read_metrics

__all__ = [
    "TrainConfig",
    "AugmentConfig",
    "RunResult",
    "train",
    "evaluate_run",
    "read_metrics",
    "train_online_sac",
    "register",
    "METHODS",
    "KOOPMAN_METHODS",
    "KOOPMAN_GATES",
    "RESUMABLE_CHANGES",
    "REMOVED_FIELDS",
    "CHECKPOINT_FORMAT",
    "ONLINE_CHECKPOINT_FORMAT",
]
