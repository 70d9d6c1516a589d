"""Controlled systems for teaching, transitions from gymnasium, and EDMD with control (NumPy).

Every data source returns the same transitions dict that :func:`kfc_lite.koopman.fit_koopman` and D4RL's
``qlearning_dataset`` use: ``observations`` (N, d_s), ``actions`` (N, d_a), ``next_observations`` (N, d_s),
``terminals`` (N,) bool, plus ``timeouts`` (N,) (the episode was cut by the time limit after this row) and
``episode_starts`` (N,) (this row begins an episode). Rows are in time order, episode after episode.
"""

from __future__ import annotations

import numpy as np


def _finite_matrix(name, M, shape=None) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {M.shape}")
    if shape is not None and M.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} contains NaN or inf")
    return M


def _episodes_to_transitions(states: np.ndarray, actions: np.ndarray) -> dict:
    """states (E, T+1, d), actions (E, T, m) -> the flat transitions dict (time order, episode after episode)."""
    E, T1, d = states.shape
    T = T1 - 1
    starts = np.zeros((E, T), dtype=bool)
    starts[:, 0] = True
    timeouts = np.zeros((E, T), dtype=bool)
    timeouts[:, -1] = True
    return {
        "observations": states[:, :-1].reshape(E * T, d),
        "actions": actions.reshape(E * T, -1),
        "next_observations": states[:, 1:].reshape(E * T, d),
        "terminals": np.zeros(E * T, dtype=bool),
        "timeouts": timeouts.ravel(),
        "episode_starts": starts.ravel(),
    }


