"""``load``: one dict, whatever the dataset's source (a file, our cache, the ``d4rl`` package, Minari).

The base is always our own HDF5 reader. The ``d4rl`` and ``minari`` packages are optional adapters used only when
they are importable: D4RL's legacy stack (gym 0.24, mujoco-py) does not install beside gymnasium 1.x, and Minari's
data collection pulls in jax. Every source gives the same flat dict that :func:`kfc_lite.data.load_hdf5` returns.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from kfc_lite.data import registry
from kfc_lite.data.errors import DatasetError, DownloadError, UnknownDatasetError
from kfc_lite.data.hdf5 import load_hdf5, validate
from kfc_lite.data.identity import check_identity


class _MinariNotFound(FileNotFoundError):
    """Minari has no local dataset of that id; ``where`` is the folder it looked in."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load(name_or_path: str | os.PathLike, *, download: bool = False, progress: bool = True) -> dict:
    """Load a dataset as a dict of NumPy arrays keyed like D4RL's HDF5 files, checked by :func:`validate`.

    ``name_or_path`` is, in the order tried:

    1. a path to an HDF5 file;
    2. a registry name (``hopper-medium-v2``, ``halfcheetah-random-replica``): read from the cache folder,
       downloaded first when ``download=True``;
    3. any other D4RL name (``antmaze-umaze-v0``) when the ``d4rl`` package is importable (it may download);
    4. a Minari dataset id (``mujoco/hopper/medium-v0``) when ``minari`` is importable; episodes become flat rows
       with ``terminals`` = terminations and ``timeouts`` = truncations.

    Loaded by name, the file must be that dataset (:func:`kfc_lite.data.identity.check_identity`: sizes, rows,
    environment), and the dict gets ``metadata/d4rl_env`` (the name) when the file has none, so
    :func:`kfc_lite.envs.env_family` and evaluation know which environment the data come from.
    """
    key = os.fspath(name_or_path)
    if not isinstance(key, str):
        raise TypeError(f"expected a dataset name or a path, got {name_or_path!r}")
    if registry.is_known(key) and not os.path.exists(key):
        return _load_registered(key, download=download, progress=progress)
    if os.path.exists(key) or key.endswith((".hdf5", ".h5")):
        return validate(load_hdf5(key), key)
    if _importable("d4rl") and "/" not in key:
        return validate(from_d4rl(key), f"d4rl dataset {key}")
    if _importable("minari"):  # Minari ids contain slashes too (mujoco/hopper/medium-v0): try them before paths
        try:
            return validate(from_minari(key, download=download), f"minari dataset {key}")
        except _MinariNotFound as exc:
            try:
                registry.get(key)
            except UnknownDatasetError as unknown:
                raise UnknownDatasetError(
                    f"{unknown} (Not a file either, nor a Minari dataset in {exc.where}; "
                    "load(..., download=True) would ask Minari's server.)"
                ) from None
            raise AssertionError("unreachable") from exc  # pragma: no cover - registry names were handled above
    if os.sep in key:
        load_hdf5(key)  # raises FileNotFoundError naming the path
    try:
        registry.get(key)
    except UnknownDatasetError as exc:
        raise UnknownDatasetError(
            f"{exc} (Not a file either; other D4RL names need the d4rl package, Minari ids "
            "the minari package, and neither is installed.)"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _load_registered(name: str, *, download: bool, progress: bool) -> dict:
    from kfc_lite.data.download import cache_path
    from kfc_lite.data.download import download as fetch

    info = registry.get(name)
    path = cache_path(info.name)
    if not os.path.exists(path):
        if info.replica:
            recipe = f"{info.env}-random" if info.kind == "random" else f"{info.name} --policy POLICY_FILE"
            raise FileNotFoundError(
                f"{info.name} is not in the cache ({path}). Replicas are generated locally: "
                f"`kfc-lite data make {recipe} --size 1000000` writes it there."
            )
        if not download:
            raise FileNotFoundError(
                f"{info.name} is not in the cache ({path}). Download it with "
                f"`kfc-lite data download {info.name}` or load(..., download=True); "
                "set D4RL_DATASET_DIR to use another cache folder."
            )
        path = fetch(info.name, progress=progress)
    data = validate(load_hdf5(path), f"{info.name} ({path})")
    check_identity(data, info, path)  # every cache hit: the file must be the dataset its name promises
    data.setdefault("metadata/d4rl_env", info.name)
    return data


def from_d4rl(name: str) -> dict:
    """A D4RL dataset through the ``d4rl`` package itself (``gym.make(name).get_dataset()``)."""
    if not _importable("d4rl"):
        raise ModuleNotFoundError("the d4rl package is not installed; load registry names or files instead")
    import d4rl  # noqa: F401
    import gym  # d4rl registers its environments in the legacy gym package

    env = gym.make(name)
    data = dict(env.get_dataset())
    data.setdefault("metadata/d4rl_env", name)
    return data


def from_minari(dataset_id: str, *, download: bool = False) -> dict:
    """A Minari dataset converted to D4RL's flat layout.

    Minari stores each episode with T actions and T + 1 observations; row t gets ``observations[t]``,
    ``next_observations`` = ``observations[t + 1]`` (the true next state, also at a termination),
    ``terminals`` = ``terminations[t]`` and ``timeouts`` = ``truncations[t]``.
    """
    if not _importable("minari"):
        raise ModuleNotFoundError("the minari package is not installed (pip install minari)")
    import minari

    where = os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets"
    try:
        dataset = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError as exc:  # minari's word for "no local dataset of that id" (download=False)
        raise _MinariNotFound(
            f"minari dataset {dataset_id}: not in {where}; from_minari(..., download=True) asks Minari's server for it",
            where,
        ) from exc
    except (ImportError, OSError) as exc:  # download=True without minari's [hf] extra, or without a network
        raise DownloadError(
            f"minari dataset {dataset_id}: not in {where}, and Minari could not download it ({exc}). "
            "Check the id (`minari list remote`), the network, and that minari[hf] is installed, "
            "or copy the dataset into that folder."
        ) from exc
    parts: dict[str, list] = {
        k: [] for k in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")
    }
    for ep in dataset.iterate_episodes():  # one episode at a time: the episodes are never all held twice
        obs = ep.observations
        if isinstance(obs, dict):
            raise DatasetError(
                f"minari dataset {dataset_id}: observations are a dict ({', '.join(obs)}); only flat "
                "Box observations convert to D4RL's layout"
            )
        obs = np.asarray(obs)
        t = len(ep.actions)
        if len(obs) != t + 1:
            raise DatasetError(
                f"minari dataset {dataset_id}: episode {getattr(ep, 'id', '?')} has {len(obs)} "
                f"observations for {t} actions, expected {t + 1}"
            )
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(ep.actions).reshape(t, -1))
        parts["rewards"].append(np.asarray(ep.rewards).reshape(t))
        parts["terminals"].append(np.asarray(ep.terminations).reshape(t).astype(bool))
        parts["timeouts"].append(np.asarray(ep.truncations).reshape(t).astype(bool))
    if not parts["rewards"]:
        raise DatasetError(f"minari dataset {dataset_id}: it has no episodes")
    data = {k: np.concatenate(v) for k, v in parts.items()}
    for k in ("observations", "next_observations", "actions", "rewards"):
        data[k] = data[k].astype(np.float32, copy=False)
    data["metadata/minari_id"] = dataset_id
    spec = getattr(getattr(dataset, "spec", None), "env_spec", None)
    if spec is not None and getattr(spec, "id", None):
        data["metadata/env_id"] = spec.id
    return data
