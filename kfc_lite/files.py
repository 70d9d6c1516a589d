"""Files written so that a crash or a stopped run never leaves half of one behind, and checkpoints that are checked.

``atomic_torch_save`` writes to a temporary file in the same folder and renames it into place: a reader sees the
old file or the new one, never a part of one.

A checkpoint needs more than that. A file can be damaged after it was written (a bad disk, a copy cut short, a
stray write), and ``torch.load`` does not check the archive's own checksums: a damaged checkpoint can load as
garbage (Adam's second moments negative, every loss NaN). So :func:`save_verified` keeps

* ``checkpoint.pt``: the latest checkpoint, a plain ``torch.save`` file (``torch.load`` reads it as before);
* ``checkpoint.prev.pt``: the one before it, so a damaged latest one has something to fall back to;
* ``checkpoint.sha256``: the SHA-256 of the bytes of each, recorded when they were written (JSON),

and :func:`load_verified` hashes a file and compares before it lets ``torch.load`` near it, falling back to the
previous checkpoint when the latest one is missing, damaged or unreadable, and saying why.

The rotation is a few renames, and a stop can fall between any two of them. The checksum file is rewritten
(atomically) first with the new checkpoint's hash added, so at every moment each checkpoint file on disk is one
whose hash the checksum file lists: a stop during the rotation leaves a checkpoint that verifies, never a false
"damaged". A file verifies when its hash is any of the listed ones (a file moved from ``checkpoint.pt`` to
``checkpoint.prev.pt`` keeps its hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile

__all__ = [
    "atomic_torch_save",
    "save_verified",
    "load_verified",
    "remove_verified",
    "previous_path",
    "checksum_path",
    "file_digest",
    "remove_temp_files",
    "CheckpointError",
    "CheckpointWriteError",
    "VerifiedLoad",
]

CHECKSUMS_FORMAT = "kfc-lite-checksums"


class CheckpointError(ValueError):
    """No checkpoint that can be trusted: every copy is missing, damaged or unreadable (the message says which)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a lost permission); the previous one is untouched."""


def _fsync_folder(folder: pathlib.Path) -> None:
    """Make the renames in ``folder`` durable (a rename lives in the folder's entry, not in the file)."""
    with contextlib.suppress(OSError):  # not every platform lets a folder be opened (Windows)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(obj, path: pathlib.Path) -> pathlib.Path:
    """``torch.save(obj)`` to a new temporary file beside ``path``, flushed to disk; removed again on any error."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return pathlib.Path(tmp)


def atomic_torch_save(obj, path) -> pathlib.Path:
    """``torch.save`` to a temporary file in the same folder, then rename it into place."""
    path = pathlib.Path(path)
    tmp = _write_temp(obj, path)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def remove_temp_files(folder) -> list[str]:
    """Delete the temporary files that writes killed mid-way left in ``folder`` (``.<name>.<random>.tmp`` and
    ``.<name>.tmp``); return their names.

    Only call this while holding the folder (:func:`kfc_lite.train.run_folder.owned`): a temporary file of a live writer
    looks the same as a dead one's.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p.name)
    return removed


# -- checkpoints kept in pairs, with their checksums -----------------------------------------------------------
def previous_path(path) -> pathlib.Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``: where the checkpoint before the latest one is kept."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checksum_path(path) -> pathlib.Path:
    """``checkpoint.pt`` -> ``checkpoint.sha256``: the checksums of the pair, recorded as they were written."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.sha256")


def file_digest(path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (any ``hashlib`` algorithm), read in blocks of 16 MiB: a dataset or a symmetry table
    never sits in memory twice."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _read_checksums(path: pathlib.Path) -> dict | None:
    """The checksum file of the pair at ``path`` as ``{role: {"sha256", "bytes", "label"}}``; None when there is
    none (a checkpoint written before checkpoints were verified, or none written yet)."""
    sums = checksum_path(path)
    if not sums.is_file():
        return None
    try:
        data = json.loads(sums.read_text())
        if (
            not isinstance(data, dict)
            or data.get("format") != CHECKSUMS_FORMAT
            or not isinstance(data.get("files"), dict)
        ):
            raise ValueError(f"not a {CHECKSUMS_FORMAT} file")
        for entry in data["files"].values():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                raise ValueError("an entry without a sha256")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{sums} (the checksums of {path.name} and {previous_path(path).name}) cannot be read ({exc}); it is "
            "written atomically, so something else changed or damaged it. Without it the checkpoints cannot be "
            f"verified: delete {sums} to load them unverified (at your own risk), or start again in another "
            "folder"
        ) from None
    return data["files"]


def _write_checksums(path: pathlib.Path, files: dict) -> None:
    sums = checksum_path(path)
    tmp = sums.with_name(f".{sums.name}.tmp")
    with open(tmp, "w") as f:
        json.dump({"format": CHECKSUMS_FORMAT, "algorithm": "sha256", "files": files}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sums)


def save_verified(obj, path, *, label: str = "") -> pathlib.Path:
    """Write ``obj`` as the latest checkpoint at ``path``; the one it replaces becomes ``previous_path(path)``.

    ``label`` (e.g. ``"step 12000"``) is recorded with the checksum and named in messages about the file.
    A write that fails (a full disk) raises :class:`CheckpointWriteError` and leaves the pair as it was.
    """
    path = pathlib.Path(path)
    prev = previous_path(path)
    files = _read_checksums(path) or {}
    try:
        tmp = _write_temp(obj, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError("... file write failed")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
        kept = (
            f"The latest checkpoint, {path.name} ({files.get('latest', {}).get('label') or 'unverified'}), is untouched"
            if path.is_file()
            else "No earlier checkpoint was changed"
        )
        raise CheckpointWriteError(
            f"could not write the checkpoint{' of ' + label if label else ''} to {path}: {reason}. {kept}; free disk "
            "space (or fix the folder's permissions), then continue with --resume"
        ) from exc
    try:
        new = {"sha256": file_digest(tmp), "bytes": tmp.stat().st_size, "label": label}
        latest = files.get("latest")
        if latest is None and path.is_file():  # a latest checkpoint from before checksums: record what it is now
            latest = {"sha256": file_digest(path), "bytes": path.stat().st_size, "label": "unverified"}
        previous = files.get("previous")
        # every hash a file may carry during the renames below is listed before the first of them
        _write_checksums(path, {k: v for k, v in (("pending", new), ("latest", latest), ("previous", previous)) if v})
        if path.is_file():
            os.replace(path, prev)
            previous = latest
        os.replace(tmp, path)
        _write_checksums(path, {k: v for k, v in (("latest", new), ("previous", previous)) if v})
        _fsync_folder(path.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise CheckpointWriteError(
            f"could not put the checkpoint{' of ' + label if label else ''} in place at {path}: {exc.strerror or exc}. "
            f"The checkpoints there still verify (their checksums are in {checksum_path(path).name}); fix the "
            "cause, then continue with --resume"
        ) from exc
    return path


class VerifiedLoad:
    """What :func:`load_verified` found: the checkpoint, the file it came from, and what was wrong with the others."""

    def __init__(self, obj, path: pathlib.Path, label: str, problems: list[str], verified: bool):
        self.obj, self.path, self.label, self.problems, self.verified = obj, path, label, problems, verified

    @property
    def fell_back(self) -> bool:
        """True when the latest checkpoint could not be used and the previous one was loaded instead."""
        return bool(self.problems)


def _torch_load(path: pathlib.Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def load_verified(path, *, what: str = "checkpoint", fix: str = "") -> VerifiedLoad | None:
    """Load the latest good checkpoint of the pair at ``path``: ``path`` itself, or ``previous_path(path)``.

    A file is good when its SHA-256 is one that :func:`save_verified` recorded and ``torch.load`` reads it. Returns
    None when neither file exists; raises :class:`CheckpointError` naming each file and what is wrong with it when
    files exist but none is good. Pairs written before checksums existed (no checksum file) load unverified
    (``VerifiedLoad.verified`` is False). ``fix`` ends the error's message: what the reader can do about it.
    """
    path = pathlib.Path(path)
    files = _read_checksums(path)
    known = {e["sha256"]: e for e in (files or {}).values()}
    candidates = [p for p in (path, previous_path(path)) if p.is_file()]
    if not candidates:
        return None
    problems = []
    if not path.is_file():
        problems.append(f"{path} is missing")
    for p in candidates:
        label = ""
        if files is not None:
            digest = file_digest(p)
            if digest not in known:
                problems.append(
                    f"{p} is damaged: its SHA-256 ({digest[:12]}...) is not the one recorded in "
                    f"{checksum_path(path).name} when it was written"
                )
                continue
            label = known[digest].get("label") or ""
        try:
            obj = _torch_load(p)
        except Exception as exc:  # whatever torch raises for a file it cannot read, as one sentence
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"{p} cannot be read as a {what} ({type(exc).__name__}: {first})")
            continue
        return VerifiedLoad(obj, p, label, problems, verified=files is not None)
    raise CheckpointError(f"no usable {what}: " + "; ".join(problems) + (f". {fix}" if fix else "."))


def remove_verified(path) -> None:
    """Delete a checkpoint pair and its checksums (e.g. a finished pre-training's checkpoints)."""
    for p in (pathlib.Path(path), previous_path(path), checksum_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
