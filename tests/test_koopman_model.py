"""The Koopman forward model with control, its trainer, the controlled toy systems, EDMDc and notebook 02's checks."""

import numpy as np
import pytest
import torch

from kfc_lite.koopman.control import BilinearControlSystem, EDMDc, ForcedPendulum, LinearControlSystem, gym_transitions
from kfc_lite.koopman.fit import (
    KoopmanTrainConfig,
    fit_koopman,
    multistep_error,
    prediction_loss,
    reconstruction_loss,
    split_indices,
    validate_transitions,
)
from kfc_lite.koopman.model import KoopmanForwardModel, load_koopman, save_koopman

ROT = 0.95 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])


def small_model(d_s=3, d_a=2, n=5, h=16, seed=0):
    torch.manual_seed(seed)
    return KoopmanForwardModel(d_s, d_a, latent_dim=n, hidden_dim=h).double()


# -- the model ---------------------------------------------------------------------------------------------------
def test_architecture_follows_the_paper():
    m = KoopmanForwardModel(17, 6)
    assert m.config == {"state_dim": 17, "action_dim": 6, "latent_dim": 32, "hidden_dim": 512}
    kinds = [type(l).__name__ for l in m.encoder]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh"]
    assert [type(l).__name__ for l in m.decoder] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert m.k0.bias is None and m.k_actions.bias is None
    assert m.k_actions.weight.shape == (32 * 6, 32)
    z = m.encode(torch.randn(7, 17) * 100)
    assert z.shape == (7, 32) and z.abs().max() < 1  # tanh latent, even for huge inputs


def test_latent_step_equals_the_operator_matrix():
    m = small_model()
    z, a = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    via_matrix = torch.einsum("brc,bc->br", m.operator(a), z)
    torch.testing.assert_close(m.latent_step(z, a), via_matrix, rtol=1e-12, atol=1e-12)
    assert m.operator(a[0]).shape == (5, 5) and m.operator(a.view(2, 4, 2)).shape == (2, 4, 5, 5)


