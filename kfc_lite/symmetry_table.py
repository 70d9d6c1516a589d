"""The symmetry table: what KFC and KFC++ need of each logged transition, computed once per dataset and kept.

Sampling a transition again gives the same action and states, and the Koopman model is frozen, so the symmetries of
a row never change: :func:`symmetry_table` computes the rows of a whole dataset once, over all host cores, stores
them on disk beside the Koopman model under a key of model, data and settings, and loads them again (memory-mapped
when larger than a budget) whenever the same key comes back. A :class:`SymmetryTable` then gathers a batch's rows by
their indices in the dataset, and the augmentation step makes one small product with the freshly drawn ``eps``.

Where things are (each name below also imports from here):

* :mod:`kfc_lite.symmetry_rows`: what a row holds and how it is computed (:class:`TableSettings`,
  :class:`SymmetryRows`, :func:`build_rows`, :func:`moved_latents`; docs/symmetry-table.md has the derivation);
* :mod:`kfc_lite.symmetry_table_files`: the table's format on disk, its key (:func:`table_key`) and checks;
* here: the table in memory (:class:`SymmetryTable`) and the build-or-load of a dataset's table
  (:func:`symmetry_table`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time
import warnings

import numpy as np
import torch

from kfc_lite.files import file_digest

# The build calls ``build_rows`` through this module's namespace, so a test can interrupt a build by patching
# ``kfc_lite.symmetry_table.build_rows``.
from kfc_lite.symmetry_rows import (
    STORAGE_DTYPES,
    SymmetryRows,
    TableSettings,
    build_rows,
    model_device_dtype,
    moved_latents,
    real_eigenbasis,
)
from kfc_lite.symmetry_table_files import (
    TABLE_FORMAT,
    NpyWriter,
    load_table_arrays,
    table_key,
    verify_table_folder,
)
from kfc_lite.validators import integer, number

__all__ = [
    "TableSettings",
    "SymmetryRows",
    "SymmetryTable",
    "build_rows",
    "moved_latents",
    "real_eigenbasis",
    "symmetry_table",
    "table_key",
    "model_device_dtype",
    "STORAGE_DTYPES",
]

#: rows per chunk of a build: fixed, so that a table is the same whatever the number of workers
CHUNK_ROWS = 1024


class SymmetryTable:
    """A dataset's rows: ``table.rows(indices)`` gathers a batch's, on the table's device.

    Attributes: ``settings``, ``key``, ``path`` (the folder on disk, or None), ``mapped`` (whether the arrays
    are memory-mapped from disk instead of held in memory), ``nbytes``, ``build_seconds`` (None when loaded),
    and the arrays themselves (``latent``, ``basis``, ``coords``, ``partner``, ``valid``, ``commutation``).
    """

    ARRAYS = ("latent", "basis", "coords", "partner", "valid", "commutation")

    def __init__(
        self,
        arrays: dict,
        settings: TableSettings,
        key: str,
        path=None,
        mapped: bool = False,
        build_seconds: float | None = None,
    ):
        self.settings, self.key, self.path, self.mapped = settings, key, path, mapped
        self.build_seconds = build_seconds
        self.arrays = {k: v for k, v in arrays.items() if v is not None}
        self.device = torch.device("cpu")
        n_rows = {v.shape[0] for v in self.arrays.values()}
        if len(n_rows) != 1:
            raise ValueError(f"the table's arrays have different row counts {sorted(n_rows)}")
        self.n_rows = n_rows.pop()

    def __len__(self) -> int:
        return self.n_rows

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.arrays.values())

    @property
    def bytes_per_row(self) -> int:
        return self.nbytes // max(self.n_rows, 1)

    @property
    def fallback_rate(self) -> float:
        return 1.0 - float(self.arrays["valid"].float().mean())

    def to(self, device) -> SymmetryTable:
        """Keep the arrays on ``device`` (gathers then happen there). A memory-mapped table stays on the host:
        its gathered rows are moved instead."""
        device = torch.device(device)
        if not self.mapped:
            self.arrays = {k: v.to(device) for k, v in self.arrays.items()}
        self.device = device
        return self

    def rows(self, indices: torch.Tensor, device=None, dtype=None) -> SymmetryRows:
        """The rows at ``indices`` (B,), on ``device`` (default: the indices') with basis and coordinates in
        ``dtype`` (default: float32)."""
        device = torch.device(device) if device is not None else indices.device
        where = self.arrays["latent"].device
        idx = indices.to(where)
        got = {k: v.index_select(0, idx) for k, v in self.arrays.items()}
        rows = SymmetryRows(
            got["latent"], got["basis"], got.get("coords"), got.get("partner"), got["valid"], got["commutation"]
        )
        rows = rows._replace(partner=None if rows.partner is None else rows.partner.long())
        return rows.to(device, dtype or torch.float32)

    def summary(self) -> dict:
        """Size, build time and guard statistics, for a run's records."""
        return {
            "rows": self.n_rows,
            "bytes": self.nbytes,
            "bytes_per_row": self.bytes_per_row,
            "mapped": self.mapped,
            "build_seconds": self.build_seconds,
            "fallback_rate": self.fallback_rate,
            "commutation_error_mean": float(self.arrays["commutation"].double().mean()),
            "path": None if self.path is None else str(self.path),
            "key": self.key,
            "settings": dataclasses.asdict(self.settings),
        }


def _build_into(
    folder: pathlib.Path, model, transitions: dict, settings: TableSettings, workers: int, progress: bool
) -> dict:
    """Compute every row, chunk by chunk over ``workers`` threads, into ``.npy`` files in ``folder``."""
    from tqdm.auto import tqdm

    from kfc_lite.settings import thread_pool

    obs = np.asarray(transitions["observations"])
    acts = np.asarray(transitions["actions"])
    nxt = np.asarray(transitions["next_observations"])
    N = obs.shape[0]
    device, dtype = model_device_dtype(model)
    dtype = dtype or torch.float32
    with torch.no_grad():
        n = model.encode(torch.as_tensor(obs[:1], device=device, dtype=dtype)).shape[-1]
    storage = STORAGE_DTYPES[settings.storage]
    m = n if settings.variant == "kfc++" else 2
    np_storage = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}[storage]
    shapes = {
        "latent": ((N, 2, n), np.float32),
        "basis": ((N, n, m), np_storage),
        "valid": ((N,), np.bool_),
        "commutation": ((N,), np.float32),
    }
    if settings.variant == "kfc++":
        shapes.update(coords=((N, n, 2), np_storage), partner=((N, n), np.int16 if n > 127 else np.int8))
    files = {k: NpyWriter(folder / f"{k}.npy", shape, dt) for k, (shape, dt) in shapes.items()}

    def as_storage(x: torch.Tensor) -> np.ndarray:
        x = x.to(storage).cpu()
        return x.view(torch.uint16).numpy() if storage == torch.bfloat16 else x.numpy()

    def one_chunk(start: int) -> int:
        stop = min(start + CHUNK_ROWS, N)
        part = [torch.as_tensor(x[start:stop], device=device, dtype=dtype) for x in (obs, acts, nxt)]
        rows = build_rows(model, *part, settings, storage_round=True)
        files["latent"].write_rows(start, rows.latent.float().cpu().numpy())
        files["basis"].write_rows(start, as_storage(rows.basis))
        files["valid"].write_rows(start, rows.valid.cpu().numpy())
        files["commutation"].write_rows(start, rows.commutation.cpu().numpy())
        if rows.coords is not None:
            files["coords"].write_rows(start, as_storage(rows.coords))
            files["partner"].write_rows(start, rows.partner.cpu().numpy())
        return stop - start

    starts = range(0, N, CHUNK_ROWS)
    with tqdm(total=N, desc="symmetry table", unit="row", disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1:
            for start in starts:
                bar.update(one_chunk(start))
        else:
            pool = thread_pool(workers, name="kfc_lite-table")
            try:
                for done in pool.map(one_chunk, starts):
                    bar.update(done)
            finally:
                pool.shutdown(wait=True)
    for f in files.values():
        f.close()
    return {k: {"shape": list(shape), "dtype": np.dtype(dt).str} for k, (shape, dt) in shapes.items()}


def symmetry_table(
    model,
    transitions: dict,
    settings: TableSettings,
    cache_dir,
    memory_budget_gb: float = 8.0,
    workers: int | None = None,
    progress: bool = True,
) -> SymmetryTable:
    """The table of ``transitions`` under ``model`` and ``settings``: loaded from ``cache_dir`` when a table of
    the same key is there and intact, built (and stored there) otherwise.

    ``cache_dir``: the folder beside the Koopman model; the table goes to ``symmetry-table-<key>/`` in it, written
    under a temporary name and renamed when complete, so an interrupted build leaves no table that looks whole. A
    damaged table (a checksum that differs) is reported, removed and built again. ``memory_budget_gb``: a table
    larger than this is memory-mapped from disk instead of read into memory. ``workers``: threads of the build
    (default: every core this process may use); the rows are the same for any number.
    """
    from kfc_lite.settings import available_cores, release_cpu_memory

    if not isinstance(settings, TableSettings):
        raise TypeError(f"settings must be a TableSettings, got {type(settings).__name__}")
    number("memory_budget_gb (GiB)", memory_budget_gb, 0.0)
    workers = available_cores() if workers is None else integer("workers (threads)", workers, 1)
    if hasattr(model, "eval"):
        model.eval()
    key = table_key(model, transitions, settings)
    cache_dir = pathlib.Path(cache_dir)
    folder = cache_dir / f"symmetry-table-{key[:20]}"
    budget = memory_budget_gb * 2**30
    if folder.exists():
        try:
            manifest = verify_table_folder(folder, key)
        except ValueError as exc:
            warnings.warn(
                f"the cached symmetry table in {folder} is not usable ({exc}): it is removed and built again",
                RuntimeWarning,
                stacklevel=2,
            )
            shutil.rmtree(folder)
        else:
            arrays, mapped = load_table_arrays(folder, manifest, budget)
            return SymmetryTable(arrays, settings, key, folder, mapped)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        arrays = _build_into(tmp, model, transitions, settings, workers, progress)
        seconds = time.perf_counter() - t0
        release_cpu_memory()  # the chunks' temporaries, which the tuned C allocator would otherwise keep
        for name in arrays:
            arrays[name]["sha256"] = file_digest(tmp / f"{name}.npy")
        manifest = {
            "format": TABLE_FORMAT,
            "key": key,
            "settings": dataclasses.asdict(settings),
            "rows": int(len(transitions["observations"])),
            "arrays": arrays,
            "build_seconds": seconds,
            "workers": workers,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same table first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            manifest = verify_table_folder(folder, key)
            seconds = None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    arrays, mapped = load_table_arrays(folder, manifest, budget)
    return SymmetryTable(arrays, settings, key, folder, mapped, build_seconds=seconds)
