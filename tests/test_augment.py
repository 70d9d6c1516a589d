"""Augmenters: only states change, the same symmetry moves s and s', an augmented transition of a linear
system is a transition of that system, p_koopman is respected, defective operators fall back to noise."""

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from kfc_lite.rl.augment import S4RL_SIGMA, GaussianNoise, KoopmanAugmenter, NoAugmentation, make_augmenter


class LinearKoopman(nn.Module):
    """A bilinear system s' = A(a) s, A(a) = A0 + sum_i a_i A_i, seen through an invertible linear encoder
    z = P s (P = I gives the identity encoder/decoder), so K(a) = P A(a) P^-1 exactly."""

    def __init__(self, A0, A_actions, P=None):
        super().__init__()
        n = A0.shape[0]
        P = torch.eye(n, dtype=A0.dtype) if P is None else P
        self.register_buffer("A0", A0)
        self.register_buffer("A_actions", A_actions)
        self.register_buffer("P", P)
        self.register_buffer("P_inv", torch.linalg.inv(P))
        self.state_dim = self.latent_dim = n

    def true_step(self, s, a):
        A = self.A0 + torch.einsum("bi,irc->brc", a, self.A_actions)
        return (A @ s.unsqueeze(-1)).squeeze(-1)

    def encode(self, s):
        return s @ self.P.T

    def decode(self, z):
        return z @ self.P_inv.T

    def operator(self, a):
        A = self.A0 + torch.einsum("...i,irc->...rc", a, self.A_actions)
        return self.P @ A @ self.P_inv


def make_system(n=6, d_a=2, dtype=torch.float64, seed=0, P=False):
    g = torch.Generator().manual_seed(seed)
    A0 = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    Ai = 0.1 * torch.randn(d_a, n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    Pm = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=g, dtype=torch.float64) if P else None
    return LinearKoopman(A0.to(dtype), Ai.to(dtype), None if Pm is None else Pm.to(dtype))


def make_batch(system, B=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    dtype = system.A0.dtype
    s = torch.randn(B, system.state_dim, generator=g, dtype=torch.float64).to(dtype)
    a = torch.rand(B, system.A_actions.shape[0], generator=g, dtype=torch.float64).to(dtype) * 2 - 1
    return {
        "observations": s,
        "actions": a,
        "rewards": torch.randn(B, generator=g, dtype=torch.float64).to(dtype),
        "next_observations": system.true_step(s, a),
        "terminals": torch.zeros(B, dtype=torch.bool),
    }


def unchanged_keys_are_identical(before, after):
    for key in ("actions", "rewards", "terminals"):
        assert after[key] is before[key], f"{key} was changed"


@pytest.mark.parametrize("variant", ["kfc++", "kfc"])
@pytest.mark.parametrize("P", [False, True], ids=["identity-encoder", "linear-encoder"])
def test_augmented_transition_is_an_exact_transition_of_the_linear_system(variant, P):
    system = make_system(P=P)
    batch = make_batch(system)
    aug = KoopmanAugmenter(system, variant=variant, shift_sigma=30.0, p_koopman=1.0)
    out = aug(batch)
    unchanged_keys_are_identical(batch, out)
    s, s2 = out["observations"], out["next_observations"]
    assert (s - batch["observations"]).abs().max() > 1e-3, "the augmenter must actually move the states"
    residual = system.true_step(s, batch["actions"]) - s2
    assert residual.abs().max() < 1e-10 * s2.abs().max()
    assert aug.stats["koopman_fraction"] == 1.0 and aug.stats["fallback_rate"] == 0.0
    assert aug.stats["commutation_error"] < 1e-12


def test_s4rl_noise_is_not_a_transition_and_draws_independently():
    system = make_system()
    batch = make_batch(system, B=2000)
    torch.manual_seed(0)
    out = GaussianNoise(sigma=0.01)(batch)
    unchanged_keys_are_identical(batch, out)
    ds = out["observations"] - batch["observations"]
    dn = out["next_observations"] - batch["next_observations"]
    assert ds.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(torch.corrcoef(torch.stack([ds.flatten(), dn.flatten()]))[0, 1]) < 0.05  # independent draws
    residual = system.true_step(out["observations"], batch["actions"]) - out["next_observations"]
    assert residual.abs().mean() > 1e-3


def test_same_draw_for_s_and_s_next():
    """Feed s' = s: the Koopman augmenter must return identical states (one sigma), noise must not."""
    system = make_system()
    batch = make_batch(system)
    batch["next_observations"] = batch["observations"].clone()
    out = KoopmanAugmenter(system, p_koopman=1.0, shift_sigma=10.0)(batch)
    torch.testing.assert_close(out["observations"], out["next_observations"], rtol=0, atol=0)
    noisy = GaussianNoise()(batch)
    assert (noisy["observations"] - noisy["next_observations"]).abs().max() > 0


def test_only_states_change_and_extra_keys_pass_through():
    system = make_system()
    batch = make_batch(system)
    batch["weights"] = torch.ones(64)
    for aug in (NoAugmentation(), GaussianNoise(), KoopmanAugmenter(system, variant="kfc")):
        out = aug(batch)
        unchanged_keys_are_identical(batch, out)
        assert out["weights"] is batch["weights"] and set(out) == set(batch)
        assert batch["observations"] is not out["observations"] or isinstance(aug, NoAugmentation)
    out = NoAugmentation()(batch)
    assert out["observations"] is batch["observations"] and out is not batch


@pytest.mark.parametrize("per", ["batch", "sample"])
def test_p_koopman_is_respected(per):
    system = make_system(n=4)
    aug = KoopmanAugmenter(system, p_koopman=0.3, per=per)
    torch.manual_seed(0)
    n_batches = 400 if per == "batch" else 40
    fractions = []
    for i in range(n_batches):
        before = aug.stats["koopman_fraction"] * aug.stats["samples"] if aug.stats["samples"] else 0.0
        aug(make_batch(system, B=50, seed=i))
        after = aug.stats["koopman_fraction"] * aug.stats["samples"]
        fractions.append((after - before) / 50)
    frac = aug.stats["koopman_fraction"]
    n_draws = n_batches if per == "batch" else n_batches * 50
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n_draws)
    if per == "batch":  # all or nothing within a batch, as in the authors' code
        assert set(round(f, 6) for f in fractions) == {0.0, 1.0}
    else:
        assert any(0 < f < 1 for f in fractions)


