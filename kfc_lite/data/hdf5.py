"""Reading, checking and writing D4RL-format HDF5 files.

A D4RL file holds flat arrays under slash paths: ``observations`` (N, d_s), ``actions`` (N, d_a), ``rewards`` (N,),
``terminals`` (N,), usually ``timeouts`` (N,), ``next_observations`` (N, d_s) in the v1/v2 MuJoCo files,
``infos/qpos``, ``infos/qvel``, ``infos/action_log_probs``, and ``metadata/*``. We keep that layout as a plain
``dict`` keyed by the HDF5 path, exactly as D4RL's ``env.get_dataset()`` returns it, so code written for one
works with the other.
"""
from __future__ import annotations

import os

import numpy as np

from kfc_lite.data.errors import DatasetError

#: the keys every D4RL dataset has (D4RL's get_dataset checks exactly these four)
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
#: arrays that must be finite; a NaN in any of them poisons a critic silently, so we stop at load time
FINITE_KEYS = ("observations", "actions", "rewards", "next_observations")
#: rows checked at a time for NaN/inf, so the check needs a small buffer, not a copy of the dataset
_CHUNK_ROWS = 65536

_FIX_FILE = ("delete the file and download it again (`kfc-lite data download NAME`), "
             "or regenerate it (`kfc-lite data make ...`)")


def _decode(value):
    """HDF5 strings come back as bytes and scalars as 0-d arrays; give them back as str and Python numbers."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in ("S", "O") and value.ndim == 0:
        return _decode(value[()])
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return np.char.decode(value, "utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_hdf5(path: str | os.PathLike) -> dict:
    """Every dataset in a D4RL HDF5 file as ``{hdf5_path: numpy array}``; strings and scalars decoded.

    Each array is read once, straight into its own NumPy buffer (one copy of the data in memory).
    A file that is not HDF5 or was cut short raises :class:`DatasetError` saying which file and what to do.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no dataset file at {path!r}: check the path, or load a dataset by its name "
                                "(`kfc_lite.data.load('hopper-medium-v2', download=True)`)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path} is not a readable HDF5 file ({exc}). It may be truncated by an interrupted "
                           f"download or not a dataset at all: {_FIX_FILE}.") from exc
    data: dict = {}
    try:
        with f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    data[name] = _decode(obj[()])

            f.visititems(visit)
    except (OSError, RuntimeError, KeyError) as exc:  # a dataset whose bytes lie past the end of a cut file
        raise DatasetError(f"{path}: reading failed ({exc}); the file is damaged or truncated: {_FIX_FILE}.") from exc
    return data


def write_hdf5(data: dict, path: str | os.PathLike, *, compression: str | None = "gzip") -> str:
    """Write a ``{hdf5_path: array}`` dict as a D4RL file (what ``load_hdf5`` and the ``d4rl`` package read).

    Strings become fixed-length byte strings, as D4RL writes them; arrays are gzip-compressed like D4RL's
    files. The file is written next to its destination and renamed into place, so a crash never leaves a
    half-written dataset under the final name.
    """
    import h5py

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in data.items():
                if isinstance(value, str):
                    f[key] = np.bytes_(value.encode("utf-8"))
                elif isinstance(value, (bool, int, float, np.generic)):
                    f[key] = value
                else:
                    arr = np.asarray(value)
                    if arr.dtype.kind == "U":
                        arr = np.char.encode(arr, "utf-8")
                    opts = {"compression": compression} if compression and arr.ndim >= 1 and arr.size > 0 else {}
                    f.create_dataset(key, data=arr, **opts)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _first_bad_row(arr: np.ndarray) -> int | None:
    """Index of the first row with a NaN or inf, checked in chunks (no full-size temporary)."""
    if arr.dtype.kind not in "fc":
        return None
    for start in range(0, len(arr), _CHUNK_ROWS):
        block = arr[start:start + _CHUNK_ROWS]
        ok = np.isfinite(block)
        if not ok.all():
            rows = ok.reshape(len(block), -1).all(axis=1)
            return start + int(np.argmin(rows))
    return None