class _ControlSystem:
    """Shared rollout logic: ``step(x, u)`` on batches, a random or given policy, checked action bounds."""

    state_dim: int
    action_dim: int
    action_bound: float = 1.0

    def step(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def random_policy(self, rng: np.random.Generator):
        """Independent uniform actions in [-action_bound, action_bound] at every step."""
        return lambda x, t: rng.uniform(-self.action_bound, self.action_bound, size=(x.shape[0], self.action_dim))

    def simulate(self, x0, actions) -> np.ndarray:
        """States (..., T+1, d) from x0 (..., d) under the action sequence (..., T, m)."""
        x = np.asarray(x0, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim == 1:
            actions = actions[:, None]
        out = [x]
        for t in range(actions.shape[-2]):
            x = self.step(x, actions[..., t, :])
            out.append(x)
        return np.stack(out, axis=-2)

    def transitions(self, n_episodes: int, horizon: int, seed: int = 0, policy=None) -> dict:
        """Roll out ``n_episodes`` episodes of ``horizon`` steps from random initial states.

        ``policy(x, t)`` maps the batch of current states (n_episodes, d) and the time step to actions
        (n_episodes, m); by default actions are uniform in [-action_bound, action_bound]. Actions outside that
        range are an error, not clipped.
        """
        for name, v in (("n_episodes", n_episodes), ("horizon", horizon)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        policy = self.random_policy(rng) if policy is None else policy
        x = self.initial_states(n_episodes, rng)
        states, actions = [x], []
        for t in range(horizon):
            u = np.asarray(policy(x, t), dtype=np.float64).reshape(n_episodes, self.action_dim)
            if not np.all(np.isfinite(u)):
                raise ValueError(f"the policy returned NaN or inf at step {t}")
            if np.any(np.abs(u) > self.action_bound + 1e-12):
                raise ValueError(
                    f"the policy returned an action of size {np.abs(u).max():.3g} at step {t}, outside "
                    f"[-{self.action_bound}, {self.action_bound}]: scale your policy's output"
                )
            x = self.step(x, u)
            actions.append(u)
            states.append(x)
        return _episodes_to_transitions(np.stack(states, axis=1), np.stack(actions, axis=1))


class LinearControlSystem(_ControlSystem):
    """``x' = A x + B u``: the one case where a Koopman model with control is exact and known.

    Initial states are N(0, x0_scale^2) per coordinate, random actions uniform in [-action_bound, action_bound].
    In the bilinear form ``z' = (K0 + sum_i u_i K_i) z`` it is exact with the lifted state ``z = (x, 1)``:
    K0 = [[A, 0], [0, 1]] and K_i puts column i of B against the constant.
    """

    def __init__(self, A, B, x0_scale: float = 1.0, action_bound: float = 1.0):
        self.A = _finite_matrix("A", A)
        d = self.A.shape[0]
        if self.A.shape != (d, d):
            raise ValueError(f"A must be square, got shape {self.A.shape}")
        B = np.asarray(B, dtype=np.float64)
        self.B = _finite_matrix("B", B[:, None] if B.ndim == 1 else B)
        if self.B.shape[0] != d:
            raise ValueError(f"B must have {d} rows like A, got shape {self.B.shape}")
        self.state_dim, self.action_dim = d, self.B.shape[1]
        self.x0_scale, self.action_bound = float(x0_scale), float(action_bound)

    def step(self, x, u):
        return np.asarray(x) @ self.A.T + np.asarray(u) @ self.B.T

    def initial_states(self, n, rng):
        return self.x0_scale * rng.standard_normal((n, self.state_dim))

    def lifted_operator(self, u) -> np.ndarray:
        """The exact bilinear Koopman matrix on ``z = (x, 1)``: (d+1, d+1)."""
        u = np.atleast_1d(np.asarray(u, dtype=np.float64))
        d = self.state_dim
        K = np.eye(d + 1)
        K[:d, :d] = self.A
        K[:d, d] = self.B @ u
        return K


class BilinearControlSystem(_ControlSystem):
    """``x' = (A + sum_i u_i N_i) x``: a system that already has the neural model's bilinear form.

    With ``latent_dim == state_dim`` a Koopman model can represent it exactly (encoder = any invertible linear
    map M, ``K(u) = M (A + sum_i u_i N_i) M^-1``), so the learned ``K(u)`` must have the eigenvalues of
    ``A + sum_i u_i N_i`` for every action: the test that the operator, not only the decoded prediction, is
    right. ``N`` is (k, d, d), or (d, d) for one action.
    """

    def __init__(self, A, N, x0_scale: float = 1.0, action_bound: float = 1.0):
        self.A = _finite_matrix("A", A)
        d = self.A.shape[0]
        if self.A.shape != (d, d):
            raise ValueError(f"A must be square, got shape {self.A.shape}")
        N = np.asarray(N, dtype=np.float64)
        N = N[None] if N.ndim == 2 else N
        if N.ndim != 3 or N.shape[1:] != (d, d) or not np.all(np.isfinite(N)):
            raise ValueError(f"N must be (k, {d}, {d}) (or ({d}, {d}) for one action) and finite, got shape {N.shape}")
        self.N = N
        self.state_dim, self.action_dim = d, N.shape[0]
        self.x0_scale, self.action_bound = float(x0_scale), float(action_bound)

    def matrix(self, u) -> np.ndarray:
        """``A + sum_i u_i N_i`` for one action (k,) or a batch (..., k)."""
        u = np.asarray(u, dtype=np.float64)
        return self.A + np.einsum("...i,irc->...rc", u, self.N)

    def step(self, x, u):
        return np.einsum("nrc,nc->nr", self.matrix(u), np.asarray(x, dtype=np.float64))

    def initial_states(self, n, rng):
        return self.x0_scale * rng.standard_normal((n, self.state_dim))


class ForcedPendulum(_ControlSystem):
    """A damped pendulum driven by a torque: ``theta'' = -(g / l) sin(theta) - damping * omega + u / (m l^2)``.

    State ``(theta, omega)`` in rad and rad/s (theta is not wrapped, 0 hangs down), action the torque in N m,
    limited to [-max_torque, max_torque]; one step integrates ``dt`` seconds with classical RK4 (the torque held
    constant). The default torque (2 N m) cannot lift the 1 kg, 1 m pendulum over the top from rest (that needs
    m g l = 9.81 N m), so random torques produce swings, not rotations.
    """

    state_dim, action_dim = 2, 1

    def __init__(
        self,
        dt: float = 0.05,
        damping: float = 0.1,
        max_torque: float = 2.0,
        gravity: float = 9.81,
        length: float = 1.0,
        mass: float = 1.0,
        max_angle0: float = 2.0,
        max_speed0: float = 1.0,
    ):
        for name, v in (
            ("dt", dt),
            ("max_torque", max_torque),
            ("gravity", gravity),
            ("length", length),
            ("mass", mass),
        ):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (np.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping must be >= 0, got {damping!r}")
        self.dt, self.damping, self.max_torque = float(dt), float(damping), float(max_torque)
        self.gravity, self.length, self.mass = float(gravity), float(length), float(mass)
        self.max_angle0, self.max_speed0 = float(max_angle0), float(max_speed0)
        self.action_bound = self.max_torque

    def vector_field(self, x, u):
        theta, omega = x[..., 0], x[..., 1]
        acc = (
            -(self.gravity / self.length) * np.sin(theta)
            - self.damping * omega
            + u[..., 0] / (self.mass * self.length**2)
        )
        return np.stack([omega, acc], axis=-1)

    def step(self, x, u):
        x, u = np.asarray(x, dtype=np.float64), np.asarray(u, dtype=np.float64)
        h = self.dt
        k1 = self.vector_field(x, u)
        k2 = self.vector_field(x + 0.5 * h * k1, u)
        k3 = self.vector_field(x + 0.5 * h * k2, u)
        k4 = self.vector_field(x + h * k3, u)
        return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    def initial_states(self, n, rng):
        return np.stack(
            [rng.uniform(-self.max_angle0, self.max_angle0, n), rng.uniform(-self.max_speed0, self.max_speed0, n)],
            axis=1,
        )


def gym_transitions(env, n_steps: int, policy=None, seed: int = 0) -> dict:
    """Collect ``n_steps`` transitions from a gymnasium environment (an id such as ``"Pendulum-v1"`` or an env).

    ``policy(obs) -> action`` acts on one observation; by default actions are sampled from the action space
    (seeded). Episodes reset when they end. Returns the transitions dict with the environment's true
    ``terminals`` (terminated) and ``timeouts`` (truncated), ``episode_starts``, and ``rewards``; the
    ``next_observations`` are the true post-step observations, also at the end of an episode.
    """
    import gymnasium as gym

    from kfc_lite.settings import silence_mujoco_log

    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    own_env = isinstance(env, str)
    if own_env:
        silence_mujoco_log()
        env = gym.make(env)
    try:
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError(f"gym_transitions needs a continuous (Box) action space, got {env.action_space}")
        env.action_space.seed(seed)
        policy = (lambda o: env.action_space.sample()) if policy is None else policy
        obs, _ = env.reset(seed=seed)
        cols = {
            k: []
            for k in (
                "observations",
                "actions",
                "rewards",
                "next_observations",
                "terminals",
                "timeouts",
                "episode_starts",
            )
        }
        start = True
        for _ in range(n_steps):
            action = np.asarray(policy(obs), dtype=env.action_space.dtype).reshape(env.action_space.shape)
            if not env.action_space.contains(action):
                raise ValueError(
                    f"the policy returned {action}, outside the action space {env.action_space}: "
                    "scale or clip it in your policy"
                )
            nxt, reward, terminated, truncated, _ = env.step(action)
            for k, v in (
                ("observations", obs),
                ("actions", action),
                ("rewards", reward),
                ("next_observations", nxt),
                ("terminals", terminated),
                ("timeouts", truncated),
                ("episode_starts", start),
            ):
                cols[k].append(v)
            start = terminated or truncated
            obs = env.reset()[0] if start else nxt
    finally:
        if own_env:
            env.close()
    out = {k: np.asarray(v) for k, v in cols.items()}
    for k in ("observations", "actions", "next_observations", "rewards"):
        out[k] = out[k].astype(np.float32)
    for k in ("terminals", "timeouts", "episode_starts"):
        out[k] = out[k].astype(bool)
    return out


class EDMDc:
    """Extended DMD with control: a least-squares Koopman model on a fixed dictionary of observables.

    With lifted states ``psi(x)`` (m features):

    * ``kind="bilinear"`` regresses ``psi(y)`` on ``[psi(x), u_1 psi(x), ..., u_k psi(x)]``, giving
      ``psi(y) ~ (K0 + sum_i u_i K_i) psi(x)``, the same form as the neural model's ``K(a)``;
    * ``kind="affine"`` regresses ``psi(y)`` on ``[psi(x), u]``, giving ``psi(y) ~ K psi(x) + B u``: the action
      enters additively and the operator does not change with it.

    A state is read back from the lifted space with a linear map ``C`` fitted by least squares
    (``x ~ C psi(x)``), so predictions stay linear in the lifted state. A dictionary that contains a constant
    and the state itself (``Polynomial(degree)`` does) makes ``C`` exact.

    ``observables`` is a callable (n, d) -> (n, m); None means ``[1, x]``.
    """

    def __init__(self, observables=None, kind: str = "bilinear", rcond: float | None = None):
        if kind not in ("bilinear", "affine"):
            raise ValueError(f"kind must be 'bilinear' or 'affine', got {kind!r}")
        self.observables = observables if observables is not None else (lambda X: np.hstack([np.ones((len(X), 1)), X]))
        self.kind, self.rcond = kind, rcond

    def lift(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        P = np.asarray(self.observables(X), dtype=np.float64)
        if P.ndim != 2 or P.shape[0] != X.shape[0]:
            raise ValueError(f"the observables must map (n, d) to (n, m); got {P.shape} for input {X.shape}")
        return P

    def _features(self, P, U):
        if self.kind == "affine":
            return np.hstack([P, U])
        return np.hstack([P] + [U[:, i : i + 1] * P for i in range(U.shape[1])])

    def fit(self, X, U=None, Y=None):
        """Fit on states X (n, d), actions U (n, k), successors Y (n, d); or on a transitions dict as X."""
        if isinstance(X, dict):
            if not X.get("terminals", np.zeros(1, bool)).any():
                X, U, Y = X["observations"], X["actions"], X["next_observations"]
            else:
                keep = ~np.asarray(X["terminals"], dtype=bool)
                X, U, Y = (np.asarray(X[k])[keep] for k in ("observations", "actions", "next_observations"))
        if U is None or Y is None:
            raise ValueError("give fit(X, U, Y) arrays, or one transitions dict fit(transitions)")
        X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        U = np.asarray(U, dtype=np.float64)
        U = U[:, None] if U.ndim == 1 else U
        if X.ndim != 2 or X.shape != Y.shape or U.shape[0] != X.shape[0]:
            raise ValueError(
                f"X and Y must be (n, d) and U (n, k) with the same n; got {X.shape}, {Y.shape}, {U.shape}"
            )
        for name, M in (("X", X), ("U", U), ("Y", Y)):
            if not np.all(np.isfinite(M)):
                raise ValueError(f"{name} contains NaN or inf")
        Px, Py = self.lift(X), self.lift(Y)
        m, k = Px.shape[1], U.shape[1]
        G = np.linalg.lstsq(self._features(Px, U), Py, rcond=self.rcond)[0]  # features @ G ~ Py
        self.state_dim, self.action_dim, self.n_features = X.shape[1], k, m
        if self.kind == "affine":
            self.K0, self.B = G[:m].T, G[m:].T
            self.K_actions = np.zeros((k, m, m))
        else:
            self.K0 = G[:m].T
            self.K_actions = np.stack([G[m * (i + 1) : m * (i + 2)].T for i in range(k)])
            self.B = np.zeros((m, k))
        self.C = np.linalg.lstsq(Px, X, rcond=self.rcond)[0].T  # x ~ C psi(x)
        return self

    def _check_fitted(self):
        if not hasattr(self, "K0"):
            raise RuntimeError("this EDMDc is not fitted yet: call fit(X, U, Y) first")

    def operator(self, u) -> np.ndarray:
        """The lifted operator for action u (k,) or a batch (..., k): ``K0 + sum_i u_i K_i``, (..., m, m)."""
        self._check_fitted()
        u = np.asarray(u, dtype=np.float64)
        if u.shape[-1:] != (self.action_dim,):
            u = u.reshape(*u.shape, 1) if self.action_dim == 1 else u
        if u.shape[-1] != self.action_dim:
            raise ValueError(f"the action must have last dimension {self.action_dim}, got shape {u.shape}")
        return self.K0 + np.einsum("...i,irc->...rc", u, self.K_actions)

    def lifted_step(self, P, U) -> np.ndarray:
        """One step in the lifted space: P (n, m), U (n, k) -> (n, m)."""
        out = P @ self.K0.T + np.einsum("ni,irc,nc->nr", U, self.K_actions, P)
        return out + U @ self.B.T

    def predict(self, X, U) -> np.ndarray:
        """One-step prediction of the next state: X (n, d), U (n, k) -> (n, d)."""
        self._check_fitted()
        U = np.asarray(U, dtype=np.float64)
        U = U[:, None] if U.ndim == 1 else U
        return self.lifted_step(self.lift(X), U) @ self.C.T

    def simulate(self, x0, U) -> np.ndarray:
        """Open-loop prediction from x0 (d,) or (n, d) under actions (T, k) or (n, T, k): states for steps 1..T.

        Lifts once and stays in the lifted space, like the neural model's latent rollout.
        """
        self._check_fitted()
        x0 = np.asarray(x0, dtype=np.float64)
        U = np.asarray(U, dtype=np.float64)
        single = x0.ndim == 1
        if single:
            x0, U = x0[None], U[None]
        if U.ndim == 2:
            U = U[..., None]
        P = self.lift(x0)
        out = []
        for t in range(U.shape[1]):
            P = self.lifted_step(P, U[:, t])
            out.append(P @ self.C.T)
        traj = np.stack(out, axis=1)
        return traj[0] if single else traj
