"""Networks for SAC+CQL: an MLP, a vectorised critic ensemble and a tanh-Gaussian actor.

Initialisation follows the authors' ``model.py`` (itself from pranz24's SAC): Xavier-uniform weights (gain 1)
and zero biases, ReLU hidden layers, log-std clamped to [-20, 2] (docs/paper.md, 'The offline RL base').

The critic ensemble keeps the weights of all critics stacked, shape ``(E, in, out)``, and evaluates many
actions per state in one call (the CQL penalty asks for 30 actions per state). Each critic runs as plain
matrix products, one critic after the other: on the course's CPUs this measured 10-20% faster than one
batched product for all critics (``torch.baddbmm``), whose backward went through slower bmm kernels and
separate bias reductions. On the CPU each critic is one autograd function (:class:`_CriticMLP`): each hidden
layer one oneDNN product with the bias and the ReLU fused into it, and a backward written out by hand that
masks gradients in place and forms the width-1 head's input gradient elementwise; elsewhere (CUDA, or a torch
without oneDNN) the same function runs as ``torch.addmm`` + in-place ReLU, and ``torch.compile``
(``SACConfig.compile``) fuses the loop on a GPU. Where each of these
choices came from, measured: benchmarks/NOTES.md.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "CriticEnsemble", "TanhGaussianActor", "LOG_STD_MIN", "LOG_STD_MAX", "tanh_log_det", "observation_batch"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _check_hidden(hidden) -> tuple[int, ...]:
    hidden = tuple(hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty sequence of positive layer widths such as (256, 256), got {hidden!r}")
    return hidden


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def xavier_init_(layer: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights with gain 1 and zero bias, as the authors' ``weights_init_``."""
    nn.init.xavier_uniform_(layer.weight, gain=1.0)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """``Linear -> ReLU -> ... -> Linear``: ``in_dim`` to ``out_dim`` through ``hidden`` widths (no output activation)."""

    def __init__(self, in_dim: int, out_dim: int, hidden=(256, 256)):
        super().__init__()
        dims = (_check_dim("in_dim", in_dim), *_check_hidden(hidden), _check_dim("out_dim", out_dim))
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(xavier_init_(nn.Linear(a, b)))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _onednn_linear_pointwise():
    """oneDNN's fused ``linear + bias + activation`` CPU kernel and the dtypes it runs here, or ``(None, ())``.

    The kernel is a private operator (it serves ``torch.compile``'s CPU code), so it is probed once per dtype on
    a tiny product: a build without it, or one whose signature differs, gets the plain ``addmm`` path. Which
    dtypes it takes depends on the CPU, not only on the build: oneDNN has bf16 kernels only where the CPU has
    bf16 (or at least AVX-512) instructions, and on an AVX2-only CPU it refuses a bf16 product. A dtype the
    probe refuses goes through the plain path, which torch serves on every CPU.
    """
    if not torch.backends.mkldnn.is_available():
        return None, ()
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None:
        return None, ()
    dtypes = []
    x, w, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.5, 0.5])
    for dtype in (torch.float32, torch.bfloat16):
        try:
            out = op(x.to(dtype), w.to(dtype), b.to(dtype), "relu", [], "")
        except (RuntimeError, TypeError, NotImplementedError):
            continue
        if out.dtype == dtype and torch.equal(out.float(), torch.tensor([[1.5, 0.0]])):
            dtypes.append(dtype)
    return (op, tuple(dtypes)) if dtypes else (None, ())


