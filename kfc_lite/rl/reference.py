"""SAC + CQL(H) written plainly, to read first: the step of :class:`kfc_lite.rl.sac.SACCQL` without its speed-ups.

Everything of one gradient step is in :meth:`ReferenceSACCQL.update`, top to bottom, in the authors' order
(docs/paper.md, 'The offline RL base' and 'Where augmented states go'):

1. the TD target ``r + gamma (1 - d) (min_j Qbar_j(s~', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')`` at the
   clean ``s'``, the target critics at the augmented ``s~'``;
2. the critics: squared TD error at the augmented ``s~`` plus the CQL penalty
   (:func:`kfc_lite.rl.losses.cql_penalty`, the same function the fast agent calls), whose log-sum-exp runs over
   uniform, current-policy and next-policy actions at the clean ``s``;
3. the Lagrange multiplier ``alpha'`` of the penalty, then the temperature ``alpha`` (when tuned);
4. the actor on clean states, against the just-updated critics (behaviour cloning during the warm-up);
5. the target critics move towards the critics (Polyak averaging).

Each critic is an ordinary ``nn.Sequential``, each loss a line. It draws its random numbers in the order the fast
agent does (policy noise at ``s``, at ``s'``, then the uniform actions), so from the same weights, batch and seed
both reach the same parameters (tests/test_reference.py): the fast agent is tested against this one.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from kfc_lite.rl.config import SACConfig
from kfc_lite.rl.losses import cql_penalty

__all__ = ["ReferenceSACCQL"]


def hidden_layers(in_dim: int, hidden: tuple) -> list[nn.Module]:
    """``Linear -> ReLU`` for each width in ``hidden``."""
    dims = (in_dim, *hidden)
    return [layer for a, b in zip(dims[:-1], dims[1:], strict=True) for layer in (nn.Linear(a, b), nn.ReLU())]


def mlp(in_dim: int, hidden: tuple, out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear``."""
    return nn.Sequential(*hidden_layers(in_dim, hidden), nn.Linear(hidden[-1], out_dim))


def tanh_gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``log N(u; mean, std) - log(1 - tanh(u)^2)`` summed over action dimensions: the density of ``a = tanh(u)``.
    ``log(1 - tanh(u)^2)`` is written as ``2 (log 2 - u - softplus(-2u))``, which does not round to ``log 0``."""
    log_det = 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))
    return (torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - log_det).sum(-1)


class Actor(nn.Module):
    """The tanh-Gaussian policy: ``a = tanh(mean(s) + std(s) * noise)``, log-std clamped to [-20, 2]."""

    def __init__(self, state_dim: int, action_dim: int, hidden: tuple):
        super().__init__()
        self.trunk = nn.Sequential(*hidden_layers(state_dim, hidden))
        self.mean_head = nn.Linear(hidden[-1], action_dim)
        self.log_std_head = nn.Linear(hidden[-1], action_dim)

    def forward(self, s: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and their log-densities for given standard-normal ``noise`` (B, n, da): (B, n, da), (B, n)."""
        h = self.trunk(s)
        mean = self.mean_head(h).unsqueeze(1)
        log_std = self.log_std_head(h).clamp(-20.0, 2.0).unsqueeze(1)
        u = mean + log_std.exp() * noise
        return torch.tanh(u), tanh_gaussian_log_prob(mean, log_std, u)

    def log_prob_of(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The density of the dataset's actions (behaviour cloning), ``a`` kept off the boundary for ``atanh``."""
        h = self.trunk(s)
        mean, log_std = self.mean_head(h), self.log_std_head(h).clamp(-20.0, 2.0)
        return tanh_gaussian_log_prob(mean, log_std, torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6)))


