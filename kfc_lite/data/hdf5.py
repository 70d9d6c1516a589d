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

from kfc_lite.data.errors import DatasetError, OutputExistsError

#: the keys every D4RL dataset has (D4RL's get_dataset checks exactly these four)
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
#: arrays that must be finite: a NaN in any of them poisons a critic silently (in a flag, it makes an episode end
#: nowhere and breaks ``int(sum(terminals))``), so we stop at load time. ``infos/*`` is not read by training.
FINITE_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
#: arrays that are flags: every value must be 0 or 1 (True/False), as D4RL writes them
FLAG_KEYS = ("terminals", "timeouts")
#: arrays whose magnitude is bounded by :data:`MAX_ABS`
BOUNDED_KEYS = ("observations", "actions", "rewards", "next_observations")
#: The largest magnitude we accept in :data:`BOUNDED_KEYS`. MuJoCo locomotion stays many orders of magnitude below:
#: positions are metres and radians, Hopper's and Walker2d's velocities are clipped to +-10, HalfCheetah's stay
#: below a few hundred, actions lie in [-1, 1] and a step's reward below about 20. A value past 1e6 is a unit or
#: memory error (or a float32 written as garbage) that would swamp every gradient, not a state: it is refused,
#: never clipped.
MAX_ABS = 1e6
#: rows checked at a time, so the checks need a small buffer, not a copy of the dataset
_CHUNK_ROWS = 65536

_FIX_FILE = (
    "delete the file and download it again (`kfc-lite data download NAME`), or regenerate it (`kfc-lite data make ...`)"
)


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
        raise FileNotFoundError(
            f"no dataset file at {path!r}: check the path, or load a dataset by its name "
            "(`kfc_lite.data.load('hopper-medium-v2', download=True)`)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            f"{path} is not a readable HDF5 file ({exc}). It may be truncated by an interrupted "
            f"download or not a dataset at all: {_FIX_FILE}."
        ) from exc
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


