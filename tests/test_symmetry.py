"""Symmetries of a Koopman operator: KFC++ and KFC generators commute with K, are real and non-trivial,
and the guard rejects what cannot be trusted."""

import math

import numpy as np
import pytest
import torch

from kfc_lite.symmetry import (
    commutation_error,
    default_cond_threshold,
    eigen_directions,
    eigendecompose,
    kfc_generator,
    kfc_symmetry,
    kfcpp_symmetry,
)

# relative commutator tolerated in each precision (the task's bar: 1e-10 in float64, 1e-4 in float32)
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def random_K(batch, n, dtype, seed=0):
    """Random real operators near the unit circle (Gaussian / sqrt(n)): almost surely complex pairs."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n, n, generator=g, dtype=torch.float64) / math.sqrt(n)).to(dtype)


def rotation(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [6, 32])
def test_kfcpp_symmetries_are_real_nontrivial_and_commute(dtype, n):
    K = random_K(16, n, dtype)
    values = torch.linalg.eigvals(K.double())
    assert (values.imag.abs() > 1e-3).any(dim=-1).all(), "the test needs complex eigenvalues in every K"
    eps = torch.randn(16, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    sigma, valid = kfcpp_symmetry(K, eps)
    assert valid.all()
    assert sigma.dtype == dtype and not sigma.is_complex() and sigma.shape == (16, n, n)
    assert torch.isfinite(sigma).all()
    err = commutation_error(sigma.double(), K.double())
    assert err.max() < TOL[dtype], f"max relative commutator {err.max():.2e}"
    # non-trivial: far from any multiple of the identity
    eye = torch.eye(n, dtype=torch.float64)
    s64 = sigma.double()
    multiple = torch.diagonal(s64, dim1=-2, dim2=-1).mean(-1)[:, None, None] * eye
    distance = torch.linalg.matrix_norm(s64 - multiple) / torch.linalg.matrix_norm(s64)
    assert distance.min() > 0.1


def test_kfcpp_is_the_conjugate_pair_average():
    """Re(U diag(eps) U^-1) equals U diag(pair-averaged eps) U^-1, computed independently with NumPy."""
    K = random_K(1, 8, torch.float64, seed=3)[0]
    eps = torch.randn(8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigma, valid = kfcpp_symmetry(K, eps)
    lam, U = np.linalg.eig(K.numpy())
    e = eps.numpy().astype(complex)
    avg = e.copy()
    for i in range(8):
        if abs(lam[i].imag) > 1e-9:
            j = int(np.argmin(np.abs(lam - lam[i].conj())))
            avg[i] = (e[i] + e[j]) / 2
    expected = U @ np.diag(avg) @ np.linalg.inv(U)
    assert np.abs(expected.imag).max() < 1e-12
    np.testing.assert_allclose(sigma.numpy(), expected.real, atol=1e-12)


def test_rotation_symmetry_from_real_eps_is_a_scaling():
    """For a 2x2 rotation the real part keeps only the average of the pair: (eps1+eps2)/2 * I."""
    K = rotation(0.3)
    sigma, valid = kfcpp_symmetry(K, torch.tensor([0.2, -0.06], dtype=torch.float64))
    torch.testing.assert_close(sigma, 0.07 * torch.eye(2, dtype=torch.float64), atol=1e-14, rtol=0)


def test_one_K_broadcasts_against_many_eps():
    K = random_K(1, 5, torch.float64)[0]
    eps = torch.randn(7, 5, dtype=torch.float64)
    sigma, valid = kfcpp_symmetry(K, eps)
    assert sigma.shape == (7, 5, 5) and valid.shape == (7,)
    single, _ = kfcpp_symmetry(K, eps[3])
    torch.testing.assert_close(sigma[3], single)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kfc_generator_commutes_has_documented_scale_and_is_deterministic(dtype):
    n = 12
    K = random_K(8, n, dtype, seed=5)
    G, valid = kfc_generator(K, scale=3e-3, seed=0)
    assert valid.all() and G.dtype == dtype and not G.is_complex()
    assert commutation_error(G.double(), K.double()).max() < TOL[dtype]
    rms_gain = torch.linalg.matrix_norm(G.double()) / math.sqrt(n)
    torch.testing.assert_close(rms_gain, torch.full_like(rms_gain, 3e-3), rtol=1e-5, atol=0)
    G2, _ = kfc_generator(K, scale=3e-3, seed=0)
    torch.testing.assert_close(G, G2, rtol=0, atol=0)  # no global RNG, same answer every call
    G3, _ = kfc_generator(K, scale=3e-3, seed=1)
    assert (G3 - G).abs().max() > 1e-4  # another reference matrix gives another generator
    # the generator is not a multiple of the identity: it uses the commutant, not only trivial scalings
    multiple = torch.diagonal(G.double(), dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(n, dtype=torch.float64)
    assert (torch.linalg.matrix_norm(G.double() - multiple) / torch.linalg.matrix_norm(G.double())).min() > 0.1


def test_kfc_is_one_direction_kfcpp_spans_real_eigen_groups():
    """KFC samples span one direction per K; KFC++ spans one per real eigenvalue or conjugate pair."""
    n = 6
    K = random_K(1, n, torch.float64, seed=7)[0]
    n_groups = len(eigen_directions(torch.linalg.eigvals(K)))
    eps = torch.randn(40, n, dtype=torch.float64)
    pp, _ = kfcpp_symmetry(K, eps)
    kfc, _ = kfc_symmetry(K, torch.randn(40, dtype=torch.float64))
    assert torch.linalg.matrix_rank(pp.reshape(40, -1)) == n_groups
    assert torch.linalg.matrix_rank(kfc.reshape(40, -1)) == 1
    assert n_groups < n  # this K has complex pairs, so real eps reach fewer than n directions


def test_rotation_generator_of_kfc_includes_the_rotation():
    """The real commutant of a rotation is {aI + bJ}; KFC's projected generator has a b-part, KFC++ none."""
    K = rotation(0.4)
    G, valid = kfc_generator(K, scale=1.0, seed=0)
    a, b = G[0, 0], G[1, 0]
    torch.testing.assert_close(G, torch.stack([torch.stack([a, -b]), torch.stack([b, a])]), atol=1e-12, rtol=0)
    assert abs(float(b)) > 1e-3


