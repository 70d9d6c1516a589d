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