def _cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype when CPU autocast is on, else None (torch >= 2.4 API, older names as fallback)."""
    try:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    except (TypeError, AttributeError):  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


_LINEAR_POINTWISE, _FUSED_DTYPES = _onednn_linear_pointwise()


class _CriticMLP(torch.autograd.Function):
    """One critic on the CPU, ``relu(... relu(x @ w0 + b0) ...) @ w_head + b_head``, with a hand-written backward.

    Forward: each hidden layer is one oneDNN product with the bias and the ReLU in its epilogue.
    ``torch.addmm(b, x, w).relu_()`` first writes the broadcast bias into the (N, width) output, then runs the
    product on top of it, then passes over the output again for the ReLU: two full memory passes that, at the
    critic's (7680, 256) activations, cost as much as a quarter of the product itself under bf16.

    Backward: the chain autograd would run (ReLU mask, then the weight, bias and input gradients of each
    layer), in one function, written to make as few passes over the (N, width) tensors as it can, since at
    the critic's (7936, 256) activations those passes, not the products, are what a bf16 step waits on:

    * every gradient buffer is one this backward made itself, so ReLU masks are applied in place
      (``threshold_backward`` into its own input) instead of into a new buffer;
    * the width-1 head's input gradient, the outer product ``grad w_head^T``, is never formed: the last hidden
      layer's masked gradient is kept as ``mask * grad`` (one pass, from ``grad`` broadcast) times the
      column scale ``w_head``, which that layer applies to its small results (weight and bias gradients,
      (width, width) and (1, width)) and to its weight before the input-gradient product. This saves the
      outer product's pass and the in-place mask's read-modify-write of it.

    One autograd node per critic instead of one per layer. Results equal the plain ``addmm`` + ReLU path to
    float round-off (tests/test_speed_correctness.py); measured effect in benchmarks/NOTES.md.

    ``params`` = ``w0, b0, w1, b1, ..., w_head, b_head``, each ``w`` (in, out) and ``b`` (1, out) or None (no
    bias: :class:`CriticEnsemble` folds the first layer's bias into its weight), all in ``x``'s dtype (the
    ensemble's layout, one critic's slices).
    """

    @staticmethod
    def forward(ctx, x, *params):
        ws, bs = params[0::2], params[1::2]
        hs = [x]
        for w, b in zip(ws[:-1], bs[:-1]):
            hs.append(_LINEAR_POINTWISE(hs[-1], w.t(), None if b is None else b.reshape(-1), "relu", [], ""))
        q = torch.addmm(bs[-1], hs[-1], ws[-1])
        ctx.save_for_backward(*hs, *params)
        ctx.depth = len(hs)
        return q

    @staticmethod
    @torch.autograd.function.once_differentiable  # (a second derivative through it is an error, never wrong)
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        hs, params = saved[:ctx.depth], saved[ctx.depth:]
        ws = params[0::2]
        need = ctx.needs_input_grad  # (x, w0, b0, w1, b1, ...)
        n = len(ws)
        grads: list = [None] * (1 + 2 * n)
        # the head (layer n - 1): its weight and bias gradients from the output gradient itself
        if need[2 * n - 1]:
            grads[2 * n - 1] = torch.mm(hs[n - 1].t(), grad)
        if need[2 * n]:
            grads[2 * n] = grad.sum(0, keepdim=True)
        if n == 1:  # no hidden layer: the head's input gradient is all there is (and x has no ReLU to undo)
            if need[0]:
                grads[0] = torch.mm(grad, ws[0].t())
            return tuple(grads)
        # g: the gradient at the pre-activation of the layer below, ReLU mask applied, times ``scale`` by column
        # where that is set. For the width-1 head the gradient at its input is the outer product grad * w_head^T;
        # it is kept factored: g = mask * grad (one pass, from the broadcast grad) and scale = w_head, which the
        # next layer folds into its small (in, out) results and weight instead of a pass over (N, width).
        if ws[-1].shape[1] == 1:
            scale = ws[-1][:, 0]
            g = torch.ops.aten.threshold_backward(grad.expand(-1, scale.shape[0]), hs[n - 1], 0)
        else:
            scale = None
            g = torch.mm(grad, ws[-1].t())
            torch.ops.aten.threshold_backward.grad_input(g, hs[n - 1], 0, grad_input=g)
        for i in reversed(range(n - 1)):
            if need[1 + 2 * i]:
                grads[1 + 2 * i] = torch.mm(hs[i].t(), g)
                if scale is not None:
                    grads[1 + 2 * i].mul_(scale)
            if need[2 + 2 * i]:
                grads[2 + 2 * i] = g.sum(0, keepdim=True)
                if scale is not None:
                    grads[2 + 2 * i].mul_(scale)
            if i == 0 and not need[0]:
                break
            g = torch.mm(g, (ws[i] if scale is None else ws[i] * scale).t())  # a fresh buffer: masked in place
            scale = None
            if i > 0:
                torch.ops.aten.threshold_backward.grad_input(g, hs[i], 0, grad_input=g)
        if need[0]:
            grads[0] = g
        return tuple(grads)


def _fused_ok(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the fused CPU layers serve a critic call on ``x`` computed in ``dtype``."""
    return _LINEAR_POINTWISE is not None and x.device.type == "cpu" and dtype in _FUSED_DTYPES


class CriticEnsemble(nn.Module):
    """``n_critics`` Q-networks ``Q_j(s, a)``, each an MLP on ``[s, a]``, evaluated together.

    Call shapes (E = ``n_critics``):

    * ``critic(states (B, ds), actions (B, da)) -> (E, B)``
    * ``critic(states (B, ds), actions (B, M, da)) -> (E, B, M)``: M actions per state, one call
    * ``critic(states (B, M, ds), actions (B, M, da)) -> (E, B, M)``

    The first layer's weights are kept as a state block and an action block, ``W1 = [W_s; W_a]`` (the layout
    of the checkpoints), and joined for the product on ``[s, a]``: an earlier version ran the state block on
    the B distinct states only and broadcast it over the M actions, which saved a K=17 product but cost two
    extra passes over the (B*M, width) activation and, with the in-place ReLU on the broadcast view, a full
    copy in the backward; joined, the critic's forward and backward ran 1.15x (fp32) to 1.2x (bf16) faster
    (benchmarks/NOTES.md). On the CPU path the bias ``b_in`` joins them as a last row, against a column of
    ones in the input ``[s, a, 1]``, so its gradient comes out of the first layer's weight-gradient product
    (one pass over the (N, width) gradient fewer). The layers are applied per critic on the slices
    ``weights[i][j]``.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden=(256, 256), n_critics: int = 2):
        super().__init__()
        self.state_dim, self.action_dim = _check_dim("state_dim", state_dim), _check_dim("action_dim", action_dim)
        self.hidden = _check_hidden(hidden)
        self.n_critics = _check_dim("n_critics", n_critics)
        E, h0 = self.n_critics, self.hidden[0]
        self.w_state = nn.Parameter(torch.empty(E, state_dim, h0))
        self.w_action = nn.Parameter(torch.empty(E, action_dim, h0))
        self.b_in = nn.Parameter(torch.zeros(E, 1, h0))
        dims = (*self.hidden, 1)
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(E, a, b)) for a, b in zip(dims[:-1], dims[1:])])
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
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, hidden={self.hidden}, n_critics={self.n_critics}"

    def _check(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        if states.shape[-1] != self.state_dim or actions.shape[-1] != self.action_dim:
            raise ValueError(f"the critic takes states (..., {self.state_dim}) and actions (..., {self.action_dim}), "
                             f"got {tuple(states.shape)} and {tuple(actions.shape)}")
        ok = ((states.ndim == 2 and actions.ndim in (2, 3)) or (states.ndim == 3 and actions.ndim == 3))
        if not ok or states.shape[0] != actions.shape[0] or (states.ndim == 3 and states.shape[1] != actions.shape[1]):
            raise ValueError("the critic takes states (B, ds) with actions (B, da) or (B, M, da), or states (B, M, ds) "
                             f"with actions (B, M, da); got states {tuple(states.shape)} and actions {tuple(actions.shape)}")

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self._check(states, actions)
        E = self.n_critics
        out_shape = (E, *actions.shape[:-1])
        if states.ndim == 2 and actions.ndim == 3:  # M actions per state: repeat the (narrow) state rows
            states = states.unsqueeze(1).expand(-1, actions.shape[1], -1)
        actions = actions.to(states.dtype)
        dtype = (_cpu_autocast_dtype() if states.device.type == "cpu" else None) or states.dtype
        if _fused_ok(states, dtype):
            # CPU: each hidden layer is one oneDNN product with the bias and ReLU in its epilogue; under autocast
            # the operands are cast here (autocast does not see custom functions), the master weights stay fp32.
            # The first layer's bias rides in its product, as a last row of the weight times a column of ones
            # in the input ([s, a, 1]): its gradient then comes out of the weight gradient's product instead of
            # a separate pass over the (N, width) gradient.
            ones = states.new_ones(()).expand(*states.shape[:-1], 1)
            x = torch.cat([states, actions, ones], dim=-1).reshape(-1, self.state_dim + self.action_dim + 1)
            w_in = torch.cat([self.w_state, self.w_action, self.b_in], dim=1)  # (E, ds + da + 1, h0)
            x = x.to(dtype)
            params = [(w_in, None), *zip(self.weights, self.biases)]
            qs = [_CriticMLP.apply(x, *(None if t is None else t[j].to(dtype) for pair in params for t in pair))
                  for j in range(E)]
            return torch.stack(qs).view(out_shape)
        x = torch.cat([states, actions], dim=-1).reshape(-1, self.state_dim + self.action_dim)
        w_in = torch.cat([self.w_state, self.w_action], dim=1)  # (E, ds + da, h0): the first layer on [s, a]
        ws, bs = [w_in, *self.weights], [self.b_in, *self.biases]
        qs = []
        for j in range(E):
            # Biases are cast to the activations' dtype: under bf16 autocast an fp32 bias would promote the
            # whole (N, width) activation to fp32 and the next product would cast it back (two full copies).
            h = x
            for i, (w, b) in enumerate(zip(ws, bs)):
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
        self.state_dim, self.action_dim = _check_dim("state_dim", state_dim), _check_dim("action_dim", action_dim)
        self.hidden = _check_hidden(hidden)
        dims = (state_dim, *self.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
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
    def sample_from(mean: torch.Tensor, log_std: torch.Tensor, n: int | None = None
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
        raise ValueError(f"this policy takes observations of shape ({state_dim},) or (N, {state_dim}), "
                         f"got {tuple(np.shape(obs))}: was it trained on another task?")
    return x, single
