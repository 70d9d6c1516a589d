"""One process at a time on a file: an advisory lock file beside it, held with ``fcntl.flock``.

Two downloads resuming the same ``.part`` both append to it, and the result is a file longer than the source
that still opens. The lock makes the second one wait (or refuse) instead.

Why ``flock`` and not "create the lock file if it is absent": the kernel drops a ``flock`` when its process ends,
however it ends, so a download killed with ``kill -9`` never leaves a lock that blocks the next one. The lock file
holds the owner's process id, for the message the waiting process prints. Its owner deletes it on release; a
process that was waiting on the deleted file then finds that the path names another file (or none) and tries
again, so two processes can never both hold "the" lock. ``flock`` is not reliable on some network file systems
(NFS): keep the cache on a local disk. Without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from kfc_lite.data.errors import DownloadLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: seconds between two attempts while another process holds the lock
POLL_SECONDS = 0.2


def owner_of(path: str) -> str:
    """The process id written in a lock file, as text (``'unknown'`` when it cannot be read yet)."""
    try:
        with open(path) as f:
            pid = f.read().strip()
    except OSError:
        return "unknown"
    return pid if pid.isdigit() else "unknown"


@contextlib.contextmanager
def exclusive(path: str, *, what: str, wait: float | None = None):
    """Hold the lock file ``path`` for the ``with`` block; ``what`` names the work it guards, for the messages
    (``"the download of hopper-medium-v2 into ~/.d4rl/datasets"``).

    While another process holds it, wait up to ``wait`` seconds (``None``: as long as it takes; ``0``: not at
    all) and then raise :class:`DownloadLockedError` naming the owner's process id. The first wait is announced
    on stderr, so a process that waits is never silent about why.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    start, told = time.monotonic(), False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = owner_of(path)
            waited = time.monotonic() - start
            if wait is not None and waited >= wait:
                raise DownloadLockedError(
                    f"{what} is already running in another process (pid {owner}, lock file {path}); "
                    f"gave up after {waited:.0f} s. Let that process finish, then run the command again (a finished "
                    "download is then taken from the cache); if it hangs, stop it (kill "
                    f"{owner if owner != 'unknown' else 'PID'}): its lock ends with it."
                ) from None
            if not told:
                print(f"waiting for process {owner}, which holds {path} ({what})", file=sys.stderr, flush=True)
                told = True
            time.sleep(POLL_SECONDS)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its owner had already deleted: try again on the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # delete while still holding it: see the module docstring
        os.close(fd)
