"""Symmetries read off a learned Koopman operator: the KFC and KFC++ generators, and their guard.

A Koopman forward model maps a state to a latent vector ``z = E(s)`` in which one step of the dynamics
under action ``a`` is linear, ``z' = K(a) z``. Any matrix ``sigma`` that commutes with ``K(a)`` is a
symmetry of that latent step: if ``z' = K z`` then ``(I + sigma) z' = K (I + sigma) z``. (Note that
``I + sigma`` commutes with ``K`` *exactly*, whatever the size of ``sigma``; "first order" refers only to
``I + eps*sigma`` being the first-order part of the one-parameter group ``exp(eps*sigma)``.)

When ``K = U diag(lambda) U^-1`` is diagonalisable with distinct eigenvalues, the matrices that commute
with it (its *commutant*) are exactly ``U diag(d) U^-1`` for complex ``d`` (the paper's section 3). The two
samplers of the paper pick elements of that family:

* **KFC++** (:func:`kfcpp_symmetry`, the authors' "Eigenspace" variant, KFC''): ``Re(U diag(eps) U^-1)``
  with one real ``eps_i`` per latent dimension: an ``n``-parameter family per action. :func:`kfcpp_shift`
  is the whole augmentation of a transition in a few lines: encode, move along the symmetry, decode.
* **KFC** (:func:`kfc_symmetry`, the authors' "Sylvester" variant, KFC'): one generator per action,
  scaled by a scalar ``eps`` per sample.

Everything is batched over leading dimensions (``K`` of shape ``(..., n, n)``), runs on the tensors'
device with ``torch.linalg.eig``, and marks the samples whose eigen-decomposition cannot be trusted
(non-finite, or an ill-conditioned eigenvector matrix, as for a defective ``K`` such as a Jordan block)
in a validity mask instead of silently returning a matrix that does not commute (the authors' code falls
back to ``U = I`` there, which is *not* a symmetry; docs/paper.md, 'The symmetry augmentation').
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from kfc_lite.validators import number

__all__ = [
    "Eigendecomposition",
    "eigendecompose",
    "default_cond_threshold",
    "kfcpp_symmetry",
    "kfcpp_shift",
    "kfc_generator",
    "kfc_symmetry",
    "commutation_error",
    "eigen_directions",
    "frobenius_norm",
    "DEFAULT_KFC_SCALE",
]

#: RMS gain per latent direction of the KFC generator, ``||G||_F / sqrt(n)``; equal to the per-dimension
#: standard deviation of KFC++'s ``eps`` at ``shift_sigma=1`` (``3e-3``), so that the two variants move
#: states by comparable amounts at the same ``shift_sigma``.
DEFAULT_KFC_SCALE = 3e-3

#: relative commutation error we are willing to accept from round-off; sets the default condition limit.
_ROUNDOFF_TOLERANCE = 1e-3


class Eigendecomposition(NamedTuple):
    """``K = vectors @ diag(values) @ inverse`` for every valid sample.

    values (..., n) complex, vectors (..., n, n) complex (columns are eigenvectors), inverse (..., n, n)
    complex, cond (...) real: the 2-norm condition number of ``vectors`` (``inf`` where it failed),
    valid (...) bool. Invalid samples carry ``vectors = inverse = I`` so that downstream arithmetic stays
    finite; their results must not be used (callers zero them and report the mask).
    """

    values: torch.Tensor
    vectors: torch.Tensor
    inverse: torch.Tensor
    cond: torch.Tensor
    valid: torch.Tensor


def default_cond_threshold(dtype: torch.dtype) -> float:
    """The default limit on ``cond(U)``: ``1e-3 / machine epsilon`` of ``dtype`` (about 8.4e3 in float32,
    4.5e12 in float64).

    Why: the round-off in ``U diag(eps) U^-1`` grows like ``cond(U) * machine epsilon``, so this limit keeps
    the relative commutation error of an accepted symmetry below about 1e-3. A defective ``K`` (a Jordan
    block) has nearly parallel computed eigenvectors, ``cond(U)`` of order ``1/machine epsilon``, and is
    rejected in either precision.
    """
    real = torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype
    return _ROUNDOFF_TOLERANCE / torch.finfo(real).eps


def frobenius_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x||_F`` over the last two dimensions, real or complex.

    Equal to ``torch.linalg.matrix_norm(x)``, which is far slower on a CPU for a complex batch (its complex
    kernels are not vectorised), so complex input is read as its real view.
    """
    if x.is_complex():
        return torch.linalg.vector_norm(torch.view_as_real(x), dim=(-3, -2, -1))
    return torch.linalg.vector_norm(x, dim=(-2, -1))


