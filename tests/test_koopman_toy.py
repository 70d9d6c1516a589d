"""Koopman on toy systems: dictionaries, systems with a known answer, DMD/EDMD, the explorer, notebook 01's checks."""

import numpy as np
import pytest

from kfc_lite.koopman.observables import Identity, Polynomial, RadialBasis, as_dictionary


# ---------------------------------------------------------------- dictionaries
def test_polynomial_lists_every_monomial_with_names():
    p = Polynomial(3)
    X = np.array([[2.0, 3.0]])
    assert p.names(2) == ["1", "x1", "x2", "x1^2", "x1 x2", "x2^2", "x1^3", "x1^2 x2", "x1 x2^2", "x2^3"]
    np.testing.assert_array_equal(p(X), [[1, 2, 3, 4, 6, 9, 8, 12, 18, 27]])
    assert p.state_columns(2) == [1, 2]
    q = Polynomial(2, include_bias=False)
    assert q.n_features(3) == 9 and q.state_columns(3) == [0, 1, 2]


def test_radial_basis_places_centres_on_the_data_and_keeps_the_state():
    X = np.random.default_rng(0).normal(size=(50, 2))
    r = RadialBasis(n_centers=5, gamma=2.0, seed=1)
    with pytest.raises(RuntimeError, match="fit"):
        r(X)
    psi = r.fit(X)(X)
    assert psi.shape == (50, 7)
    np.testing.assert_array_equal(psi[:, :2], X)
    assert np.all((psi[:, 2:] > 0) & (psi[:, 2:] <= 1))
    # each centre is a data point, where its own basis function equals 1
    assert np.all(np.isclose(psi[:, 2:], 1.0).sum(axis=0) >= 1)
    with pytest.raises(ValueError, match="exactly one"):
        RadialBasis()


def test_plain_callables_and_bad_shapes():
    d = as_dictionary(lambda X: X[:, 0] ** 2)
    assert d(np.ones((4, 2))).shape == (4, 1)
    assert isinstance(as_dictionary(None), Identity)
    with pytest.raises(ValueError, match="reshape"):
        Identity()(np.ones(3))
    with pytest.raises(TypeError):
        as_dictionary(3)


# ---------------------------------------------------------------- systems
from kfc_lite.koopman.edmd import DMD, EDMD  # noqa: E402
from kfc_lite.koopman.systems import Duffing, LinearSystem, Pendulum, SlowManifold, VanDerPol  # noqa: E402


def test_trajectories_and_snapshots_are_seeded_and_consistent():
    s = SlowManifold(0.9, 0.5, 1.0)
    traj = s.trajectory([1.0, -0.5], 3)
    assert traj.shape == (4, 2)
    np.testing.assert_allclose(traj[1], [0.9, 0.5 * -0.5 + 1.0])
    X1, Y1 = s.snapshots(50, seed=4)
    X2, Y2 = s.snapshots(50, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, s.step(X1))
    assert not np.array_equal(X1, s.snapshots(50, seed=5)[0])


def test_trajectory_snapshots_are_consecutive_states():
    s = SlowManifold(0.9, 0.5, 1.0)
    X, Y = s.trajectory_snapshots(4, 5, seed=2)
    assert X.shape == Y.shape == (20, 2)
    np.testing.assert_array_equal(Y, s.step(X))
    np.testing.assert_array_equal(X[1:5], Y[0:4])  # within a trajectory, each successor is the next state
    # along trajectories x2 approaches b x1^2, so DMD blends lambda = 0.5 with mu^2 = 0.81
    slow = DMD().fit(*s.trajectory_snapshots(30, 30, seed=0)).eigenvalues.real.min()
    assert 0.6 < slow < 0.9


def test_slow_manifold_eigenfunctions_are_exact():
    s = SlowManifold(0.8, 0.3, 2.0)
    X, Y = s.snapshots(30, seed=1)
    np.testing.assert_allclose(s.eigenfunctions(Y), s.eigenfunctions(X) * s.eigenvalues, atol=1e-12)
    with pytest.raises(ValueError, match="resonance"):
        _ = SlowManifold(0.5, 0.25).manifold_coefficient


