"""Toy dynamical systems with a known answer, for checking DMD and EDMD.

Every system is a discrete-time map x_{k+1} = F(x_k) on states of shape (d,), vectorised over rows:

* ``step(X)`` maps states of shape (n, d) to their successors;
* ``trajectory(x0, n_steps)`` returns the states x_0, ..., x_{n_steps}, shape (n_steps + 1, d);
* ``snapshots(n, seed)`` returns pairs ``(X, Y)`` with ``Y = step(X)`` and ``X`` drawn uniformly from
  the system's ``domain`` box (or a ``box`` you pass): rows are samples, as everywhere in the library.

Drawing X from a box instead of cutting one long trajectory into pairs is deliberate: a trajectory of
a stable system collapses onto an attractor, where many dictionaries become linearly dependent and
the least-squares problem degenerate. Pairs spread over a box tell EDMD about the whole state space.

Continuous-time systems (pendulum, Duffing, Van der Pol) are sampled every ``dt`` seconds with the
classical fourth-order Runge-Kutta scheme (``substeps`` RK4 steps per sample), so the discrete map
is the flow map of the ODE to high accuracy, and eigenvalues λ of the map relate to continuous-time
eigenvalues by λ = exp(s dt).
"""

from __future__ import annotations

import numpy as np

from kfc_lite.koopman.observables import FunctionDictionary, check_states


