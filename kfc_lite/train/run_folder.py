"""A training run's folder: owned by one process, resumed only when it can be, never left half-written.

:func:`kfc_lite.train.train` and :func:`kfc_lite.train.train_online_sac` write a run into one folder
(``config.json``, ``metrics.jsonl``, the checkpoint pair, ``policy.pt``...). This module holds the rules that
keep such a folder whole:

* **one writer** (:func:`owned`): an exclusive ``fcntl.flock`` on ``<run>/.lock``, taken before anything in
  the folder is read or written. A second process is refused with the owner's process id; two runs writing one
  folder would interleave their metrics and keep one's config beside the other's policy. The kernel drops a
  ``flock`` when its process ends, however it ends, so a run killed with ``kill -9`` never blocks the next one:
  the lock file still names the dead process, and the next owner says that it takes the folder over.
  (``flock`` is not reliable on some network file systems: keep runs on a local disk.)
* **what a folder holds** (:func:`check_fresh`, :func:`read_config`): a new run refuses a folder that holds
  one; a folder with a run's files but no ``config.json`` is refused the same way whether resumed or not.
* **resume honours the run or refuses** (:func:`load_checkpoint`, :func:`check_restart`): the checkpoint is
  verified (:mod:`kfc_lite.files`) and a damaged one is set aside for the previous one; a folder whose
  checkpoints were written and are gone, or whose run finished, is not silently started over.
* **metrics** (:func:`repair_metrics`, :func:`read_metrics`): a line cut off by a stopped write (a full disk)
  is dropped when the run resumes, and said so.
* **non-finite values stop a run** (:func:`nonfinite_metrics`, :func:`first_nonfinite`): checked where the loop
  already synchronises with the device (the logged metrics) and before every checkpoint (the parameters), so
  a NaN is caught at the next log or checkpoint step and never written into a checkpoint.

Every error here is a sentence that names the file and the fix: a ``ValueError`` for a folder that cannot be used
as asked, a ``RuntimeError`` for a run that diverged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import warnings

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock is taken
    fcntl = None

__all__ = [
    "RunFolderError",
    "RunExistsError",
    "RunLockedError",
    "NothingToResumeError",
    "TrainingDivergedError",
    "owned",
    "note",
    "read_config",
    "check_fresh",
    "load_checkpoint",
    "check_restart",
    "check_metrics",
    "repair_metrics",
    "read_metrics",
    "nonfinite_metrics",
    "first_nonfinite",
    "diverged_error",
    "LOCK_NAME",
    "CHECKPOINT_NAME",
]

LOCK_NAME = ".lock"
CHECKPOINT_NAME = "checkpoint.pt"
#: files whose presence means that a folder holds (part of) a run
RUN_FILES = (
    "config.json",
    "checkpoint.pt",
    "checkpoint.prev.pt",
    "checkpoint.sha256",
    "metrics.jsonl",
    "policy.pt",
    "result.json",
    "koopman.partial.pt",
)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (in use, holds another run, damaged, cannot be resumed)."""


class RunExistsError(FileExistsError, RunFolderError):
    """The output folder already holds a run (resume it or choose another folder)."""


class NothingToResumeError(FileNotFoundError, RunFolderError):
    """``resume`` was asked for a folder that holds no run."""


class RunLockedError(RunFolderError):
    """Another process owns the run folder."""


class TrainingDivergedError(RuntimeError):
    """A loss or a parameter became NaN or infinite; the run stopped before saving it."""


