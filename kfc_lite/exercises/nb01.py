"""Checks for notebook 01 (Koopman on toy systems).

Each check runs the learner's function on cases with a known answer and, when it is off, recognises
the usual mistakes (a transposed matrix, a frequency in hertz, a missing 1/dt, ...) to say which one.
"""

import numpy as np

from kfc_lite.exercises import Wrong, exercise, expect_close


def _reference_edmd_step(PsiX, PsiY):
    return np.linalg.lstsq(PsiX, PsiY, rcond=None)[0].T


@exercise(
    "01", "edmd_step", hint_on_error="edmd_step(PsiX, PsiY) gets two arrays of shape (n, m) and returns K, shape (m, m)"
)
def check_edmd_step(fn):
    """``fn(PsiX, PsiY) -> K`` (m × m), the least-squares K with ψ(y) ≈ K ψ(x) for every row pair."""
    rng = np.random.default_rng(7)
    n, m = 60, 4
    PsiX = rng.normal(size=(n, m))
    K_true = rng.normal(size=(m, m)) / 2
    cases = [("noise-free data", PsiX @ K_true.T), ("noisy data", PsiX @ K_true.T + 0.3 * rng.normal(size=(n, m)))]
    for what, PsiY in cases:
        K = fn(PsiX.copy(), PsiY.copy())
        if K is None:
            raise Wrong(f"on {what} your function returned None", hint="did you forget `return K`?")
        K = np.asarray(K)
        expected = _reference_edmd_step(PsiX, PsiY)
        if K.shape != (m, m):
            raise Wrong(
                f"on {what} (n={n} samples, m={m} observables) K has shape {K.shape}",
                expected=f"shape ({m}, {m})",
                hint="K acts on the lifted vector ψ(x) of length m, so it is m × m whatever the number of samples",
            )
        if np.allclose(K, expected.T, atol=1e-6) and not np.allclose(K, expected, atol=1e-6):
            raise Wrong(
                f"on {what} you returned the transpose of K",
                hint="rows are samples, so the data say Ψ_Y ≈ Ψ_X Kᵀ: lstsq(Ψ_X, Ψ_Y) solves for Kᵀ; transpose it",
            )
        backwards = np.linalg.lstsq(PsiY, PsiX, rcond=None)[0].T
        if np.allclose(K, backwards, atol=1e-6) or np.allclose(K, backwards.T, atol=1e-6):
            raise Wrong(
                f"on {what} your K maps ψ(y) back to ψ(x): the regression runs the wrong way",
                hint="regress the successors Ψ_Y on the current observables Ψ_X, not the other way round",
            )
        if what == "noisy data" and np.allclose(K @ PsiX[:m].T, PsiY[:m].T, atol=1e-6):
            raise Wrong(
                "on noisy data your K fits the first m samples exactly but ignores the others",
                hint="use all n samples in a least-squares fit (np.linalg.lstsq or np.linalg.pinv)",
            )
        expect_close(
            f"K on {what}",
            K,
            expected,
            rtol=1e-6,
            atol=1e-8,
            hint="K = (pinv(Ψ_X) Ψ_Y)ᵀ, e.g. np.linalg.lstsq(PsiX, PsiY, rcond=None)[0].T",
        )
    return "K is the least-squares Koopman matrix on clean and on noisy data, with ψ(y) ≈ K ψ(x)."


