"""The D4RL data layer: names and reference scores, download and cache, loading and checking, transitions for
Q-learning, and locally generated D4RL-format datasets.

>>> from kfc_lite import data
>>> d = data.load("hopper-medium-v2", download=True)     # dict of arrays, keyed like D4RL's HDF5 files
>>> q = data.qlearning_dataset(d)                        # D4RL's (s, a, r, s', done), float32
>>> data.normalized_score("hopper-medium-v2", 1500.0)    # 100 * (R - R_random) / (R_expert - R_random)
"""

from kfc_lite.data import registry
from kfc_lite.data.collect import RandomPolicy, collect
from kfc_lite.data.download import cache_path, download
from kfc_lite.data.errors import DatasetError, DownloadError, UnknownDatasetError
from kfc_lite.data.hdf5 import episode_returns, load_hdf5, split_episodes, validate, write_hdf5
from kfc_lite.data.qlearning import qlearning_dataset
from kfc_lite.data.registry import DATASETS, DatasetInfo, normalized_score, reference_scores
from kfc_lite.data.sources import from_minari, load

__all__ = [
    "registry",
    "DATASETS",
    "DatasetInfo",
    "normalized_score",
    "reference_scores",
    "download",
    "cache_path",
    "load",
    "load_hdf5",
    "write_hdf5",
    "validate",
    "from_minari",
    "qlearning_dataset",
    "split_episodes",
    "episode_returns",
    "collect",
    "RandomPolicy",
    "DatasetError",
    "DownloadError",
    "UnknownDatasetError",
]
