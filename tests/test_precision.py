"""The automatic precision resolves the state shifts that S4RL, KFC and KFC++ make; bf16 does not."""

import pytest
import torch

from kfc_lite.rl.config import SACConfig
from kfc_lite.rl.sac import SACCQL
from kfc_lite.train import TrainConfig

DS, DA, SHIFT = 11, 3, 3e-3


def shift_response(precision: str, seed: int = 0) -> torch.Tensor:
    """Q(s + d) - Q(s) of a paper-sized critic (3x256) for 512 states and random shifts of norm 3e-3 (the size of
    S4RL's noise and of a KFC++ symmetry's move), computed as the agent computes its critic at ``precision``."""
    torch.manual_seed(seed)
    cfg = TrainConfig(dataset="hopper-medium-replica", method="cql", sac=SACConfig(precision=precision))
    cfg = cfg.sac_config("cpu")
    agent = SACCQL(DS, DA, cfg, "cpu")
    s = 1.25 * torch.randn(512, DS)
    d = torch.randn(512, DS)
    d = SHIFT * d / d.norm(dim=-1, keepdim=True)
    a = torch.rand(512, DA) * 2 - 1
    with torch.no_grad(), agent._autocast():
        q0, q1 = agent._critic_fn(s, a).float(), agent._critic_fn(s + d, a).float()
    return (q1 - q0).flatten()


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])


@pytest.mark.parametrize("method", ["s4rl", "kfc", "kfc++", "cql"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_automatic_precision_is_fp32_for_every_method_and_device(method, device):
    """One precision for every arm of a comparison, and one that resolves the augmentations, on a GPU too
    (sac_config only reads the device's name, so this needs no GPU)."""
    cfg = TrainConfig(dataset="hopper-medium-replica", method=method)
    assert cfg.sac.precision == "auto" and cfg.sac_config(device).precision == "fp32"
    assert cfg.with_overrides(precision="bf16").sac_config(device).precision == "bf16"


def test_the_automatic_precision_resolves_a_3e_3_shift_and_bf16_does_not():
    """The critic's response to a 3e-3 shift at the automatic precision correlates with fp32's at 0.95 or more;
    under bf16 autocast it does not (measured about 0.02: the rounding of the activations swamps the shift)."""
    reference = shift_response("fp32")
    assert reference.abs().mean() > 0  # the shift does move the critic
    auto = shift_response("auto")
    assert correlation(auto, reference) >= 0.95
    bf16 = shift_response("bf16")
    assert correlation(bf16, reference) < 0.95