def test_rk4_conserves_the_pendulum_energy_and_converges_at_fourth_order():
    p = Pendulum(dt=0.05)
    traj = p.trajectory([1.0, 0.0], 400)
    energy = 0.5 * traj[:, 1] ** 2 - p.g / p.length * np.cos(traj[:, 0])
    assert np.ptp(energy) / abs(energy[0]) < 1e-4
    # over a fixed time, halving the RK4 step divides the error by about 2^4 = 16 (global error O(h^4))
    x0 = np.array([[1.2, 0.3]])
    fine = Pendulum(dt=0.2, substeps=64).step(x0)
    e1 = np.abs(Pendulum(dt=0.2).step(x0) - fine).max()
    e2 = np.abs(Pendulum(dt=0.2, substeps=2).step(x0) - fine).max()
    assert 12 < e1 / e2 < 20


def test_duffing_and_van_der_pol_expose_their_known_answers():
    d = Duffing()
    np.testing.assert_allclose(d.fixed_points[:, 0], [-1, 0, 1])
    np.testing.assert_allclose(d.rhs(d.fixed_points), 0, atol=1e-12)
    assert np.all(d.linear_eigenvalues(1.0).real < 0) and np.any(d.linear_eigenvalues(0.0).real > 0)
    v = VanDerPol(dt=0.05, mu=0.2)
    traj = v.trajectory([0.1, 0.0], 3000)
    late = traj[-1000:, 0]
    assert abs(late.max() - 2.0) < 0.05  # the limit cycle has amplitude about 2 for small mu
    crossings = np.where((late[:-1] < 0) & (late[1:] >= 0))[0]
    period = np.mean(np.diff(crossings)) * v.dt
    assert abs(period - v.small_mu_period) < 0.05


# ---------------------------------------------------------------- DMD / EDMD
def test_dmd_recovers_a_linear_systems_eigenvalues_and_modes():
    A = np.array([[0.9, -0.3, 0.0], [0.3, 0.9, 0.0], [0.0, 0.0, 0.5]])
    system = LinearSystem(A)
    X, Y = system.snapshots(20, seed=0)
    dmd = DMD().fit(X, Y)
    key = lambda z: (round(z.real, 8), round(z.imag, 8))
    np.testing.assert_allclose(sorted(dmd.eigenvalues, key=key), sorted(system.eigenvalues, key=key), atol=1e-10)
    np.testing.assert_allclose(dmd.koopman_matrix, A, atol=1e-10)
    # modes are eigenvectors of A, and x = modes @ phi(x)
    np.testing.assert_allclose(A @ dmd.modes, dmd.modes * dmd.eigenvalues, atol=1e-10)
    np.testing.assert_allclose(dmd.exact_modes, dmd.modes, atol=1e-10)
    np.testing.assert_allclose((dmd.eigenfunctions(X) @ dmd.modes.T).real, X, atol=1e-10)
    traj = system.trajectory(X[0], 10)
    np.testing.assert_allclose(dmd.simulate(X[0], 10), traj, atol=1e-10)


def test_dmd_rank_truncation_keeps_the_dominant_eigenvalues():
    A = np.diag([0.95, 0.9, 1e-3])
    X, Y = LinearSystem(A).snapshots(40, seed=2)
    dmd = DMD(rank=2).fit(X, Y)
    assert dmd.rank_ == 2 and dmd.eigenvalues.shape == (2,)
    assert np.linalg.matrix_rank(dmd.koopman_matrix) == 2


def test_edmd_is_exact_on_the_slow_manifold_with_the_closing_dictionary():
    system = SlowManifold(mu=0.9, lam=0.5, c=1.0)
    X, Y = system.snapshots(200, seed=0)
    model = EDMD(SlowManifold.exact_observables()).fit(X, Y)
    np.testing.assert_allclose(np.sort(model.eigenvalues.real), np.sort([0.9, 0.5, 0.81]), atol=1e-8)
    np.testing.assert_allclose(model.eigenvalues.imag, 0, atol=1e-8)
    np.testing.assert_allclose(model.koopman_matrix, system.koopman_matrix, atol=1e-8)
    phi = model.eigenfunctions(X)
    np.testing.assert_allclose(model.eigenfunctions(Y), phi * model.eigenvalues, atol=1e-8)
    x0 = np.array([1.0, -0.5])
    np.testing.assert_allclose(model.simulate(x0, 40), system.trajectory(x0, 40), atol=1e-8)
    # DMD on the state alone cannot represent x1^2: it misses lambda and leaves a large residual
    dmd = DMD().fit(X, Y)
    assert dmd.residual_ > 0.1
    assert np.min(np.abs(dmd.eigenvalues - 0.5)) > 0.01