def _temp_name(path: str, pid: int) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{pid}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[str]:
    """Delete the temp files that killed writes of ``path`` left behind; return their paths.

    A temp file carries its writer's process id (``.<name>.<pid>.tmp``), so one whose writer no longer runs is
    debris, while one whose writer still runs is a write in progress and stays.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    removed = []
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return removed
    prefix = f".{name}."
    for entry in entries:
        pid = entry[len(prefix) : -len(".tmp")]
        if entry.startswith(prefix) and entry.endswith(".tmp") and pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
            except FileNotFoundError:  # another writer cleaned it up first
                pass
    return removed


def write_hdf5(data: dict, path: str | os.PathLike, *, compression: str | None = "gzip", overwrite: bool = True) -> str:
    """Write a ``{hdf5_path: array}`` dict as a D4RL file (what ``load_hdf5`` and the ``d4rl`` package read).

    Strings become fixed-length byte strings, as D4RL writes them; arrays are gzip-compressed like D4RL's
    files. The file is written to a temp file beside its destination (``.<name>.<pid>.tmp``) and renamed into
    place, so a crash never leaves a half-written dataset under the final name; temp files of earlier writes that
    were killed are removed first. ``overwrite=False`` refuses to replace an existing file
    (:class:`~kfc_lite.data.errors.OutputExistsError`), also when it appeared while we were writing.
    """
    import h5py

    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise OutputExistsError(_exists_message(path))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(path)
    tmp = _temp_name(os.path.abspath(path), os.getpid())
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
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # unlike a rename, a link fails when the name is taken: no file is replaced
            except FileExistsError:
                raise OutputExistsError(_exists_message(path)) from None
            except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
                if os.path.exists(path):
                    raise OutputExistsError(_exists_message(path)) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _exists_message(path: str) -> str:
    return (
        f"{path} already exists and would be replaced: pass --overwrite (overwrite=True) to replace it, "
        "or write to another path"
    )


def _first_bad_value(arr: np.ndarray, max_abs: float | None):
    """``(row, column, value)`` of the first NaN, inf or value past ``max_abs``, or ``None``; checked in chunks."""
    if arr.dtype.kind not in "fc":
        return None  # integers and booleans cannot hold NaN, and no flag or count reaches 1e6 by accident
    for start in range(0, len(arr), _CHUNK_ROWS):
        block = arr[start : start + _CHUNK_ROWS].reshape(min(_CHUNK_ROWS, len(arr) - start), -1)
        bad = ~np.isfinite(block)
        if max_abs is not None:
            bad |= np.abs(block) > max_abs
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return start + int(row), int(col), block[row, col].item()
    return None


def _check_values(data: dict, source: str) -> None:
    """NaN, inf, magnitudes past :data:`MAX_ABS` and flags other than 0/1, each refused naming key and row."""
    for key in FINITE_KEYS:
        if key not in data:
            continue
        arr = np.asarray(data[key])
        found = _first_bad_value(arr, MAX_ABS if key in BOUNDED_KEYS else None)
        if found is None:
            continue
        row, col, value = found
        where = f"row {row}" + (f", column {col}" if arr.ndim == 2 else "")
        if np.isfinite(value):
            raise DatasetError(
                f"{source}: '{key}' holds {value:g} at {where}, beyond the bound |x| <= {MAX_ABS:g} that MuJoCo "
                f"locomotion data stay far inside (kfc_lite.data.hdf5.MAX_ABS). Such a value is a unit or write "
                f"error and would swamp every gradient; it is not clipped: {_FIX_FILE}, or drop the bad rows."
            )
        text = "NaN" if np.isnan(value) else f"{value}"
        raise DatasetError(
            f"{source}: '{key}' holds {text} at {where} (the first NaN or inf). Offline RL on such "
            f"data diverges silently: {_FIX_FILE}, or drop the bad rows before training."
        )
    for key in FLAG_KEYS:
        if key not in data:
            continue
        arr = np.asarray(data[key])
        if arr.dtype.kind == "b":
            continue
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if len(bad):
            raise DatasetError(
                f"{source}: '{key}' is a flag but holds {arr[bad[0]].item()!r} at row {int(bad[0])} "
                f"({len(bad)} rows are neither 0 nor 1). A flag is not rounded for you: {_FIX_FILE}."
            )


def validate(data: dict, source: str = "dataset") -> dict:
    """Check that ``data`` is a usable D4RL dataset; squeeze (N, 1) rewards/terminals/timeouts to (N,) in place.

    Raises :class:`DatasetError` naming ``source`` (a file or dataset name), the key and the fix for: a missing
    key, arrays whose lengths disagree, wrong ranks, an empty dataset, NaN or inf in any array of
    :data:`FINITE_KEYS` (flags included), a magnitude past :data:`MAX_ABS` and a flag other than 0 or 1; the
    value errors name the first bad row. Returns ``data``.
    """
    if not isinstance(data, dict):
        raise DatasetError(
            f"{source}: expected a dict of arrays keyed like D4RL ('observations', ...), got {type(data).__name__}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        found = ", ".join(sorted(k for k in data if "/" not in k)) or "nothing"
        raise DatasetError(
            f"{source}: missing key(s) {', '.join(missing)} (top-level keys found: {found}). "
            f"A D4RL dataset needs {', '.join(REQUIRED_KEYS)}: {_FIX_FILE}."
        )
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
                raise DatasetError(
                    f"{source}: '{key}' has shape {arr.shape}, expected {want}; "
                    f"the file was not written in D4RL's layout: {_FIX_FILE}."
                )
            if arr.dtype.kind not in "biuf":
                raise DatasetError(f"{source}: '{key}' holds {arr.dtype} values, expected numbers or booleans.")
    n = len(data["observations"])
    if n == 0:
        raise DatasetError(f"{source}: the dataset is empty (0 rows in 'observations').")
    lengths = {
        k: len(v)
        for k, v in data.items()
        if not k.startswith("metadata/") and isinstance(v, np.ndarray) and v.ndim >= 1
    }
    wrong = {k: m for k, m in lengths.items() if m != n}
    if wrong:
        detail = ", ".join(f"'{k}' has {m}" for k, m in sorted(wrong.items()))
        raise DatasetError(
            f"{source}: array lengths disagree: 'observations' has {n} rows but {detail}. "
            f"Every array must have one row per transition: {_FIX_FILE}."
        )
    if "next_observations" in data and data["next_observations"].shape[1:] != data["observations"].shape[1:]:
        raise DatasetError(
            f"{source}: 'next_observations' has shape {data['next_observations'].shape} but "
            f"'observations' has {data['observations'].shape}."
        )
    _check_values(data, source)
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
