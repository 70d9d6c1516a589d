"""Does a file hold the dataset its name promises? The check behind every download and every cache hit.

A cache stores files under names, and a file under the wrong name trains and evaluates the wrong robot without a
single error: a Walker2d file served as ``hopper-medium-v2`` gives Hopper scores for a Walker2d critic. So a
registry name is held to what it promises, in this order:

1. **sizes**: observations and actions of its environment (:data:`kfc_lite.data.registry.OBS_DIM`, ``ACT_DIM``):
   17/6 for HalfCheetah and Walker2d, 11/3 for Hopper, 3/1 for the pendulum;
2. **rows**: the row count of D4RL's file, where it is known (:attr:`~kfc_lite.data.registry.DatasetInfo.rows`);
3. **what the file says about itself**: ``metadata/d4rl_env``, ``metadata/env_id`` and ``metadata/minari_id``,
   when present, must not name another environment, and a ``metadata/d4rl_env`` that is a dataset name must be
   this one (a replica under a D4RL name would report replica scores as D4RL scores);
4. **the body** (D4RL's three families): HalfCheetah and Walker2d have the same sizes, so the file's first
   observation value decides. In Hopper and Walker2d it is the torso height, and an episode ends when the torso
   falls below 0.7 m (Hopper) or 0.8 m (Walker2d), so the rows sit around 1.2 m; in HalfCheetah it is the vertical
   offset of the body from its starting height, around 0 (-0.6 to 0.3 under random actions). We compare the median
   of the first :data:`SAMPLE_ROWS` rows with :data:`UPRIGHT_HEIGHT`, which lies between the two.

Only names are checked here; :func:`kfc_lite.data.hdf5.validate` checks the values of any dataset.
"""

from __future__ import annotations

import numpy as np

from kfc_lite.data import registry
from kfc_lite.data.errors import DatasetMismatchError

#: rows read for the body test: enough for a stable median, few enough to be read on every cache hit
SAMPLE_ROWS = 10_000
#: metres; Hopper and Walker2d rows lie above it (they end their episode below 0.7 / 0.8), HalfCheetah's below
UPRIGHT_HEIGHT = 0.6
#: families whose first observation value is a torso height
_UPRIGHT = ("hopper", "walker2d")
_METADATA_NAMES = ("metadata/d4rl_env", "metadata/env_id", "metadata/minari_id")


def _text(value) -> str | None:
    """A metadata value as text (HDF5 gives bytes, 0-d arrays or h5py datasets), ``None`` when it is not text."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.ndarray):
        value = value[()]  # an h5py dataset: read the (small) value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and value else None


def _family_named(key: str, value: str) -> str | None:
    """The environment family a metadata value names, or ``None`` when it names none we know."""
    if key == "metadata/minari_id":
        for family in registry.ENVS:
            if family in value.lower():
                return family
        return None
    try:
        return registry.family_of(value)
    except (KeyError, ValueError, TypeError):
        return None


def fix_for(info: registry.DatasetInfo, path: str) -> str:
    """What to do about a file that is not the dataset its name promises."""
    if info.replica:
        return (
            f"delete {path} and generate it again (`kfc-lite data make {info.name} ... --overwrite` replaces it), "
            "or load the file by its path if it is another dataset"
        )
    return (
        f"delete {path} and download it again (`kfc-lite data download {info.name}`); if it is another "
        "dataset, move it elsewhere and load it by its path"
    )


def check_identity(container, info: registry.DatasetInfo | str, path: str, *, fix: str | None = None) -> None:
    """Raise :class:`DatasetMismatchError` unless ``container`` holds dataset ``info``.

    ``container`` is an open ``h5py.File`` (only the shapes, the metadata and :data:`SAMPLE_ROWS` values of
    ``observations`` are read) or a loaded dict of arrays; ``path`` names the file in the message, which ends
    with ``fix`` (default: :func:`fix_for`; ``""`` for none, when the caller adds its own).
    """
    info = registry.get(info)
    problem = _sizes(container, info) or _rows(container, info) or _metadata(container, info) or _body(container, info)
    if problem:
        expected, found = problem
        fix = f" Fix: {fix_for(info, path)}." if fix is None else (f" {fix}" if fix else "")
        raise DatasetMismatchError(f"{path} is not {info.name}: expected {expected}, found {found}.{fix}")


# Each check returns None when the file passes it, else (what was expected, what was found), as message text.
def _dims(shape: tuple) -> str:
    return str(shape[1]) if len(shape) == 2 else f"shape {shape}"


def _sizes(container, info):
    obs, act = tuple(container["observations"].shape), tuple(container["actions"].shape)
    if obs[1:] == (info.obs_dim,) and act[1:] == (info.act_dim,):
        return None
    same = [f for f in registry.ENVS if obs[1:] == (registry.OBS_DIM[f],) and act[1:] == (registry.ACT_DIM[f],)]
    return (
        f"{info.env}'s sizes, {info.obs_dim}-D observations and {info.act_dim}-D actions",
        f"{_dims(obs)}-D observations and {_dims(act)}-D actions"
        + (f" (the sizes of {' or '.join(same)})" if same else ""),
    )


def _rows(container, info):
    rows = container["observations"].shape[0]
    if info.rows is None or rows == info.rows:
        return None
    return f"D4RL's row count, {info.rows} rows", f"{rows} rows"


def _metadata(container, info):
    for key in _METADATA_NAMES:
        value = _text(container[key]) if key in container else None
        if value is None:
            continue
        if key == "metadata/d4rl_env" and registry.is_known(value) and registry.get(value).name != info.name:
            return f"a file of {info.name}", f"{key} = {value!r}"
        family = _family_named(key, value)
        if family is not None and family != info.env:
            return f"data of {info.env}", f"{key} = {value!r} ({family})"
    return None


def _body(container, info):
    if info.env not in registry.ENVS:
        return None  # the test tells D4RL's MuJoCo bodies apart; the pendulum's sizes (3/1) are its own
    first = np.asarray(container["observations"][:SAMPLE_ROWS, 0], dtype=np.float64)
    first = first[np.isfinite(first)]  # NaN is validate's to report, with its row
    if not len(first):
        return None
    height = float(np.median(first))
    upright = height > UPRIGHT_HEIGHT
    if upright == (info.env in _UPRIGHT):
        return None
    like = [f for f in registry.ENVS if (f in _UPRIGHT) == upright]
    if info.env in _UPRIGHT:
        expected = f"{info.env} data: a torso height above {UPRIGHT_HEIGHT} m"
    else:
        expected = f"{info.env} data: HalfCheetah's body offset below {UPRIGHT_HEIGHT} m"
    looks = "a torso height" if upright else "an offset near 0"
    return (
        f"{expected} (the median of the first observation value)",
        f"a median of {height:.3g}, {looks}: data of {' or '.join(like)}",
    )
