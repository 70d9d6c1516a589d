"""Dynamic mode decomposition (DMD) and extended DMD (EDMD), as fit/predict estimators.

Convention (the same as the KFC latent model, z' = K z): snapshots are rows, ``X[i] -> Y[i]``; the
dictionary lifts a state x to ψ(x) in R^m, and the Koopman matrix K (m × m) advances the lifted
column vector, ψ(F(x)) ≈ K ψ(x). Stacked as rows that reads Ψ_Y ≈ Ψ_X Kᵀ, and EDMD is the
least-squares solution

    K = argmin ||Ψ_Y − Ψ_X Kᵀ||_F = Ψ_Yᵀ (Ψ_Xᵀ)⁺.

We compute it through the SVD Ψ_Xᵀ = U S Vᵀ (Schmid 2010; Tu et al. 2014): K̃ = Uᵀ Ψ_Yᵀ V S⁻¹ is
the r × r operator in the leading r singular directions, and K = U K̃ Uᵀ. Truncating to ``rank`` r
filters noise and avoids dividing by tiny singular values; with no truncation and Ψ_X of full column
rank, K is exactly the least-squares matrix above. Singular values below the usual ``pinv``
tolerance are always dropped (``rank_`` says how many were kept).

Eigen-decomposition (from K̃, so a truncated fit has no spurious zero eigenvalues):
K̃ W = W Λ. Then

* eigenvalues Λ: ψ's lifted state moves as λ^k along each eigen-direction;
* eigenfunctions φ(x) = W⁻¹ Uᵀ ψ(x): the left eigenvectors applied to ψ, so φ(F(x)) ≈ λ φ(x);
* modes: the vectors that turn eigenfunctions back into the state, x ≈ Σ_i mode_i φ_i(x), so
  x_k ≈ Σ_i mode_i λ_i^k φ_i(x_0).

Continuous-time eigenvalues follow from s = log(λ) / dt for a map sampled every dt seconds.
"""

from __future__ import annotations

import warnings

import numpy as np

from kfc_lite.koopman.observables import Identity, as_dictionary, check_states


