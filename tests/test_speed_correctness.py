"""The optimised SAC+CQL step computes what a straightforward step computes: speed must not move correctness.

The reference step below is written the slow, obvious way: one plain MLP per critic on ``[s, a]``, a
separate critic call per action set, the actor run again for every use, ``torch.distributions.Normal`` for
log-densities and the tanh correction in float64. It draws its noise in the order ``SACCQL.update`` does
(policy noise at s, at s', then the uniform actions), so on a fixed batch both must give the same losses,
the same gradients and the same parameters after the step: to float round-off in fp32, and within a stated
tolerance under bf16 autocast. The fast paths of the Koopman augmenter (threaded eig, bounded condition
guard) must give identical results to the plain ones.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from kfc_lite import symmetry
from kfc_lite.rl.sac import SACCQL, SACConfig

DS, DA, B, HIDDEN = 5, 3, 32, (32, 32, 32)


def batch_of(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "observations": torch.randn(B, DS, generator=g),
        "actions": torch.rand(B, DA, generator=g) * 2 - 1,
        "rewards": torch.randn(B, generator=g),
        "next_observations": torch.randn(B, DS, generator=g),
        "terminals": (torch.rand(B, generator=g) < 0.1),
    }


class PlainCritic(nn.Module):
    """Critic j of the ensemble as an ordinary MLP on the concatenation [s, a]."""

    def __init__(self, ensemble, j):
        super().__init__()
        dims = (DS + DA, *HIDDEN, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))
        with torch.no_grad():
            self.layers[0].weight.copy_(torch.cat([ensemble.w_state[j], ensemble.w_action[j]], 0).T)
            self.layers[0].bias.copy_(ensemble.b_in[j, 0])
            for layer, w, b in zip(self.layers[1:], ensemble.weights, ensemble.biases, strict=False):
                layer.weight.copy_(w[j].T)
                layer.bias.copy_(b[j, 0])

    def forward(self, s, a):
        h = torch.cat([s, a], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def grads(self):
        """Gradients in the ensemble's layout (w_state, w_action, b_in, weights..., biases...)."""
        w0 = self.layers[0].weight.grad.T
        return (
            [w0[:DS], w0[DS:], self.layers[0].bias.grad]
            + [l.weight.grad.T for l in self.layers[1:]]
            + [l.bias.grad for l in self.layers[1:]]
        )


def tanh_gaussian(mean, log_std, noise):
    """Reparameterised tanh-Gaussian sample and its log-density, the textbook way."""
    std = log_std.exp()
    u = mean + std * noise
    logp = torch.distributions.Normal(mean, std).log_prob(u) - torch.log1p(-(torch.tanh(u.double()) ** 2)).float()
    return torch.tanh(u), logp.sum(-1)


def reference_step(agent_before, cfg, batch, gen_seed):
    """One SAC+CQL step written plainly; returns losses, gradients and the parameters after the step."""
    actor = copy.deepcopy(agent_before.actor)
    critics = [PlainCritic(agent_before.critic, j) for j in range(cfg.n_critics)]
    targets = [PlainCritic(agent_before.critic_target, j) for j in range(cfg.n_critics)]
    log_alpha_prime = agent_before.log_alpha_prime.detach().clone().requires_grad_(True)
    alpha = agent_before.log_alpha.detach().exp()
    s, a, r = batch["observations"], batch["actions"], batch["rewards"]
    s2, done = batch["next_observations"], batch["terminals"].float()
    M = cfg.cql_n_actions
    torch.manual_seed(gen_seed)
    noise_s = torch.randn(B, 1 + M, DA)
    noise_n = torch.randn(B, 1 + M, DA)
    random_a = torch.rand(B, M, DA) * 2 - 1

    with torch.no_grad():
        mean_n, log_std_n = actor(s2)
        a2, logp2 = tanh_gaussian(mean_n[:, None], log_std_n[:, None], noise_n)  # (B, 1+M, DA), (B, 1+M)
        q_next = torch.stack([t(s2, a2[:, 0]) for t in targets]).min(0).values
        y = r + cfg.gamma * (1 - done) * (q_next - alpha * logp2[:, 0])
        mean, log_std = actor(s)
        a_s, logp_s = tanh_gaussian(mean[:, None], log_std[:, None], noise_s)

    td, gaps = 0.0, []
    for q in critics:
        q_data = q(s, a)
        td = td + ((q_data - y) ** 2).mean()
        cat = []
        for actions, log_density in (
            (random_a, torch.full((B, M), DA * math.log(0.5))),
            (a_s[:, 1:], logp_s[:, 1:]),
            (a2[:, 1:], logp2[:, 1:]),
        ):
            q_ood = torch.stack([q(s, actions[:, k]) for k in range(M)], 1)  # one action at a time
            cat.append(q_ood - log_density)
        gaps.append(torch.logsumexp(torch.cat(cat, 1), 1).mean() - q_data.mean())
    alpha_prime = agent_before.log_alpha_prime.detach().exp()
    cql = sum(alpha_prime * cfg.cql_weight * g for g in gaps)
    critic_loss = td + cql
    critic_params = [p for q in critics for p in q.parameters()]
    critic_opt = torch.optim.Adam(critic_params, lr=cfg.q_lr)
    critic_loss.backward()
    critic_grads = [torch.stack(gs) for gs in zip(*[q.grads() for q in critics], strict=False)]
    critic_opt.step()

    gap = torch.stack(gaps).detach()
    lagrange = -(log_alpha_prime.exp() * (cfg.cql_weight * gap - cfg.lagrange_threshold)).mean()
    lagrange.backward()

    # the actor against the just-updated critics, its own fresh forward at s
    mean, log_std = actor(s)
    a_pi, logp_pi = tanh_gaussian(mean, log_std, noise_s[:, 0])
    q_pi = torch.stack([q(s, a_pi) for q in critics]).min(0).values
    actor_loss = (alpha * logp_pi - q_pi).mean()
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.policy_lr)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_grads = [p.grad.clone() for p in actor.parameters()]
    actor_opt.step()
    losses = {
        "critic_loss": critic_loss,
        "td_loss": td,
        "cql_penalty": cql,
        "actor_loss": actor_loss,
        "lagrange_loss": lagrange,
    }
    return (
        {k: float(v.detach()) for k, v in losses.items()},
        critic_grads,
        actor_grads,
        [q for q in critics],
        actor,
        log_alpha_prime.grad,
    )


