"""The fast SAC+CQL step (kfc_lite.rl.sac.SACCQL) reaches the parameters of the plain one
(kfc_lite.rl.reference.ReferenceSACCQL) from the same weights, batches, augmented states and random draws."""

import pytest
import torch

from kfc_lite.rl.reference import ReferenceSACCQL
from kfc_lite.rl.sac import SACCQL, SACConfig

DS, DA, B, STEPS = 5, 3, 64, 4

CONFIGS = {
    # the authors' settings: Lagrangian CQL, fixed alpha; two behaviour-cloning steps, then the SAC actor
    "kfc-code": SACConfig.preset("kfc-code", hidden=(32, 32), bc_steps=2),
    # CORL's: fixed penalty weight, tuned temperature, no entropy in the target, three hidden layers
    "corl": SACConfig.preset("corl", hidden=(32, 32, 32)),
    # plain SAC: no penalty
    "online-sac": SACConfig.preset("online-sac", hidden=(32, 32)),
}


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        s, s_next = torch.randn(B, DS, generator=g), torch.randn(B, DS, generator=g)
        batch = {
            "observations": s,
            "actions": torch.rand(B, DA, generator=g) * 2 - 1,
            "rewards": torch.randn(B, generator=g),
            "next_observations": s_next,
            "terminals": torch.rand(B, generator=g) < 0.1,
        }
        # augmented states made here, not by an augmenter, so that both agents see the same ones
        augmented = dict(
            batch,
            observations=s + 0.01 * torch.randn(B, DS, generator=g),
            next_observations=s_next + 0.01 * torch.randn(B, DS, generator=g),
        )
        yield batch, augmented


def critic_parameters(agent):
    """The fast agent's critics in the reference's layout: per critic, each layer's (weight, bias)."""
    out = []
    for ensemble in (agent.critic, agent.critic_target):
        for j in range(ensemble.n_critics):
            out.append(torch.cat([ensemble.w_state[j], ensemble.w_action[j]], 0).T)
            out.append(ensemble.b_in[j, 0])
            for w, b in zip(ensemble.weights, ensemble.biases, strict=True):
                out += [w[j].T, b[j, 0]]
    return out


def reference_parameters(ref):
    out = []
    for critics in (ref.critics, ref.targets):
        for critic in critics:
            for linear in critic:
                if isinstance(linear, torch.nn.Linear):
                    out += [linear.weight, linear.bias]
    return out


def max_difference(xs, ys):
    assert len(xs) == len(ys)
    return max(float((x - y).detach().abs().max()) for x, y in zip(xs, ys, strict=True))


def run(config, *, change_fast=None):
    torch.manual_seed(0)
    fast = SACCQL(DS, DA, config, "cpu")
    ref = ReferenceSACCQL.from_agent(fast)
    start = [p.detach().clone() for p in fast.actor.parameters()]
    for step, (batch, augmented) in enumerate(batches()):
        torch.manual_seed(100 + step)
        fast_out = fast.update(batch if change_fast is None else change_fast(batch), augmented)
        torch.manual_seed(100 + step)
        ref_out = ref.update(batch, augmented)
    moved = max_difference(list(fast.actor.parameters()), start)
    return fast, ref, fast_out, ref_out, moved


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_step_reaches_the_reference_parameters(name):
    """Tolerance 1e-5, and why: both compute the same float32 sums in another order (one joined critic call for
    the 1 + 3M actions, oneDNN kernels with fused bias and ReLU, a hand-written backward, fused Adam), so each
    gradient differs by round-off, ~1e-7 relative. Adam moves a parameter by about its learning rate (up to 3e-4)
    per step whatever the gradient's size, so after four steps round-off leaves the parameters within ~1e-7 of
    each other (measured: at most 6e-8); 1e-5 is a thirtieth of one step, and a wrong step (a missing action set
    in the penalty, a state not augmented) moves them by a whole step (tested below)."""
    fast, ref, fast_out, ref_out, moved = run(CONFIGS[name])
    assert moved > 1e-4  # the parameters did move
    assert max_difference(list(fast.actor.parameters()), list(ref.actor.parameters())) < 1e-5
    assert max_difference(critic_parameters(fast), reference_parameters(ref)) < 1e-5
    assert float((fast.log_alpha - ref.log_alpha).abs()) < 1e-6
    assert float((fast.log_alpha_prime - ref.log_alpha_prime).abs()) < 1e-6
    for key in ref_out:
        assert fast_out[key] == pytest.approx(ref_out[key], rel=1e-5, abs=1e-5), key


def test_the_comparison_catches_a_step_that_ignores_the_augmented_states():
    fast, ref, *_ = run(CONFIGS["kfc-code"], change_fast=None)
    honest = max_difference(critic_parameters(fast), reference_parameters(ref))

    # the fast agent given the augmented states as its clean ones: every term now sees s~, not only the critic's
    def wrong(batch):
        g = torch.Generator().manual_seed(9)
        return dict(batch, observations=batch["observations"] + 0.01 * torch.randn(B, DS, generator=g))

    fast, ref, *_ = run(CONFIGS["kfc-code"], change_fast=wrong)
    assert max_difference(critic_parameters(fast), reference_parameters(ref)) > 100 * max(honest, 1e-7)