def _check_square(K: torch.Tensor, name: str = "K") -> None:
    if not isinstance(K, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (..., n, n), got {type(K).__name__}; "
            "convert with torch.as_tensor(...)"
        )
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n) with square trailing dimensions, got {tuple(K.shape)}")
    if K.is_complex() or not K.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor (float32 or float64), got {K.dtype}")


def eigendecompose(K: torch.Tensor, cond_threshold: float | None = None, exact_cond: bool = True) -> Eigendecomposition:
    """Batched eigen-decomposition of real ``K`` (..., n, n) on its device, with a validity guard.

    A sample is invalid when ``K`` holds NaN/inf, when the eigen-decomposition or the inverse of ``U`` is
    not finite or fails, or when ``cond(U) > cond_threshold`` (default :func:`default_cond_threshold`).

    With ``exact_cond=False`` the guard first uses the cheap bound ``||U||_F ||U^-1||_F >= cond_2(U)``: a sample
    under the limit by the bound is under it exactly, so only the others need the SVD of ``U``. The validity
    mask is the same as with ``exact_cond=True``; ``cond`` then holds that upper bound for the samples it
    cleared (the exact 2-norm condition number elsewhere).
    """
    _check_square(K)
    if cond_threshold is None:
        cond_threshold = default_cond_threshold(K.dtype)
    if not cond_threshold > 1:
        raise ValueError(f"cond_threshold must be > 1 (a condition number is at least 1), got {cond_threshold}")
    n = K.shape[-1]
    finite_in = torch.isfinite(frobenius_norm(K))  # no NaN/inf in K (entries far below ~1e19)
    eye_real = torch.eye(n, dtype=K.dtype, device=K.device)
    # eig refuses NaN/inf input for the whole batch: substitute I for those samples, mark them invalid.
    K_safe = _where_ok(finite_in, K, eye_real)
    values, vectors = torch.linalg.eig(K_safe)
    eye = torch.eye(n, dtype=vectors.dtype, device=K.device)
    # A matrix holds a NaN or an inf exactly when its Frobenius norm is not finite (the norm of a finite U
    # could only overflow above ~1e19 per entry, far past any accepted condition number): one cheap
    # reduction instead of an elementwise isfinite pass over the complex tensor.
    norm_u = frobenius_norm(vectors)
    finite_eig = torch.isfinite(norm_u) & torch.isfinite(torch.view_as_real(values)).flatten(-2).all(-1)
    vectors = _where_ok(finite_eig, vectors, eye)
    inverse, info = torch.linalg.inv_ex(vectors)
    norm_inv = frobenius_norm(inverse)
    finite_inv = (info == 0) & torch.isfinite(norm_inv)
    inverse = _where_ok(finite_inv, inverse, eye)
    if exact_cond:
        cond = torch.linalg.cond(vectors)
    else:
        norm_u = torch.where(finite_eig, norm_u, torch.full_like(norm_u, math.sqrt(n)))  # ||I||_F where U := I
        norm_inv = torch.where(finite_inv, norm_inv, torch.full_like(norm_inv, math.sqrt(n)))
        cond = norm_u * norm_inv  # >= cond_2(U)
        unsure = ~(cond <= cond_threshold)  # includes NaN
        if unsure.any():
            cond = cond.clone()
            cond[unsure] = torch.linalg.cond(vectors[unsure]).to(cond.dtype)
    valid = finite_in & finite_eig & finite_inv & torch.isfinite(cond) & (cond <= cond_threshold)
    cond = torch.where(finite_in & finite_eig & finite_inv, cond, torch.full_like(cond, float("inf")))
    vectors = _where_ok(valid, vectors, eye)
    inverse = _where_ok(valid, inverse, eye)
    return Eigendecomposition(values, vectors, inverse, cond, valid)