def test_jordan_block_is_marked_invalid_in_both_precisions():
    J = torch.tensor([[0.9, 1.0], [0.0, 0.9]], dtype=torch.float64)
    K = torch.stack([J, rotation(0.2)])
    for dtype in (torch.float64, torch.float32):
        sigma, valid = kfcpp_symmetry(K.to(dtype), torch.ones(2, 2, dtype=dtype))
        assert valid.tolist() == [False, True]
        assert (sigma[0] == 0).all()  # never a silent non-commuting fallback
        G, gvalid = kfc_generator(K.to(dtype))
        assert gvalid.tolist() == [False, True]


def test_nonfinite_K_is_invalid_and_does_not_spoil_the_batch():
    K = random_K(3, 4, torch.float64)
    K[1, 2, 2] = float("nan")
    sigma, valid = kfcpp_symmetry(K, torch.ones(3, 4, dtype=torch.float64))
    assert valid.tolist() == [True, False, True]
    assert torch.isfinite(sigma).all()


def test_cond_threshold_is_a_parameter():
    K = random_K(4, 8, torch.float64)
    eig = eigendecompose(K)
    assert eig.valid.all() and (eig.cond >= 1).all()
    strict = eigendecompose(K, cond_threshold=float(eig.cond.min()) * 0.999)
    assert not strict.valid.any()
    assert default_cond_threshold(torch.float32) == pytest.approx(1e-3 / torch.finfo(torch.float32).eps)
    with pytest.raises(ValueError, match="cond_threshold"):
        eigendecompose(K, cond_threshold=0.5)


def test_commutation_error_values():
    K = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert float(commutation_error(torch.diag(torch.tensor([3.0, -1.0], dtype=torch.float64)), K)) == 0.0
    N = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    # [N, K] = N K - K N = [[0, 2], [0, 0]] - [[0, 1], [0, 0]]: norm 1; ||N|| = 1, ||K|| = sqrt(5)
    assert float(commutation_error(N, K)) == pytest.approx(1 / math.sqrt(5))
    assert float(commutation_error(10 * N, K)) == pytest.approx(1 / math.sqrt(5))  # scale-free
    assert float(commutation_error(torch.zeros(2, 2, dtype=torch.float64), K)) == 0.0


