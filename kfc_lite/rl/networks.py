"""Networks for SAC+CQL: a vectorised critic ensemble and a tanh-Gaussian actor.

Initialisation follows the authors' ``model.py`` (itself from pranz24's SAC): Xavier-uniform weights (gain 1)
and zero biases, ReLU hidden layers, log-std clamped to [-20, 2] (docs/paper.md, 'The offline RL base').

The critic ensemble keeps the weights of all critics stacked, shape ``(E, in, out)``, and evaluates many
actions per state in one call (the CQL penalty asks for 30 actions per state). Each critic runs as plain
matrix products, one critic after the other (``torch.addmm`` and an in-place ReLU). On a CPU the same numbers
come from a private speed path (:mod:`kfc_lite.rl._fused`: oneDNN layers with the bias and ReLU fused in, and
a hand-written backward); on a GPU ``torch.compile`` (``SACConfig.compile``) fuses the loop. The plain step,
without any of this, is :mod:`kfc_lite.rl.reference`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kfc_lite.rl import _fused
from kfc_lite.validators import integer, widths

__all__ = ["CriticEnsemble", "TanhGaussianActor", "LOG_STD_MIN", "LOG_STD_MAX", "tanh_log_det", "observation_batch"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def xavier_init_(layer: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights with gain 1 and zero bias, as the authors' ``weights_init_``."""
    nn.init.xavier_uniform_(layer.weight, gain=1.0)
    nn.init.zeros_(layer.bias)
    return layer


