"""Speed paths of the agent: the critic's CPU layers (each hidden layer one oneDNN product with its bias and ReLU, one
hand-written backward) and Adam's fused kernels (:func:`adam_options`).

Private: a reader learning SAC+CQL needs none of this (:mod:`kfc_lite.rl.networks` has the plain layers, which
compute the same numbers; tests/test_speed_correctness.py checks that they do). It exists because on a CPU the
critic's large activations make memory passes, not the products, what a step waits on: ``torch.addmm`` followed
by a ReLU passes over the (N, width) output three times, the fused kernel once; autograd's chain of per-layer
nodes makes several more passes in the backward than :class:`CriticMLP` does. The measurements behind these
choices are in benchmarks/results/.

The kernel is a private PyTorch operator (it serves ``torch.compile``'s CPU code), probed once at import: a
build without it, or a CPU whose oneDNN refuses a dtype, gets the plain path for that dtype.
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "adam_options",
    "LINEAR_POINTWISE",
    "FUSED_DTYPES",
    "CriticMLP",
    "cpu_autocast_dtype",
    "serves",
    "critic_forward",
]


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


def cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype when CPU autocast is on, else None (torch >= 2.4 API, older names as fallback)."""
    try:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    except (TypeError, AttributeError):  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


LINEAR_POINTWISE, FUSED_DTYPES = _onednn_linear_pointwise()


class CriticMLP(torch.autograd.Function):
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
    float round-off (tests/test_speed_correctness.py); its effect on the step time is in benchmarks/NOTES.md.

    ``params`` = ``w0, b0, w1, b1, ..., w_head, b_head``, each ``w`` (in, out) and ``b`` (1, out) or None (no bias:
    :class:`~kfc_lite.rl.networks.CriticEnsemble` folds the first layer's bias into its weight), all in ``x``'s dtype
    (the ensemble's layout, one critic's slices).
    """

    @staticmethod
    def forward(ctx, x, *params):
        ws, bs = params[0::2], params[1::2]
        hs = [x]
        for w, b in zip(ws[:-1], bs[:-1], strict=False):
            hs.append(LINEAR_POINTWISE(hs[-1], w.t(), None if b is None else b.reshape(-1), "relu", [], ""))
        q = torch.addmm(bs[-1], hs[-1], ws[-1])
        ctx.save_for_backward(*hs, *params)
        ctx.depth = len(hs)
        return q

    @staticmethod
    @torch.autograd.function.once_differentiable  # (a second derivative through it is an error, never wrong)
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        hs, params = saved[: ctx.depth], saved[ctx.depth :]
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


def serves(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the fused CPU layers serve a critic call on ``x`` computed in ``dtype``."""
    return LINEAR_POINTWISE is not None and x.device.type == "cpu" and dtype in FUSED_DTYPES


def critic_forward(ensemble, states: torch.Tensor, actions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Every critic of a :class:`~kfc_lite.rl.networks.CriticEnsemble` on the rows ``[s, a]``: (E, N).

    Under autocast the operands are cast here (autocast does not see custom functions); the master weights stay
    fp32. The first layer's bias rides in its product, as a last row of the weight against a column of ones in the
    input ``[s, a, 1]``: its gradient then comes out of the weight gradient's product instead of a separate pass
    over the (N, width) gradient.
    """
    ones = states.new_ones(()).expand(*states.shape[:-1], 1)
    x = torch.cat([states, actions, ones], dim=-1).reshape(-1, ensemble.state_dim + ensemble.action_dim + 1)
    w_in = torch.cat([ensemble.w_state, ensemble.w_action, ensemble.b_in], dim=1)  # (E, ds + da + 1, h0)
    x = x.to(dtype)
    params = [(w_in, None), *zip(ensemble.weights, ensemble.biases, strict=True)]
    qs = [
        CriticMLP.apply(x, *(None if t is None else t[j].to(dtype) for pair in params for t in pair))
        for j in range(ensemble.n_critics)
    ]
    return torch.stack(qs)


def adam_options(device) -> dict:
    """Adam's implementation flags for a device: ``fused=True`` (one kernel for all parameters instead of several
    passes per tensor) on CUDA, where a small network's step is launch-bound, and on the CPU where this torch has
    the fused CPU kernel (torch >= 2.4), where it replaces several passes over every parameter by one. Same update
    rule either way, up to round-off."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return {"fused": True}
    if dev.type == "cpu" and _cpu_fused_adam():
        return {"fused": True}
    return {}


@functools.cache
def _cpu_fused_adam() -> bool:
    """Whether this torch has Adam's fused CPU kernel (probed once on a tiny tensor)."""
    try:
        w = torch.zeros(2, requires_grad=True)
        w.grad = torch.ones(2)
        torch.optim.Adam([w], lr=1e-3, fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False
