"""The Koopman model's quality report (kfc_lite.koopman.report) and its gate in train(): exact numbers on a linear
system seen through a linear encoder, a decoder with a known offset, an under-trained model that trips the gate
(warning, error, off, gauged), the report file, and the CLI's output."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kfc_lite.cli import main as cli_main
from kfc_lite.koopman.fit import KoopmanTrainConfig
from kfc_lite.koopman.report import (
    OFFSET_DOMINATES_RATIO,
    format_report,
    gate_message,
    jsonable,
    koopman_report,
    training_summary,
)
from kfc_lite.rl.config import SACConfig
from kfc_lite.train import AugmentConfig, TrainConfig, train


class LinearKoopman(nn.Module):
    """A bilinear system s' = A(a) s seen through an invertible linear encoder z = P s, so K(a) = P A(a) P^-1
    exactly; ``offset`` is added by the decoder, so that D(E(s)) - s = offset for every state."""

    def __init__(self, A0, A_actions, P, offset=None):
        super().__init__()
        n = A0.shape[0]
        self.register_buffer("A0", A0)
        self.register_buffer("A_actions", A_actions)
        self.register_buffer("P", P)
        self.register_buffer("P_inv", torch.linalg.inv(P))
        self.register_buffer("offset", torch.zeros(n, dtype=A0.dtype) if offset is None else offset)
        self.state_dim = self.latent_dim = n

    def true_step(self, s, a):
        return ((self.A0 + torch.einsum("i,irc->rc", a, self.A_actions)) @ s.unsqueeze(-1)).squeeze(-1)

    def encode(self, s):
        return s @ self.P.T

    def decode(self, z):
        return z @ self.P_inv.T + self.offset

    def operator(self, a):
        return self.P @ (self.A0 + torch.einsum("...i,irc->...rc", a, self.A_actions)) @ self.P_inv

    def rollout(self, s0, actions):
        z, latents = self.encode(s0), []
        for t in range(actions.shape[-2]):
            z = (self.operator(actions[..., t, :]) @ z.unsqueeze(-1)).squeeze(-1)
            latents.append(z)
        return self.decode(torch.stack(latents, dim=-2))


def linear_system(n=6, d_a=2, offset=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    A0 = 0.97 * torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]  # stable, no blow-up
    Ai = 0.05 * torch.randn(d_a, n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    P = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=g, dtype=torch.float64)
    return LinearKoopman(A0, Ai, P, None if offset is None else torch.as_tensor(offset, dtype=torch.float64))


def episodes(system, n_episodes=8, length=40, seed=1):
    """Transitions of the true system in D4RL layout: episodes one after another, the last step a time-out."""
    g = torch.Generator().manual_seed(seed)
    n, d_a = system.state_dim, system.A_actions.shape[0]
    obs, act, nxt = [], [], []
    for _ in range(n_episodes):
        s = torch.randn(n, generator=g, dtype=torch.float64)
        for _ in range(length):
            a = 2 * torch.rand(d_a, generator=g, dtype=torch.float64) - 1
            s_next = system.true_step(s, a)
            obs.append(s), act.append(a), nxt.append(s_next)
            s = s_next
    return {
        "observations": torch.stack(obs).numpy(),
        "actions": torch.stack(act).numpy(),
        "next_observations": torch.stack(nxt).numpy(),
        "terminals": np.zeros(len(obs), bool),
        "timeouts": np.tile(np.arange(length) == length - 1, n_episodes),
    }


# -- the numbers, where the answer is known ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["kfc++", "kfc"])
def test_a_linear_system_through_a_linear_encoder_has_a_perfect_report(variant):
    system = linear_system()
    report = koopman_report(system, episodes(system), variant=variant, sample=200, k=5)
    assert report["sample"]["rows"] == 200 and report["sample"]["non_terminal_rows"] == 320
    assert report["reconstruction_offset"] < 1e-12
    assert max(report["reconstruction_offset_per_dim"]) < 1e-12
    assert report["no_change_error"] > 0.1 and report["one_step_relative"] < 1e-12
    ms = report["multistep"]
    assert ms["k"] == 5 and ms["segments"] >= 30 and len(ms["relative"]) == 5 and max(ms["relative"]) < 1e-12
    assert min(ms["rms_no_change"]) > 0.1
    assert report["commutation_error"] < 1e-12 and report["fallback_rate"] == 0.0
    # no offset: the plain and gauged forms are the same move, and the symmetry is all of it
    assert report["shift_gauged"] > 0 and report["shift_plain"] == pytest.approx(report["shift_gauged"], rel=1e-9)
    assert report["offset_to_shift_ratio"] < 1e-9
    assert report["gate"] == {"threshold": OFFSET_DOMINATES_RATIO, "offset_dominates": False, "triggered": False}
    assert gate_message(report) is None and "passed" in format_report(report)


def test_a_decoder_offset_is_measured_exactly_and_trips_the_gate_of_the_plain_form_only():
    offset = np.array([0.3, 0.0, -0.4, 0.0, 0.0, 0.0])
    clean, shifted = linear_system(), linear_system(offset=offset)
    data = episodes(clean)
    base = koopman_report(clean, data, sample=200)
    plain = koopman_report(shifted, data, sample=200)
    assert plain["reconstruction_offset"] == pytest.approx(0.5, rel=1e-12)
    spread = data["observations"][np.sort(np.random.default_rng(0).choice(320, 200, replace=False))].std(0, ddof=1)
    np.testing.assert_allclose(plain["reconstruction_offset_per_dim"], np.abs(offset) / spread, rtol=1e-9, atol=1e-15)
    assert plain["reconstruction_offset_worst_dim"] == 2
    # the decoder's constant cancels in the gauged form, not in the plain one
    assert plain["shift_gauged"] == pytest.approx(base["shift_gauged"], rel=1e-9)
    assert plain["shift_plain"] > 0.45
    assert plain["offset_to_shift_ratio"] == pytest.approx(0.5 / base["shift_gauged"], rel=1e-9)
    assert plain["gate"]["offset_dominates"] and plain["gate"]["triggered"]
    message = gate_message(plain)
    for needle in (
        "0.5",
        f"{plain['shift_gauged']:.3g}",
        f"{plain['offset_to_shift_ratio']:.3g}",
        "koopman.max_epochs",
        "gauged=true",
    ):
        assert needle in message, needle
    assert "TRIGGERED" in format_report(plain)
    gauged = koopman_report(shifted, data, sample=200, gauged=True)
    assert gauged["gate"]["offset_dominates"] and not gauged["gate"]["triggered"] and gate_message(gauged) is None


def test_the_symmetry_shift_scales_with_shift_sigma_on_the_same_eps_and_leaves_the_global_rng_alone():
    system = linear_system()
    data = episodes(system)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    one = koopman_report(system, data, shift_sigma=1.0, sample=100)
    two = koopman_report(system, data, shift_sigma=2.0, sample=100)
    assert torch.equal(torch.get_rng_state(), before)
    assert two["shift_gauged"] == pytest.approx(2 * one["shift_gauged"], rel=1e-9)
    other_seed = koopman_report(system, data, shift_sigma=1.0, sample=100, seed=1)
    assert other_seed["shift_gauged"] != one["shift_gauged"]


def test_unchained_data_has_no_k_step_error_and_the_json_form_is_strict():
    system = linear_system()
    data = episodes(system)
    order = np.random.default_rng(0).permutation(len(data["observations"]))
    shuffled = {k: v[order] for k, v in data.items() if k != "timeouts"}
    report = koopman_report(system, shuffled, sample=100)
    assert report["multistep"] is None and "k-step error      n/a" in format_report(report)
    assert report["one_step_relative"] < 1e-12  # the one-step numbers need no chain
    json.dumps(jsonable(report), allow_nan=False)  # raises on NaN or inf
    assert jsonable({"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}}) == {
        "a": None,
        "b": [None, 1.0],
        "c": {"d": None},
    }


def test_training_summary_tells_a_cap_from_the_papers_end():
    from kfc_lite.koopman.fit import KoopmanTrainConfig

    def history(stopped, epochs, steps, **cfg):
        return {
            "epoch": list(range(1, epochs + 1)),
            "steps": [steps],
            "stopped": stopped,
            "config": KoopmanTrainConfig(**cfg).to_dict(),
        }

    capped = training_summary(history("max_steps", 1, 5, max_steps=5))
    assert capped["stopped"] == "max_steps" and not capped["follows_paper_schedule"]
    assert "max_steps=5" in capped["cap"] and "never ran" in capped["cap"]
    early = training_summary(history("early_stopping", 90, 9000))
    assert early["cap"] is None and early["follows_paper_schedule"]
    full = training_summary(history("max_epochs", 400, 40000))
    assert full["cap"] is None and full["follows_paper_schedule"]
    short = training_summary(history("max_epochs", 120, 12000, max_epochs=120))
    assert "max_epochs=120" in short["cap"] and short["follows_paper_schedule"]  # its test ran; the cap is stated
    off = training_summary(history("max_epochs", 400, 40000, early_stopping=False))
    assert "early stopping was off" in off["cap"] and not off["follows_paper_schedule"]
    assert training_summary(None) is None


# -- the gate in train() -----------------------------------------------------------------------------------------
TINY_SAC = {"hidden": [16, 16], "batch_size": 32, "bc_steps": 2}
#: an under-trained model: five steps of pre-training
UNDER_TRAINED = {"latent_dim": 4, "hidden_dim": 16, "max_steps": 5, "multistep_k": 2}


def small_run(dataset, out, **kw):
    base = dict(
        dataset=dataset,
        method="kfc++",
        out=str(out),
        steps=2,
        device="cpu",
        eval_episodes=0,
        log_every=1,
        checkpoint_every=0,
        sac=SACConfig.preset("kfc-code", **TINY_SAC),
        koopman=KoopmanTrainConfig(**UNDER_TRAINED),
    )
    base.update(kw)
    return TrainConfig(**base)


def gate_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning) and "reconstruction offset" in str(w.message)]


def test_an_under_trained_model_warns_by_default_and_the_run_goes_on(dataset, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = train(small_run(dataset, tmp_path / "run"), progress=False)
    [warning] = gate_warnings(record)
    report = json.loads((tmp_path / "run" / "koopman_report.json").read_text())
    text = str(warning.message)
    for needle in (
        f"{report['reconstruction_offset']:.3g}",
        f"{report['shift_gauged']:.3g}",
        f"{report['offset_to_shift_ratio']:.3g}",
        "koopman.max_epochs",
        "gauged=true",
    ):
        assert needle in text, needle
    assert report["gate"]["triggered"] and report["offset_to_shift_ratio"] > OFFSET_DOMINATES_RATIO
    assert report["symmetry"] == {"variant": "kfc++", "shift_sigma": 1.0, "form": "plain"}
    assert report["training"]["stopped"] == "max_steps" and report["training"]["steps"] == 5
    assert "never ran" in report["training"]["cap"] and not report["training"]["follows_paper_schedule"]
    assert report["multistep"]["k"] == 10 and report["multistep"]["segments"] > 0
    assert result.agent.step == 2 and (tmp_path / "run" / "policy.pt").is_file()
    assert "Koopman model report" in capsys.readouterr().out


def test_koopman_gate_error_stops_before_anything_is_trained(dataset, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="reconstruction offset dominates.*gauged=true.*another out folder"):
        train(small_run(dataset, run, koopman_gate="error"), progress=False)
    names = {p.name for p in run.iterdir()}
    assert {"koopman.pt", "koopman_report.json"} <= names
    assert not names & {"checkpoint.pt", "policy.pt", "metrics.jsonl", "result.json"}
    assert not any(name.startswith("symmetry-table") for name in names)


@pytest.mark.parametrize(
    "change", [{"koopman_gate": "off"}, {"augment": AugmentConfig(gauged=True)}], ids=["off", "gauged"]
)
def test_no_gate_when_off_or_gauged(dataset, tmp_path, change):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train(small_run(dataset, tmp_path / "run", **change), progress=False)
    assert gate_warnings(record) == []
    report = json.loads((tmp_path / "run" / "koopman_report.json").read_text())
    assert report["gate"]["offset_dominates"]  # the same under-trained model: only the verdict differs
    assert report["gate"]["triggered"] == ("koopman_gate" in change)


def test_koopman_gate_is_validated_and_may_change_on_resume():
    from kfc_lite.train import RESUMABLE_CHANGES

    with pytest.raises(ValueError, match="koopman_gate must be one of"):
        TrainConfig(dataset="hopper-medium-v2", koopman_gate="loud")
    assert "koopman_gate" in RESUMABLE_CHANGES


def test_cli_prints_the_report_before_the_summary_line(dataset, tmp_path, capsys):
    args = [
        "train",
        "--dataset",
        dataset,
        "--method",
        "kfc",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "eval_episodes=0",
        "--set",
        "hidden=[16,16]",
        "--set",
        "batch_size=16",
        "--set",
        "bc_steps=1",
        "--set",
        "koopman_gate=off",
    ]
    for key, value in UNDER_TRAINED.items():
        args += ["--set", f"koopman.{key}={value}"]
    assert cli_main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["steps"] == 2
    first = next(i for i, line in enumerate(lines) if line.startswith("Koopman model report"))
    assert "kfc, shift_sigma=1, plain form" in lines[first]
    assert any(line.strip().startswith("state shift") for line in lines[first:-1])
