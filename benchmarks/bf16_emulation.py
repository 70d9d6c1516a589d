"""bf16 autocast's numbers on a CPU without fast bf16 products, at fp32 speed.

Where oneDNN has no bf16 kernels (an AVX2 CPU without AVX-512 or bf16 instructions), torch computes a bf16 matrix
product through slow generic kernels: a step of the 3x256 networks takes about 4.5 s instead of 0.2 s
(``results/throughput-bf16.md``), too slow for the learning runs of ``precision.py``. Those kernels read bf16
operands, accumulate in fp32 and round the result to bf16.

:class:`EmulatedBf16Products` computes each product the same way on fp32 kernels: every operand is rounded to bf16
(exactly, by a cast), the product is taken in fp32, and its result is rounded to bf16 and returned as a bf16
tensor. Everything else stays real: autocast is still on, so it still casts the inputs of the products, keeps its
fp32 ops (losses, reductions) in fp32, and the element-wise ops between products (the ReLUs, the clamp of the
actor's log-std) run in bf16 as they do under autocast (the agent itself computes the actor's tanh and
log-probability in fp32). The backward pass rounds the same way: the incoming gradient and every product's
gradients are bf16, as autocast's bf16 products give them.

What can differ from torch's own bf16 kernels is the order of the fp32 accumulation, which moves a result by a bf16
step where the exact sum lies near a rounding boundary; ``tests/test_bf16_emulation.py`` measures the agreement.
Kernels with bf16 instructions (AVX512-BF16, AMX, a GPU's tensor cores) may round differently again: on one such
CPU the critic's response to a 3e-3 shift correlated with fp32's at 0.02, against 0.24 here (docs/precision.md).
The emulation reproduces this CPU's bf16, not every machine's.

    with torch.autocast("cpu", dtype=torch.bfloat16), EmulatedBf16Products():
        ...   # F.linear, addmm, mm, matmul and @ take the emulated path; everything else is autocast's own

Only products whose operands autocast makes bf16 (or that are bf16 already) are emulated; fp32 work outside
autocast (the symmetry table's) passes through untouched. The fused CPU critic (``kfc_lite/rl/_fused.py``)
calls oneDNN directly; it serves bf16 where oneDNN has bf16 kernels (AVX-512 or bf16 instructions), where torch's
own bf16 products are fast and no emulation is needed, so entering the emulation there is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from kfc_lite.rl import _fused

BF16 = torch.bfloat16

__all__ = ["EmulatedBf16Products", "bf16_round", "refused"]


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to bf16 (round to nearest even, as torch's cast does), held in fp32."""
    return x.to(BF16).to(torch.float32)


def refused() -> bool:
    """Whether this CPU refuses the emulation: oneDNN has bf16 kernels here, so torch's own bf16 is fast."""
    return BF16 in _fused.FUSED_DTYPES


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
    bf16-rounded operands, their result rounded to bf16 (see the module's docstring). ``products`` counts the
    products it emulated: a run that reports none did not run what it claims."""

    products = 0

    def __enter__(self):
        if refused():
            raise RuntimeError(
                "oneDNN has bf16 kernels on this CPU (the fused critic serves bf16), so torch's own bf16 products "
                "are fast here: use precision bf16 itself (precision.py --bf16 native); the emulation is for CPUs "
                "without them"
            )
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        product = _as_product(func, args, kwargs)
        if product is not None:
            x, w, bias = product
            if _fused.cpu_autocast_dtype() == BF16 or BF16 in (x.dtype, w.dtype):
                self.products += 1
                if x.dim() == 1:  # a single row: the product of a (1, in) matrix, its row returned
                    return _Product.apply(x.unsqueeze(0), w, bias).squeeze(0)
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
