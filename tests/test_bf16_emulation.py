"""benchmarks/bf16_emulation.py gives bf16 autocast's numbers: compared here with torch's own bf16 products.

The emulation and torch's kernels may add the fp32 products in different orders. Where the exact sum lies near a
rounding boundary, the two results then differ by one bf16 step of the result (at most 2^-7 of its size), and a
sum that cancels to near zero can differ by more relative to itself, though not relative to the terms it summed.
So an element may differ by two bf16 steps of its size plus a floor of 2^-7 of the tensor's RMS, and only a small
share of elements may differ at all: bounds that hold whatever order a BLAS adds in, not bit-equality.

The emulation exists for CPUs where oneDNN has no bf16 kernels; elsewhere it refuses to run, and these
comparisons are skipped.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import bf16_emulation
from bf16_emulation import EmulatedBf16Products
from test_precision import correlation, shift_response

from kfc_lite.rl import _fused
from kfc_lite.rl.config import SACConfig

BF16_STEP = 2.0**-7  # the largest spacing of bf16 numbers relative to their size (8 significant bits)
needs_slow_bf16 = pytest.mark.skipif(
    bf16_emulation.refused(), reason="oneDNN has bf16 kernels here: the emulation is refused"
)


@pytest.fixture
def emulated_products(monkeypatch):
    """Counts the products the emulation computes, so that a test can tell it ran (a mode that intercepted
    nothing would give torch's own numbers and pass every comparison)."""
    calls = []
    apply = bf16_emulation._Product.apply
    monkeypatch.setattr(bf16_emulation._Product, "apply", lambda *args: calls.append(1) or apply(*args))
    return calls


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


@needs_slow_bf16
@pytest.mark.parametrize("width", [8, 256])
def test_products_and_their_gradients_match_torch_bf16_kernels(width, emulated_products):
    torch.manual_seed(0)
    x = torch.randn(500, 12, requires_grad=True)
    w1 = torch.randn(width, 12, requires_grad=True)
    b1 = torch.randn(width, requires_grad=True)
    w2 = torch.randn(width, width, requires_grad=True)
    b2 = torch.randn(width, requires_grad=True)
    real = two_layers(x, w1, b1, w2, b2)
    with EmulatedBf16Products():
        emulated = two_layers(x, w1, b1, w2, b2)
    assert len(emulated_products) == 2  # the linear layer and the addmm
    assert real[0].dtype == emulated[0].dtype == torch.bfloat16  # the output is a real bf16 tensor
    for name, r, e in zip(["output", "x", "w1", "b1", "w2", "b2"], real, emulated, strict=True):
        assert r.dtype == e.dtype and r.shape == e.shape, name
        r, e = r.float(), e.float()
        diff = (r - e).abs()
        assert (diff > 0).float().mean() <= 0.02, name  # nearly every element is the very same bf16 number
        bound = 2 * BF16_STEP * torch.maximum(r.abs(), e.abs()) + BF16_STEP * r.pow(2).mean().sqrt()
        assert (diff <= bound).all(), name


@needs_slow_bf16
def test_the_emulation_reproduces_how_bf16_erases_a_3e_3_shift(emulated_products):
    """The critic's response to a 3e-3 shift (tests/test_precision.py) is bf16's, not fp32's, under emulation."""
    reference, real = shift_response("fp32"), shift_response("bf16")
    with EmulatedBf16Products():
        emulated = shift_response("bf16")
    cfg = SACConfig()  # the critic shift_response builds
    assert len(emulated_products) == 2 * cfg.n_critics * (len(cfg.hidden) + 1)  # every layer, both calls
    assert correlation(emulated, real) >= 0.99
    assert correlation(emulated, reference) < 0.95


@needs_slow_bf16
def test_fp32_work_outside_autocast_passes_through_untouched(emulated_products):
    torch.manual_seed(1)
    x, w = torch.randn(40, 16), torch.randn(16, 8)
    with EmulatedBf16Products():
        inside = (x @ w, torch.mm(x, w), F.linear(x, w.t()))
    assert not emulated_products and all(t.dtype == torch.float32 for t in inside)
    assert torch.equal(inside[0], x @ w) and torch.equal(inside[1], torch.mm(x, w))


def test_a_cpu_with_native_bf16_products_is_told_to_use_them(monkeypatch):
    monkeypatch.setattr(_fused, "FUSED_DTYPES", (torch.float32, torch.bfloat16))
    with pytest.raises(RuntimeError, match="oneDNN has bf16 kernels on this CPU"), EmulatedBf16Products():
        pass


@needs_slow_bf16
def test_a_single_row_and_a_batch_of_matrices_take_the_emulated_path(emulated_products):
    torch.manual_seed(2)
    w = torch.randn(6, 16, requires_grad=True)
    rows = torch.randn(3, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), EmulatedBf16Products():
        one = F.linear(rows[0, 0], w)
        batched = rows @ w.t()
    assert len(emulated_products) == 2 and one.shape == (6,) and batched.shape == (3, 5, 6)
    (one.float().sum() + batched.float().sum()).backward()
    assert w.grad.shape == w.shape and rows.grad.shape == rows.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = (rows.detach() @ w.detach().t()).float()
    bound = 2 * BF16_STEP * real.abs() + BF16_STEP * real.pow(2).mean().sqrt()  # as in the first test
    assert ((batched.detach().float() - real).abs() <= bound).all()