class DiscreteSystem:
    """Base class: subclasses define ``dim``, ``domain`` (low, high) and ``step``."""

    dim: int = 2
    #: names of the state coordinates, for plots
    state_names: tuple[str, ...] = ("x1", "x2")

    @property
    def domain(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(self.dim), np.ones(self.dim)

    def step(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _as_states(self, X, what="X") -> np.ndarray:
        X = check_states(X, what)
        if X.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} has {self.dim}-dimensional states, {what} has {X.shape[1]} columns"
            )
        return X

    def trajectory(self, x0, n_steps: int) -> np.ndarray:
        """States x_0 .. x_{n_steps} from ``x0`` (shape (d,)), as an array of shape (n_steps + 1, d)."""
        x0 = np.asarray(x0, dtype=float)
        if x0.shape != (self.dim,):
            raise ValueError(f"x0 must have shape ({self.dim},), got {x0.shape}")
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        out = np.empty((n_steps + 1, self.dim))
        out[0] = x0
        for k in range(n_steps):
            out[k + 1] = self.step(out[k : k + 1])[0]
        return out

    def sample_states(self, n: int, seed: int = 0, box=None) -> np.ndarray:
        """``n`` states drawn uniformly from ``box`` = (low, high), by default the system's ``domain``."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        low, high = self.domain if box is None else box
        low, high = (
            np.broadcast_to(np.asarray(low, float), (self.dim,)),
            np.broadcast_to(np.asarray(high, float), (self.dim,)),
        )
        if np.any(high <= low):
            raise ValueError(f"the box must have low < high in every coordinate, got low={low}, high={high}")
        return np.random.default_rng(seed).uniform(low, high, size=(n, self.dim))

    def snapshots(self, n: int, seed: int = 0, box=None) -> tuple[np.ndarray, np.ndarray]:
        """Snapshot pairs (X, Y) with Y = step(X), X uniform in ``box`` (default: ``domain``), seeded."""
        X = self.sample_states(n, seed, box)
        return X, self.step(X)

    def trajectory_snapshots(self, n_trajectories: int, n_steps: int, seed: int = 0, box=None):
        """Snapshot pairs cut from ``n_trajectories`` trajectories of ``n_steps`` steps each (seeded starts in ``box``).

        This is how data arrive from experiments and simulators: consecutive states. Unlike pairs drawn
        uniformly from a box, they concentrate where the dynamics go (here: near attractors and slow
        manifolds), which changes what a least-squares fit sees. Returns (X, Y), each of shape
        (n_trajectories * n_steps, d), with Y[i] = step(X[i]).
        """
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        starts = self.sample_states(n_trajectories, seed, box)
        trajs = [self.trajectory(x0, n_steps) for x0 in starts]
        return np.vstack([t[:-1] for t in trajs]), np.vstack([t[1:] for t in trajs])


class LinearSystem(DiscreteSystem):
    """x_{k+1} = A x_k. Its Koopman eigenvalues on linear observables are the eigenvalues of A."""

    def __init__(self, A):
        A = np.asarray(A, dtype=float)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square matrix, got shape {A.shape}")
        if not np.all(np.isfinite(A)):
            raise ValueError("A contains NaN or inf")
        self.A = A
        self.dim = A.shape[0]
        self.state_names = tuple(f"x{i + 1}" for i in range(self.dim))

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvals(self.A)

    def step(self, X) -> np.ndarray:
        return self._as_states(X) @ self.A.T

    def __repr__(self) -> str:
        return f"LinearSystem(A={self.A.tolist()})"


class SlowManifold(DiscreteSystem):
    """The discrete slow-manifold map x1' = μ x1, x2' = λ x2 + c x1².

    Nonlinear in the state, but the three observables (x1, x2, x1²) span a Koopman-invariant
    subspace: x1² ∘ F = μ² x1², so in those coordinates the map is exactly linear with

        K = [[μ, 0, 0], [0, λ, c], [0, 0, μ²]]   (acting on the column (x1, x2, x1²)),

    eigenvalues μ, λ, μ² and eigenfunctions φ_μ = x1, φ_λ = x2 − b x1², φ_μ² = x1², where
    b = c / (μ² − λ). The zero set of φ_λ, x2 = b x1², is the invariant "slow manifold" that
    trajectories approach when |λ| < |μ|² (the x2-direction is faster).
    """

    state_names = ("x1", "x2")

    def __init__(self, mu: float = 0.9, lam: float = 0.5, c: float = 1.0):
        for name, v in (("mu", mu), ("lam", lam), ("c", c)):
            if not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        self.mu, self.lam, self.c = float(mu), float(lam), float(c)
        self.dim = 2

    def step(self, X) -> np.ndarray:
        X = self._as_states(X)
        x1, x2 = X[:, 0], X[:, 1]
        return np.column_stack([self.mu * x1, self.lam * x2 + self.c * x1**2])

    @property
    def eigenvalues(self) -> np.ndarray:
        """The Koopman eigenvalues on the exact dictionary: μ, λ, μ²."""
        return np.array([self.mu, self.lam, self.mu**2])

    @property
    def koopman_matrix(self) -> np.ndarray:
        """K with (x1, x2, x1²)(F(x)) = K (x1, x2, x1²)(x)."""
        mu, lam, c = self.mu, self.lam, self.c
        return np.array([[mu, 0.0, 0.0], [0.0, lam, c], [0.0, 0.0, mu**2]])

    @staticmethod
    def exact_observables() -> FunctionDictionary:
        """The dictionary (x1, x2, x1²) on which this map is exactly linear."""
        return FunctionDictionary(
            lambda X: np.column_stack([X[:, 0], X[:, 1], X[:, 0] ** 2]),
            names=["x1", "x2", "x1^2"],
            state_columns=[0, 1],
        )

    @property
    def manifold_coefficient(self) -> float:
        """b in the slow manifold x2 = b x1² (needs λ ≠ μ², otherwise the eigenvalues resonate)."""
        if np.isclose(self.lam, self.mu**2):
            raise ValueError(
                f"lam = mu^2 = {self.lam}: the eigenvalues λ and μ² coincide (resonance), so φ_λ is "
                "not a polynomial eigenfunction; choose lam != mu**2"
            )
        return self.c / (self.mu**2 - self.lam)

    def eigenfunctions(self, X) -> np.ndarray:
        """φ_μ, φ_λ, φ_μ² at the rows of X, shape (n, 3); each satisfies φ(F(x)) = eigenvalue · φ(x)."""
        X = self._as_states(X)
        b = self.manifold_coefficient
        return np.column_stack([X[:, 0], X[:, 1] - b * X[:, 0] ** 2, X[:, 0] ** 2])

    def __repr__(self) -> str:
        return f"SlowManifold(mu={self.mu}, lam={self.lam}, c={self.c})"


class ODESystem(DiscreteSystem):
    """A continuous-time system dx/dt = f(x), sampled every ``dt`` seconds with RK4."""

    def __init__(self, dt: float = 0.1, substeps: int = 1):
        if not np.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        if not isinstance(substeps, (int, np.integer)) or substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
        self.dt, self.substeps = float(dt), int(substeps)

    def rhs(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, X) -> np.ndarray:
        X = self._as_states(X)
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            k1 = self.rhs(X)
            k2 = self.rhs(X + 0.5 * h * k1)
            k3 = self.rhs(X + 0.5 * h * k2)
            k4 = self.rhs(X + h * k3)
            X = X + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        return X

    def discrete_eigenvalues(self, continuous) -> np.ndarray:
        """Map continuous-time eigenvalues s to those of the sampled map, exp(s dt)."""
        return np.exp(np.asarray(continuous) * self.dt)


class Pendulum(ODESystem):
    """θ'' = −(g / L) sin θ − b θ', state (θ [rad], ω = θ' [rad/s]).

    Near the bottom, sin θ ≈ θ and the pendulum is a damped harmonic oscillator with natural
    (small-angle) angular frequency ω₀ = √(g / L) and continuous-time eigenvalues
    −b/2 ± i √(ω₀² − b²/4). Larger swings are slower: the period grows with the amplitude, which is
    what a Koopman eigenvalue fitted on large-angle data shows.
    """

    state_names = ("θ [rad]", "ω [rad/s]")

    def __init__(self, dt: float = 0.1, g: float = 9.81, length: float = 1.0, damping: float = 0.0, substeps: int = 1):
        super().__init__(dt, substeps)
        if g <= 0 or length <= 0 or damping < 0:
            raise ValueError(f"need g > 0, length > 0 and damping >= 0, got g={g}, length={length}, damping={damping}")
        self.g, self.length, self.damping = float(g), float(length), float(damping)
        self.dim = 2

    @property
    def domain(self):
        return np.array([-np.pi / 2, -3.0]), np.array([np.pi / 2, 3.0])

    @property
    def small_angle_frequency(self) -> float:
        """ω₀ = √(g / L) in rad/s (the undamped small-angle angular frequency)."""
        return float(np.sqrt(self.g / self.length))

    @property
    def linear_eigenvalues(self) -> np.ndarray:
        """Continuous-time eigenvalues of the small-angle linearisation at θ = 0 (1/s)."""
        w0, b = self.small_angle_frequency, self.damping
        return np.roots([1.0, b, w0**2]).astype(complex)

    def rhs(self, X):
        theta, omega = X[:, 0], X[:, 1]
        return np.column_stack([omega, -(self.g / self.length) * np.sin(theta) - self.damping * omega])

    def __repr__(self) -> str:
        return f"Pendulum(dt={self.dt}, g={self.g}, length={self.length}, damping={self.damping})"


class Duffing(ODESystem):
    """The unforced Duffing oscillator x'' = −δ x' − α x − β x³, state (x, v = x').

    The defaults (δ = 0.5, α = −1, β = 1) give the double well of Williams, Kevrekidis & Rowley's
    EDMD paper (2015): two stable foci at x = ±1 and a saddle at the origin. ``linear_eigenvalues(x)``
    gives the continuous-time eigenvalues of the linearisation at a fixed point x.
    """

    state_names = ("x", "v")

    def __init__(self, dt: float = 0.1, delta: float = 0.5, alpha: float = -1.0, beta: float = 1.0, substeps: int = 1):
        super().__init__(dt, substeps)
        self.delta, self.alpha, self.beta = float(delta), float(alpha), float(beta)
        self.dim = 2

    @property
    def domain(self):
        return np.array([-2.0, -2.0]), np.array([2.0, 2.0])

    @property
    def fixed_points(self) -> np.ndarray:
        """Equilibria (x, 0) with α x + β x³ = 0, shape (k, 2)."""
        xs = [0.0]
        if self.beta != 0 and -self.alpha / self.beta > 0:
            r = float(np.sqrt(-self.alpha / self.beta))
            xs += [-r, r]
        return np.array([[x, 0.0] for x in sorted(xs)])

    def linear_eigenvalues(self, x_fixed: float) -> np.ndarray:
        """Continuous-time eigenvalues at the fixed point (x_fixed, 0): roots of s² + δ s + α + 3β x²."""
        return np.roots([1.0, self.delta, self.alpha + 3 * self.beta * x_fixed**2]).astype(complex)

    def rhs(self, X):
        x, v = X[:, 0], X[:, 1]
        return np.column_stack([v, -self.delta * v - self.alpha * x - self.beta * x**3])

    def __repr__(self) -> str:
        return f"Duffing(dt={self.dt}, delta={self.delta}, alpha={self.alpha}, beta={self.beta})"


class VanDerPol(ODESystem):
    """x'' = μ (1 − x²) x' − x, state (x, v = x').

    For μ > 0 the origin is unstable (eigenvalues (μ ± √(μ² − 4)) / 2) and every other trajectory
    approaches a limit cycle; for small μ it is nearly the circle of radius 2 with period ≈ 2π,
    and its Koopman eigenvalues lie on the unit circle at multiples of the cycle's frequency.
    """

    state_names = ("x", "v")

    def __init__(self, dt: float = 0.1, mu: float = 1.0, substeps: int = 1):
        super().__init__(dt, substeps)
        self.mu = float(mu)
        self.dim = 2

    @property
    def domain(self):
        return np.array([-3.0, -3.0]), np.array([3.0, 3.0])

    @property
    def linear_eigenvalues(self) -> np.ndarray:
        """Continuous-time eigenvalues of the linearisation at the origin."""
        return np.roots([1.0, -self.mu, 1.0]).astype(complex)

    @property
    def small_mu_period(self) -> float:
        """The limit cycle's period to second order in μ, 2π (1 + μ²/16) (Lindstedt-Poincaré), in seconds."""
        return float(2 * np.pi * (1 + self.mu**2 / 16))

    def rhs(self, X):
        x, v = X[:, 0], X[:, 1]
        return np.column_stack([v, self.mu * (1 - x**2) * v - x])

    def __repr__(self) -> str:
        return f"VanDerPol(dt={self.dt}, mu={self.mu})"