class CriticEnsemble(nn.Module):
    """``n_critics`` Q-networks ``Q_j(s, a)``, each an MLP on ``[s, a]``, evaluated together.

    Call shapes (E = ``n_critics``):

    * ``critic(states (B, ds), actions (B, da)) -> (E, B)``
    * ``critic(states (B, ds), actions (B, M, da)) -> (E, B, M)``: M actions per state, one call
    * ``critic(states (B, M, ds), actions (B, M, da)) -> (E, B, M)``

    The first layer's weights are kept as a state block and an action block, ``W1 = [W_s; W_a]`` (the layout
    of the checkpoints), and joined for the product on ``[s, a]``: running the state block once per state and
    broadcasting it over the M actions would save a small product but cost extra passes over the (B*M, width)
    activation. The layers are applied per critic on the slices ``weights[i][j]``.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden=(256, 256), n_critics: int = 2):
        super().__init__()
        self.state_dim, self.action_dim = integer("state_dim", state_dim, 1), integer("action_dim", action_dim, 1)
        self.hidden = widths("hidden", hidden)
        self.n_critics = integer("n_critics", n_critics, 1)
        E, h0 = self.n_critics, self.hidden[0]
        self.w_state = nn.Parameter(torch.empty(E, state_dim, h0))
        self.w_action = nn.Parameter(torch.empty(E, action_dim, h0))
        self.b_in = nn.Parameter(torch.zeros(E, 1, h0))
        dims = (*self.hidden, 1)
        shapes = zip(dims[:-1], dims[1:], strict=True)
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(E, a, b)) for a, b in shapes])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(E, 1, b)) for b in dims[1:]])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform per critic (fans of one critic's layer, not of the stack) and zero biases."""
        fan_in = self.state_dim + self.action_dim
        bound = math.sqrt(6.0 / (fan_in + self.hidden[0]))  # the first layer is one (ds+da) x h0 matrix
        self.w_state.uniform_(-bound, bound)
        self.w_action.uniform_(-bound, bound)
        for w in self.weights:
            b = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
            w.uniform_(-b, b)
        for b in (self.b_in, *self.biases):
            b.zero_()

    def extra_repr(self) -> str:
        dims = f"state_dim={self.state_dim}, action_dim={self.action_dim}"
        return f"{dims}, hidden={self.hidden}, n_critics={self.n_critics}"

    def _check(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        if states.shape[-1] != self.state_dim or actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"the critic takes states (..., {self.state_dim}) and actions (..., {self.action_dim}), "
                f"got {tuple(states.shape)} and {tuple(actions.shape)}"
            )
        ok = (states.ndim == 2 and actions.ndim in (2, 3)) or (states.ndim == 3 and actions.ndim == 3)
        if not ok or states.shape[0] != actions.shape[0] or (states.ndim == 3 and states.shape[1] != actions.shape[1]):
            raise ValueError(
                "the critic takes states (B, ds) with actions (B, da) or (B, M, da), or states (B, M, ds) "
                f"with actions (B, M, da); got states {tuple(states.shape)} and actions {tuple(actions.shape)}"
            )

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self._check(states, actions)
        E = self.n_critics
        out_shape = (E, *actions.shape[:-1])
        if states.ndim == 2 and actions.ndim == 3:  # M actions per state: repeat the (narrow) state rows
            states = states.unsqueeze(1).expand(-1, actions.shape[1], -1)
        actions = actions.to(states.dtype)
        dtype = (_fused.cpu_autocast_dtype() if states.device.type == "cpu" else None) or states.dtype
        if _fused.serves(states, dtype):  # the CPU speed path: the same numbers, fewer memory passes
            return _fused.critic_forward(self, states, actions, dtype).view(out_shape)
        x = torch.cat([states, actions], dim=-1).reshape(-1, self.state_dim + self.action_dim)
        w_in = torch.cat([self.w_state, self.w_action], dim=1)  # (E, ds + da, h0): the first layer on [s, a]
        ws, bs = [w_in, *self.weights], [self.b_in, *self.biases]
        qs = []
        for j in range(E):
            # Biases are cast to the activations' dtype: under bf16 autocast an fp32 bias would promote the
            # whole (N, width) activation to fp32 and the next product would cast it back (two full copies).
            h = x
            for i, (w, b) in enumerate(zip(ws, bs, strict=False)):
                h = torch.addmm(b[j].to(h.dtype), h, w[j])
                if i < len(ws) - 1:
                    h = F.relu_(h)  # in place on a fresh (non-view) tensor: ReLU's backward needs only its output
            qs.append(h)
        return torch.stack(qs).view(out_shape)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(x)^2)`` computed stably as ``2 (log 2 - x - softplus(-2x))``.

    The authors' code uses ``log(1 - tanh(x)^2 + 1e-6)``; the two agree to ~1e-6 except where
    ``|tanh(x)|`` is within ~1e-6 of 1, where the stable form keeps the true (very negative) value.
    """
    return 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))


class TanhGaussianActor(nn.Module):
    """The SAC policy: ``a = tanh(u)``, ``u ~ N(mean(s), exp(log_std(s))^2)``, actions in (-1, 1).

    A 2-layer ReLU trunk and two linear heads (mean, log-std), log-std clamped to [-20, 2], as the authors'
    ``GaussianPolicy``. D4RL MuJoCo actions lie in [-1, 1], so no action rescaling is applied.

    * ``forward(s) -> (mean, log_std)``: the distribution's parameters (compute once, sample many times);
    * ``sample(s, n=None) -> (action, log_prob)``: reparameterised draw (gradients flow), tanh-corrected
      log-density; ``n`` draws per state give ``(B, n, da)`` and ``(B, n)``;
    * ``log_prob(s, a)``: the density of given actions (BC warm-up), ``a`` clipped to ``|a| <= 1 - 1e-6``
      before ``atanh`` because the tanh-Gaussian puts no mass on the boundary (the authors' ``atanh`` too);
    * ``deterministic(s) = tanh(mean)``: the evaluation action.
    """

    #: actions are clipped to this distance from +-1 before atanh in :meth:`log_prob`
    ATANH_EPS = 1e-6

    def __init__(self, state_dim: int, action_dim: int, hidden=(256, 256)):
        super().__init__()
        self.state_dim, self.action_dim = integer("state_dim", state_dim, 1), integer("action_dim", action_dim, 1)
        self.hidden = widths("hidden", hidden)
        dims = (state_dim, *self.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=False):
            layers += [xavier_init_(nn.Linear(a, b)), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.mean_head = xavier_init_(nn.Linear(self.hidden[-1], action_dim))
        self.log_std_head = xavier_init_(nn.Linear(self.hidden[-1], action_dim))

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, hidden={self.hidden}"

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if states.shape[-1] != self.state_dim:
            raise ValueError(f"the actor takes states (..., {self.state_dim}), got {tuple(states.shape)}")
        h = self.trunk(states)
        log_std = self.log_std_head(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return self.mean_head(h), log_std

    @staticmethod
    def sample_from(
        mean: torch.Tensor, log_std: torch.Tensor, n: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw from given parameters: ``(B, da)``/``(B,)``, or ``(B, n, da)``/``(B, n)`` with ``n`` draws each."""
        if n is not None:
            mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)
            noise = torch.randn((*mean.shape[:-2], n, mean.shape[-1]), device=mean.device, dtype=mean.dtype)
        else:
            noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise  # rsample: gradients reach mean and log_std
        # log N(u; mean, std) with (u - mean)/std = noise, minus the tanh Jacobian
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)) - tanh_log_det(u)
        return torch.tanh(u), log_prob.sum(-1)

    def sample(self, states: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self(states)
        return self.sample_from(mean, log_std, n)

    @classmethod
    def log_prob_from(cls, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        a = actions.clamp(-1.0 + cls.ATANH_EPS, 1.0 - cls.ATANH_EPS)
        u = torch.atanh(a)
        z = (u - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)) - tanh_log_det(u)
        return log_prob.sum(-1)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(states)
        return self.log_prob_from(mean, log_std, actions)

    def deterministic(self, states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(states)[0])


def observation_batch(obs, state_dim: int, device) -> tuple[torch.Tensor, bool]:
    """One observation (ds,) or a batch (N, ds) as a float32 (N, ds) tensor on ``device``, and whether it was one.

    Acting code (the agent, a saved policy) takes NumPy in and gives NumPy back with the caller's rank.
    """
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
    single = x.ndim == 1
    if single:
        x = x.unsqueeze(0)
    if x.ndim != 2 or x.shape[1] != state_dim:
        raise ValueError(
            f"this policy takes observations of shape ({state_dim},) or (N, {state_dim}), "
            f"got {tuple(np.shape(obs))}: was it trained on another task?"
        )
    return x, single