def _where_ok(ok: torch.Tensor, x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``x`` where the per-matrix mask ``ok`` (...,) holds, ``fill`` (broadcasting) elsewhere.

    On the CPU a batch where every matrix is fine (the usual case) is returned as it is, saving a full pass
    over the batch; elsewhere ``torch.where`` always runs, so a GPU never waits for the mask.
    """
    if x.device.type == "cpu" and bool(ok.all()):
        return x
    return torch.where(ok[..., None, None], x, fill)


def _from_eigenbasis(eig: Eigendecomposition, d: torch.Tensor, real_dtype: torch.dtype) -> torch.Tensor:
    """``Re(U diag(d) U^-1)``, zero for invalid samples."""
    sigma = ((eig.vectors * d.to(eig.vectors.dtype).unsqueeze(-2)) @ eig.inverse).real.to(real_dtype)
    return _where_ok(eig.valid, sigma, torch.zeros((), dtype=sigma.dtype, device=sigma.device))


def kfcpp_symmetry(
    K: torch.Tensor, eps: torch.Tensor, cond_threshold: float | None = None, eig: Eigendecomposition | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """KFC++ symmetry ``sigma = Re(U diag(eps) U^-1)`` for real ``K`` (..., n, n) and real ``eps`` (..., n).

    The leading dimensions of ``K`` and ``eps`` broadcast (one ``K`` with a batch of ``eps`` draws works).
    Returns ``(sigma, valid)``: ``sigma`` (..., n, n) real, in ``K``'s dtype and device, and the boolean mask
    of samples whose eigen-decomposition passed the guard (``sigma`` is zero where it did not).

    Why the real part is still a symmetry: ``K`` is real, so its complex eigenvalues come in conjugate
    pairs whose eigenvectors are conjugate, ``conj(U) = U P`` with ``P`` the permutation that swaps the
    members of each pair (LAPACK returns them exactly so). Hence ``conj(U diag(eps) U^-1) =
    U diag(P eps) U^-1`` and ``Re(U diag(eps) U^-1) = U diag((eps + P eps)/2) U^-1``: still diagonal in
    the eigenbasis, so it commutes with ``K``, with each pair's two parameters replaced by their average.
    The price: a pair's real symmetries form a 2-parameter family (``a + ib`` on ``v``, ``a - ib`` on
    ``conj(v)``: a scaling *and* a rotation within the pair's real plane), and real ``eps`` reaches only
    the scaling ``a``. ``eig`` may be passed to reuse a decomposition of the same ``K``.
    """
    _check_square(K)
    if not isinstance(eps, torch.Tensor):
        eps = torch.as_tensor(eps, dtype=K.dtype, device=K.device)
    if eps.is_complex():
        raise TypeError("eps must be real: KFC++ draws one real parameter per latent dimension")
    if eps.ndim < 1 or eps.shape[-1] != K.shape[-1]:
        raise ValueError(
            f"eps must have shape (..., n) with n = {K.shape[-1]} (one parameter per latent "
            f"dimension), got {tuple(eps.shape)}"
        )
    if eps.device != K.device:
        raise ValueError(f"eps is on {eps.device} but K on {K.device}: put both on the same device")
    if eig is None:
        eig = eigendecompose(K, cond_threshold)
    batch = torch.broadcast_shapes(K.shape[:-2], eps.shape[:-1])
    sigma = _from_eigenbasis(_expand(eig, batch), eps.expand(*batch, eps.shape[-1]), K.dtype)
    return sigma, eig.valid.expand(batch)


def kfcpp_shift(
    model,
    s: torch.Tensor,
    a: torch.Tensor,
    s_next: torch.Tensor,
    eps: torch.Tensor,
    cond_threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KFC++ in one place: move a batch of transitions ``(s, a, s')`` along a symmetry of the Koopman model.

    docs/paper.md, 'The symmetry augmentation'. ``model`` has ``encode``, ``decode`` and ``operator`` (a
    :class:`~kfc_lite.koopman.KoopmanForwardModel`); ``eps`` (B, n) is one draw per transition, and the same
    draw moves ``s`` and ``s'``::

        z = E(s), z' = E(s'),  K(a) = U diag(lambda) U^-1,  sigma = Re(U diag(eps) U^-1)
        s~ = D((I + sigma) z),  s~' = D((I + sigma) z')

    Returns ``(s~, s~', valid)``; where ``valid`` is False the decomposition failed the guard, ``sigma`` is zero
    and the row is only decoded (the augmenter gives such rows S4RL noise instead). The training loop gets the
    same numbers faster from a per-dataset table (:func:`kfc_lite.symmetry_rows.moved_latents`).
    """
    z, z_next = model.encode(s), model.encode(s_next)  # latent states (B, n)
    sigma, valid = kfcpp_symmetry(model.operator(a), eps, cond_threshold)  # (B, n, n): commutes with K(a)
    moved = z + (sigma @ z.unsqueeze(-1)).squeeze(-1)  # (I + sigma) z
    moved_next = z_next + (sigma @ z_next.unsqueeze(-1)).squeeze(-1)  # the same sigma for s'
    return model.decode(moved), model.decode(moved_next), valid


def _expand(eig: Eigendecomposition, batch) -> Eigendecomposition:
    n = eig.values.shape[-1]
    return Eigendecomposition(
        eig.values.expand(*batch, n),
        eig.vectors.expand(*batch, n, n),
        eig.inverse.expand(*batch, n, n),
        eig.cond.expand(batch),
        eig.valid.expand(batch),
    )


def _reference_matrix(n: int, seed: int, dtype: torch.dtype, device) -> torch.Tensor:
    """KFC's fixed reference matrix R (n, n): drawn on the CPU in float64 then moved, so it is the same R on every
    device and dtype and takes nothing from the global RNG (whose state the training loop checkpoints). Cached
    per (n, seed, dtype, device): a copy from ordinary host memory to a GPU makes the host wait for the device,
    which must not happen on every batch. Callers only read it."""
    return _reference_matrix_cached(int(n), int(seed), dtype, torch.device(device))


@functools.lru_cache(maxsize=32)
def _reference_matrix_cached(n: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(n, n, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


def kfc_generator(
    K: torch.Tensor,
    scale: float = DEFAULT_KFC_SCALE,
    seed: int = 0,
    cond_threshold: float | None = None,
    eig: Eigendecomposition | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KFC's single commuting generator ``G`` per ``K`` (..., n, n); returns ``(G, valid)``.

    Construction: a fixed random real matrix ``R`` (seeded by ``seed``, the same for every ``K``) projected
    onto ``K``'s commutant in its eigenbasis, ``G = Re(U diag(diag(U^-1 R U)) U^-1)``, then rescaled to
    ``||G||_F / sqrt(n) = scale``.

    Why not the authors' call: they solve the Sylvester equation ``K X - X K = I`` with
    ``scipy.linalg.solve_sylvester``. That equation has no solution (the trace of a commutator is 0, not
    ``n``) and its operator is singular, so the solver returns entries around 1e15 dominated by the null
    space of the commutator, i.e. an arbitrary element of the commutant, chosen by round-off. The
    projection above gives the same kind of object (one element of the commutant per action, deterministic
    given the model) by a well-posed computation, and the same answer on every machine. ``R`` is real, so
    ``diag(U^-1 R U)`` has conjugate entries on conjugate eigen-pairs and ``G`` is real up to round-off: the
    generator may mix scaling and rotation within each pair, which KFC++'s real ``eps`` cannot.

    Why this scale: the authors rescale by ``1e-5 / mean(X)``, but the mean entry of a matrix with entries
    of both signs is an unstable normaliser (near zero, or of either sign, from one action to the next).
    The Frobenius norm is stable, and ``scale = 3e-3`` gives ``eps * G`` (``eps ~ N(0, shift_sigma^2)``) the
    same RMS gain per latent direction as KFC++'s ``Re(U diag(eps) U^-1)`` with ``eps_i ~ N(0, (3e-3 *
    shift_sigma)^2)`` when ``U`` is well conditioned, so the two variants are compared at equal shift size.
    """
    _check_square(K)
    number("scale", scale, 0.0, low_open=True)
    n = K.shape[-1]
    if eig is None:
        eig = eigendecompose(K, cond_threshold)
    R = _reference_matrix(n, seed, eig.vectors.dtype, K.device)
    d = torch.diagonal(eig.inverse @ R @ eig.vectors, dim1=-2, dim2=-1)
    G = _from_eigenbasis(eig, d, K.dtype)
    norm = torch.linalg.matrix_norm(G)
    # A generator that projects to (numerically) zero cannot be rescaled: mark it invalid, do not divide.
    tiny = torch.finfo(K.dtype).eps * n
    ok = eig.valid & (norm > tiny)
    G = torch.where(
        ok[..., None, None], G * (scale * n**0.5 / norm.clamp_min(tiny))[..., None, None], torch.zeros_like(G)
    )
    return G, ok


def kfc_symmetry(
    K: torch.Tensor,
    eps: torch.Tensor | float,
    scale: float = DEFAULT_KFC_SCALE,
    seed: int = 0,
    cond_threshold: float | None = None,
    eig: Eigendecomposition | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KFC symmetry ``sigma = eps * G(K)`` with one scalar ``eps`` per sample (shape broadcasting with
    ``K.shape[:-2]``) and the generator of :func:`kfc_generator`. Returns ``(sigma, valid)``."""
    G, valid = kfc_generator(K, scale=scale, seed=seed, cond_threshold=cond_threshold, eig=eig)
    if not isinstance(eps, torch.Tensor):
        eps = torch.as_tensor(eps, dtype=K.dtype, device=K.device)
    if eps.is_complex():
        raise TypeError("eps must be real")
    batch = torch.broadcast_shapes(K.shape[:-2], eps.shape)
    return eps.to(K.dtype)[..., None, None] * G, valid.expand(batch)


def commutation_error(sigma: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Relative commutator ``||sigma K - K sigma||_F / (||sigma||_F ||K||_F)``, batched over leading dims.

    Scale-free in both arguments: it measures the *direction* of ``sigma``, so multiplying ``eps`` by ten
    leaves it unchanged. It is 0 for ``sigma = 0`` (the zero map commutes with everything).
    """
    if sigma.shape[-2:] != K.shape[-2:]:
        raise ValueError(f"sigma {tuple(sigma.shape)} and K {tuple(K.shape)} must have the same trailing (n, n)")
    num = frobenius_norm(sigma @ K - K @ sigma)
    den = frobenius_norm(sigma) * frobenius_norm(K)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def eigen_directions(values: torch.Tensor, weights: torch.Tensor | None = None) -> list[list[int]]:
    """Group the eigenvalues of one real ``K`` (shape (n,)) into real directions, leading first.

    Each group is one real eigenvalue ``[i]`` or a conjugate pair ``[i, j]``. Without ``weights`` groups are
    sorted by decreasing ``|lambda|`` (the slowest-decaying modes first); with ``weights`` (n,) by decreasing
    summed weight, e.g. the amplitude ``|c_i| ||u_i||`` of a latent state ``z = sum_i c_i u_i`` in each
    eigen-direction, which is how far ``eps_i = 1`` moves that state (a direction the state has no
    component in moves nothing, however large its eigenvalue). Setting the same ``eps`` on both members of
    a pair is what the real part of KFC++ does anyway (it averages them).
    """
    if values.ndim != 1:
        raise ValueError(f"values must be the (n,) eigenvalues of one K, got shape {tuple(values.shape)}")
    vals = values.detach().cpu().to(torch.complex128)
    n = vals.shape[0]
    if weights is not None and tuple(weights.shape) != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    scale = max(float(vals.abs().max()), 1.0)
    tol = 1e-6 * scale
    used, groups = set(), []
    order = sorted(range(n), key=lambda i: (-float(vals[i].abs()), -float(vals[i].imag)))
    for i in order:
        if i in used:
            continue
        used.add(i)
        if abs(float(vals[i].imag)) <= tol:
            groups.append([i])
            continue
        partner = min(
            (j for j in range(n) if j not in used), key=lambda j: float((vals[j] - vals[i].conj()).abs()), default=None
        )
        if partner is not None and float((vals[partner] - vals[i].conj()).abs()) <= 1e3 * tol:
            used.add(partner)
            groups.append([i, partner])
        else:
            groups.append([i])
    if weights is not None:
        w = weights.detach().cpu().double()
        groups.sort(key=lambda g: -float(w[g].sum()))
    return groups