@exercise(
    "01",
    "closing_observable",
    hint_on_error="closing_observable(X) gets states of shape (n, 2) and returns one value per state, shape (n,)",
)
def check_closing_observable(fn):
    """``fn(X) -> g`` (n,): a third observable such that (x1, x2, g) is Koopman-invariant for the slow-manifold map."""
    from kfc_lite.koopman.edmd import EDMD
    from kfc_lite.koopman.systems import SlowManifold

    for mu, lam, c in [(0.9, 0.5, 1.0), (0.7, -0.3, 2.0)]:
        system = SlowManifold(mu, lam, c)
        X, Y = system.snapshots(100, seed=3)
        g = fn(X.copy())
        if g is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        g = np.asarray(g, dtype=float)
        if g.shape == (len(X), 1):
            g = g[:, 0]
        if g.shape != (len(X),):
            raise Wrong(
                f"for {len(X)} states you returned shape {g.shape}",
                expected=f"shape ({len(X)},)",
                hint="return one number per state (row of X), e.g. computed from X[:, 0] and X[:, 1]",
            )
        if not np.all(np.isfinite(g)):
            raise Wrong("your observable contains NaN or inf")
        if np.linalg.matrix_rank(np.column_stack([X, g]), tol=1e-8) < 3:
            raise Wrong(
                "your observable is a linear combination of x1 and x2 (or a constant multiple of zero), so it "
                "adds nothing to the dictionary",
                hint="the trouble term in x2' = λ x2 + c x1² is not linear in the state",
            )

        def dictionary(Z, fn=fn):
            return np.column_stack([Z, np.asarray(fn(Z), float).reshape(len(Z))])

        model = EDMD(dictionary).fit(X, Y)
        if model.residual_ > 1e-8:
            raise Wrong(
                f"with μ={mu}, λ={lam}, c={c}, the dictionary (x1, x2, g) is not closed: EDMD leaves a relative "
                f"one-step residual of {model.residual_:.2g}",
                hint="x2' = λ x2 + c x1² needs x1² in the span; and your g's own successor g(F(x)) must again be "
                "a combination of x1, x2 and g",
            )
        expected = system.eigenvalues
        got = np.sort(model.eigenvalues.real)
        expect_close(f"eigenvalues with μ={mu}, λ={lam}", got, np.sort(expected), rtol=1e-6, atol=1e-8)
    return "(x1, x2, g) closes the map: EDMD is exact and finds μ, λ and μ²."


@exercise("01", "frequency", hint_on_error="frequency(eigenvalue, dt) gets a complex number and a time step in seconds")
def check_frequency(fn):
    """``fn(eigenvalue, dt) -> ω`` in rad/s: the angular frequency of a discrete-time eigenvalue sampled every dt."""
    cases = [(-0.1 + 2.0j, 0.1), (-0.05 - 3.13j, 0.05), (0.0 + 0.7j, 0.5), (-0.3 + 0.0j, 0.2)]
    for s, dt in cases:
        lam = np.exp(s * dt)
        expected = abs(s.imag)
        got = fn(complex(lam), dt)
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        try:
            got = float(np.real_if_close(got))
        except TypeError:
            raise Wrong(
                f"for λ = {lam:.4f} you returned {got!r}, not a real number",
                hint="the frequency is a real, non-negative number: take the imaginary part of log(λ) / dt",
            ) from None
        if np.isclose(got, expected, rtol=1e-6, atol=1e-9):
            continue
        if expected > 0:  # recognise the usual slips before reporting a bare difference
            if np.isclose(got, -expected, rtol=1e-6):
                raise Wrong(
                    f"for λ = {lam:.4f} you returned {got:.4f}: the sign is off",
                    hint="a conjugate pair has Im log λ = ±ω; report the frequency as a non-negative number",
                )
            if np.isclose(got, expected * dt, rtol=1e-6):
                raise Wrong(
                    f"for λ = {lam:.4f}, dt = {dt} you returned {got:.4f} radians per step",
                    expected=expected,
                    hint="divide the angle of λ by dt to get radians per second",
                )
            if np.isclose(got, expected / (2 * np.pi), rtol=1e-6):
                raise Wrong(
                    f"for λ = {lam:.4f} you returned {got:.4f}, the frequency in hertz",
                    expected=expected,
                    hint="the exercise asks for the angular frequency ω in rad/s (no 2π)",
                )
            if np.isclose(got, abs(s), rtol=1e-6):
                raise Wrong(
                    f"for λ = {lam:.4f} you returned |log λ| / dt = {got:.4f}, which mixes in the decay rate",
                    expected=expected,
                    hint="only the imaginary part of log(λ) / dt is the frequency; the real part is the decay rate",
                )
        expect_close(
            f"ω for λ = {lam:.4f} (dt = {dt} s)",
            got,
            expected,
            rtol=1e-6,
            atol=1e-9,
            hint="λ = exp(s dt) with s = σ + iω, so ω = |angle(λ)| / dt",
        )
    return "ω = |angle(λ)| / dt: right for growing, decaying and non-oscillating eigenvalues."


