"""benchmarks/bf16_emulation.py gives bf16 autocast's numbers: compared here with torch's own bf16 products.

The emulation and torch's kernels may add the fp32 products in different orders, so a result can differ by a bf16
step where the exact sum lies near a rounding boundary, and by more, relative to itself, where a sum cancels to
near zero. The tolerances below are therefore on the scale of the whole tensor (its RMS), with the share of
elements that differ at all kept small; they hold whatever order this CPU's BLAS adds in.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from bf16_emulation import EmulatedBf16Products
from test_precision import correlation, shift_response

BF16_STEP = 2.0**-8  # the spacing of bf16 numbers relative to their size


def two_layers(x, w1, b1, w2, b2):
    """A linear layer, a ReLU and an addmm with a bf16 bias, as the actor and the critic compute them; returns
    the output and every gradient of a loss on it."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = F.relu(F.linear(x, w1, b1))
        z = torch.addmm(b2.to(h.dtype), h, w2)
        loss = (z.float() ** 2).mean()
    loss.backward()
    grads = [t.grad.clone() for t in (x, w1, b1, w2, b2)]
    for t in (x, w1, b1, w2, b2):
        t.grad = None
    return [z.detach(), *grads]


@pytest.mark.parametrize("width", [8, 64])
def test_products_and_their_gradients_match_torch_bf16_kernels(width):
    torch.manual_seed(0)
    x = torch.randn(500, 12, requires_grad=True)
    w1 = torch.randn(width, 12, requires_grad=True)
    b1 = torch.randn(width, requires_grad=True)
    w2 = torch.randn(width, width, requires_grad=True)
    b2 = torch.randn(width, requires_grad=True)
    real = two_layers(x, w1, b1, w2, b2)
    with EmulatedBf16Products():
        emulated = two_layers(x, w1, b1, w2, b2)
    assert real[0].dtype == emulated[0].dtype == torch.bfloat16  # the output is a real bf16 tensor
    for name, r, e in zip(["output", "x", "w1", "b1", "w2", "b2"], real, emulated, strict=True):
        assert r.dtype == e.dtype and r.shape == e.shape, name
        r, e = r.float(), e.float()
        diff = (r - e).abs()
        assert (diff > 0).float().mean() <= 0.02, name  # nearly every element is the very same bf16 number
        assert diff.max() <= 4 * BF16_STEP * r.pow(2).mean().sqrt(), name


def test_the_emulation_reproduces_how_bf16_erases_a_3e_3_shift():
    """The critic's response to a 3e-3 shift (tests/test_precision.py) is bf16's, not fp32's, under emulation."""
    reference, real = shift_response("fp32"), shift_response("bf16")
    with EmulatedBf16Products():
        emulated = shift_response("bf16")
    assert correlation(emulated, real) >= 0.99
    assert correlation(emulated, reference) < 0.95


def test_fp32_work_outside_autocast_passes_through_untouched():
    torch.manual_seed(1)
    x, w = torch.randn(40, 16), torch.randn(16, 8)
    with EmulatedBf16Products():
        inside = (x @ w, torch.mm(x, w), F.linear(x, w.t()))
    assert all(t.dtype == torch.float32 for t in inside)
    assert torch.equal(inside[0], x @ w) and torch.equal(inside[1], torch.mm(x, w))


def test_a_cpu_with_native_bf16_products_is_told_to_use_them(monkeypatch):
    from kfc_lite.rl import _fused

    monkeypatch.setattr(_fused, "FUSED_DTYPES", (torch.float32, torch.bfloat16))
    with pytest.raises(RuntimeError, match="runs bf16 products natively"), EmulatedBf16Products():
        pass