def test_bad_input_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        kfcpp_symmetry(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="one parameter per latent"):
        kfcpp_symmetry(torch.eye(3), torch.zeros(4))
    with pytest.raises(TypeError, match="real floating-point"):
        kfcpp_symmetry(torch.eye(3, dtype=torch.complex64), torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kfcpp_symmetry(np.eye(3), torch.zeros(3))


def test_eigen_directions_groups_pairs_leading_first():
    values = torch.tensor([0.5 + 0j, 0.9 + 0.1j, 0.2 + 0j, 0.9 - 0.1j], dtype=torch.complex128)
    assert eigen_directions(values) == [[1, 3], [0], [2]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_symmetries_on_the_gpu_match_the_cpu():
    K = random_K(64, 32, torch.float32)
    eps = torch.randn(64, 32) * 3e-3
    sigma_cpu, valid_cpu = kfcpp_symmetry(K, eps)
    sigma_gpu, valid_gpu = kfcpp_symmetry(K.cuda(), eps.cuda())
    assert sigma_gpu.device.type == "cuda" and (valid_gpu.cpu() == valid_cpu).all()
    assert commutation_error(sigma_gpu.double(), K.cuda().double()).max() < 1e-4
    torch.testing.assert_close(sigma_gpu.cpu(), sigma_cpu, rtol=1e-3, atol=1e-6)


# -- the exercise checks of notebook 03 ---------------------------------------------------------------------
def test_exercise_commuting_symmetry_passes_and_fails():
    from kfc_lite.exercises import nb03

    def right(K, eps):
        lam, U = np.linalg.eig(K)
        return (U @ np.diag(eps) @ np.linalg.inv(U)).real

    def complex_kept(K, eps):
        lam, U = np.linalg.eig(K)
        return U @ np.diag(eps) @ np.linalg.inv(U)

    def transpose_not_inverse(K, eps):
        lam, U = np.linalg.eig(K)
        return (U @ np.diag(eps) @ U.T).real

    def stub(K, eps):
        raise NotImplementedError

    assert nb03.check_commuting_symmetry(right).passed
    fb = nb03.check_commuting_symmetry(complex_kept)
    assert not fb.passed and "real part" in str(fb)
    fb = nb03.check_commuting_symmetry(transpose_not_inverse)
    assert not fb.passed and "np.linalg.inv" in str(fb)
    assert nb03.check_commuting_symmetry(stub).status == "not done yet"
    assert not nb03.check_commuting_symmetry(lambda K, eps: np.eye(len(eps)) * 2).passed


def test_exercise_rotation_symmetry_passes_and_fails():
    from kfc_lite.exercises import nb03

    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert nb03.check_rotation_symmetry(lambda a, b: a * np.eye(2) + b * J).passed
    fb = nb03.check_rotation_symmetry(lambda a, b: a * np.eye(2) - b * J)
    assert not fb.passed and "sign of b" in str(fb)
    fb = nb03.check_rotation_symmetry(lambda a, b: np.array([[a, b], [b, a]]))
    assert not fb.passed and "does not commute" in str(fb)


def test_exercise_shift_transition_passes_and_fails():
    from kfc_lite.exercises import nb03

    def right(encode, decode, sigma, s, s_next):
        M = np.eye(len(sigma)) + sigma
        return decode(encode(s) @ M.T), decode(encode(s_next) @ M.T)

    def in_state_space(encode, decode, sigma, s, s_next):
        return s + s @ sigma.T, s_next + s_next @ sigma.T

    def forgot_identity(encode, decode, sigma, s, s_next):
        return decode(encode(s) @ sigma.T), decode(encode(s_next) @ sigma.T)

    def other_sigma_for_next(encode, decode, sigma, s, s_next):
        M = np.eye(len(sigma)) + sigma
        return decode(encode(s) @ M.T), decode(encode(s_next) @ (M + 0.1 * sigma).T)

    assert nb03.check_shift_transition(right).passed
    assert "latent" in str(nb03.check_shift_transition(in_state_space))
    assert "I + sigma" in str(nb03.check_shift_transition(forgot_identity))
    fb = nb03.check_shift_transition(other_sigma_for_next)
    assert not fb.passed and "same sigma" in str(fb)


def test_exercise_multiple_choice():
    from kfc_lite.exercises import nb03

    assert nb03.check_commutation_scaling("c").passed and not nb03.check_commutation_scaling("a").passed
    assert nb03.check_model_error_scaling("b").passed and not nb03.check_model_error_scaling("a").passed
    assert nb03.check_model_error_scaling(lambda: "b").passed

    def stub():
        raise NotImplementedError

    assert nb03.check_commutation_scaling(stub).status == "not done yet"


# -- the explorer ------------------------------------------------------------------------------------------
class _RotatingSystem(torch.nn.Module):
    """Identity encoder/decoder, K(a) = (0.97 + 0.02 a) R(0.3): a damped oscillator with a torque-like knob."""

    def __init__(self):
        super().__init__()
        self.register_buffer("R", rotation(0.3).float())
        self.state_dim, self.latent_dim = 2, 2

    def encode(self, s):
        return s

    def decode(self, z):
        return z

    def operator(self, a):
        return (0.97 + 0.02 * a[..., :1, None]) * self.R


def _oscillator_data(system, n_steps=40):
    s = torch.zeros(n_steps + 1, 2)
    s[0] = torch.tensor([1.0, 0.0])
    a = torch.linspace(-1, 1, n_steps)[:, None]
    for t in range(n_steps):
        s[t + 1] = system.operator(a[t]) @ s[t]
    return {
        "observations": s[:-1].numpy(),
        "actions": a.numpy(),
        "next_observations": s[1:].numpy(),
        "terminals": np.zeros(n_steps, dtype=bool),
    }


def test_explorer_update_on_an_exact_linear_model():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kfc_lite.viz.symmetry import episode_indices, symmetry_explorer_update

    system = _RotatingSystem()
    data = _oscillator_data(system)
    true_step = lambda s, a: np.einsum(
        "brc,bc->br", system.operator(torch.as_tensor(a, dtype=torch.float32)).double().numpy(), s
    )
    fig = symmetry_explorer_update(
        system, data, 5, [0.2], kfc_eps=0.1, true_step=true_step, state_labels=("x (m)", "v (m/s)")
    )
    st = fig.explorer_state
    assert st["valid"] and st["commutation_error"] < 1e-5
    assert np.linalg.norm(st["s_tilde"] - st["s"]) > 0.05  # the sliders move the state
    assert st["true_error"] < 1e-5 and st["model_error"] < 1e-5  # an exact model: the moved pair is exact
    # the one pair direction scales by 0.2, KFC's unit generator adds a rotation-and-scaling part
    assert fig.axes[0].get_title().startswith("transition 5")
    plt.close(fig)
    fig = symmetry_explorer_update(system, data, 10, [0.1], trajectory=True)
    assert len(fig.explorer_state["indices"]) == 40 and list(episode_indices(data, 10)) == list(range(40))
    plt.close(fig)


def test_explorer_update_bars_for_larger_states_and_widget_builds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kfc_lite.viz.symmetry import plot_augmented_batch, symmetry_explorer, symmetry_explorer_update

    torch.manual_seed(0)
    model = pytest.importorskip("kfc_lite.koopman.model").KoopmanForwardModel(5, 2, latent_dim=6, hidden_dim=16)
    g = np.random.default_rng(0)
    data = {
        "observations": g.standard_normal((30, 5)),
        "actions": g.uniform(-1, 1, (30, 2)),
        "next_observations": g.standard_normal((30, 5)),
        "terminals": np.zeros(30, dtype=bool),
    }
    fig = symmetry_explorer_update(model, data, 3, [0.1, -0.1, 0.05], 0.02)
    assert len(fig.axes) == 3 and "commutation error" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(IndexError, match="outside"):
        symmetry_explorer_update(model, data, 30, [0.1])
    widget = symmetry_explorer(model, data, n_sliders=2)
    assert widget.children
    plt.close("all")
    batch = {k: torch.as_tensor(v) for k, v in data.items()}
    from kfc_lite.rl.augment import make_augmenter

    fig = plot_augmented_batch(
        batch,
        {
            "S4RL": make_augmenter("s4rl")(batch),
            "KFC++": make_augmenter("kfc++", model=model.double(), p_koopman=1.0)(batch),
        },
    )
    assert fig.axes[0].get_xlabel().startswith("state shift")
    plt.close(fig)


def test_explorer_draws_mujoco_pictures_of_a_state_and_its_twin():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kfc_lite.viz import render
    from kfc_lite.viz.symmetry import symmetry_explorer_update

    if not render.renderer_available():
        pytest.skip("no offscreen MuJoCo renderer (libegl1/libosmesa6) here")
    torch.manual_seed(0)
    model = pytest.importorskip("kfc_lite.koopman.model").KoopmanForwardModel(11, 3, latent_dim=8, hidden_dim=16)
    g = np.random.default_rng(0)
    data = {
        "observations": 0.1 * g.standard_normal((20, 11)),
        "actions": g.uniform(-1, 1, (20, 3)),
        "next_observations": 0.1 * g.standard_normal((20, 11)),
        "terminals": np.zeros(20, dtype=bool),
    }
    fig = symmetry_explorer_update(model, data, 2, [0.3, -0.3], 0.0, render_env="hopper")
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(fig.axes) == 5 and len(images) == 2
    assert images[1].get_title().endswith("s~ (moved)")
    plt.close(fig)