def run_both(precision, seed=0):
    torch.manual_seed(seed)
    cfg = SACConfig.preset("kfc-code", hidden=HIDDEN, bc_steps=0, precision=precision)
    agent = SACCQL(DS, DA, cfg)
    before = copy.deepcopy(agent)
    batch = batch_of(seed)
    torch.manual_seed(123)
    out = agent.update(batch)
    ref = reference_step(before, cfg, batch, gen_seed=123)
    return agent, out, ref


def ensemble_grads(agent):
    c = agent.critic
    return (
        [c.w_state.grad, c.w_action.grad, c.b_in.grad.squeeze(1)]
        + [w.grad for w in c.weights]
        + [b.grad.squeeze(1) for b in c.biases]
    )


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_fp32_step_matches_the_reference_to_round_off():
    agent, out, (losses, critic_grads, actor_grads, critics, actor, g_lagrange) = run_both("fp32")
    for k, v in losses.items():
        assert out[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k
    for got, want in zip(ensemble_grads(agent), critic_grads, strict=False):
        assert rel(got, want) < 1e-5
    for got, want in zip([p.grad for p in agent.actor.parameters()], actor_grads, strict=False):
        assert rel(got, want) < 1e-5
    assert float(agent.log_alpha_prime.grad) == pytest.approx(float(g_lagrange), rel=1e-5)
    # and the parameters after the Adam steps
    for j, q in enumerate(critics):
        assert torch.allclose(agent.critic.weights[0][j].T, q.layers[1].weight, atol=1e-6)
    for p, q in zip(agent.actor.parameters(), actor.parameters(), strict=False):
        assert torch.allclose(p, q, atol=1e-6)


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_bf16_step_matches_the_reference_within_bf16_tolerance():
    """Tolerance, and why: bf16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2% per value); products
    accumulate in fp32 inside the kernels, so the losses agree to about 1e-3. Gradients are sums of many
    rounded terms with cancellation (the CQL gap's gradient is a softmax-weighted sum minus the data term), so
    single tensors are off by 3-18% and the whole critic gradient by 4-13% (measured over seeds 0-5, both
    with the autocast ``addmm`` critic and the fused oneDNN one; cosine >= 0.985). Stated tolerance: losses
    1%, whole-network gradient 20% relative, every tensor's direction cosine >= 0.97. A wrong step (a missing
    action set) moves the penalty by ~20% and is caught by the fp32 test."""
    agent, out, (losses, critic_grads, actor_grads, *_rest) = run_both("bf16")
    for k, v in losses.items():
        assert out[k] == pytest.approx(v, rel=1e-2, abs=1e-2), k
    got_c = ensemble_grads(agent)
    got_a = [p.grad for p in agent.actor.parameters()]
    flat = lambda ts: torch.cat([t.flatten() for t in ts])
    assert rel(flat(got_c), flat(critic_grads)) < 0.2
    assert rel(flat(got_a), flat(actor_grads)) < 0.2
    assert min(cosine(g, w) for g, w in zip(got_c + got_a, critic_grads + actor_grads, strict=False)) >= 0.97
    # master weights and optimiser state stay in fp32
    assert all(p.dtype == torch.float32 for p in agent.critic.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in agent.critic_optimizer.state.values())


def test_reference_would_catch_a_wrong_step():
    """The comparison can fail: dropping the policy actions at s' from the penalty changes the loss."""
    agent, out, (losses, *_rest) = run_both("fp32")
    torch.manual_seed(0)
    cfg = SACConfig.preset("kfc-code", hidden=HIDDEN, bc_steps=0, cql_n_actions=5)
    wrong = SACCQL(DS, DA, cfg)
    torch.manual_seed(123)
    assert wrong.update(batch_of(0))["cql_penalty"] != pytest.approx(losses["cql_penalty"], rel=1e-3)


def _guard_cases() -> torch.Tensor:
    """40 operators of 8x8 whose guard outcomes are certain on every CPU, and random ones in between.

    * ``K[3]``, an exact Jordan block ``0.9 I + N``: it is already upper triangular, so LAPACK's ``geev`` returns
      eight equal eigenvalues without rounding and back-substitutes eigenvectors that all lie within round-off of
      ``e1``: ``cond(U)`` is of order ``1/eps`` or infinite, far above the limit, whatever the BLAS/LAPACK kernels.
      (A matrix that is only nearly defective would not do: whether its computed eigenvectors pass the limit
      depends on the kernels, and differs between Intel and AMD CPUs.)
    * ``K[5]`` holds a NaN.
    * ``K[7]``, ``Q diag(lambda) Q^T`` with an orthogonal ``Q`` and well separated eigenvalues: ``cond(U)`` is 1 up
      to round-off on any CPU, so it must be kept.
    * the rest, ``I`` plus noise: conditioning that varies by sample, where the fast guard must decide as the exact
      one does, whatever either decides.
    """
    g = torch.Generator().manual_seed(0)
    K = torch.eye(8) + 0.3 * torch.randn(40, 8, 8, generator=g) / 8**0.5
    K[3] = 0.9 * torch.eye(8) + torch.diag(torch.ones(7), 1)
    K[5, 0, 0] = float("nan")
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    K[7] = (Q @ torch.diag(torch.linspace(-0.9, 0.9, 8, dtype=torch.float64)) @ Q.T).float()
    return K


def test_bounded_guard_decides_as_the_exact_guard():
    K = _guard_cases()
    exact, fast = symmetry.eigendecompose(K), symmetry.eigendecompose(K, exact_cond=False)
    # the guard rejects what it must and keeps what it must, on any CPU ...
    assert not exact.valid[3] and not exact.valid[5] and exact.valid[7]
    assert float(exact.cond[7]) < 1.01
    # ... and the fast guard decides every sample as the exact one does, whatever the two decide
    assert torch.equal(exact.valid, fast.valid)
    assert torch.equal(exact.vectors, fast.vectors) and torch.equal(exact.inverse, fast.inverse)
    ok = exact.valid
    assert (fast.cond[ok] >= exact.cond[ok] * (1 - 1e-5)).all()  # an upper bound where it decided
    for threshold in (2.0, float(exact.cond[ok].median())):  # a limit that splits the batch
        a, b = symmetry.eigendecompose(K, threshold), symmetry.eigendecompose(K, threshold, exact_cond=False)
        assert torch.equal(a.valid, b.valid)
        assert a.valid[7] and not a.valid[3] and 0 < int(a.valid.sum()) < 38


def test_adam_flags_by_device():
    """Fused Adam on CUDA, and on the CPU where torch has the kernel; check here that the fused kernel takes the
    same step as the default implementation (to round-off)."""
    from kfc_lite.rl._fused import adam_options

    assert adam_options("cuda") == {"fused": True} and adam_options(torch.device("cuda:0")) == {"fused": True}
    has_fused_cpu = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    assert adam_options("cpu") == ({"fused": True} if has_fused_cpu else {})
    agent = SACCQL(DS, DA, SACConfig(hidden=HIDDEN, batch_size=B))
    opts = (agent.actor_optimizer, agent.critic_optimizer)
    assert all(bool(g["fused"]) == has_fused_cpu for o in opts for g in o.param_groups)
    # a checkpoint carries its optimisers' flags: the agent that loads it uses its own machine's
    state = agent.state_dict()
    for key in ("actor_optimizer", "critic_optimizer"):
        for g in state[key]["param_groups"]:
            g["fused"] = None
    agent.load_state_dict(state)
    assert all(bool(g["fused"]) == has_fused_cpu for o in opts for g in o.param_groups)
    agent.update(batch_of(3))  # and the loaded optimisers step
    torch.manual_seed(0)
    w = torch.randn(20, 7, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    opts = [torch.optim.Adam([w], lr=1e-2), torch.optim.Adam([w2], lr=1e-2, fused=True)]
    for _ in range(3):
        for p, opt in zip((w, w2), opts, strict=False):
            opt.zero_grad()
            (p.sin().sum() + (p**2).mean()).backward()
            opt.step()
    assert torch.allclose(w, w2, atol=1e-6) and not torch.equal(w, torch.zeros_like(w))


def _critic_pass(critic, s, a, precision):
    s = s.clone()
    a = a.clone().requires_grad_(True)  # the actor's loss differentiates through the actions
    critic.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        q = critic(s, a)
    (q.float() * torch.linspace(-1, 1, q.numel()).view_as(q)).sum().backward()
    return q.detach().float(), [p.grad.clone() for p in critic.parameters()] + [a.grad.clone()]


@pytest.mark.parametrize("hidden", [(64, 48, 32), (40,)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_cpu_layers_equal_the_plain_layers(monkeypatch, precision, hidden):
    """The CPU critic (oneDNN bias+ReLU layers, the hand-written backward with in-place masks and the head's
    elementwise input gradient) computes what addmm + relu and autograd do."""
    from kfc_lite.rl import _fused, networks

    if _fused.LINEAR_POINTWISE is None:
        pytest.skip("this torch build has no oneDNN fused linear kernel: only the plain path exists")
    if (torch.bfloat16 if precision == "bf16" else torch.float32) not in _fused.FUSED_DTYPES:
        pytest.skip(f"oneDNN has no fused {precision} kernel on this CPU: {precision} takes the plain path here")
    torch.manual_seed(0)
    # one hidden layer: the head's factored gradient meets the first layer (its bias folded in its weight)
    critic = networks.CriticEnsemble(DS, DA, hidden=hidden, n_critics=2)
    s, a = torch.randn(24, DS), torch.rand(24, 7, DA) * 2 - 1
    calls = []
    real = _fused.CriticMLP.apply
    monkeypatch.setattr(_fused.CriticMLP, "apply", lambda *x: calls.append(1) or real(*x))
    q_fused, g_fused = _critic_pass(critic, s, a, precision)
    assert calls, "the fused layers were not used on the CPU"
    monkeypatch.setattr(_fused, "LINEAR_POINTWISE", None)
    calls.clear()
    q_plain, g_plain = _critic_pass(critic, s, a, precision)
    assert not calls
    tol = 1e-5 if precision == "fp32" else 2e-2  # bf16: one rounding of 2^-9 here and there, summed
    assert rel(q_fused, q_plain) < tol
    for got, want in zip(g_fused, g_plain, strict=False):
        assert got.dtype == want.dtype == torch.float32
        assert rel(got, want) < (1e-5 if precision == "fp32" else 5e-2)


@pytest.mark.parametrize("frozen", ["all", "first layer"])
def test_fused_cpu_critic_gradients_with_frozen_weights(monkeypatch, frozen):
    """The actor's loss differentiates the critic with its weights frozen (gradient to the actions only); a
    partly frozen critic gets the gradients of its other weights: both as autograd computes them."""
    from kfc_lite.rl import _fused, networks

    if _fused.LINEAR_POINTWISE is None:
        pytest.skip("this torch build has no oneDNN fused linear kernel: only the plain path exists")
    torch.manual_seed(0)
    critic = networks.CriticEnsemble(DS, DA, hidden=(64, 48, 32), n_critics=2)
    if frozen == "all":
        critic.requires_grad_(False)
    else:
        for p in (critic.w_state, critic.w_action, critic.b_in):
            p.requires_grad_(False)
    s, a0 = torch.randn(24, DS), torch.rand(24, DA) * 2 - 1
    out = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(_fused, "LINEAR_POINTWISE", None)
        a = a0.clone().requires_grad_(True)
        q = critic(s, a)
        params = [p for p in critic.parameters() if p.requires_grad]
        grads = torch.autograd.grad((q * torch.linspace(-1, 1, q.numel()).view_as(q)).sum(), [a, *params])
        out.append(grads)
    assert len(out[0]) == (1 if frozen == "all" else 1 + 6)
    for got, want in zip(*out, strict=False):
        assert rel(got, want) < 1e-5


# -- the C allocator setting (kfc_lite.settings.tune_cpu_allocator) -------------------------------------------
_FAULTS_SCRIPT = r"""
import json, resource, sys, torch
from kfc_lite.settings import tune_cpu_allocator
from kfc_lite.rl.sac import SACCQL
tuned = tune_cpu_allocator()
SACCQL(3, 2)  # the agent applies the setting itself (a second call is a no-op)
def step():  # what a CQL step does to memory: several (7680, 256) fp32 temporaries alive at once, then freed
    xs = [torch.empty(7680, 256).fill_(1.0) for _ in range(6)]
    return sum(float(x[0, 0]) for x in xs)
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
from kfc_lite.settings import release_cpu_memory
before = rss_mb()
xs = [torch.ones(4 * 2**20) for _ in range(40)]  # 40 x 16 MiB, freed: the tuned heap keeps them
del xs
kept = rss_mb() - before
released = release_cpu_memory()
print(json.dumps({"tuned": tuned, "faults": faults, "kept_mb": kept, "released": released,
                  "after_release_mb": rss_mb() - before}))
"""


def _faults(setting: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    # glibc's own defaults, pinned (without them its thresholds move with the process's history and address
    # layout, so an untuned run faults on some runs and not on others); the setting must override them
    pinned = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, KFC_MALLOC_TUNING=setting, **pinned),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_allocator_setting_removes_the_page_faults_of_large_temporaries():
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is for glibc on Linux")
    off, on = _faults("0"), _faults("1")
    assert off["tuned"] is False and on["tuned"] is True
    # 6 x 7.5 MiB fresh pages per step without the setting (~11,500 faults of 4 KiB); the heap reuses them with it
    assert off["faults"] > 5000 and on["faults"] < 0.02 * off["faults"], (on, off)
    # the price: freed blocks under 32 MiB stay with the process until release_cpu_memory (end of a run)
    assert on["kept_mb"] > 500 and on["released"] and on["after_release_mb"] < 50, on
    assert off["kept_mb"] < 50 and not off["released"], off


def test_allocator_setting_rejects_an_unknown_value():
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", "from kfc_lite.settings import tune_cpu_allocator; tune_cpu_allocator()"],
        capture_output=True,
        text=True,
        env=dict(os.environ, KFC_MALLOC_TUNING="maybe"),
    )
    assert r.returncode != 0 and "KFC_MALLOC_TUNING='maybe' is not understood" in r.stderr


def test_cpu_critic_function_without_hidden_layers_matches_autograd():
    """``_fused.CriticMLP`` with only a head (no ReLU anywhere): its input and parameter gradients are autograd's."""
    from kfc_lite.rl import _fused

    if _fused.LINEAR_POINTWISE is None:
        pytest.skip("this torch build has no oneDNN fused linear kernel")
    torch.manual_seed(0)
    x0, w0, b0 = torch.randn(5, 3), torch.randn(3, 1), torch.randn(1, 1)
    out = []
    for fn in (lambda x, w, b: _fused.CriticMLP.apply(x, w, b), lambda x, w, b: torch.addmm(b, x, w)):
        x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))
        (fn(x, w, b) * torch.linspace(-1, 1, 5).view(5, 1)).sum().backward()
        out.append((x.grad, w.grad, b.grad))
    for got, want in zip(*out, strict=False):
        assert rel(got, want) < 1e-6


def test_a_dtype_the_fused_kernel_refuses_takes_the_plain_path(monkeypatch):
    """oneDNN refuses bf16 products on CPUs without bf16 or AVX-512 instructions: the critic must then run bf16
    through the plain layers (on every CPU), and fp32 still through the fused ones."""
    from kfc_lite.rl import _fused, networks

    if _fused.LINEAR_POINTWISE is None:
        pytest.skip("this torch build has no oneDNN fused linear kernel: only the plain path exists")
    monkeypatch.setattr(_fused, "FUSED_DTYPES", (torch.float32,))
    calls = []
    real = _fused.CriticMLP.apply
    monkeypatch.setattr(_fused.CriticMLP, "apply", lambda *x: calls.append(1) or real(*x))
    torch.manual_seed(0)
    critic = networks.CriticEnsemble(DS, DA, hidden=(32, 32), n_critics=2)
    s, a = torch.randn(24, DS), torch.rand(24, DA) * 2 - 1
    q_bf16, _ = _critic_pass(critic, s, a, "bf16")
    assert not calls and torch.isfinite(q_bf16).all()
    q_fp32, _ = _critic_pass(critic, s, a, "fp32")
    assert calls
    assert rel(q_bf16.float(), q_fp32) < 5e-2  # the same critic, in bf16's precision
