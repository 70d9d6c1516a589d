"""The symmetry table on disk: its key, its ``.npy`` files and manifest, and the checks before a table is reused.

A table lives in a folder ``symmetry-table-<key>/`` beside the Koopman model: one ``.npy`` file per array and a
``manifest.json`` with the format version, the key, the settings and each file's SHA-256. The key
(:func:`table_key`) digests everything the rows depend on, so a changed model, dataset or setting never meets an
old table; the checksums (:func:`verify_table_folder`) catch a damaged one.

Here: :func:`table_key`, :class:`NpyWriter` (an ``.npy`` file written chunk by chunk, by several threads at once),
:func:`verify_table_folder` and :func:`load_table_arrays` (read into memory, or memory-mapped when large).

Sibling modules: :mod:`kfc_lite.symmetry_table` builds and loads tables through these functions;
:mod:`kfc_lite.symmetry_rows` computes what a row holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
import torch

from kfc_lite.files import file_digest
from kfc_lite.symmetry_rows import STORAGE_DTYPES, TableSettings

__all__ = ["TABLE_FORMAT", "table_key", "NpyWriter", "load_table_arrays", "verify_table_folder"]

#: the on-disk layout's version: a table written under another version is rebuilt, never reinterpreted
TABLE_FORMAT = 1


def _model_bytes(model):
    for name, t in sorted(model.state_dict().items()):
        yield name.encode()
        yield str(t.dtype).encode()
        yield t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def table_key(model, transitions: dict, settings: TableSettings) -> str:
    """A digest of everything the rows depend on: the model's weights, the data's states and actions, the
    settings and the table format. A changed model, dataset or setting gives another key (tested)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": TABLE_FORMAT, **dataclasses.asdict(settings)}, sort_keys=True).encode())
    for chunk in _model_bytes(model):
        h.update(chunk)
    for key in ("observations", "actions", "next_observations"):
        x = np.ascontiguousarray(np.asarray(transitions[key], dtype=np.float32))
        h.update(key.encode())
        h.update(str(x.shape).encode())
        h.update(x.data)
    return h.hexdigest()


class NpyWriter:
    """A ``.npy`` file of a known shape, written chunk by chunk at the chunks' own offsets (``os.pwrite``, so worker
    threads need no shared file position). Plain writes, not a writable memory map: the pages of a mapped file count
    as the process's memory until it is unmapped, and a 1M-row table would then occupy its 2.3 GiB twice over during
    a build that ends by loading it."""

    def __init__(self, path: pathlib.Path, shape: tuple, dtype):
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self.file, header)
        self.file.flush()
        self.offset = self.file.tell()
        self.file.truncate(self.offset + self.row_bytes * self.shape[0])

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        if data.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {data.shape[1:]} for a file of rows {self.shape[1:]}")
        os.pwrite(self.file.fileno(), data.tobytes(), self.offset + start * self.row_bytes)

    def close(self) -> None:
        os.fsync(self.file.fileno())
        self.file.close()


def load_table_arrays(folder: pathlib.Path, manifest: dict, memory_budget_bytes: float) -> tuple[dict, bool]:
    """The arrays of a verified table folder as tensors, and whether they are memory-mapped (when the files are
    larger than ``memory_budget_bytes``)."""
    total = sum((folder / f"{k}.npy").stat().st_size for k in manifest["arrays"])
    mapped = total > memory_budget_bytes
    storage = STORAGE_DTYPES[manifest["settings"]["storage"]]
    arrays = {}
    for k in manifest["arrays"]:
        # copy-on-write mapping: pages are read from disk as they are touched, and torch gets a writable array
        x = np.load(folder / f"{k}.npy", mmap_mode="c" if mapped else None)
        t = torch.from_numpy(x)
        if k in ("basis", "coords") and storage == torch.bfloat16:
            t = t.view(torch.bfloat16)
        arrays[k] = t
    return arrays, mapped


def verify_table_folder(folder: pathlib.Path, key: str) -> dict:
    """The manifest of a complete table of this key whose files match their checksums; raises ValueError
    naming what is wrong otherwise."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc})") from None
    if manifest.get("format") != TABLE_FORMAT or manifest.get("key") != key:
        raise ValueError(
            f"{folder} holds a table of format {manifest.get('format')} and key "
            f"{str(manifest.get('key'))[:16]}, not format {TABLE_FORMAT} and key {key[:16]}"
        )
    for name, info in manifest["arrays"].items():
        f = folder / f"{name}.npy"
        if not f.is_file() or file_digest(f) != info.get("sha256"):
            raise ValueError(f"{f} is missing or damaged (its checksum differs from the manifest's)")
    return manifest