def validate(data: dict, source: str = "dataset") -> dict:
    """Check that ``data`` is a usable D4RL dataset; squeeze (N, 1) rewards/terminals/timeouts to (N,) in place.

    Raises :class:`DatasetError` naming ``source`` (a file or dataset name), the key and the fix for: a missing
    key, arrays whose lengths disagree, wrong ranks, an empty dataset, and NaN or inf values. Returns ``data``.
    """
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: expected a dict of arrays keyed like D4RL ('observations', ...), "
                           f"got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        found = ", ".join(sorted(k for k in data if "/" not in k)) or "nothing"
        raise DatasetError(f"{source}: missing key(s) {', '.join(missing)} (top-level keys found: {found}). "
                           f"A D4RL dataset needs {', '.join(REQUIRED_KEYS)}: {_FIX_FILE}.")
    for key in ("rewards", "terminals", "timeouts"):  # D4RL squeezes these
        if key in data:
            arr = np.asarray(data[key])
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            data[key] = arr
    ranks = {"observations": 2, "actions": 2, "rewards": 1, "terminals": 1, "timeouts": 1, "next_observations": 2}
    for key, rank in ranks.items():
        if key in data:
            arr = np.asarray(data[key])
            if arr.ndim != rank:
                want = "(N,)" if rank == 1 else "(N, dim)"
                raise DatasetError(f"{source}: '{key}' has shape {arr.shape}, expected {want}; "
                                   f"the file was not written in D4RL's layout: {_FIX_FILE}.")
            if arr.dtype.kind not in "biuf":
                raise DatasetError(f"{source}: '{key}' holds {arr.dtype} values, expected numbers or booleans.")
    n = len(data["observations"])
    if n == 0:
        raise DatasetError(f"{source}: the dataset is empty (0 rows in 'observations').")
    lengths = {k: len(v) for k, v in data.items()
               if not k.startswith("metadata/") and isinstance(v, np.ndarray) and v.ndim >= 1}
    wrong = {k: m for k, m in lengths.items() if m != n}
    if wrong:
        detail = ", ".join(f"'{k}' has {m}" for k, m in sorted(wrong.items()))
        raise DatasetError(f"{source}: array lengths disagree: 'observations' has {n} rows but {detail}. "
                           f"Every array must have one row per transition: {_FIX_FILE}.")
    if "next_observations" in data and data["next_observations"].shape[1:] != data["observations"].shape[1:]:
        raise DatasetError(f"{source}: 'next_observations' has shape {data['next_observations'].shape} but "
                           f"'observations' has {data['observations'].shape}.")
    for key in FINITE_KEYS:
        if key in data:
            row = _first_bad_row(np.asarray(data[key]))
            if row is not None:
                raise DatasetError(f"{source}: '{key}' holds NaN or inf (first at row {row}). Offline RL on such data "
                                   f"diverges silently: {_FIX_FILE}, or drop the bad rows before training.")
    return data


def split_episodes(data: dict, max_episode_steps: int = 1000):
    """Episode boundaries: ``(starts, ends, complete)``, ``ends`` exclusive, as integer and boolean arrays.

    An episode ends at a true terminal or a time-out. Without a ``timeouts`` key it ends after
    ``max_episode_steps`` steps (D4RL's 1000). The last episode is ``complete=False`` when the file cuts it
    (its final row is neither terminal nor time-out), as D4RL's generation script does when it reaches N rows.
    """
    n = len(data["rewards"])
    terminals = np.asarray(data["terminals"]).reshape(n).astype(bool)
    if "timeouts" in data:
        end_flag = terminals | np.asarray(data["timeouts"]).reshape(n).astype(bool)
    else:
        # restart the step counter after every terminal, then cut each stretch every max_episode_steps rows
        idx = np.arange(n)
        seg_start = np.zeros(n, dtype=np.int64)
        after_done = np.flatnonzero(terminals[:-1]) + 1
        seg_start[after_done] = after_done
        seg_start = np.maximum.accumulate(seg_start)
        end_flag = terminals | ((idx - seg_start) % max_episode_steps == max_episode_steps - 1)
    ends = np.flatnonzero(end_flag) + 1
    complete = np.ones(len(ends), dtype=bool)
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
        complete = np.append(complete, False)
    starts = np.concatenate([[0], ends[:-1]])
    return starts.astype(np.int64), ends.astype(np.int64), complete


def episode_returns(data: dict, *, complete_only: bool = False, max_episode_steps: int = 1000):
    """Undiscounted return and length of every episode in the data: ``(returns, lengths)`` as arrays.

    ``complete_only`` drops a last episode that the end of the file cuts short.
    """
    starts, ends, complete = split_episodes(data, max_episode_steps)
    rewards = np.asarray(data["rewards"], dtype=np.float64).reshape(-1)
    returns = np.add.reduceat(rewards, starts) if len(rewards) else np.zeros(0)
    lengths = ends - starts
    if complete_only:
        returns, lengths = returns[complete], lengths[complete]
    return returns, lengths