def note(message: str) -> None:
    """Tell the user something they should know but that does not stop the run (on stderr, beside the progress)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


# -- one writer --------------------------------------------------------------------------------------------------
#: run folders this process holds, so that the command line (which reads config.json) and train() can both take
#: the lock: flock would refuse a second open file of the same process
_held: dict[str, int] = {}


def _pid_in(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text if text.isdigit() else ""


@contextlib.contextmanager
def owned(run_dir, *, create: bool):
    """Hold ``run_dir`` for the ``with`` block; ``create`` makes the folder when it does not exist.

    Raises :class:`RunLockedError` at once when another process holds it (no waiting: a run holds its folder
    for hours). Re-entrant within one process.
    """
    run_dir = pathlib.Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(
            f"--out {run_dir} is a file, not a folder: a run needs a folder of its own; choose a "
            "path that does not exist yet (it is created) or an empty folder"
        )
    if not run_dir.exists():
        if not create:
            raise NothingToResumeError(
                f"nothing to resume in {run_dir}: no such folder (start the run without --resume)"
            )
        run_dir.mkdir(parents=True)
    key = os.path.realpath(run_dir)
    if fcntl is None or key in _held:
        yield
        return
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _pid_in(fd) or "unknown"
        os.close(fd)
        raise RunLockedError(
            f"{run_dir} is in use by another process (pid {owner}, lock file {path}): two processes writing one run "
            "folder would mix their results. Wait for it to end, or stop it "
            f"(kill {owner if owner != 'unknown' else 'PID'}) and resume; to train something else at the same time, "
            "choose another --out"
        ) from None
    try:
        stale = _pid_in(fd)
        if stale and stale != str(os.getpid()):
            note(
                f"{path} names process {stale}, which ended without releasing {run_dir} (it was killed or crashed); "
                "the system dropped its lock, so this process takes the folder over"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = fd
        yield
    finally:
        _held.pop(key, None)
        # An empty lock file is a released one; the file stays, so no other process can lock a file being deleted.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


# -- what a folder holds ---------------------------------------------------------------------------------------
def _run_files(run_dir: pathlib.Path) -> list[str]:
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def check_fresh(run_dir) -> None:
    """Refuse to start a new run in a folder that holds one (or its remains)."""
    run_dir = pathlib.Path(run_dir)
    found = _run_files(run_dir)
    if not found:
        return
    if "config.json" not in found:
        _no_config(run_dir, found)
    raise RunExistsError(
        f"{run_dir} already holds a run ({', '.join(found)}): resume it (--resume / resume=True), "
        "or choose another out folder"
    )


def _no_config(run_dir: pathlib.Path, found: list[str]):
    raise RunFolderError(
        f"{run_dir} holds a run's files ({', '.join(found)}) but no config.json, so the run's settings are unknown: it "
        "can be neither resumed nor started again there. Put its config.json back, or start in another --out folder"
    )


def read_config(run_dir, need: str = "train") -> dict:
    """The run's ``config.json`` (``{"train": TrainConfig fields, "sac": ..., "env": ...}``), or a sentence saying
    why it cannot be read and what to do; ``need`` is the entry the caller reads (an online run has no "train")."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        found = _run_files(run_dir)
        if found:
            _no_config(run_dir, found)
        raise NothingToResumeError(f"nothing to resume in {run_dir}: it holds no run (start the run without --resume)")
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or need not in saved:
            raise ValueError(f"it has no {need!r} entry")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(
            f"{path} cannot be read ({exc}); kfc-lite writes it atomically, so it was changed or damaged after it was "
            "written. Put back a good copy (the run's settings cannot be guessed), or start again in another --out "
            "folder"
        ) from None
    return saved


def load_checkpoint(run_dir, fmt: str):
    """The run's checkpoint to resume from (a :class:`kfc_lite.files.VerifiedLoad`), or None when it has none.

    A latest checkpoint that is missing, damaged or unreadable is reported by path and set aside as
    ``checkpoint.pt.damaged`` (kept for inspection, out of the rotation); the previous one is used.
    """
    from kfc_lite.files import load_verified

    run_dir = pathlib.Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    fix = (
        f"Start the run again in another --out folder (its metrics and policies stay in {run_dir} for reference), "
        "or put back a good copy of the checkpoint"
    )
    found = load_verified(path, what="training checkpoint", fix=fix)
    if found is None:
        return None
    if not isinstance(found.obj, dict) or found.obj.get("format") != fmt:
        raise RunFolderError(f"{found.path} is not a checkpoint of this kind of run ({fmt}). {fix}")
    if not found.verified:
        note(f"{found.path} was written before checkpoints carried checksums: it is loaded without verification")
    if found.fell_back:
        if path.is_file():
            os.replace(path, path.with_name(path.name + ".damaged"))
        note(
            "; ".join(found.problems)
            + f". Resuming from {found.path.name} ({found.label or 'the previous one'})"
            + (
                f"; the damaged file is kept as {path.name}.damaged"
                if (path.with_name(path.name + ".damaged")).is_file()
                else ""
            )
        )
    return found