def test_edmd_prediction_error_falls_with_the_polynomial_degree_on_duffing():
    system = Duffing(dt=0.1)
    X, Y = system.snapshots(1000, seed=0)
    Xt, Yt = system.snapshots(300, seed=1)
    errors = {deg: np.sqrt(np.mean((EDMD(Polynomial(deg)).fit(X, Y).predict(Xt) - Yt) ** 2)) for deg in (1, 3, 5, 7)}
    assert errors[1] > 10 * errors[3] > 100 * errors[5] > 1000 * errors[7], errors
    assert errors[7] < 1e-7


def test_pendulum_small_angle_frequency_from_an_eigenvalue():
    p = Pendulum(dt=0.1)
    X, Y = p.snapshots(200, seed=0, box=([-0.05, -0.15], [0.05, 0.15]))
    model = DMD().fit(X, Y)
    s = model.continuous_eigenvalues(p.dt)
    omega = np.max(np.abs(s.imag))
    assert abs(omega - p.small_angle_frequency) / p.small_angle_frequency < 1e-3
    assert np.all(np.abs(s.real) < 1e-3)
    # large swings are slower: the frequency fitted on them is lower
    Xb, Yb = p.snapshots(2000, seed=0, box=([-1.5, -0.5], [1.5, 0.5]))
    big = EDMD(Polynomial(5)).fit(Xb, Yb)
    sb = big.continuous_eigenvalues(p.dt)
    leading = sb[np.argmin(np.abs(sb.real) + 100 * (np.abs(sb.imag) < 0.5))]
    assert abs(leading.imag) < 0.995 * p.small_angle_frequency


def test_radial_basis_edmd_predicts_better_than_dmd_on_van_der_pol():
    system = VanDerPol(dt=0.1)
    X, Y = system.snapshots(800, seed=0)
    Xt, Yt = system.snapshots(200, seed=1)
    err = lambda m: np.sqrt(np.mean((m.fit(X, Y).predict(Xt) - Yt) ** 2))
    assert err(EDMD(RadialBasis(n_centers=60, gamma=0.5, seed=0))) < 0.3 * err(DMD())


def test_a_plain_callable_dictionary_reconstructs_the_state_by_least_squares():
    system = SlowManifold()
    X, Y = system.snapshots(100, seed=0)
    model = EDMD(lambda Z: np.column_stack([Z[:, 0] + Z[:, 1], Z[:, 0] - Z[:, 1], Z[:, 0] ** 2])).fit(X, Y)
    np.testing.assert_allclose(model.predict(X), Y, atol=1e-10)


# ---------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors():
    X, Y = SlowManifold().snapshots(20, seed=0)
    with pytest.raises(ValueError, match="X has shape .* but Y has shape"):
        DMD().fit(X, Y[:-1])
    with pytest.raises(ValueError, match="underdetermined"):
        EDMD(Polynomial(5)).fit(X[:10], Y[:10])  # 21 observables, 10 samples
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        DMD().fit(bad, Y)
    Y_inf = Y.copy()
    Y_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="Y contains 1 NaN or inf"):
        EDMD(Polynomial(2)).fit(X, Y_inf)
    with pytest.raises(ValueError, match="larger than possible"):
        DMD(rank=3).fit(X, Y)
    with pytest.raises(ValueError, match="positive integer"):
        DMD(rank=0)
    for method in ("predict", "eigenfunctions"):
        with pytest.raises(RuntimeError, match="not fitted yet"):
            getattr(EDMD(Polynomial(2)), method)(X)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        _ = DMD().eigenvalues
    with pytest.raises(ValueError, match="dt must be"):
        DMD().fit(X, Y).continuous_eigenvalues(0.0)
    with pytest.raises(ValueError, match="fitted on 2-dimensional states"):
        DMD().fit(X, Y).predict(np.ones((3, 3)))
    with pytest.raises(ValueError, match="overflow"):
        EDMD(Polynomial(3)).fit(X * 1e120, Y)


# ---------------------------------------------------------------- figures and the explorer
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kfc_lite.viz.toy import (  # noqa: E402  (imported with the section that tests them)
    EXPLORER_DICTIONARIES,
    plot_eigenfunctions,
    plot_eigenvalues,
    plot_trajectories,
    toy_explorer,
    toy_explorer_update,
)


