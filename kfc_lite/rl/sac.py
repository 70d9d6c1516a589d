"""SAC + CQL(H), with the state augmentation of S4RL, KFC and KFC++ routed as in the authors' code.

This module is the agent, whose ``update(batch, augmented)`` is one gradient step. Its losses are small named
functions in :mod:`kfc_lite.rl.losses` (``td_target``, ``cql_penalty``, ...; re-exported here), and its settings,
:class:`SACConfig` and :data:`PRESETS`, are in :mod:`kfc_lite.rl.config`. References:
docs/paper.md, 'The offline RL base' (the authors' ``KFC_prime.py``) and 'Where augmented states go'. The same step
written plainly, without the speed-ups below, is :mod:`kfc_lite.rl.reference`.

One update, in the authors' order:

1. the caller augments the batch, ``augmented = augmenter(batch)``, and passes both: ``s~, s~'`` (only the
   critic's TD term and the CQL data term see them);
2. critic: TD regression of ``Q_j(s~, a)`` onto ``r + gamma (1 - d) [min_j Qbar_j(s~', a') - alpha log pi(a'|s')]``
   with ``a' ~ pi(.|s')`` at the *clean* ``s'``; plus the CQL penalty, a log-sum-exp over random, current-policy
   and next-policy actions at the *clean* ``s`` minus ``Q(s~, a)``, weighted by a Lagrange multiplier;
3. the Lagrange multiplier ``alpha'`` (its loss drives the penalty's gap towards the threshold);
4. the temperature ``alpha`` (when auto-tuned), then the actor (``alpha log pi - min_j Q``, or behaviour
   cloning during the warm-up), both on *clean* states, the actor against the just-updated critic;
5. Polyak update of the target critics.

Speed: the actor's distribution at ``s`` is computed once and serves the penalty's samples (detached) and the
actor's loss (reparameterised); the actor at ``s'`` runs without a graph; the dataset action and the 30
sampled actions of each state go through the critic ensemble in one call; the critic's weights are frozen
while the actor's loss is differentiated, so no gradient is computed to be thrown away. ``precision="bf16"``
runs forward passes under ``torch.autocast`` (bf16 compute, fp32 weights, Adam states and losses);
``compile=True`` wraps the networks in ``torch.compile``.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from kfc_lite.rl._fused import adam_options
from kfc_lite.rl.batch import augmented_states, check_batch
from kfc_lite.rl.config import PRESETS, SACConfig
from kfc_lite.rl.losses import (
    actor_loss,
    alpha_loss,
    bc_actor_loss,
    cql_penalty,
    lagrange_loss,
    polyak_update,
    td_loss,
    td_target,
)
from kfc_lite.rl.networks import CriticEnsemble, TanhGaussianActor, observation_batch

__all__ = [
    "SACConfig",
    "PRESETS",
    "SACCQL",
    "td_target",
    "td_loss",
    "cql_penalty",
    "lagrange_loss",
    "actor_loss",
    "bc_actor_loss",
    "alpha_loss",
    "polyak_update",
]


@dataclasses.dataclass
class _PolicySamples:
    """The actor in one update: its Gaussian at the clean ``s`` (with a graph) and, at ``s`` and ``s'``, actions
    with their log-densities, (B, 1 + M, da) and (B, 1 + M)."""

    mean: torch.Tensor
    log_std: torch.Tensor
    pi_s: torch.Tensor
    logp_s: torch.Tensor
    pi_n: torch.Tensor
    logp_n: torch.Tensor


@dataclasses.dataclass
class _CriticLosses:
    """The critic's loss in one update and what the diagnostics show of it: ``total = td + cql``; ``q_data`` (E, B)
    and the TD ``target`` (B,); with CQL, the penalty's ``gap`` per critic (E,) and the sampled actions' ``q_ood``
    (E, B, 3M), None without it."""

    total: torch.Tensor
    td: torch.Tensor
    cql: torch.Tensor
    q_data: torch.Tensor
    target: torch.Tensor
    gap: torch.Tensor | None = None
    q_ood: torch.Tensor | None = None


class SACCQL:
    """SAC + CQL with optional state augmentation: ``update(batch, augmented) -> dict``, ``act(obs)``, ``state_dict()``.

    Parameters
    ----------
    state_dim, action_dim : dimensions of the task (actions in [-1, 1]).
    config : :class:`SACConfig` (the KFC code's settings when None).
    device : ``"cpu"``, ``"cuda"``, ``"auto"``... (``kfc_lite.settings.resolve_device``).

    A batch is a dict of tensors on ``device``: ``observations`` (B, ds), ``actions`` (B, da), ``rewards`` (B,),
    ``next_observations`` (B, ds), ``terminals`` (B,) bool or float (true terminations only). A batch from
    :class:`~kfc_lite.rl.replay.TransitionSampler` also holds ``indices`` (its rows in the dataset, which only the
    Koopman augmenter reads); the agent ignores it.
    """

    def __init__(self, state_dim: int, action_dim: int, config: SACConfig | None = None, device="cpu"):
        from kfc_lite.settings import resolve_device

        config = SACConfig() if config is None else config
        if not isinstance(config, SACConfig):
            raise TypeError(f"config must be a SACConfig, got {type(config).__name__}")
        self.device = resolve_device(device)
        self.config = config = config.for_device(self.device)  # the precision and compile it runs with
        self.state_dim, self.action_dim = state_dim, action_dim
        self.actor = TanhGaussianActor(state_dim, action_dim, config.hidden).to(self.device)
        self.critic = CriticEnsemble(state_dim, action_dim, config.hidden, config.n_critics).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=config.policy_lr, **adam_options(self.device)
        )
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.q_lr, **adam_options(self.device))
        self.log_alpha = torch.tensor(
            math.log(config.alpha) if config.alpha > 0 else -math.inf,
            device=self.device,
            requires_grad=config.auto_alpha,
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr) if config.auto_alpha else None
        self.target_entropy = float(-action_dim if config.target_entropy is None else config.target_entropy)
        self.log_alpha_prime = torch.zeros((), device=self.device, requires_grad=config.lagrange and config.use_cql)
        self.alpha_prime_optimizer = (
            torch.optim.Adam([self.log_alpha_prime], lr=config.alpha_prime_lr)
            if config.lagrange and config.use_cql
            else None
        )
        self.step = 0  # gradient updates done
        self._actor_fn, self._critic_fn, self._target_fn = self.actor, self.critic, self.critic_target
        if config.compile:
            self._actor_fn = torch.compile(self.actor)
            self._critic_fn = torch.compile(self.critic)
            self._target_fn = torch.compile(self.critic_target)

    def __repr__(self) -> str:
        return (
            f"SACCQL(state_dim={self.state_dim}, action_dim={self.action_dim}, device={self.device}, step={self.step})"
        )

    # -- helpers -----------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def cql_weight(self) -> float:
        """The penalty's current weight: ``alpha' * cql_weight`` (Lagrangian) or ``cql_weight``; 0 without CQL."""
        if not self.config.use_cql:
            return 0.0
        if self.config.lagrange:
            return (
                float(self.log_alpha_prime.detach().exp().clamp(0.0, self.config.alpha_prime_max))
                * self.config.cql_weight
            )
        return float(self.config.cql_weight)

    # -- one gradient step -------------------------------------------------------------------------------
    def update(self, batch: dict, augmented: dict | None = None, metrics: bool = True) -> dict:
        """One gradient step on ``batch``; returns the step's losses and diagnostics as floats.

        ``augmented`` is what an augmenter made of this batch (``augmenter(batch)``, :mod:`kfc_lite.rl.augment`):
        its ``observations`` and ``next_observations`` are the ``s~`` and ``s~'`` of the critic's TD term and of
        the CQL data term; everything else comes from ``batch``. ``None`` (plain CQL) uses the batch's own states.
        ``metrics=False`` skips building the dict (and the device synchronisation it needs) and returns {}.

        The steps are those of the module's docstring, in the authors' order, one method each.
        """
        cfg = self.config
        check_batch(batch, self.state_dim, self.action_dim, self.device)
        s_aug, s_next_aug = augmented_states(batch, augmented)  # 1 (the caller's augmentation, checked)
        bc_phase = not cfg.online and self.step < cfg.bc_steps
        alpha = self.log_alpha.detach().exp()

        policy = self._sample_policy(batch["observations"], batch["next_observations"])
        critic = self._critic_losses(batch, s_aug, s_next_aug, policy, alpha)  # 2
        self._descend(self.critic_optimizer, critic.total)
        loss_lagrange = self._lagrange_step(critic.gap)  # 3
        alpha, loss_alpha = self._temperature_step(policy.logp_s[:, 0], alpha)  # 4
        loss_actor, q_pi = self._actor_loss(batch, policy, alpha, bc_phase)
        self._descend(self.actor_optimizer, loss_actor)
        polyak_update(self.critic_target, self.critic, cfg.tau)  # 5
        self.step += 1
        if not metrics:
            return {}
        losses = {"actor_loss": loss_actor, "alpha_loss": loss_alpha, "lagrange_loss": loss_lagrange}
        return self._metrics(critic, losses, policy, q_pi, alpha, bc_phase)

    @staticmethod
    def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _sample_policy(self, s: torch.Tensor, s_next: torch.Tensor) -> _PolicySamples:
        """The actor's distribution at the clean ``s`` (with a graph, for the actor's loss) and at the clean ``s'``
        (without), and its actions there: per state the first serves the actor's loss (at ``s``) or the TD target
        (at ``s'``), the ``M`` others the CQL penalty."""
        n = 1 + (self.config.cql_n_actions if self.config.use_cql else 0)
        with self._autocast():
            mean, log_std = self._actor_fn(s)
            pi_s, logp_s = TanhGaussianActor.sample_from(mean.float(), log_std.float(), n=n)  # (B, n, da)
            with torch.no_grad():
                mean_n, log_std_n = self._actor_fn(s_next)
                pi_n, logp_n = TanhGaussianActor.sample_from(mean_n.float(), log_std_n.float(), n=n)
        return _PolicySamples(mean, log_std, pi_s, logp_s, pi_n, logp_n)

    def _critic_losses(
        self, batch: dict, s_aug: torch.Tensor, s_next_aug: torch.Tensor, policy: _PolicySamples, alpha: torch.Tensor
    ) -> _CriticLosses:
        """The critic's TD loss (at the augmented states) and weighted CQL penalty (its sampled actions at the
        clean ``s``)."""
        cfg = self.config
        s, a, r = batch["observations"], batch["actions"], batch["rewards"].float()
        done = batch["terminals"].float()
        B, da, M = s.shape[0], self.action_dim, cfg.cql_n_actions
        with self._autocast():
            with torch.no_grad():  # next action from the clean s', target critic at the augmented s~'
                next_q = self._target_fn(s_next_aug, policy.pi_n[:, 0]).float()
                target = td_target(
                    r, done, next_q, policy.logp_n[:, 0], cfg.gamma, alpha if cfg.backup_entropy else 0.0
                )
            if not cfg.use_cql:
                q_data = self._critic_fn(s_aug, a).float()  # (E, B)
                loss_td = td_loss(q_data, target)
                return _CriticLosses(loss_td, loss_td, torch.zeros((), device=s.device), q_data, target)
            # TD term at the augmented s~ and the dataset's action; CQL's 3M sampled actions at the clean s; all
            # 1 + 3M rows per state in one call (one product per layer and critic, not two)
            random_a = torch.rand(B, M, da, device=s.device) * 2.0 - 1.0
            ood_a = torch.cat([random_a, policy.pi_s[:, 1:].detach(), policy.pi_n[:, 1:]], dim=1)  # (B, 3M, da)
            log_density = torch.cat(
                [
                    torch.full((B, M), da * math.log(0.5), device=s.device),
                    policy.logp_s[:, 1:].detach(),
                    policy.logp_n[:, 1:],
                ],
                dim=1,
            )
            states = torch.cat([s_aug.unsqueeze(1), s.unsqueeze(1).expand(-1, 3 * M, -1)], dim=1)
            q_all = self._critic_fn(states, torch.cat([a.unsqueeze(1), ood_a], dim=1)).float()  # (E, B, 1 + 3M)
            q_data, q_ood = q_all[..., 0], q_all[..., 1:]  # (E, B), (E, B, 3M)
            loss_td = td_loss(q_data, target)
            gap = cql_penalty(q_data, q_ood, log_density, cfg.cql_temperature)  # (E,)
            if cfg.lagrange:
                alpha_prime = self.log_alpha_prime.detach().exp().clamp(0.0, cfg.alpha_prime_max)
            else:
                alpha_prime = torch.ones((), device=s.device)
            loss_cql = (alpha_prime * cfg.cql_weight * gap).sum()
        return _CriticLosses(loss_td + loss_cql, loss_td, loss_cql, q_data, target, gap, q_ood)

    def _lagrange_step(self, gap: torch.Tensor | None) -> torch.Tensor:
        """One step of the Lagrange multiplier ``alpha'`` on the penalty's ``gap`` (its loss; 0 without one)."""
        cfg = self.config
        if not (cfg.use_cql and cfg.lagrange):
            return torch.zeros((), device=self.device)
        loss = lagrange_loss(self.log_alpha_prime, gap, cfg.cql_weight, cfg.lagrange_threshold, cfg.alpha_prime_max)
        self._descend(self.alpha_prime_optimizer, loss)
        return loss

    def _temperature_step(self, logp_pi: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the temperature when it is auto-tuned, before the actor's loss as in the authors' code:
        the temperature the actor's loss uses and the temperature's loss (0 when fixed)."""
        if not self.config.auto_alpha:
            return alpha, torch.zeros((), device=self.device)
        loss = alpha_loss(self.log_alpha, logp_pi, self.target_entropy)
        self._descend(self.alpha_optimizer, loss)
        return self.log_alpha.detach().exp(), loss

    def _actor_loss(
        self, batch: dict, policy: _PolicySamples, alpha: torch.Tensor, bc_phase: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The actor's loss on clean states, against the just-updated critic (behaviour cloning during the
        warm-up), and ``Q(s, pi(s))`` (None during the warm-up)."""
        s, a_pi, logp_pi = batch["observations"], policy.pi_s[:, 0], policy.logp_s[:, 0]
        with self._autocast():
            if bc_phase:
                data_logp = TanhGaussianActor.log_prob_from(
                    policy.mean.float(), policy.log_std.float(), batch["actions"]
                )
                return bc_actor_loss(logp_pi, data_logp, alpha), None
            self.critic.requires_grad_(False)  # gradients reach the actions, not the critic's weights
            try:
                q_pi = self._critic_fn(s, a_pi).float()
            finally:
                self.critic.requires_grad_(True)
            return actor_loss(logp_pi, q_pi, alpha), q_pi

    def _metrics(
        self,
        critic: _CriticLosses,
        losses: dict,
        policy: _PolicySamples,
        q_pi: torch.Tensor | None,
        alpha: torch.Tensor,
        bc_phase: bool,
    ) -> dict:
        """The step's losses and diagnostics as floats, read from the device in one synchronisation."""
        values = {
            "critic_loss": critic.total,
            "td_loss": critic.td,
            "cql_penalty": critic.cql,
            **losses,
            "q_data": critic.q_data.mean(),
            "target": critic.target.mean(),
            "log_prob": policy.logp_s[:, 0].mean(),
        }
        if critic.gap is not None:
            M, q_ood = self.config.cql_n_actions, critic.q_ood.detach()
            values["cql_gap"] = critic.gap.mean()
            values["q_random"] = q_ood[..., :M].mean()
            values["q_policy"] = q_ood[..., M : 2 * M].mean()
            values["q_next_policy"] = q_ood[..., 2 * M :].mean()
        if q_pi is not None:
            values["q_pi"] = q_pi.mean()
        floats = torch.stack([v.detach().float() for v in values.values()]).tolist()  # one device synchronisation
        out = dict(zip(values, floats, strict=True))
        out.update(step=self.step, alpha=float(alpha), cql_weight=self.cql_weight(), bc_phase=float(bc_phase))
        return out

    # -- acting ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """Action(s) for one observation (ds,) or a batch (N, ds), as a NumPy array of the same rank."""
        x, single = observation_batch(obs, self.state_dim, self.device)
        a = self.actor.deterministic(x) if deterministic else self.actor.sample(x)[0]
        a = a.cpu().numpy()
        return a[0] if single else a

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything an exact resume needs: networks, targets, optimisers, temperature, Lagrange multiplier, step."""
        return {
            "config": self.config.to_dict(),
            "dims": (self.state_dim, self.action_dim),
            "step": self.step,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_optimizer": self.alpha_optimizer.state_dict() if self.alpha_optimizer else None,
            "log_alpha_prime": self.log_alpha_prime.detach().clone(),
            "alpha_prime_optimizer": self.alpha_prime_optimizer.state_dict() if self.alpha_prime_optimizer else None,
        }

    def load_state_dict(self, state: dict) -> None:
        dims = tuple(state.get("dims", ()))
        if dims != (self.state_dim, self.action_dim):
            raise ValueError(
                f"this state is for state_dim, action_dim = {dims}, the agent has {(self.state_dim, self.action_dim)}"
            )
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        # an optimiser's state carries its implementation flags: use this machine's, not the saving machine's
        flags = adam_options(self.device)
        for opt in (self.actor_optimizer, self.critic_optimizer):
            for group in opt.param_groups:
                group["fused"] = flags.get("fused")
                if group["fused"]:
                    group["foreach"] = None
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        for name in ("alpha_optimizer", "alpha_prime_optimizer"):
            opt = getattr(self, name)
            if (opt is None) != (state.get(name) is None):
                raise ValueError(f"the state's {name} does not fit this agent's config (auto_alpha / lagrange differ)")
            if opt is not None:
                opt.load_state_dict(state[name])
        self.step = int(state["step"])
