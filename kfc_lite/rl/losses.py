"""The losses of SAC + CQL(H), one small named function each, and the Polyak update of the target critics.

Each is a formula from docs/paper.md ('The offline RL base'), written on tensors of the shapes the agent has at
hand: ``E`` critics, ``B`` states, ``K`` sampled actions per state. The CQL penalty is :func:`cql_penalty`, the one
place it is computed, for the fast agent and for the reference one alike.

Sibling modules: :mod:`kfc_lite.rl.sac` is the agent whose ``update`` calls these in the authors' order (and
re-exports them, so ``from kfc_lite.rl.sac import cql_penalty`` works too); :mod:`kfc_lite.rl.reference` is the
same step written plainly.
"""

from __future__ import annotations

import torch

__all__ = [
    "td_target",
    "td_loss",
    "cql_penalty",
    "lagrange_loss",
    "actor_loss",
    "bc_actor_loss",
    "alpha_loss",
    "polyak_update",
]


def td_target(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    gamma: float,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """``y = r + gamma (1 - d) (min_j Qbar_j(s', a') - alpha log pi(a'|s'))`` for ``next_q`` of shape (E, B).

    Pass ``alpha=0`` for a backup without entropy. No gradient flows through the target.
    """
    soft_value = next_q.min(dim=0).values - alpha * next_log_prob
    return (rewards + gamma * (1.0 - terminals.to(rewards.dtype)) * soft_value).detach()


def td_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per critic mean squared TD error, summed over critics (each critic has its own loss; one optimiser)."""
    return (q_data - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


def cql_penalty(
    q_data: torch.Tensor, q_ood: torch.Tensor, log_density: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The CQL(H) gap per critic, shape (E,): ``T * mean_s logsumexp_k((Q(s, a_k) - log mu(a_k|s)) / T) - mean Q_data``.

    ``q_ood`` (E, B, K) are the critics at K sampled actions per state, ``log_density`` (B, K) the log-density
    each action was drawn from (``log 0.5^da`` for uniform actions on [-1, 1]^da, ``log pi`` for the policy's):
    dividing by it makes the log-sum-exp an importance-sampled estimate of ``log integral exp Q(s, a) da``.
    ``q_data`` (E, B) is the critic at the dataset's actions (at the augmented states, in KFC). The critic's
    loss adds ``weight * gap`` summed over critics (docs/paper.md, 'The offline RL base'); this is the one place
    the penalty is computed, in the fast agent and in the reference one (:mod:`kfc_lite.rl.reference`).
    """
    lse = torch.logsumexp((q_ood - log_density.unsqueeze(0)) / temperature, dim=-1) * temperature
    return lse.mean(dim=1) - q_data.mean(dim=1)


def lagrange_loss(
    log_alpha_prime: torch.Tensor, gap: torch.Tensor, cql_weight: float, threshold: float, max_value: float = 1e6
) -> torch.Tensor:
    """``-alpha' (cql_weight * gap - threshold)``, averaged over critics; ``gap`` (E,) is detached.

    Minimising it raises alpha' while the weighted gap exceeds the threshold and lowers it otherwise, so the
    penalty tightens until the data's Q-values stand about ``threshold / cql_weight`` above the log-sum-exp.
    """
    alpha_prime = log_alpha_prime.exp().clamp(0.0, max_value)
    return -(alpha_prime * (cql_weight * gap.detach() - threshold)).mean()


def actor_loss(log_prob: torch.Tensor, q_pi: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """SAC's policy loss ``mean(alpha log pi(a|s) - min_j Q_j(s, a))``, ``a ~ pi(.|s)`` reparameterised.

    ``q_pi`` (E, B): the critics at the policy's actions."""
    return (alpha * log_prob - q_pi.min(dim=0).values).mean()


def bc_actor_loss(log_prob: torch.Tensor, data_log_prob: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """The warm-up's behaviour cloning: ``mean(alpha log pi(a~|s) - log pi(a_data|s))``."""
    return (alpha * log_prob - data_log_prob).mean()


def alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``-mean(log alpha * (log pi + target_entropy))``: raises alpha while the entropy is below its target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, all tensors in one fused call."""
    t = list(target.parameters())
    torch._foreach_lerp_(t, list(source.parameters()), tau)
