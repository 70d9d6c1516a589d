"""What KFC and KFC++ need of each logged transition, computed once per dataset: the symmetry table.

The Koopman model is frozen while the agent learns, and a logged transition keeps its action, so ``K(a_t)``, its
eigen-decomposition and the latent codes ``E(s_t)``, ``E(s_t+1)`` are the same every time the transition is
drawn. The augmentation of a batch needs only, per row, what turns a freshly drawn ``eps`` into the moved
latent states with one small product (docs/symmetry-table.md has the derivation):

* **KFC++**: ``sigma z = Re(U diag(eps) U^-1) z = U_r (d * (U_r^-1 z))``, where ``U_r`` is the *real*
  eigenbasis (a real eigenvector as it is, a conjugate pair ``v, conj(v)`` as the two columns ``Re v, Im v``,
  LAPACK's own real form) and ``d`` is ``eps`` with each pair's two entries replaced by their average (which is
  what taking the real part does). A row stores ``U_r`` (n, n), the coordinates ``U_r^-1 E(s)`` and
  ``U_r^-1 E(s')`` (n, 2) and each column's pair partner.
* **KFC**: ``sigma z = eps G z`` with one generator ``G`` per action: a row stores ``G E(s)`` and ``G E(s')``.

Every row also stores ``E(s)``, ``E(s')`` (so the step never runs the encoder), the guard's verdict (rows whose
decomposition cannot be trusted fall back to S4RL noise, as before) and the commutation error of the symmetry the
row applies. The step then gathers the batch's rows, makes one batched (B, n, n) x (B, n, 2) product with the
sampled ``eps`` and decodes: :func:`moved_latents`.

:func:`build_rows` computes rows for any batch (the augmenter uses it for batches that do not come from a
tabled dataset, such as a notebook's); :func:`symmetry_table` builds the rows of a whole dataset over all host
cores, stores them on disk beside the Koopman model under a key of model, data and settings, and loads them
again (memory-mapped when larger than a budget) whenever the same key comes back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch

from kfc_lite.symmetry import DEFAULT_KFC_SCALE, Eigendecomposition, commutation_error, eigendecompose, kfc_generator
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

#: the on-disk layout's version: a table written under another version is rebuilt, never reinterpreted
TABLE_FORMAT = 1
#: how the basis and the coordinates may be stored (the latent codes are always float32); the error each gives is
#: measured by benchmarks/symmetry_table.py
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: rows per chunk of a build: fixed, so that a table is the same whatever the number of workers
CHUNK_ROWS = 1024
#: the probe symmetry whose commutation error a row records is drawn from this seed (the same for every row)
_PROBE_SEED = 20220708


@dataclasses.dataclass(frozen=True)
class TableSettings:
    """What a table's rows depend on, beyond the model and the data.

    ``variant`` ("kfc++" or "kfc"), ``cond_threshold`` (None: the default limit of ``eig_dtype``), ``eig_dtype``
    (the dtype of the decomposition, "float32" or "float64"), ``kfc_scale`` and ``kfc_seed`` (KFC's generator),
    ``storage`` (dtype of the stored basis and coordinates, one of :data:`STORAGE_DTYPES`).
    """

    variant: str = "kfc++"
    cond_threshold: float | None = None
    eig_dtype: str = "float32"
    kfc_scale: float = DEFAULT_KFC_SCALE
    kfc_seed: int = 0
    storage: str = "float32"

    def __post_init__(self):
        if self.variant not in ("kfc++", "kfc"):
            raise ValueError(f"variant must be 'kfc++' or 'kfc', got {self.variant!r}")
        if self.eig_dtype not in ("float32", "float64"):
            raise ValueError(f"eig_dtype must be 'float32' or 'float64', got {self.eig_dtype!r}")
        if self.storage not in STORAGE_DTYPES:
            raise ValueError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {self.storage!r}")
        if self.cond_threshold is not None and not self.cond_threshold > 1:
            raise ValueError(
                f"cond_threshold must be > 1 (a condition number is at least 1), got {self.cond_threshold}"
            )
        number("kfc_scale", self.kfc_scale, 0.0, low_open=True)


class SymmetryRows(NamedTuple):
    """The table's rows for a batch of B transitions (latent size n).

    latent (B, 2, n): ``E(s)`` and ``E(s')``. basis: KFC++ the real eigenbasis ``U_r`` (B, n, n); KFC the
    columns ``G E(s)``, ``G E(s')`` (B, n, 2). coords (B, n, 2): KFC++ ``U_r^-1 E(s)`` and ``U_r^-1 E(s')``
    (KFC: None). partner (B, n) long: KFC++ the column of each column's conjugate partner (its own for a real
    eigenvalue; KFC: None). valid (B,) bool: the guard's verdict. commutation (B,): the relative commutator
    ``||sigma K - K sigma|| / (||sigma|| ||K||)`` of the symmetry the row applies (a fixed probe ``eps`` for KFC++).
    """

    latent: torch.Tensor
    basis: torch.Tensor
    coords: torch.Tensor | None
    partner: torch.Tensor | None
    valid: torch.Tensor
    commutation: torch.Tensor

    def to(self, device=None, dtype=None) -> SymmetryRows:
        """The rows on ``device``, the basis and coordinates in ``dtype`` (indices and masks keep theirs)."""

        def move(x, cast):
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if cast else None, non_blocking=True)

        return SymmetryRows(
            move(self.latent, True),
            move(self.basis, True),
            move(self.coords, True),
            move(self.partner, False),
            move(self.valid, False),
            move(self.commutation, False),
        )


def real_eigenbasis(eig: Eigendecomposition) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U_r, partner)`` from a complex decomposition: the real basis and each column's pair partner.

    LAPACK returns a complex conjugate pair as two consecutive columns, the one with the positive imaginary part
    first, whose eigenvectors are ``v`` and ``conj(v)``. Replacing them by ``Re v`` and ``Im v`` spans the same
    real plane, so ``U_r`` is real and invertible wherever ``U`` is. A row whose eigenvalues are not laid out
    so (possible only outside LAPACK's convention) is marked by ``partner[..., 0] = -1``: callers treat it as
    invalid.
    """
    values, vectors = eig.values, eig.vectors
    n = values.shape[-1]
    first, second = values.imag > 0, values.imag < 0
    # column k of a pair's second member takes Im of the first member's vector, which sits in column k - 1
    previous_imag = torch.roll(vectors.imag, shifts=1, dims=-1)
    basis = torch.where(second.unsqueeze(-2), previous_imag, vectors.real)
    index = torch.arange(n, device=values.device).expand(values.shape)
    partner = torch.where(first, index + 1, torch.where(second, index - 1, index))
    # a pair is laid out as LAPACK promises: first then second, with conjugate eigenvalues
    follows = torch.roll(second, shifts=-1, dims=-1)
    follows[..., -1] = False
    pair_ok = (~first | follows).all(-1)
    pair_ok &= (~second | torch.roll(first, shifts=1, dims=-1)).all(-1) & ~second[..., 0]
    partner = torch.where(pair_ok.unsqueeze(-1), partner, torch.full_like(partner, -1))
    return basis, partner


def _probe_eps(n: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(_PROBE_SEED)
    return torch.randn(n, generator=g, dtype=torch.float64).to(dtype)


def build_rows(
    model, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor, settings: TableSettings, storage_round: bool = False
) -> SymmetryRows:
    """The rows of the transitions ``(s, a, s')`` (B rows) on the model's device, in the model's dtype.

    ``storage_round=True`` rounds the basis and coordinates to ``settings.storage`` as a table would store them
    (the commutation error is then that of the stored rows).
    """
    eig_dtype = getattr(torch, settings.eig_dtype)
    with torch.no_grad():
        model_dtype = s.dtype
        latent = model.encode(torch.stack([s, s_next], dim=1))  # (B, 2, n)
        K = model.operator(a).to(eig_dtype)
        eig = eigendecompose(K, settings.cond_threshold, exact_cond=False)
        z = latent.to(eig_dtype).mT  # (B, n, 2): latent states as columns
        storage = STORAGE_DTYPES[settings.storage]

        def stored(x):
            return x.to(storage).to(eig_dtype) if storage_round else x

        if settings.variant == "kfc++":
            basis, partner = real_eigenbasis(eig)
            valid = eig.valid & (partner[..., 0] >= 0)
            partner = partner.clamp_min(0)
            coords, info = torch.linalg.solve_ex(basis, z)
            valid &= (info == 0) & torch.isfinite(coords).flatten(-2).all(-1)
            basis, coords = stored(basis), stored(coords)
            valid &= torch.isfinite(basis).flatten(-2).all(-1) & torch.isfinite(coords).flatten(-2).all(-1)
            # what the row applies, for a probe eps: U_r diag(d) U_r^-1, in float64 from the (stored) basis
            d = _probe_eps(K.shape[-1], torch.float64).expand(partner.shape)
            d = 0.5 * (d + d.gather(-1, partner))
            b64 = basis.double()
            inv, inv_info = torch.linalg.inv_ex(b64)
            sigma = (b64 * d.unsqueeze(-2)) @ inv
            commutation = commutation_error(sigma, K.double())
            valid &= inv_info == 0
        else:
            G, valid = kfc_generator(K, scale=settings.kfc_scale, seed=settings.kfc_seed, eig=eig)
            basis, coords, partner = stored(G @ z), None, None
            commutation = commutation_error(G.double(), K.double())
        commutation = torch.where(valid, commutation, torch.zeros_like(commutation)).float()
        zero = torch.zeros((), dtype=basis.dtype, device=basis.device)
        basis = torch.where(valid[:, None, None], basis, zero)
        if coords is not None:
            coords = torch.where(valid[:, None, None], coords, zero)
        return SymmetryRows(
            latent.to(model_dtype),
            basis.to(model_dtype),
            None if coords is None else coords.to(model_dtype),
            partner,
            valid,
            commutation,
        )


def moved_latents(rows: SymmetryRows, eps: torch.Tensor) -> torch.Tensor:
    """``(I + sigma) E(s)`` and ``(I + sigma) E(s')`` for each row's symmetry at ``eps``: (B, 2, n).

    ``eps``: (B, n) for KFC++ (one parameter per eigen-direction), (B,) for KFC (one scale per row). The same
    ``sigma`` moves both states of a transition.
    """
    if rows.coords is None:  # KFC: sigma z = eps G z
        shift = eps[:, None, None] * rows.basis.mT
    else:  # KFC++: sigma z = U_r (d * U_r^-1 z), each conjugate pair's two entries of eps averaged into d
        d = 0.5 * (eps + eps.gather(1, rows.partner))
        shift = (rows.basis @ (d.unsqueeze(-1) * rows.coords)).mT
    return rows.latent + shift


def model_device_dtype(model) -> tuple[torch.device, torch.dtype | None]:
    """The device and floating dtype of a model's first parameter or buffer (the CPU and None if it has none)."""
    tensors = list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []
    for t in tensors:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), None


# -- a whole dataset's table ------------------------------------------------------------------------------------
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


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


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


class _NpyWriter:
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
    files = {k: _NpyWriter(folder / f"{k}.npy", shape, dt) for k, (shape, dt) in shapes.items()}

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


def _load(folder: pathlib.Path, manifest: dict, memory_budget_bytes: float) -> tuple[dict, bool]:
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


def _verify(folder: pathlib.Path, key: str) -> dict:
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
        if not f.is_file() or _sha256_file(f) != info.get("sha256"):
            raise ValueError(f"{f} is missing or damaged (its checksum differs from the manifest's)")
    return manifest


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
            manifest = _verify(folder, key)
        except ValueError as exc:
            warnings.warn(
                f"the cached symmetry table in {folder} is not usable ({exc}): it is removed and built again",
                RuntimeWarning,
                stacklevel=2,
            )
            shutil.rmtree(folder)
        else:
            arrays, mapped = _load(folder, manifest, budget)
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
            arrays[name]["sha256"] = _sha256_file(tmp / f"{name}.npy")
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
            manifest = _verify(folder, key)
            seconds = None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    arrays, mapped = _load(folder, manifest, budget)
    return SymmetryTable(arrays, settings, key, folder, mapped, build_seconds=seconds)