def test_noise_branch_when_p_is_zero():
    system = make_system()
    torch.manual_seed(0)
    aug = KoopmanAugmenter(system, p_koopman=0.0)
    out = aug(make_batch(system, B=4000))
    assert aug.stats["koopman_fraction"] == 0.0
    assert (out["observations"] - make_batch(system, B=4000)["observations"]).std().item() == pytest.approx(
        S4RL_SIGMA, rel=0.05
    )


def test_defective_operator_falls_back_to_noise_and_is_counted():
    """A Jordan block K(a) (for every action) cannot be diagonalised: every sample falls back to S4RL noise."""
    n = 2
    A0 = torch.tensor([[0.9, 1.0], [0.0, 0.9]], dtype=torch.float64)
    system = LinearKoopman(A0, torch.zeros(1, n, n, dtype=torch.float64))
    batch = make_batch(system, B=3000)
    torch.manual_seed(0)
    aug = KoopmanAugmenter(system, p_koopman=1.0, shift_sigma=100.0)
    out = aug(batch)
    st = aug.stats
    assert st["fallback_rate"] == 1.0 and st["fallbacks"] == 3000 and st["koopman_fraction"] == 0.0
    shift = out["observations"] - batch["observations"]
    assert shift.std().item() == pytest.approx(S4RL_SIGMA, rel=0.05)


def test_mixed_batch_falls_back_only_where_needed():
    """Actions switch K(a) between a diagonalisable matrix (a=0) and a Jordan block (a=1)."""
    A0 = torch.tensor([[0.9, 0.0], [0.0, 0.5]], dtype=torch.float64)
    A1 = torch.tensor([[[0.0, 1.0], [0.0, 0.4]]], dtype=torch.float64)  # A0 + A1 = [[0.9, 1], [0, 0.9]]
    system = LinearKoopman(A0, A1)
    batch = make_batch(system, B=10)
    batch["actions"] = torch.tensor([[0.0], [1.0]] * 5, dtype=torch.float64)
    batch["next_observations"] = system.true_step(batch["observations"], batch["actions"])
    aug = KoopmanAugmenter(system, p_koopman=1.0)
    aug(batch)
    assert aug.stats["fallback_rate"] == 0.5 and aug.stats["koopman_fraction"] == 0.5


def test_gauged_form_removes_reconstruction_error():
    """With a lossy autoencoder (decode(encode(s)) != s) and sigma -> 0, the gauged form returns s exactly
    and the plain form returns the reconstruction."""

    class Lossy(LinearKoopman):
        def decode(self, z):
            return super().decode(z) + 0.05

    system = Lossy(*[t for t in (make_system().A0, make_system().A_actions)])
    batch = make_batch(system)
    plain = KoopmanAugmenter(system, shift_sigma=0.0, p_koopman=1.0)(batch)
    gauged = KoopmanAugmenter(system, shift_sigma=0.0, p_koopman=1.0, gauged=True)(batch)
    torch.testing.assert_close(gauged["observations"], batch["observations"])
    torch.testing.assert_close(plain["observations"], batch["observations"] + 0.05)