def test_operator_is_affine_in_the_action():
    m = small_model()
    a1, a2 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(
        m.operator(a1 + a2), m.operator(a1) + m.operator(a2) - m.operator(zero), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(m.operator(zero), m.K0)


def test_rollout_stays_in_the_latent_space():
    m = small_model()
    s0, acts = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
    z = m.encode(s0)
    for t in range(4):
        z = m.latent_step(z, acts[:, t])
    torch.testing.assert_close(m.rollout(s0, acts)[:, -1], m.decode(z))
    torch.testing.assert_close(m.rollout(s0, acts[:, :1])[:, 0], m(s0, acts[:, 0]))


def test_model_rejects_wrong_shapes():
    m = small_model()
    with pytest.raises(ValueError, match="last dimension 3"):
        m.encode(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="action"):
        m.operator(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive integer"):
        KoopmanForwardModel(0, 1)


# -- checkpoints --------------------------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path):
    m = small_model()
    history = {"train_forward": [0.5, 0.25]}
    path = save_koopman(m, tmp_path / "sub" / "k.pt", history=history, obs_mean=np.arange(3.0))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # the temp file was renamed away
    m2 = load_koopman(path, state_dim=3, action_dim=2)
    assert m2.config == m.config and next(m2.parameters()).dtype == torch.float64
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    s, a = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(m(s, a), m2(s, a))
    assert m2.extra["history"] == history
    np.testing.assert_array_equal(m2.extra["obs_mean"], np.arange(3.0))


def test_load_rejects_other_dimensions_and_other_files(tmp_path):
    path = save_koopman(small_model(), tmp_path / "k.pt")
    with pytest.raises(ValueError, match="state_dim=3, but state_dim=17"):
        load_koopman(path, state_dim=17)
    with pytest.raises(ValueError, match="action_dim=2, but action_dim=6"):
        load_koopman(path, action_dim=6)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a Koopman checkpoint"):
        load_koopman(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Koopman checkpoint"):
        load_koopman(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_koopman(tmp_path / "missing.pt")


# -- config and data ----------------------------------------------------------------------------------------------
def test_config_defaults_are_the_papers_and_bad_values_are_refused():
    c = KoopmanTrainConfig()
    assert (c.batch_size, c.lr, c.recon_weight, c.noise_std, c.train_fraction, c.max_epochs) == (
        256,
        3e-4,
        10.0,
        0.06,
        0.7,
        400,
    )
    assert (c.lr_decay_start, c.lr_decay_every, c.early_stop_start, c.early_stop_window) == (101, 50, 75, 5)
    assert (c.latent_dim, c.hidden_dim) == (32, 512)
    for bad in (
        dict(lr=-1.0),
        dict(batch_size=0),
        dict(train_fraction=1.0),
        dict(noise_std=-0.1),
        dict(max_steps=0),
        dict(seed=-3),
        dict(lr_decay_factor=2.0),
    ):
        with pytest.raises(ValueError, match=list(bad)[0]):
            KoopmanTrainConfig(**bad)


def linear_transitions(n_episodes=20, horizon=30, seed=0):
    return LinearControlSystem(ROT, [[0.0], [0.5]]).transitions(n_episodes, horizon, seed=seed)


def test_bad_transitions_raise_clear_errors():
    tr = linear_transitions(2, 5)
    with pytest.raises(KeyError, match="terminals"):
        validate_transitions({k: v for k, v in tr.items() if k != "terminals"})
    bad = dict(tr, observations=tr["observations"].copy())
    bad["observations"][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 row.*row 3"):
        fit_koopman(bad, KoopmanTrainConfig(max_steps=1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="next_observations has shape"):
        validate_transitions(dict(tr, next_observations=tr["next_observations"][:, :1]))
    with pytest.raises(ValueError, match="rows"):
        validate_transitions(dict(tr, actions=tr["actions"][:-1]))
    with pytest.raises(ValueError, match="state_dim=2, action_dim=1 but the data has 2 and 3"):
        fit_koopman(
            dict(tr, actions=np.zeros((len(tr["actions"]), 3))),
            KoopmanTrainConfig(max_steps=1),
            device="cpu",
            progress=False,
            model=KoopmanForwardModel(2, 1, 4, 8),
        )


def test_split_is_seeded_excludes_terminals_and_keeps_validation_segments_contiguous():
    tr = linear_transitions(20, 30)
    tr["terminals"] = tr["terminals"].copy()
    tr["terminals"][[5, 77, 300]] = True
    data = validate_transitions(tr)
    cfg = KoopmanTrainConfig(seed=3, multistep_k=5)
    train, val, seg = split_indices(data, cfg)
    train2, val2, seg2 = split_indices(data, KoopmanTrainConfig(seed=3, multistep_k=5))
    assert np.array_equal(train, train2) and np.array_equal(val, val2) and np.array_equal(seg, seg2)
    assert not np.array_equal(train, split_indices(data, KoopmanTrainConfig(seed=4, multistep_k=5))[0])
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(range(600)) - {5, 77, 300}
    assert abs(len(train) / 597 - 0.7) < 0.08
    assert len(seg) > 10 and set(seg.ravel()) <= set(val)
    for row in seg:  # each segment is one stretch of one trajectory
        assert np.all(np.diff(row) == 1)
        assert np.array_equal(data["next_observations"][row[:-1]], data["observations"][row[1:]])
    # terminal rows never enter training
    _, hist = fit_koopman(tr, KoopmanTrainConfig(max_steps=2, latent_dim=4, hidden_dim=8), device="cpu", progress=False)
    assert hist["n_terminal_rows_dropped"] == 3 and hist["n_train"] + hist["n_val"] == 597


def test_losses_are_the_papers():
    m = small_model(2, 1, 3, 8)
    s, a, s2 = (
        torch.randn(6, 2, dtype=torch.float64),
        torch.randn(6, 1, dtype=torch.float64),
        torch.randn(6, 2, dtype=torch.float64),
    )
    torch.testing.assert_close(prediction_loss(m, s, a, s2), torch.nn.functional.smooth_l1_loss(m(s, a), s2))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.cat([s, s2]) + 0.06 * torch.randn(12, 2, generator=g2, dtype=torch.float64)
    torch.testing.assert_close(
        reconstruction_loss(m, s, s2, 0.06, g1), torch.nn.functional.smooth_l1_loss(m.decode(m.encode(x)), x)
    )


# -- training -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_bilinear():
    """A bilinear controlled system x' = (A + u N) x, which the model can represent exactly with latent_dim == 2.

    A is a damped rotation (eigenvalues 0.95 e^{±0.3i}), N = diag(0.1, -0.1). For x' = A x + B u (additive control)
    the decoded one-step loss of the paper does not pin down K(a): the latent needs a constant coordinate, and the
    decoder's null direction leaves part of K free, so its eigenvalues are not identifiable (notebook 02 shows
    this). Here the encoder can only learn an invertible change of basis M, and K(u) = M (A + u N) M^-1 must
    have the eigenvalues of A + u N. lr 3e-3 and a faster halving keep training to 3500 small steps (about 5 s).
    """
    system = BilinearControlSystem(ROT, np.diag([0.1, -0.1]), x0_scale=0.5)
    tr = system.transitions(100, 30, seed=0)
    cfg = KoopmanTrainConfig(
        latent_dim=2,
        hidden_dim=64,
        lr=3e-3,
        batch_size=128,
        max_steps=3500,
        early_stopping=False,
        lr_decay_start=41,
        lr_decay_every=30,
        seed=0,
    )
    model, hist = fit_koopman(tr, cfg, device="cpu", progress=False)
    return system, tr, model, hist


def test_training_reaches_small_one_step_error_and_the_true_eigenvalues(trained_bilinear):
    system, tr, model, hist = trained_bilinear
    X, U, Y = (torch.as_tensor(tr[k], dtype=torch.float32) for k in ("observations", "actions", "next_observations"))
    with torch.no_grad():
        rel = float((model(X, U) - Y).norm() / Y.norm())
    assert rel < 1e-2, rel
    for u in (-1.0, 0.0, 1.0):
        got = np.sort_complex(np.linalg.eigvals(model.operator(torch.tensor([u])).detach().double().numpy()))
        true = np.sort_complex(np.linalg.eigvals(system.matrix([u])))
        # 5e-3 in the complex plane (about 0.5 % of |λ| = 0.95; measured about 1.5e-3): the eigenvalues are fitted
        # only as well as the one-step map (relative error just under 1e-2), so a tighter bound would test the seed
        np.testing.assert_allclose(got, true, atol=5e-3)


def test_loss_goes_down_and_history_is_complete(trained_bilinear):
    *_, hist = trained_bilinear
    assert hist["stopped"] == "max_steps" and hist["steps"][-1] == 3500
    assert np.mean(hist["val_forward"][-3:]) < 0.01 * hist["val_forward"][0]
    assert np.mean(hist["train_recon"][-3:]) < 0.1 * hist["train_recon"][0]
    assert hist["val_multistep"][-1] < hist["val_multistep"][0]
    assert len(hist["multistep_curve"]) == 10 and hist["lr"][-1] < hist["lr"][0]
    assert all(len(hist[k]) == len(hist["epoch"]) for k in ("lr", "train_forward", "val_forward", "val_recon"))


def test_training_is_repeatable_with_a_seed():
    tr = linear_transitions(10, 20)
    cfg = KoopmanTrainConfig(latent_dim=3, hidden_dim=8, max_steps=5, seed=1)
    m1, h1 = fit_koopman(tr, cfg, device="cpu", progress=False)
    m2, h2 = fit_koopman(tr, cfg, device="cpu", progress=False)
    assert h1["train_forward"] == h2["train_forward"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_lr_halving_schedule_and_early_stopping():
    tr = linear_transitions(10, 10)
    cfg = KoopmanTrainConfig(
        latent_dim=2, hidden_dim=4, batch_size=1024, max_epochs=160, early_stopping=False, multistep_k=2
    )
    _, h = fit_koopman(tr, cfg, device="cpu", progress=False)
    lr = np.asarray(h["lr"])
    assert lr[99] == 3e-4 and lr[100] == 1.5e-4 and lr[149] == 1.5e-4 and lr[150] == 7.5e-5  # epochs 101 and 151
    from kfc_lite.koopman.fit import should_stop

    hist = {
        "epoch": list(range(80)),
        "train_forward": [1.0] * 80,
        "val_forward": [1.0] * 80,
        "train_recon": [1.0] * 80,
        "val_recon": [1.0] * 80,
    }
    assert not should_stop(hist, KoopmanTrainConfig())
    hist["train_forward"][-5:] = [0.89] * 5
    assert should_stop(hist, KoopmanTrainConfig())
    assert not should_stop({k: v[:70] for k, v in hist.items()}, KoopmanTrainConfig())  # before epoch 75


def test_multistep_error_layouts_agree():
    m = small_model(2, 1, 3, 8)
    tr = LinearControlSystem(ROT, [[0.0], [0.5]]).transitions(1, 12, seed=0)
    states = np.concatenate([tr["observations"], tr["next_observations"][-1:]])
    e_traj = multistep_error(m, states, tr["actions"], k=4)
    idx = np.arange(9)[:, None] + np.arange(5)[None]
    e_seg = multistep_error(m, states[idx], tr["actions"][idx[:, :4]])
    np.testing.assert_allclose(e_traj, e_seg, rtol=1e-12)
    assert e_traj.shape == (4,)


# -- systems and EDMDc ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["affine", "bilinear"])
def test_edmdc_is_exact_on_a_linear_controlled_system(kind):
    B = np.array([[0.2], [0.5]])
    system = LinearControlSystem(ROT, B)
    tr = system.transitions(5, 20, seed=1)
    est = EDMDc(kind=kind).fit(tr)  # dictionary [1, x]
    np.testing.assert_allclose(est.predict(tr["observations"], tr["actions"]), tr["next_observations"], atol=1e-10)
    x0, U = np.array([0.3, -1.0]), np.random.default_rng(0).uniform(-1, 1, (15, 1))
    np.testing.assert_allclose(est.simulate(x0, U), system.simulate(x0, U)[1:], atol=1e-9)
    if kind == "bilinear":  # the lifted operator is exactly [[1, 0], [B u, A]] on (1, x)
        u = np.array([0.7])
        expected = np.eye(3)
        expected[1:, 1:], expected[1:, 0] = ROT, B @ u
        np.testing.assert_allclose(est.operator(u), expected, atol=1e-10)
    else:
        np.testing.assert_allclose(est.B[1:], B, atol=1e-10)


def test_edmdc_with_polynomial_observables_on_the_pendulum():
    from kfc_lite.koopman.observables import Polynomial

    tr = ForcedPendulum().transitions(20, 40, seed=0)
    est = EDMDc(Polynomial(3)).fit(tr)
    pred = est.predict(tr["observations"], tr["actions"])
    rel = np.linalg.norm(pred - tr["next_observations"]) / np.linalg.norm(tr["next_observations"])
    assert rel < 2e-2
    assert est.operator(np.array([1.0])).shape == (10, 10)


def test_forced_pendulum_physics_and_action_checks():
    p = ForcedPendulum(dt=0.01, damping=0.0)
    x0 = np.array([[0.1, 0.0]])
    traj = p.simulate(x0, np.zeros((1, 200, 1)))[0]
    energy = 0.5 * traj[:, 1] ** 2 - 9.81 * np.cos(traj[:, 0])
    assert np.ptp(energy) < 1e-8  # RK4 conserves energy of the undamped pendulum closely
    hold = ForcedPendulum(damping=0.5).simulate(np.zeros((1, 2)), np.full((1, 400, 1), 1.0))[0]
    assert abs(np.sin(hold[-1, 0]) - 1.0 / 9.81) < 1e-3  # a constant torque tilts it to sin θ = u / (m g l)
    tr = p.transitions(3, 5, seed=0)
    assert tr["observations"].shape == (15, 2) and tr["timeouts"].sum() == 3 and tr["episode_starts"].sum() == 3
    with pytest.raises(ValueError, match="outside"):
        p.transitions(2, 3, policy=lambda x, t: np.full((2, 1), 5.0))


def test_gym_transitions_on_pendulum():
    tr = gym_transitions("Pendulum-v1", 250, seed=0)
    assert tr["observations"].shape == (250, 3) and tr["actions"].shape == (250, 1)
    assert tr["timeouts"].sum() == 1 and tr["timeouts"][199] and tr["episode_starts"][200]  # 200-step limit
    assert not tr["terminals"].any()
    cont = ~tr["timeouts"][:-1]
    np.testing.assert_array_equal(tr["next_observations"][:-1][cont], tr["observations"][1:][cont])
    tr2 = gym_transitions("Pendulum-v1", 250, seed=0)
    np.testing.assert_array_equal(tr["actions"], tr2["actions"])


# -- notebook 02's exercise checks ----------------------------------------------------------------------------------
def test_exercise_checks_pass_right_answers_and_explain_wrong_ones():
    from kfc_lite.exercises import nb02

    right = lambda K0, Ks, a: K0 + torch.einsum("bi,irc->brc", a, Ks)
    assert nb02.check_operator(right).passed
    fb = nb02.check_operator(lambda K0, Ks, a: torch.einsum("bi,irc->brc", a, Ks))
    assert not fb.passed and "misses K0" in str(fb)
    fb = nb02.check_operator(lambda K0, Ks, a: K0 + torch.einsum("bi,icr->brc", a, Ks))
    assert not fb.passed and "transposed" in str(fb)
    fb = nb02.check_operator(lambda K0, Ks, a: K0 + torch.einsum("bi,irc->rc", a, Ks))
    assert not fb.passed and "summed over the batch" in str(fb)

    def stub(*args):
        raise NotImplementedError

    assert nb02.check_operator(stub).status == "not done yet"

    def rollout(model, s0, actions):
        z, out = model.encode(s0), []
        for t in range(actions.shape[1]):
            z = model.latent_step(z, actions[:, t])
            out.append(model.decode(z))
        return torch.stack(out, 1)

    def reencoding(model, s0, actions):
        s, out = s0, []
        for t in range(actions.shape[1]):
            s = model(s, actions[:, t])
            out.append(s)
        return torch.stack(out, 1)

    assert nb02.check_rollout(rollout).passed
    fb = nb02.check_rollout(reencoding)
    assert not fb.passed and "re-encode" in str(fb)
    fb = nb02.check_rollout(lambda m, s0, a: torch.cat([s0[:, None], rollout(m, s0, a)], 1))
    assert not fb.passed and "includes s0" in str(fb)
    fb = nb02.check_rollout(lambda m, s0, a: 1 / 0)
    assert not fb.passed and "ZeroDivisionError" in str(fb)

    assert nb02.check_failure_mode("b").passed
    assert not nb02.check_failure_mode("a").passed
    assert nb02.check_failure_mode(stub).status == "not done yet"
    assert not nb02.check_failure_mode("z").passed


def test_eigenvalue_figure_and_widget():
    import matplotlib

    matplotlib.use("Agg")
    from kfc_lite.viz.koopman_control import operator_eigs_explorer, operator_eigs_update, plot_predictions

    m = small_model(2, 1, 4, 8)
    fig = operator_eigs_update(m, 0.5)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Re λ" and "eigenvalues" in ax.get_title()
    offsets = ax.collections[-1].get_offsets()
    ev = np.linalg.eigvals(m.operator(torch.tensor([0.5], dtype=torch.float64)).detach().numpy())
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(ev.real), atol=1e-6)
    est = EDMDc().fit(linear_transitions(3, 10))
    assert operator_eigs_update(est, [0.2]).axes[0].collections
    assert operator_eigs_explorer(m) is not None
    tr = linear_transitions(1, 30)
    states = np.concatenate([tr["observations"], tr["next_observations"][-1:]])
    fig = plot_predictions(est, states, tr["actions"], horizons=(1, 5), dt=0.1)
    assert len(fig.axes) == 2


def test_gym_transitions_on_a_mujoco_task_keep_true_terminals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo would write MUJOCO_LOG.TXT here if it were not silenced
    tr = gym_transitions("Hopper-v5", 300, seed=0)  # a random Hopper falls within a few dozen steps
    assert tr["observations"].shape == (300, 11) and tr["actions"].shape == (300, 3)
    ends = np.flatnonzero(tr["terminals"])
    assert len(ends) >= 2 and all(tr["episode_starts"][i + 1] for i in ends if i + 1 < 300)
    # the row after a terminal starts a new episode, so its observation is not the terminal row's successor
    assert not np.allclose(tr["next_observations"][ends[0]], tr["observations"][ends[0] + 1])
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    data = validate_transitions(tr)
    train, val, _ = split_indices(data, KoopmanTrainConfig(multistep_k=5))
    assert not set(ends) & (set(train) | set(val))


def test_training_runs_in_float64():
    tr = linear_transitions(5, 20)
    model = KoopmanForwardModel(2, 1, latent_dim=3, hidden_dim=8).double()
    model, hist = fit_koopman(tr, KoopmanTrainConfig(max_steps=3), device="cpu", progress=False, model=model)
    assert next(model.parameters()).dtype == torch.float64 and np.isfinite(hist["val_forward"]).all()