def test_explorer_update_shows_exact_closure_and_dmd_failure():
    exact = toy_explorer_update(0.9, 0.5, "exact (x1, x2, x1²)")
    st = exact.explorer_state
    assert st["residual"] < 1e-10 and st["eigenvalue_error"] < 1e-8
    np.testing.assert_allclose(st["predicted_trajectory"], st["true_trajectory"], atol=1e-8)
    dmd = toy_explorer_update(0.9, 0.5, "state (DMD)")
    assert dmd.explorer_state["residual"] > 0.1 and dmd.explorer_state["eigenvalue_error"] > 0.05
    assert np.abs(dmd.explorer_state["predicted_trajectory"] - dmd.explorer_state["true_trajectory"]).max() > 0.1
    # three panels with titles and labelled axes
    assert len(exact.axes) == 3 and all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in exact.axes)
    # redrawing into the same figure (as the widget does) replaces the panels instead of adding more
    again = toy_explorer_update(0.7, -0.4, "polynomial degree 3", fig=exact)
    assert again is exact and len(again.axes) == 3
    plt.close("all")


@pytest.mark.parametrize("dictionary", list(EXPLORER_DICTIONARIES))
def test_explorer_runs_for_every_dictionary_and_extreme_sliders(dictionary):
    for mu, lam in [(0.9, 0.5), (1.2, -1.2), (0.0, 0.0), (0.5, 0.25)]:
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fig = toy_explorer_update(mu, lam, dictionary, n_steps=10)
        assert np.isfinite(fig.explorer_state["residual"])
        plt.close(fig)
    with pytest.raises(ValueError, match="unknown dictionary"):
        toy_explorer_update(0.9, 0.5, "cubic splines")


def test_the_figures_draw_with_titles_and_labels():
    system = SlowManifold()
    X, Y = system.snapshots(100, seed=0)
    model = EDMD(SlowManifold.exact_observables()).fit(X, Y)
    fig = plot_eigenvalues(model.eigenvalues, system.eigenvalues)
    assert fig.axes[0].get_title() and "Re" in fig.axes[0].get_xlabel()
    fig = plot_eigenfunctions(model, ((-1, -1), (1, 1)), n_grid=20, trajectory=system.trajectory([1, -0.5], 10))
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    fig = plot_trajectories(system.trajectory([1, -0.5], 10), model.simulate(np.array([1, -0.5]), 10), dt=0.1)
    assert fig.axes[0].get_xlabel() == "time [s]"
    with pytest.raises(ValueError, match="must match"):
        plot_trajectories(np.zeros((3, 2)), np.zeros((4, 2)))
    plt.close("all")


def test_the_explorer_widget_builds():
    pytest.importorskip("ipywidgets")
    box = toy_explorer()
    sliders = [w for w in box.children[0].children]
    assert [w.description for w in sliders] == ["μ", "λ", "dictionary"]
    sliders[0].value = 0.7  # a change redraws without raising
    plt.close("all")


# ---------------------------------------------------------------- notebook 01's exercise checks
from kfc_lite.exercises import nb01  # noqa: E402


def _stub(*args):
    raise NotImplementedError


def test_check_edmd_step():
    assert nb01.check_edmd_step(_stub).status == "not done yet"
    right = lambda PX, PY: np.linalg.lstsq(PX, PY, rcond=None)[0].T
    assert nb01.check_edmd_step(right).passed
    transposed = nb01.check_edmd_step(lambda PX, PY: np.linalg.lstsq(PX, PY, rcond=None)[0])
    assert transposed.status == "failed" and "transpose" in str(transposed)
    backwards = nb01.check_edmd_step(lambda PX, PY: np.linalg.lstsq(PY, PX, rcond=None)[0].T)
    assert backwards.status == "failed" and "wrong way" in str(backwards)
    square = nb01.check_edmd_step(lambda PX, PY: np.linalg.solve(PX[: PX.shape[1]], PY[: PX.shape[1]]).T)
    assert square.status == "failed" and "first m samples" in str(square)
    shape = nb01.check_edmd_step(lambda PX, PY: PY.T @ PX)
    assert shape.passed is False
    assert "failed" in str(nb01.check_edmd_step(lambda PX, PY: PX @ PY))  # crashes are reported, not raised