def _check_pairs(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X, Y = check_states(X, "X"), check_states(Y, "Y")
    if X.shape != Y.shape:
        raise ValueError(
            f"X has shape {X.shape} but Y has shape {Y.shape}: they must match, row i of Y being the "
            "successor of row i of X"
        )
    return X, Y


def _check_rank(rank, limit: int, why: str):
    if rank is None:
        return None
    if not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer or None (no truncation), got {rank!r}")
    if rank > limit:
        raise ValueError(
            f"rank={rank} is larger than possible here: at most {limit} ({why}). Use rank <= {limit} or rank=None"
        )
    return int(rank)


def least_squares_operator(PsiX: np.ndarray, PsiY: np.ndarray, rank: int | None = None):
    """The SVD-based least-squares Koopman fit: returns (U_r, K̃, K) with K = U_r K̃ U_rᵀ.

    ``PsiX`` and ``PsiY`` have shape (n, m), rows are samples. ``rank`` keeps the r largest singular
    directions of Ψ_Xᵀ (None: all above the pinv tolerance).
    """
    U, s, Vh = np.linalg.svd(PsiX.T, full_matrices=False)
    tol = s[0] * max(PsiX.shape) * np.finfo(float).eps if s.size and s[0] > 0 else 0.0
    numerical_rank = int(np.sum(s > tol))
    if numerical_rank == 0:
        raise ValueError("the lifted data Ψ(X) are all zero: the dictionary gives no information to fit")
    r = numerical_rank if rank is None else min(rank, numerical_rank)
    if rank is not None and rank > numerical_rank:
        warnings.warn(
            f"rank={rank} asked for, but Ψ(X) has numerical rank {numerical_rank}; keeping {numerical_rank}",
            RuntimeWarning,
            stacklevel=3,
        )
    Ur, sr, Vr = U[:, :r], s[:r], Vh[:r].conj().T
    K_tilde = Ur.conj().T @ PsiY.T @ Vr / sr[None, :]
    return Ur, K_tilde, Ur @ K_tilde @ Ur.conj().T


class _KoopmanEstimator:
    """What DMD and EDMD share: the fit on lifted data, the eigen-decomposition and prediction.

    After ``fit``: ``rank_`` (singular directions kept), ``residual_`` (relative one-step residual
    ||Ψ_Y − Ψ_X Kᵀ|| / ||Ψ_Y|| in the lifted space: zero exactly when the dictionary closes on the data),
    ``n_dims_`` and ``n_observables_``.
    """

    def __init__(self, observables=None, rank: int | None = None):
        self.dictionary = as_dictionary(observables)
        if rank is not None and (not isinstance(rank, (int, np.integer)) or rank < 1):
            raise ValueError(f"rank must be a positive integer or None (no truncation), got {rank!r}")
        self.rank = rank
        self._fitted = False

    # -------------------------------------------------------------- fitting
    def lift(self, X) -> np.ndarray:
        """ψ(X), shape (n, m)."""
        X = check_states(X)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes the clear error below
            psi = np.asarray(self.dictionary(X))
        if psi.ndim != 2 or psi.shape[0] != X.shape[0]:
            raise ValueError(
                f"the dictionary returned shape {psi.shape} for {X.shape[0]} states; expected ({X.shape[0]}, m)"
            )
        if not np.all(np.isfinite(psi)):
            raise ValueError(
                "the dictionary produced NaN or inf on these states: scale the data or use a lower "
                "polynomial degree (large states to high powers overflow)"
            )
        return psi

    def fit(self, X, Y):
        """Fit the Koopman matrix to snapshot pairs: row i of ``Y`` follows row i of ``X``. Returns self."""
        X, Y = _check_pairs(X, Y)
        self.dictionary.fit(X)
        PsiX, PsiY = self.lift(X), self.lift(Y)
        n, m = PsiX.shape
        rank = _check_rank(
            self.rank, min(n, m), f"{n} samples and {m} observables; the rank of Ψ(X) cannot exceed either"
        )
        if n < m and rank is None:
            raise ValueError(
                f"{n} samples but {m} observables: the least-squares problem for K is underdetermined. "
                f"Give at least {m} snapshot pairs, use a smaller dictionary, or truncate with rank <= {n}"
            )
        self.n_dims_ = X.shape[1]
        self.n_observables_ = m
        self._Ur, self._K_tilde, self._K = least_squares_operator(PsiX, PsiY, rank)
        self.rank_ = self._K_tilde.shape[0]
        lam, W = np.linalg.eig(self._K_tilde)
        order = np.argsort(-np.abs(lam), kind="stable")  # slowest-decaying first
        self._eigenvalues, self._W = lam[order], W[:, order]
        # A repeated eigenvalue with a Jordan block (e.g. λ = μ² on the slow-manifold map) has no full set of
        # eigenvectors: the eigen-read-outs are then ill-defined, while K, predict and simulate stay fine.
        if np.linalg.cond(self._W) > 1e10:
            warnings.warn(
                "the fitted Koopman matrix is (nearly) not diagonalisable (repeated eigenvalues): "
                "eigenfunctions and modes are ill-conditioned; predict and simulate are unaffected",
                RuntimeWarning,
                stacklevel=2,
            )
            self._W_inv = np.linalg.pinv(self._W)
        else:
            self._W_inv = np.linalg.inv(self._W)
        self._C = self._reconstruction_matrix(X, PsiX)
        self.residual_ = float(np.linalg.norm(PsiY - PsiX @ self._K.T) / max(np.linalg.norm(PsiY), 1e-300))
        self._fitted = True
        return self

    def _reconstruction_matrix(self, X, PsiX) -> np.ndarray:
        """C (d × m) with x ≈ C ψ(x): a selection when the dictionary contains the state, else least squares."""
        cols = self.dictionary.state_columns(X.shape[1])
        if cols is not None:
            C = np.zeros((X.shape[1], PsiX.shape[1]))
            C[np.arange(X.shape[1]), cols] = 1.0
            return C
        return np.linalg.lstsq(PsiX, X, rcond=None)[0].T

    def _require_fit(self):
        if not self._fitted:
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call fit(X, Y) with snapshot pairs first"
            )

    # ------------------------------------------------------------ read-outs
    @property
    def koopman_matrix(self) -> np.ndarray:
        """K (m × m) with ψ(F(x)) ≈ K ψ(x)."""
        self._require_fit()
        return self._K

    @property
    def eigenvalues(self) -> np.ndarray:
        """The rank_ eigenvalues of the fitted operator, largest modulus first."""
        self._require_fit()
        return self._eigenvalues

    @property
    def reconstruction_matrix(self) -> np.ndarray:
        """C (d × m) with x ≈ C ψ(x)."""
        self._require_fit()
        return self._C

    @property
    def modes(self) -> np.ndarray:
        """Koopman modes (d × rank_): x ≈ modes @ φ(x), column i goes with eigenvalue i."""
        self._require_fit()
        return self._C @ self._Ur @ self._W

    def eigenfunctions(self, X) -> np.ndarray:
        """φ_i at the rows of X, shape (n, rank_): φ_i(F(x)) ≈ eigenvalues[i] φ_i(x)."""
        self._require_fit()
        X = self._checked_input(X)
        return self.lift(X) @ (self._W_inv @ self._Ur.conj().T).T

    def continuous_eigenvalues(self, dt: float) -> np.ndarray:
        """s = log(λ) / dt (1/s) for a map sampled every ``dt`` seconds; Im s is an angular frequency (rad/s).

        A zero eigenvalue has no logarithm: it comes out as −inf (instant decay), with a warning.
        """
        self._require_fit()
        if not np.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt must be the positive sampling interval in seconds, got {dt!r}")
        lam = self._eigenvalues.astype(complex)
        if np.any(lam == 0):
            warnings.warn(
                "a zero eigenvalue has no continuous-time counterpart; it is returned as -inf",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(divide="ignore"):
            return np.log(lam) / dt

    # ----------------------------------------------------------- prediction
    def _checked_input(self, X) -> np.ndarray:
        X = check_states(X)
        if X.shape[1] != self.n_dims_:
            raise ValueError(f"the model was fitted on {self.n_dims_}-dimensional states, X has {X.shape[1]} columns")
        return X

    def predict(self, X) -> np.ndarray:
        """One step ahead in state space: x' ≈ C K ψ(x) for each row of X, shape (n, d)."""
        self._require_fit()
        X = self._checked_input(X)
        out = self.lift(X) @ self._K.T @ self._C.T
        return out.real if np.iscomplexobj(out) and np.allclose(out.imag, 0) else out

    def simulate(self, x0, n_steps: int) -> np.ndarray:
        """States x_0 .. x_{n_steps} (shape (n_steps + 1, d)) from the linear model z_{k+1} = K z_k, x_k = C z_k.

        The lifted state is advanced by K alone, never re-lifted from a reconstructed x: that is the
        Koopman prediction, linear in the observables, and its error shows how far the dictionary
        is from invariant.
        """
        self._require_fit()
        x0 = np.asarray(x0, dtype=float)
        if x0.shape != (self.n_dims_,):
            raise ValueError(f"x0 must have shape ({self.n_dims_},), got {x0.shape}")
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        z = self.lift(x0[None, :])[0]
        out = np.empty((n_steps + 1, self.n_dims_))
        out[0] = x0
        for k in range(1, n_steps + 1):
            z = self._K @ z
            out[k] = (self._C @ z).real
        return out

    def __repr__(self) -> str:
        state = f", rank_={self.rank_}" if self._fitted else ""
        return f"{type(self).__name__}(observables={self.dictionary!r}, rank={self.rank}{state})"


class DMD(_KoopmanEstimator):
    """Exact DMD (Tu et al. 2014): a linear map x' ≈ A x fitted to snapshot pairs, optionally of rank r.

    DMD is EDMD with the identity dictionary. ``koopman_matrix`` is A (d × d). ``exact_modes`` are
    Tu's exact modes Y V S⁻¹ W Λ⁻¹, eigenvectors of the fitted A; ``modes`` are the projected modes
    U W, which satisfy x ≈ modes φ(x). Both agree whenever the successors Y lie in the span of X.
    """

    def __init__(self, rank: int | None = None):
        super().__init__(Identity(), rank)

    def fit(self, X, Y):
        X, Y = _check_pairs(X, Y)
        super().fit(X, Y)
        # Tu's exact modes need Y, V and S: recompute them from the SVD of the data (cheap at DMD sizes)
        U, s, Vh = np.linalg.svd(X.T, full_matrices=False)
        r = self.rank_
        lam = self._eigenvalues
        scale = np.where(np.abs(lam) > 1e-12, lam, 1.0)
        self._exact_modes = (Y.T @ Vh[:r].conj().T / s[:r][None, :]) @ self._W / scale[None, :]
        return self

    @property
    def exact_modes(self) -> np.ndarray:
        self._require_fit()
        return self._exact_modes

    def __repr__(self) -> str:
        state = f", rank_={self.rank_}" if self._fitted else ""
        return f"DMD(rank={self.rank}{state})"


class EDMD(_KoopmanEstimator):
    """Extended DMD (Williams, Kevrekidis & Rowley 2015): DMD on a dictionary of observables ψ(x).

    ``observables`` is a dictionary from :mod:`kfc_lite.koopman.observables` (``Polynomial(3)``,
    ``RadialBasis(n_centers=50)``, ...) or any callable X (n, d) -> (n, m). The state is read off the
    lifted vector when the dictionary contains it (``state_columns``), otherwise it is reconstructed
    by a least-squares fit x ≈ C ψ(x) on the training states.
    """

    def __init__(self, observables=None, rank: int | None = None):
        super().__init__(observables, rank)
