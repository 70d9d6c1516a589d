"""The rows of the symmetry table: what KFC and KFC++ need of one logged transition, and how it is computed.

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
decomposition cannot be trusted fall back to S4RL noise) and the commutation error of the symmetry the row
applies.

Here: :class:`TableSettings` (what rows depend on beyond the model and the data), :class:`SymmetryRows` (a
batch's rows), :func:`build_rows` (the rows of any batch of transitions) and :func:`moved_latents` (the one small
product with ``eps`` that the augmentation step makes).

Sibling modules: :mod:`kfc_lite.symmetry_table` builds the rows of a whole dataset and keeps them (and re-exports
every name here); :mod:`kfc_lite.symmetry_table_files` is the table's format on disk.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from kfc_lite.symmetry import DEFAULT_KFC_SCALE, Eigendecomposition, commutation_error, eigendecompose, kfc_generator
from kfc_lite.validators import number

__all__ = [
    "TableSettings",
    "SymmetryRows",
    "build_rows",
    "moved_latents",
    "real_eigenbasis",
    "model_device_dtype",
    "STORAGE_DTYPES",
]

#: how the basis and the coordinates may be stored (the latent codes are always float32); the error each gives is
#: measured by benchmarks/symmetry_table.py
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
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