def test_check_closing_observable():
    assert nb01.check_closing_observable(_stub).status == "not done yet"
    assert nb01.check_closing_observable(lambda X: X[:, 0] ** 2).passed
    assert nb01.check_closing_observable(lambda X: 3 * X[:, 0] ** 2 - X[:, 1]).passed  # same span: also closes
    wrong = nb01.check_closing_observable(lambda X: X[:, 1] ** 2)
    assert wrong.status == "failed" and "not closed" in str(wrong) and "x1²" in str(wrong)
    linear = nb01.check_closing_observable(lambda X: X[:, 0] + X[:, 1])
    assert linear.status == "failed" and "linear combination" in str(linear)
    assert "shape" in str(nb01.check_closing_observable(lambda X: X))


def test_check_frequency():
    assert nb01.check_frequency(_stub).status == "not done yet"
    assert nb01.check_frequency(lambda lam, dt: abs(np.angle(lam)) / dt).passed
    assert nb01.check_frequency(lambda lam, dt: abs(np.log(lam).imag) / dt).passed
    per_step = nb01.check_frequency(lambda lam, dt: abs(np.angle(lam)))
    assert per_step.status == "failed" and "divide" in str(per_step)
    hertz = nb01.check_frequency(lambda lam, dt: abs(np.angle(lam)) / dt / (2 * np.pi))
    assert hertz.status == "failed" and "hertz" in str(hertz)
    signed = nb01.check_frequency(lambda lam, dt: np.angle(lam) / dt)
    assert signed.status == "failed" and "sign" in str(signed)
    modulus = nb01.check_frequency(lambda lam, dt: abs(np.log(lam)) / dt)
    assert modulus.status == "failed" and "decay" in str(modulus)


def test_check_slow_eigenfunction():
    assert nb01.check_slow_eigenfunction(_stub).status == "not done yet"
    right = lambda X, mu, lam, c: X[:, 1] - c / (mu**2 - lam) * X[:, 0] ** 2
    assert nb01.check_slow_eigenfunction(right).passed
    assert nb01.check_slow_eigenfunction(lambda X, mu, lam, c: -3 * right(X, mu, lam, c)).passed  # any scale
    sign = nb01.check_slow_eigenfunction(lambda X, mu, lam, c: X[:, 1] + c / (mu**2 - lam) * X[:, 0] ** 2)
    assert sign.status == "failed" and "wrong sign" in str(sign)
    plain = nb01.check_slow_eigenfunction(lambda X, mu, lam, c: X[:, 1])
    assert plain.status == "failed" and "x2 alone" in str(plain)
    other = nb01.check_slow_eigenfunction(lambda X, mu, lam, c: X[:, 0] ** 2)
    assert other.status == "failed" and "not λ" in str(other)
    zero = nb01.check_slow_eigenfunction(lambda X, mu, lam, c: 0 * X[:, 0])
    assert zero.status == "failed" and "zero everywhere" in str(zero)


def test_the_exact_lifted_operator_of_a_linear_control_system_steps_it():
    """K(u) on z = (x, 1) is exact: K(u) z = (A x + B u, 1) for any x and u."""
    from kfc_lite.koopman.control import LinearControlSystem

    rng = np.random.default_rng(0)
    system = LinearControlSystem(rng.standard_normal((3, 3)), rng.standard_normal((3, 2)))
    x, u = rng.standard_normal(3), rng.standard_normal(2)
    z_next = system.lifted_operator(u) @ np.append(x, 1.0)
    np.testing.assert_allclose(z_next, np.append(system.step(x, u), 1.0), rtol=1e-12, atol=1e-12)


def test_edmd_reconstructs_the_state_from_a_dictionary_that_holds_it():
    """With the state's coordinates among the observables, C psi(x) = x to round-off (least squares is exact)."""
    X, Y = Duffing().snapshots(200, seed=1)
    model = EDMD(Polynomial(degree=3)).fit(X, Y)
    C = model.reconstruction_matrix
    np.testing.assert_allclose(model.lift(X) @ C.T, X, atol=1e-8)


def test_the_sampled_pendulum_near_rest_has_the_exponentials_of_its_continuous_eigenvalues():
    """The Jacobian of one step at theta = 0 has eigenvalues exp(s dt) (to the integrator's error)."""
    system = Pendulum(dt=0.05, damping=0.3, substeps=10)
    h = 1e-6
    jac = np.column_stack([(system.step(h * e[None]) - system.step(-h * e[None]))[0] / (2 * h) for e in np.eye(2)])
    got = np.sort_complex(np.linalg.eigvals(jac))
    expected = np.sort_complex(system.discrete_eigenvalues(system.linear_eigenvalues))
    np.testing.assert_allclose(got, expected, atol=1e-6)