class ReferenceSACCQL:
    """SAC + CQL as plainly as it can be written: ``update(batch, augmented=None) -> dict`` of the step's losses.

    The networks have the fast agent's shapes and initialisation is left to PyTorch; :meth:`from_agent` copies a
    :class:`~kfc_lite.rl.sac.SACCQL`'s weights and state, so both can take the same step. Float32, on ``device``
    (batches from another device are copied to it).
    """

    def __init__(self, state_dim: int, action_dim: int, config: SACConfig | None = None, device="cpu"):
        cfg = self.config = SACConfig() if config is None else config
        self.action_dim, self.device = action_dim, torch.device(device)
        self.actor = Actor(state_dim, action_dim, cfg.hidden).to(self.device)
        critics = [mlp(state_dim + action_dim, cfg.hidden, 1) for _ in range(cfg.n_critics)]
        self.critics = nn.ModuleList(critics).to(self.device)
        self.targets = copy.deepcopy(self.critics)  # the target critics start as the critics
        log_alpha = math.log(cfg.alpha) if cfg.alpha > 0 else -math.inf
        self.log_alpha = torch.tensor(log_alpha, device=self.device, requires_grad=True)
        self.log_alpha_prime = torch.tensor(0.0, device=self.device, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.q_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.alpha_prime_opt = torch.optim.Adam([self.log_alpha_prime], lr=cfg.alpha_prime_lr)
        self.target_entropy = -action_dim if cfg.target_entropy is None else cfg.target_entropy
        self.step = 0

    def q(self, critics: nn.ModuleList, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Every critic at ``(s, a)``: (E, ...) for states and actions of matching leading shape."""
        return torch.stack([critic(torch.cat([s, a], -1)).squeeze(-1) for critic in critics])

    def update(self, batch: dict, augmented: dict | None = None) -> dict:
        cfg, M, da = self.config, self.config.cql_n_actions, self.action_dim
        batch = {k: v.to(self.device) for k, v in batch.items()}
        augmented = None if augmented is None else {k: v.to(self.device) for k, v in augmented.items()}
        s, a, r = batch["observations"], batch["actions"], batch["rewards"]
        s_next, done = batch["next_observations"], batch["terminals"].float()
        s_aug, s_next_aug = (
            (s, s_next) if augmented is None else (augmented["observations"], augmented["next_observations"])
        )
        B, n = s.shape[0], 1 + M if cfg.use_cql else 1  # one action for the losses, M more for the penalty
        noise_s, noise_next = torch.randn(B, n, da, device=s.device), torch.randn(B, n, da, device=s.device)
        alpha = self.log_alpha.detach().exp()

        # 1. TD target: a' ~ pi(.|s') at the clean s', the target critics at the augmented s~'
        with torch.no_grad():
            a_next, logp_next = self.actor(s_next, noise_next)
            q_next = self.q(self.targets, s_next_aug, a_next[:, 0]).min(0).values
            entropy = alpha * logp_next[:, 0] if cfg.backup_entropy else 0.0
            y = r + cfg.gamma * (1 - done) * (q_next - entropy)

        # 2. critics: TD error at (s~, a), and the CQL penalty
        q_data = self.q(self.critics, s_aug, a)  # (E, B)
        loss_td = ((q_data - y) ** 2).mean(1).sum()
        loss_cql = torch.zeros((), device=s.device)
        if cfg.use_cql:
            with torch.no_grad():
                a_pi, logp_pi = self.actor(s, noise_s)
                random_a = torch.rand(B, M, da, device=s.device) * 2 - 1
            actions = torch.cat([random_a, a_pi[:, 1:], a_next[:, 1:]], 1)  # (B, 3M, da)
            uniform_density = torch.full((B, M), da * math.log(0.5), device=s.device)  # log 0.5^da on [-1, 1]^da
            log_density = torch.cat([uniform_density, logp_pi[:, 1:], logp_next[:, 1:]], 1)
            q_ood = self.q(self.critics, s.unsqueeze(1).expand(-1, 3 * M, -1), actions)  # at the clean s
            gap = cql_penalty(q_data, q_ood, log_density, cfg.cql_temperature)  # (E,)
            weight = self.log_alpha_prime.detach().exp().clamp(0, cfg.alpha_prime_max) if cfg.lagrange else 1.0
            loss_cql = (weight * cfg.cql_weight * gap).sum()
        self.critic_opt.zero_grad()
        (loss_td + loss_cql).backward()
        self.critic_opt.step()

        # 3. the penalty's Lagrange multiplier, then the temperature
        if cfg.use_cql and cfg.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0, cfg.alpha_prime_max)
            loss_lagrange = -(alpha_prime * (cfg.cql_weight * gap.detach() - cfg.lagrange_threshold)).mean()
            self.alpha_prime_opt.zero_grad()
            loss_lagrange.backward()
            self.alpha_prime_opt.step()
        a_new, logp_new = self.actor(s, noise_s[:, :1])  # the actor's action at the clean s, with a graph
        a_new, logp_new = a_new[:, 0], logp_new[:, 0]
        if cfg.auto_alpha:
            loss_alpha = -(self.log_alpha * (logp_new.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad()
            loss_alpha.backward()
            self.alpha_opt.step()
            alpha = self.log_alpha.detach().exp()

        # 4. the actor, on clean states: behaviour cloning first, then SAC's loss against the updated critics
        if not cfg.online and self.step < cfg.bc_steps:
            loss_actor = (alpha * logp_new - self.actor.log_prob_of(s, a)).mean()
        else:
            loss_actor = (alpha * logp_new - self.q(self.critics, s, a_new).min(0).values).mean()
        self.actor_opt.zero_grad()
        loss_actor.backward()
        self.actor_opt.step()

        # 5. the target critics follow the critics
        with torch.no_grad():
            for target, critic in zip(self.targets.parameters(), self.critics.parameters(), strict=True):
                target.lerp_(critic, cfg.tau)
        self.step += 1
        return {
            name: float(loss.detach())
            for name, loss in (("td_loss", loss_td), ("cql_penalty", loss_cql), ("actor_loss", loss_actor))
        }

    @classmethod
    def from_agent(cls, agent) -> ReferenceSACCQL:
        """A reference agent holding a :class:`~kfc_lite.rl.sac.SACCQL`'s weights, temperature, multiplier and step
        (its optimisers start fresh: copy an agent before its first update to compare the two)."""
        ref = cls(agent.state_dim, agent.action_dim, agent.config, agent.device)
        ref.actor.load_state_dict(agent.actor.state_dict())
        for plain, ensemble in ((ref.critics, agent.critic), (ref.targets, agent.critic_target)):
            for j, critic in enumerate(plain):
                linears = [m for m in critic if isinstance(m, nn.Linear)]
                weights = [torch.cat([ensemble.w_state[j], ensemble.w_action[j]], 0), *(w[j] for w in ensemble.weights)]
                biases = [ensemble.b_in[j, 0], *(b[j, 0] for b in ensemble.biases)]
                with torch.no_grad():
                    for linear, w, b in zip(linears, weights, biases, strict=True):
                        linear.weight.copy_(w.T)
                        linear.bias.copy_(b)
        with torch.no_grad():
            ref.log_alpha.copy_(agent.log_alpha)
            ref.log_alpha_prime.copy_(agent.log_alpha_prime)
        ref.step = agent.step
        return ref