def check_restart(run_dir) -> None:
    """A resumed run with no checkpoint starts again from step 0, and rewrites its metrics; allowed only when
    nothing is lost: no checkpoint was ever written (it was stopped before its first) and it did not finish."""
    run_dir = pathlib.Path(run_dir)
    evidence = [name for name in ("checkpoint.sha256", "policy.pt", "result.json") if (run_dir / name).is_file()]
    if evidence:
        raise RunFolderError(
            f"cannot resume {run_dir}: its checkpoints (checkpoint.pt, checkpoint.prev.pt) are gone, but it has "
            f"{', '.join(evidence)}, so it had written some; resuming would start from step 0 and replace its metrics "
            "and policy. Put the checkpoint back, or start again in another --out folder"
        )
    if (run_dir / "metrics.jsonl").is_file():
        note(
            f"{run_dir} was stopped before its first checkpoint: it starts again from step 0 (metrics.jsonl is "
            "written anew)"
        )
        (run_dir / "metrics.jsonl").unlink()


# -- metrics -----------------------------------------------------------------------------------------------------
def _parse_lines(path: pathlib.Path):
    """The rows as ``(line, row)`` pairs, and the last line if a stopped write cut it off (else None)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows, torn = [], None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a metrics row (no 'step')")
        except ValueError as exc:
            if i == last:  # only a stopped write leaves a part of a line, and only at the end
                torn = line
                continue
            raise RunFolderError(
                f"{path}, line {i + 1} is not a metrics row ({exc}); a stopped write only ever cuts the last line, so "
                "the file was changed by hand or damaged: delete or fix that line"
            ) from None
        rows.append((line, row))
    return rows, torn


def check_metrics(path) -> None:
    """Refuse a metrics file damaged other than by a stopped write (a bad line before the last); read-only."""
    path = pathlib.Path(path)
    if path.is_file():
        _parse_lines(path)


def repair_metrics(path, last_step: int) -> None:
    """Drop the rows logged after the checkpoint a run resumes from (they will be logged again), and a last line
    cut off by a stopped write (said so)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return
    rows, torn = _parse_lines(path)
    if torn is not None:
        shown = torn if len(torn) <= 60 else torn[:57] + "..."
        note(f"the last line of {path} was cut off by a stopped write (a full disk?) and is dropped: {shown}")
    keep = [line for line, row in rows if row["step"] <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def read_metrics(run_dir, kind: str | None = None) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (all, or only ``kind="train"`` / ``"eval"``).

    A last line cut off by a stopped write (or still being written) is left out with a warning.
    """
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a run folder written by kfc_lite.train?")
    rows, torn = _parse_lines(path)
    if torn is not None:
        warnings.warn(
            f"{path}: the last line is incomplete (a stopped write, or one in progress) and is left out; "
            "resuming the run drops it",
            RuntimeWarning,
            stacklevel=2,
        )
    return [row for _, row in rows if kind is None or row.get("kind") == kind]


# -- non-finite values -------------------------------------------------------------------------------------------
def nonfinite_metrics(metrics: dict) -> dict:
    """The agent's logged values that are NaN or infinite (augmentation statistics are not the agent's and may
    be NaN when there was nothing to measure)."""
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, float) and not math.isfinite(v) and not k.startswith("aug_") and k != "steps_per_second"
    }


def first_nonfinite(state, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a nested state dict with a NaN or infinity, else None.

    One device synchronisation per device for the whole state: the verdicts are stacked before they are read.
    """
    import torch

    names, tensors = [], []

    def walk(name, x):
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and x.numel():
                names.append(name)
                tensors.append(torch.isfinite(x).all())
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{name}.{k}" if name else str(k), v)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{name}.{i}", v)

    walk(prefix, state)
    by_device: dict = {}
    for name, verdict in zip(names, tensors, strict=False):
        by_device.setdefault(verdict.device, []).append((name, verdict))
    for pairs in by_device.values():
        ok = torch.stack([v for _, v in pairs]).tolist()
        bad = next((name for (name, _), good in zip(pairs, ok, strict=False) if not good), None)
        if bad is not None:
            return bad
    return None


def diverged_error(step: int, what: str, run_dir: pathlib.Path, last_checkpoint: int | None) -> TrainingDivergedError:
    """The error of a run that went non-finite: where, what, what was kept, and what to do."""
    kept = (
        f"checkpoint.pt (step {last_checkpoint}) is the last good checkpoint and was not overwritten"
        if last_checkpoint is not None
        else "no checkpoint had been written"
    )
    return TrainingDivergedError(
        f"training diverged at step {step}: {what}. Nothing after that was saved; in {run_dir}, {kept}. Resuming "
        "would repeat the same steps: lower the learning rates (e.g. --set q_lr=1e-4 --set policy_lr=3e-5) or check "
        "the data's scale, and start again in another --out folder"
    )
