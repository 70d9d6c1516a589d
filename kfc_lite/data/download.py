"""Download a D4RL file into the cache, resumably, and accept it only once it opens as a D4RL dataset.

The file grows as ``<name>.part`` and is renamed into place only when it is complete, checked and readable, so
the cache never holds half a dataset under its real name. A ``.part`` left by an interrupted download is
continued with an HTTP ``Range`` request; a server that ignores ``Range`` (answers 200 with the whole file)
makes us start over rather than append a second copy. Only the standard library is used (``urllib``).

Two guards keep a file from being served under the wrong name. A lock beside the ``.part``
(:mod:`kfc_lite.data.lock`) lets one process at a time download a name, so two downloads never append to one
``.part``. And every file, fresh or cached, must hold what its name promises (:mod:`kfc_lite.data.identity`:
sizes, rows, environment) and be exactly as long as the server said.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import urllib.error
import urllib.request
import warnings

from kfc_lite.data import registry
from kfc_lite.data.errors import DatasetError, DatasetMismatchError, DownloadError
from kfc_lite.files import file_digest

CHUNK_BYTES = 1 << 20
USER_AGENT = "kfc-lite (D4RL dataset download)"


def cache_path(name: str, dest: str | os.PathLike | None = None) -> str:
    """Where the file of dataset ``name`` lives: ``dest`` (a folder) or ``kfc_lite.info.dataset_dir()``."""
    from kfc_lite.info import dataset_dir

    info = registry.get(name)
    return os.path.join(os.fspath(dest) if dest is not None else dataset_dir(), info.file_name)


def check_file(
    path: str, source: str | None = None, info: registry.DatasetInfo | str | None = None, *, fix: str | None = None
) -> tuple[int, int]:
    """Open ``path`` as a D4RL HDF5 file and check its keys and shapes without reading the arrays.

    With ``info`` (a registry name or entry) the file must also be that dataset
    (:func:`kfc_lite.data.identity.check_identity`: sizes, rows, environment; it reads a few thousand values).
    Cheap enough for every cache hit. Returns ``(rows, obs_dim)``; raises :class:`DatasetError` otherwise
    (:class:`~kfc_lite.data.errors.DatasetMismatchError` for a readable file of another dataset, whose message
    ends with ``fix``, by default what to do about a file in the cache).
    """
    import h5py

    from kfc_lite.data.identity import check_identity

    source = source or path
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
            if missing:
                raise DatasetError(f"{source}: HDF5 file without {', '.join(missing)}: not a D4RL dataset")
            n = f["observations"].shape[0] if f["observations"].ndim == 2 else -1
            for key in ("actions", "rewards", "terminals"):
                if f[key].shape[:1] != (n,):
                    raise DatasetError(
                        f"{source}: '{key}' has shape {f[key].shape} but 'observations' has "
                        f"{f['observations'].shape}: not a D4RL dataset"
                    )
            if info is not None:
                check_identity(f, info, source, fix=fix)
            return n, f["observations"].shape[1]
    except OSError as exc:
        raise DatasetError(f"{source}: not a readable HDF5 file ({exc})") from exc


def _parse_checksum(checksum: str) -> tuple[str, str]:
    m = re.fullmatch(r"(sha256|md5):([0-9a-fA-F]+)", checksum.strip())
    if not m:
        raise ValueError(f"checksum {checksum!r} not understood: write 'sha256:<hex digest>' or 'md5:<hex digest>'")
    return m.group(1), m.group(2).lower()


def _verify_checksum(path: str, checksum: str | None, source: str) -> None:
    if not checksum:
        return
    algorithm, want = _parse_checksum(checksum)
    got = file_digest(path, algorithm)
    if got != want:
        raise DatasetError(f"{source}: {algorithm} is {got}, expected {want}: the file is not the published one")


def download(
    name: str,
    *,
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    checksum: str | None = None,
    wait: float | None = None,
) -> str:
    """Download dataset ``name`` (e.g. ``'hopper-medium-v2'``) and return the path of the checked file.

    ``dest`` is the folder (default: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``, the cache the ``d4rl``
    package uses too); ``url`` overrides the registry's address (a mirror); ``checksum`` is ``'sha256:<hex>'``
    or ``'md5:<hex>'`` (the registry records none: D4RL publishes none). A valid cached file is returned
    without network access. An interrupted download keeps its ``.part`` file: run the same call again to resume.
    ``timeout`` is how long the server may stay silent (connecting, or mid-file). While another process
    downloads the same name, wait for it up to ``wait`` seconds (``None``: as long as it takes; ``0``: refuse at
    once), then take its file from the cache.

    A cached file that opens but is another dataset (sizes, rows, environment) is refused and kept, with the fix
    in the message; one that does not open (a cut download) is downloaded again.
    """
    from kfc_lite.data.lock import exclusive

    info = registry.get(name)
    url = url or info.url
    if url is None:
        raise ValueError(
            f"{info.name} is one of our locally generated replicas, not a download: make it with "
            f"`kfc-lite data make {info.env}-{info.kind}"
            f"{'' if info.kind == 'random' else '-replica --policy POLICY_FILE'} --size 1000000`"
        )
    checksum = checksum or info.checksum
    if checksum:
        _parse_checksum(checksum)  # a malformed checksum fails before any network traffic
    final = cache_path(info.name, dest)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if _cached(final, info, checksum):  # the common case needs no lock
        return final
    with exclusive(final + ".lock", what=f"the download of {info.name} into {os.path.dirname(final)}", wait=wait):
        if _cached(final, info, checksum):  # another process finished it while we waited
            return final
        part = final + ".part"
        total = _fetch(url, part, name=info.name, progress=progress, timeout=timeout)
        source = f"the file downloaded from {url}"
        try:
            size = os.path.getsize(part)
            if total is not None and size != total:
                raise DatasetError(f"{source}: the file has {size} bytes but the server announced {total}")
            _verify_checksum(part, checksum, source)
            check_file(part, source, info, fix="")
        except DatasetError as exc:
            os.remove(part)
            stop = "" if str(exc).endswith(".") else "."
            raise type(exc)(
                f"{exc}{stop} The download was deleted. Check the address (url={url!r}); if it is right, "
                "the server sent something else (an error page? another dataset?): try again later."
            ) from exc
        os.replace(part, final)
    return final


def _cached(final: str, info: registry.DatasetInfo, checksum: str | None) -> bool:
    """Whether ``final`` holds dataset ``info``;
    a file that does not open is removed, one of another dataset refused."""
    if not os.path.exists(final):
        return False
    try:
        check_file(final, final, info)
        _verify_checksum(final, checksum, final)
        return True
    except DatasetMismatchError:
        raise  # a readable file of another dataset may be someone's data: refuse, keep it, say what to do
    except DatasetError as exc:
        warnings.warn(f"cached {final} is not usable ({exc}); downloading it again", RuntimeWarning, stacklevel=3)
        with contextlib.suppress(FileNotFoundError):  # another process may have removed it first
            os.remove(final)
        return False


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch(url: str, part: str, *, name: str, progress: bool, timeout: float) -> int | None:
    """Stream ``url`` into ``part``, continuing an existing ``part`` when the server honours ``Range``.

    Returns the size of the whole file as the server announced it (``None`` when it did not say).
    """
    from tqdm.auto import tqdm

    start = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:
            # the range starts at or past the end: either the .part is already whole, or it is longer than the file
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == start:
                return total
            os.remove(part)
            return _fetch(url, part, name=name, progress=progress, timeout=timeout)
        raise DownloadError(
            f"{name}: the server answered {exc.code} {exc.reason} for {url}; check the address"
        ) from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"{name}: cannot reach {url} ({getattr(exc, 'reason', exc)}). Check the network; "
            + ("the partial file is kept: run the same command again to resume." if start else "no file was written.")
        ) from exc
    with resp:
        status = resp.status
        if status == 206:
            got_start = _start_from_content_range(resp.headers.get("Content-Range"))
            if got_start != start:
                raise DownloadError(
                    f"{name}: asked {url} for bytes from {start}, got a range from {got_start}; "
                    f"delete {part} and download again"
                )
            mode = "ab"
        else:  # 200: a fresh download, or a server that ignores Range and sends the whole file again
            start, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        written = start
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"download {name}",
            disable=not progress,
        )
        try:
            with open(part, mode) as out:
                while True:
                    # read1 returns what has arrived (up to CHUNK_BYTES) instead of waiting to fill the chunk, so
                    # when the server stalls, every byte that came is already in the file and in ``written``
                    block = resp.read1(CHUNK_BYTES)
                    if not block:
                        break
                    out.write(block)
                    written += len(block)
                    bar.update(len(block))
        except TimeoutError as exc:
            why = f"no data for {timeout:g} s: the server stalled"
            raise DownloadError(_cut_message(name, url, part, written, total, why)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(_cut_message(name, url, part, written, total, exc)) from exc
        finally:
            bar.close()
    if total is not None and written != total:
        raise DownloadError(_cut_message(name, url, part, written, total, "connection closed early"))
    return total


def _cut_message(name, url, part, written, total, why) -> str:
    of = f" of {total}" if total is not None else ""
    return (
        f"{name}: the download from {url} stopped after {written}{of} bytes ({why}). The partial file {part} "
        "is kept: run the same command again to resume where it stopped."
    )


def _start_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes [\d*-]+/(\d+)", value or "")
    return int(m.group(1)) if m else None
