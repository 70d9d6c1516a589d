"""Dictionaries of observables for EDMD: callables that map states ``X`` of shape (n, d) to (n, m).

EDMD approximates the Koopman operator on the span of a finite dictionary ψ = (ψ_1, ..., ψ_m). The
choice of dictionary is the whole game: when its span is invariant under the dynamics (``g ∘ F`` is
again a combination of the ψ_i for every ψ_i) EDMD is exact; otherwise it returns the least-squares
projection of the operator onto that span.

Every dictionary here is a callable ``psi(X) -> (n, m)`` with

* ``names(d)``: a label for each column, for plots and printed matrices;
* ``state_columns(d)``: the columns that hold the coordinates x_1..x_d themselves, or ``None``. When
  they are there, EDMD reads the state straight off the lifted vector instead of fitting a linear
  reconstruction by least squares, so prediction in state space adds no error of its own.

Any plain callable works too (:func:`as_dictionary` wraps it); EDMD then reconstructs the state by
least squares.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np


def check_states(X, what: str = "X") -> np.ndarray:
    """``X`` as a float array of shape (n, d), or a ValueError that says what is wrong and how to fix it."""
    arr = np.asarray(X)
    if arr.dtype == object:
        raise ValueError(f"{what} must be a numeric array of shape (n_samples, n_dims), got an object array")
    if arr.ndim == 1:
        raise ValueError(
            f"{what} has shape {arr.shape}: samples go in rows, so pass a 2-D array of shape "
            f"(n_samples, n_dims), e.g. {what}.reshape(-1, 1) for a one-dimensional state"
        )
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (n_samples, n_dims), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.complexfloating):
        arr = arr.astype(float, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(
            f"{what} contains {bad} NaN or inf value(s): remove or repair those samples "
            "(a diverging simulation is the usual cause) before fitting"
        )
    return arr


class Dictionary:
    """Base class: subclasses implement ``__call__`` and ``names``; ``state_columns`` defaults to None."""

    def __call__(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def names(self, d: int) -> list[str]:
        return [f"ψ{i + 1}" for i in range(self.n_features(d))]

    def n_features(self, d: int) -> int:
        return self(np.zeros((1, d))).shape[1]

    def state_columns(self, d: int):
        return None

    def fit(self, X) -> Dictionary:
        """Most dictionaries need no data; :class:`RadialBasis` places its centres here."""
        return self


class Identity(Dictionary):
    """ψ(x) = x: EDMD with this dictionary is DMD."""

    def __call__(self, X) -> np.ndarray:
        return check_states(X).copy()

    def names(self, d: int) -> list[str]:
        return [f"x{i + 1}" for i in range(d)]

    def n_features(self, d: int) -> int:
        return d

    def state_columns(self, d: int):
        return list(range(d))

    def __repr__(self) -> str:
        return "Identity()"


def monomial_exponents(d: int, degree: int, include_bias: bool = True) -> list[tuple[int, ...]]:
    """Exponent tuples of all monomials in ``d`` variables up to ``degree``, by degree then lexicographically.

    For d = 2, degree = 2: (0,0), (1,0), (0,1), (2,0), (1,1), (0,2), i.e. 1, x1, x2, x1², x1x2, x2².
    """
    out = []
    for k in range(0 if include_bias else 1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(d), k):
            e = [0] * d
            for i in combo:
                e[i] += 1
            out.append(tuple(e))
    return out


class Polynomial(Dictionary):
    """All monomials of the state up to ``degree`` (with the constant 1 when ``include_bias``).

    In d dimensions that is C(d + degree, degree) features (one fewer without the bias), so keep
    ``degree`` small in more than a few dimensions.
    """

    def __init__(self, degree: int = 2, include_bias: bool = True):
        if not isinstance(degree, (int, np.integer)) or degree < 1:
            raise ValueError(
                f"degree must be an integer >= 1, got {degree!r} (degree 1 is the state itself plus the constant)"
            )
        self.degree, self.include_bias = int(degree), bool(include_bias)

    def exponents(self, d: int) -> np.ndarray:
        return np.array(monomial_exponents(d, self.degree, self.include_bias), dtype=int)

    def __call__(self, X) -> np.ndarray:
        X = check_states(X)
        E = self.exponents(X.shape[1])
        # product over dimensions of x_j ** e_j, one column per exponent tuple
        return np.prod(X[:, None, :] ** E[None, :, :], axis=2)

    def n_features(self, d: int) -> int:
        return len(monomial_exponents(d, self.degree, self.include_bias))

    def names(self, d: int) -> list[str]:
        labels = []
        for e in monomial_exponents(d, self.degree, self.include_bias):
            parts = [f"x{j + 1}" + (f"^{p}" if p > 1 else "") for j, p in enumerate(e) if p > 0]
            labels.append(" ".join(parts) if parts else "1")
        return labels

    def state_columns(self, d: int):
        exps = monomial_exponents(d, self.degree, self.include_bias)
        return [exps.index(tuple(int(i == j) for i in range(d))) for j in range(d)]

    def __repr__(self) -> str:
        return f"Polynomial(degree={self.degree}, include_bias={self.include_bias})"


class RadialBasis(Dictionary):
    """Gaussian radial basis functions exp(-γ ||x - c_k||²), after the state itself when ``include_state``.

    Give either ``centers`` (an array of shape (k, d)) or ``n_centers``; in the latter case
    :meth:`fit` picks that many training states at random (with ``seed``) as centres, which puts the
    basis where the data are. ``include_state=True`` (the default, unlike a bare RBF dictionary) keeps
    x_1..x_d as the first columns so the state can be read off exactly; it also lets EDMD represent
    the linear part of the dynamics without spending basis functions on it.
    """

    def __init__(
        self, n_centers: int | None = None, centers=None, gamma: float = 1.0, seed: int = 0, include_state: bool = True
    ):
        if (n_centers is None) == (centers is None):
            raise ValueError(
                "give exactly one of n_centers (centres drawn from the data in fit) or centers "
                "(an array of shape (k, d))"
            )
        if n_centers is not None and (not isinstance(n_centers, (int, np.integer)) or n_centers < 1):
            raise ValueError(f"n_centers must be a positive integer, got {n_centers!r}")
        if not np.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be a positive number (the inverse squared width), got {gamma!r}")
        self.n_centers = None if n_centers is None else int(n_centers)
        self.centers = None if centers is None else check_states(centers, "centers")
        self.gamma, self.seed, self.include_state = float(gamma), int(seed), bool(include_state)

    def fit(self, X) -> RadialBasis:
        X = check_states(X)
        if self.n_centers is not None:
            if self.n_centers > len(X):
                raise ValueError(
                    f"n_centers={self.n_centers} is more than the {len(X)} states given to fit: "
                    "use fewer centres or more data"
                )
            rng = np.random.default_rng(self.seed)
            self.centers = X[rng.choice(len(X), size=self.n_centers, replace=False)].copy()
        return self

    def __call__(self, X) -> np.ndarray:
        X = check_states(X)
        if self.centers is None:
            raise RuntimeError(
                "RadialBasis(n_centers=...) has no centres yet: call fit(X) first (EDMD.fit does "
                "this for you), or pass centers=..."
            )
        if self.centers.shape[1] != X.shape[1]:
            raise ValueError(f"the centres live in {self.centers.shape[1]} dimensions but X has {X.shape[1]}")
        sq = np.sum((X[:, None, :] - self.centers[None, :, :]) ** 2, axis=2)
        rbf = np.exp(-self.gamma * sq)
        return np.hstack([X, rbf]) if self.include_state else rbf

    def n_features(self, d: int) -> int:
        k = self.n_centers if self.centers is None else len(self.centers)
        return k + (d if self.include_state else 0)

    def names(self, d: int) -> list[str]:
        k = self.n_features(d) - (d if self.include_state else 0)
        return ([f"x{i + 1}" for i in range(d)] if self.include_state else []) + [f"rbf{j + 1}" for j in range(k)]

    def state_columns(self, d: int):
        return list(range(d)) if self.include_state else None

    def __repr__(self) -> str:
        k = self.n_centers if self.centers is None else len(self.centers)
        return f"RadialBasis(n_centers={k}, gamma={self.gamma}, include_state={self.include_state})"


class FunctionDictionary(Dictionary):
    """A plain callable ``fn(X) -> (n, m)`` made into a dictionary, with optional column names."""

    def __init__(self, fn: Callable, names: list[str] | None = None, state_columns: list[int] | None = None):
        if not callable(fn):
            raise TypeError(f"a dictionary must be callable as fn(X) -> array of shape (n, m), got {fn!r}")
        self.fn, self._names, self._state_columns = fn, names, state_columns

    def __call__(self, X) -> np.ndarray:
        X = check_states(X)
        out = np.asarray(self.fn(X))
        if out.ndim == 1 and out.shape[0] == X.shape[0]:
            out = out[:, None]
        if out.ndim != 2 or out.shape[0] != X.shape[0]:
            raise ValueError(
                f"the dictionary {self.fn!r} returned shape {out.shape} for {X.shape[0]} states: it must "
                f"return one row per state, shape ({X.shape[0]}, m)"
            )
        return out

    def names(self, d: int) -> list[str]:
        return list(self._names) if self._names is not None else super().names(d)

    def state_columns(self, d: int):
        return self._state_columns

    def __repr__(self) -> str:
        return f"FunctionDictionary({getattr(self.fn, '__name__', self.fn)!r})"


def as_dictionary(observables) -> Dictionary:
    """A :class:`Dictionary` from a dictionary, a plain callable, or ``None`` (the identity)."""
    if observables is None:
        return Identity()
    if isinstance(observables, Dictionary):
        return observables
    if callable(observables):
        return FunctionDictionary(observables)
    raise TypeError(
        f"observables must be a dictionary such as Polynomial(3) or a callable X -> (n, m) array, "
        f"got {type(observables).__name__}"
    )