@exercise(
    "01",
    "slow_eigenfunction",
    hint_on_error="slow_eigenfunction(X, mu, lam, c) gets states of shape (n, 2) and three numbers; return shape (n,)",
)
def check_slow_eigenfunction(fn):
    """``fn(X, mu, lam, c) -> φ`` (n,): the eigenfunction of the slow-manifold map with eigenvalue λ."""
    from kfc_lite.koopman.systems import SlowManifold

    for mu, lam, c in [(0.9, 0.5, 1.0), (0.7, -0.3, 2.0)]:
        system = SlowManifold(mu, lam, c)
        X, Y = system.snapshots(50, seed=5)
        g, gF = fn(X.copy(), mu, lam, c), fn(Y.copy(), mu, lam, c)
        if g is None or gF is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        g, gF = np.asarray(g, dtype=float).reshape(-1), np.asarray(gF, dtype=float).reshape(-1)
        if g.shape != (len(X),):
            raise Wrong(
                f"for {len(X)} states you returned {g.size} values",
                expected=f"shape ({len(X)},)",
                hint="return one value per row of X",
            )
        if not np.all(np.isfinite(g)):
            raise Wrong("your eigenfunction contains NaN or inf")
        if np.linalg.norm(g) < 1e-9:
            raise Wrong(
                "your function is zero everywhere: that satisfies φ(F(x)) = λ φ(x) trivially, but it is not an "
                "eigenfunction",
                hint="look for φ = x2 + b x1² and solve for b",
            )
        ratio = float(g @ gF / (g @ g))
        off = float(np.linalg.norm(gF - ratio * g) / np.linalg.norm(gF)) if np.linalg.norm(gF) > 0 else 0.0
        where = f"with μ={mu}, λ={lam}, c={c}"
        if off > 1e-8:
            b = c / (mu**2 - lam)
            wrong_sign = X[:, 1] + b * X[:, 0] ** 2
            if abs(np.corrcoef(g, wrong_sign)[0, 1]) > 1 - 1e-10:
                raise Wrong(
                    f"{where}: φ(F(x)) is not a multiple of φ(x); your b has the wrong sign",
                    hint="expand φ(F(x)) = λ x2 + c x1² + b μ² x1² and match it with λ (x2 + b x1²): c + b μ² = λ b",
                )
            if abs(np.corrcoef(g, X[:, 1])[0, 1]) > 1 - 1e-10:
                raise Wrong(
                    f"{where}: x2 alone is not an eigenfunction, since x2' = λ x2 + c x1² has the extra x1² term",
                    hint="add a multiple of x1² that absorbs it: φ = x2 + b x1²",
                )
            raise Wrong(
                f"{where}: φ(F(x)) is not a multiple of φ(x) (relative mismatch {off:.2g})",
                hint="try φ = x2 + b x1², write out φ(F(x)) and choose b so that it equals λ φ(x)",
            )
        if not np.isclose(ratio, lam, atol=1e-8):
            raise Wrong(
                f"{where}: your function is an eigenfunction, but of the eigenvalue {ratio:.4g}, not λ = {lam}",
                hint="x1 and x1² are eigenfunctions too (eigenvalues μ and μ²); the one for λ involves x2",
            )
    return "φ_λ = x2 − c/(μ² − λ) x1²: the dynamics multiply it by λ, and its zero set is the slow manifold."
