"""bf16 autocast's numbers on a CPU without bf16 instructions, at fp32 speed.

A bf16 matrix product on hardware that has one (AVX512-BF16, AMX, a GPU's tensor cores) reads bf16 operands,
accumulates their products in fp32 and rounds the result to bf16 once. On a CPU without those instructions torch
runs the same product through slow generic kernels: a step of the 3x256 networks takes about 4.5 s instead of
0.2 s (``results/throughput-bf16.md``), too slow for the learning runs of ``precision.py``.

:class:`EmulatedBf16Products` computes those products the way the hardware does, with fp32 kernels: each operand
is rounded to bf16 (exactly, by a cast), the product is taken in fp32 and its result is rounded to bf16 and
returned as a bf16 tensor. Everything else stays real: autocast is still on, so it still casts the inputs of
the products, keeps its fp32 ops (losses, reductions) in fp32 and runs the element-wise ops between products
(ReLU, tanh, the actor's log-probability) in bf16. The backward pass rounds the same way: the incoming gradient
and the products' gradients are bf16, as autocast's bf16 products give them. What may differ from a real bf16
kernel is only the order of the fp32 accumulation, which can move a result by one bf16 step where the exact sum
lies near a rounding boundary; ``tests/test_bf16_emulation.py`` measures that against torch's own bf16 kernels.

    with torch.autocast("cpu", dtype=torch.bfloat16), EmulatedBf16Products():
        ...   # F.linear, addmm, mm, matmul and @ take the emulated path; everything else is autocast's own

Only products whose operands autocast makes bf16 (or that are bf16 already) are emulated; fp32 work outside
autocast (the symmetry table's) passes through untouched. The fused CPU critic (``kfc_lite/rl/_fused.py``)
calls oneDNN directly; it serves bf16 only on CPUs that have bf16 instructions, where no emulation is needed,
so entering the emulation there is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

BF16 = torch.bfloat16

__all__ = ["EmulatedBf16Products", "bf16_round"]


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to bf16 (round to nearest even, as torch's cast does), held in fp32."""
    return x.to(BF16).to(torch.float32)


def _autocast_bf16() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF16


class _Product(torch.autograd.Function):
    """``bias + x @ w`` (bias optional, broadcast over rows) with bf16 operands and result, fp32 accumulation."""

    @staticmethod
    def forward(ctx, x, w, bias):
        with torch.autocast("cpu", enabled=False):
            xb, wb = bf16_round(x), bf16_round(w)
            out = xb @ wb
            if bias is not None:
                out = out + bf16_round(bias)  # one fp32 sum, then one rounding: the kernel's epilogue
        ctx.save_for_backward(xb, wb)
        ctx.dtypes = (x.dtype, w.dtype, None if bias is None else bias.dtype)
        ctx.bias_shape = None if bias is None else bias.shape
        return out.to(BF16)

    @staticmethod
    def backward(ctx, grad):
        xb, wb = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        with torch.autocast("cpu", enabled=False):
            g = bf16_round(grad)
            grad_x = grad_w = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_x = bf16_round(g @ wb.transpose(-1, -2)).to(x_dtype)
            if ctx.needs_input_grad[1]:
                # a batched x (matmul of a 3-d tensor) sums its rows' contributions into w's shape
                grad_w = bf16_round((xb.transpose(-1, -2) @ g).sum_to_size(wb.shape)).to(w_dtype)
            if ctx.needs_input_grad[2]:
                grad_b = bf16_round(g.sum_to_size(ctx.bias_shape)).to(b_dtype)
        return grad_x, grad_w, grad_b


class EmulatedBf16Products(TorchFunctionMode):
    """Inside this context, the matrix products that would run as bf16 kernels run as fp32 kernels on
    bf16-rounded operands, their result rounded to bf16 (see the module's docstring)."""

    def __enter__(self):
        from kfc_lite.rl import _fused

        if BF16 in _fused.FUSED_DTYPES:
            raise RuntimeError(
                "this CPU runs bf16 products natively (the fused critic serves bf16): use precision bf16 itself, "
                "not the emulation, which exists for CPUs without bf16 instructions"
            )
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        product = _as_product(func, args, kwargs)
        if product is not None:
            x, w, bias = product
            if _autocast_bf16() or BF16 in (x.dtype, w.dtype):
                return _Product.apply(x, w, bias)
        return func(*args, **kwargs)


def _as_product(func, args, kwargs):
    """``(x, w, bias)`` with ``func(*args) == bias + x @ w`` for the products the networks use, else None."""
    if func is F.linear:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        return x, w.t(), bias
    if func is torch.addmm and not kwargs:
        bias, x, w = args
        return x, w, bias
    if func in (torch.mm, torch.matmul, torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.matmul) and not kwargs:
        x, w = args
        if w.dim() == 2 and x.dim() >= 2:
            return x, w, None
    return None