def test_draws_are_the_global_rng_and_the_augmenters_state_and_repeat():
    """Everything but the Koopman branch draw comes from torch's global RNG; the branch from the augmenter's own
    generator, whose state is its state_dict: restoring both repeats the draws exactly."""
    system = make_system()
    batch = make_batch(system)
    for method in ("s4rl", "kfc", "kfc++"):
        aug = make_augmenter(method, model=system if method != "s4rl" else None)
        torch.manual_seed(123)
        start = aug.state_dict()
        first = aug(batch)
        state, aug_state = torch.get_rng_state(), aug.state_dict()
        second = aug(batch)
        torch.manual_seed(123)
        aug.load_state_dict(start)
        again = aug(batch)
        torch.set_rng_state(state)
        aug.load_state_dict(aug_state)
        second_again = aug(batch)
        torch.testing.assert_close(first["observations"], again["observations"], rtol=0, atol=0)
        torch.testing.assert_close(second["next_observations"], second_again["next_observations"], rtol=0, atol=0)
        assert not torch.equal(first["observations"], second["observations"])
    # the branch stream: its own seed, or one derived from torch's initial seed without drawing from the global RNG
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a, b = KoopmanAugmenter(system), KoopmanAugmenter(system)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.draw_branch(64), b.draw_branch(64)) and torch.equal(
        a.state_dict()["branch_generator"], b.state_dict()["branch_generator"]
    )
    per_run = []
    for run_seed in (1, 1, 2):  # the default stream follows the run's seed
        torch.manual_seed(run_seed)
        per_run.append(KoopmanAugmenter(system, per="sample").draw_branch(200))
    assert torch.equal(per_run[0], per_run[1]) and not torch.equal(per_run[0], per_run[2])
    per_sample = [KoopmanAugmenter(system, per="sample", seed=s).draw_branch(200) for s in (1, np.int64(1), 2)]
    assert torch.equal(per_sample[0], per_sample[1]) and not torch.equal(per_sample[0], per_sample[2])
    with pytest.raises(ValueError, match="branch_generator"):
        a.load_state_dict({})
    with pytest.raises(ValueError, match="not a CPU generator state"):
        a.load_state_dict({"branch_generator": torch.zeros(3)})
    for bad in (None, "abc"):
        with pytest.raises(TypeError, match="the dict its state_dict"):
            a.load_state_dict(bad)
        with pytest.raises(TypeError, match="the dict its state_dict"):
            GaussianNoise().load_state_dict(bad)
    with pytest.raises(ValueError, match="keeps no state"):
        GaussianNoise().load_state_dict(a.state_dict())
    for bad in (1.5, -1, 2**64, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            KoopmanAugmenter(system, seed=bad)


def test_float32_model_and_kfc_shift_size():
    system = make_system(dtype=torch.float32)
    batch = make_batch(system, B=512)
    torch.manual_seed(0)
    for variant in ("kfc", "kfc++"):
        aug = KoopmanAugmenter(system, variant=variant, p_koopman=1.0)
        out = aug(batch)
        assert out["observations"].dtype == torch.float32
        st = aug.stats
        assert st["commutation_error"] < 1e-4 and st["fallback_rate"] == 0.0
        # both variants move states by a few 1e-3 per unit of state size at shift_sigma = 1
        rel = st["state_shift"] / batch["observations"].norm(dim=-1).mean().item()
        assert 1e-4 < rel < 3e-2, (variant, rel)


def test_model_is_frozen_and_no_grad():
    KoopmanForwardModel = pytest.importorskip("kfc_lite.koopman.model").KoopmanForwardModel

    torch.manual_seed(0)
    model = KoopmanForwardModel(3, 1, latent_dim=4, hidden_dim=16)
    model.train()
    aug = KoopmanAugmenter(model, p_koopman=1.0)
    assert not model.training
    batch = {
        "observations": torch.randn(8, 3),
        "actions": torch.rand(8, 1),
        "rewards": torch.zeros(8),
        "next_observations": torch.randn(8, 3),
        "terminals": torch.zeros(8, dtype=torch.bool),
    }
    model.train()
    out = aug(batch)
    assert not model.training and not out["observations"].requires_grad
    assert aug.stats["koopman_fraction"] + aug.stats["fallback_rate"] > 0


def test_make_augmenter_and_errors():
    system = make_system()
    assert isinstance(make_augmenter("cql"), NoAugmentation)
    assert isinstance(make_augmenter("S4RL", sigma=0.01), GaussianNoise)
    assert make_augmenter("kfc", model=system).variant == "kfc"
    assert make_augmenter("kfc++", model=system, per="sample").per == "sample"
    with pytest.raises(ValueError, match=re.escape("unknown augmentation method 'kfc+'")):
        make_augmenter("kfc+")
    with pytest.raises(ValueError, match="pass model="):
        make_augmenter("kfc++")
    with pytest.raises(ValueError, match="p_koopman"):
        KoopmanAugmenter(system, p_koopman=1.5)
    with pytest.raises(ValueError, match="variant"):
        KoopmanAugmenter(system, variant="sylvester")
    with pytest.raises(TypeError, match="operator"):
        KoopmanAugmenter(object())
    with pytest.raises(KeyError, match="next_observations"):
        GaussianNoise()({"observations": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="differ in shape"):
        GaussianNoise()({"observations": torch.zeros(2, 3), "next_observations": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="state_dim|dimension"):
        KoopmanAugmenter(system)(make_batch(make_system(n=5)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_koopman_augmenter_runs_on_the_gpu_and_stays_there():
    system = make_system(dtype=torch.float32).cuda()
    batch = {k: v.cuda() for k, v in make_batch(system, B=256).items()}
    torch.manual_seed(0)
    aug = KoopmanAugmenter(system, p_koopman=1.0, shift_sigma=30.0)
    out = aug(batch)
    assert out["observations"].device.type == "cuda"
    residual = system.true_step(out["observations"], batch["actions"]) - out["next_observations"]
    assert residual.abs().max() < 1e-4 * out["next_observations"].abs().max()
    assert aug.stats["fallback_rate"] == 0.0


def test_model_on_another_device_is_a_clear_error():
    class WithParameter(LinearKoopman):
        pass

    system = make_system()
    model = WithParameter(system.A0, system.A_actions)
    model.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))  # the model "lives" elsewhere
    with pytest.raises(ValueError, match=r"model.to\('cpu'\)"):
        KoopmanAugmenter(model)(make_batch(system))


def test_bounds_clamp_both_branches():
    system = make_system()
    batch = make_batch(system)
    for p in (0.0, 1.0):
        out = KoopmanAugmenter(system, p_koopman=p, shift_sigma=100.0, bounds=(-0.5, 0.5))(batch)
        for key in ("observations", "next_observations"):
            assert out[key].min() >= -0.5 and out[key].max() <= 0.5
    with pytest.raises(ValueError, match="low must not exceed high"):
        KoopmanAugmenter(system, bounds=(1.0, -1.0))


# -- worker threads (the symmetry table's build) -----------------------------------------------------------------

_THREADS_SCRIPT = r"""
import json, tempfile, torch
torch.set_num_threads(2)  # the training thread's count
from kfc_lite.koopman import KoopmanForwardModel
from kfc_lite.settings import thread_pool
from kfc_lite.symmetry_table import TableSettings, symmetry_table
data = {"observations": torch.randn(5000, 3), "actions": torch.rand(5000, 2) * 2 - 1,
        "next_observations": torch.randn(5000, 3)}
model = KoopmanForwardModel(3, 2, 4, 8).eval().requires_grad_(False)
symmetry_table(model, data, TableSettings(), tempfile.mkdtemp(), workers=2, progress=False)
after_build = torch.get_num_threads()
pool = thread_pool(2, 1)
nested = pool.submit(lambda: thread_pool(1, 1)).result()  # a pool made from a one-thread worker
import threading
fresh = []  # a thread started afterwards takes the process-wide count
t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
t.start(); t.join()
out = {"main": torch.get_num_threads(), "after_build": after_build, "fresh_thread": fresh[0],
       "pool_workers": [pool.submit(torch.get_num_threads).result() for _ in range(4)]}
print(json.dumps(out))
"""


def test_worker_threads_keep_their_one_thread_and_leave_the_training_thread_its_count():
    """Workers run their torch ops on one thread each, and the rest of the process keeps the count it had: with
    a bare ``torch.set_num_threads(1)`` in a worker's initializer, the process-wide count became 1, so threads
    started later, and a training thread that had set its count without reading it yet, ran on one thread
    (kfc_lite.settings.thread_pool, used by the symmetry table's build)."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"main": 2, "after_build": 2, "fresh_thread": 2, "pool_workers": [1] * 4}, out


def test_thread_pool_reports_a_worker_that_cannot_start(monkeypatch):
    """A worker whose start fails releases the others: the call raises instead of waiting for ever."""
    from kfc_lite import settings

    calls = []

    def failing(n):
        calls.append(n)
        if len(calls) == 2:
            raise RuntimeError("no thread for you")
        torch.set_num_threads(n)
        torch.get_num_threads()

    monkeypatch.setattr(settings, "_fix_thread_count", failing)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="could not start the kfc_lite-test worker threads"):
        settings.thread_pool(3, 1, "kfc_lite-test")
    assert torch.get_num_threads() == threads
