"""How good is the Koopman model a KFC run is about to use? A quality report, and the gate that reads it.

KFC moves a logged state along a symmetry of the learned model: with ``z = E(s)``,

    plain form (the paper's):  s~ = D((I + sigma) z)
    gauged form:               s~ = s + D((I + sigma) z) - D(z)

The plain form contains the model's reconstruction offset ``D(E(s)) - s`` in full: even at ``sigma = 0`` it moves
every state to ``D(E(s))``. That displacement is not random: every augmented copy of ``s`` is pushed the same way,
so the critic sees states of the model's idea of the system rather than of the system. The gauged form subtracts
``D(z)`` and keeps only what the symmetry itself does.

:func:`koopman_report` measures, on a fixed-seed sample of the dataset's (non-terminal) transitions,

* ``reconstruction_offset``: mean ``||D(E(s)) - s||``; per state dimension, ``mean |D(E(s))_j - s_j|`` divided by
  that dimension's standard deviation in the sample (``reconstruction_offset_per_dim``);
* ``one_step_relative``: ``mean ||D(K(a) E(s)) - s'|| / mean ||s' - s||``, a ratio of means (rows where the state
  hardly moves would blow up a mean of ratios): below 1 the model beats "nothing changes";
* ``multistep``: the open-loop RMS error at horizons 1..k on contiguous stretches of trajectory
  (:func:`kfc_lite.koopman.multistep.multistep_error`), next to the RMS of predicting no change, and their ratio;
* ``shift_plain`` and ``shift_gauged``: mean ``||s~ - s||`` of both forms for the configured variant and
  ``shift_sigma``, with the same ``eps`` draws, over the sampled rows whose symmetry passes the guard;
* ``offset_to_shift_ratio`` = ``reconstruction_offset / shift_gauged``: how much farther the offset alone moves a
  state than the symmetry does;
* ``commutation_error`` (mean over rows that pass the guard) and ``fallback_rate`` (share of rows whose
  decomposition fails the guard and would get S4RL noise), from :func:`kfc_lite.symmetry_rows.build_rows`;
* ``training``: how pre-training ended (early stopping, a cap, or the paper's 400 epochs), from the history.

The gate (:data:`OFFSET_DOMINATES_RATIO`): with the plain form, a ratio above 1 means the offset moves a state
farther than the symmetry does. The cloud of augmented copies of ``s`` is then centred on ``D(E(s))``, more than
its own radius away from ``s``, so the logged state is not even among the typical augmented ones; the
augmentation mostly teaches the critic another system. docs/koopman-quality.md explains each number and what
to do about a bad one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kfc_lite.koopman.fit import (
    KoopmanTrainConfig,
    chained_segments,
    multistep_error,
    segments_to_arrays,
    validate_transitions,
)
from kfc_lite.symmetry_table import SymmetryRows, build_rows, model_device_dtype, moved_latents

__all__ = ["koopman_report", "format_report", "gate_message", "training_summary", "jsonable", "OFFSET_DOMINATES_RATIO"]

#: The gate: the plain form's shift counts as dominated by the reconstruction offset when
#: ``offset_to_shift_ratio`` exceeds this (the offset alone moves a state farther than the symmetry does).
OFFSET_DOMINATES_RATIO = 1.0

#: The paper's schedule, to tell a run that ended on its own from one that a budget cut short.
_PAPER = KoopmanTrainConfig()


# -- pre-training ---------------------------------------------------------------------------------------------
def training_summary(history: dict | None) -> dict | None:
    """How pre-training ended, from :func:`~kfc_lite.koopman.fit.fit_koopman`'s history (None if there is none).

    ``stopped``: "early_stopping" (the paper's ratio rule ended it), "max_steps" or "max_epochs"; ``epochs`` and
    ``steps`` run; ``reached_early_stopping_test``: early stopping was on and training got to the epoch where its
    test starts (75 by default); ``cap``: a sentence naming the budget that ended the run before the paper's own
    end (early stopping or 400 epochs), None when nothing capped it; ``follows_paper_schedule``: early stopping on
    and its test reached.
    """
    if not history or not history.get("epoch"):
        return None
    config = history.get("config") or {}
    epochs = len(history["epoch"])
    steps = int(history["steps"][-1])
    stopped = history.get("stopped", "max_epochs")
    early = bool(config.get("early_stopping", _PAPER.early_stopping))
    start = int(config.get("early_stop_start", _PAPER.early_stop_start))
    max_epochs = int(config.get("max_epochs", _PAPER.max_epochs))
    reached_test = early and epochs >= start
    if stopped == "early_stopping" or (stopped == "max_epochs" and max_epochs >= _PAPER.max_epochs and early):
        cap = None
    else:
        if stopped == "max_steps":
            cap = f"max_steps={config.get('max_steps')}"
        elif stopped == "max_epochs" and max_epochs < _PAPER.max_epochs:
            cap = f"max_epochs={max_epochs} (the paper's is {_PAPER.max_epochs})"
        else:
            cap = f"max_epochs={max_epochs}"
        cap += f" after {epochs} epoch{'s' if epochs != 1 else ''} ({steps} steps)"
        if not early:
            cap += "; early stopping was off"
        elif not reached_test:
            cap += f"; the early-stopping test starts at epoch {start} and never ran"
    return {
        "stopped": stopped,
        "epochs": epochs,
        "steps": steps,
        "early_stopping": early,
        "early_stop_start": start,
        "max_epochs": max_epochs,
        "max_steps": config.get("max_steps"),
        "reached_early_stopping_test": reached_test,
        "cap": cap,
        "follows_paper_schedule": reached_test,
    }


# -- the report -------------------------------------------------------------------------------------------------
def _sample_rows(data: dict, sample: int, seed: int) -> np.ndarray:
    """``sample`` non-terminal rows (all of them if there are fewer), drawn without replacement, in order."""
    rows = np.flatnonzero(~data["terminals"])
    if len(rows) == 0:
        raise ValueError("every transition is terminal: the report needs non-terminal transitions (s, a, s')")
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    return rows


def _multistep(model, data: dict, k: int, max_segments: int, seed: int, device, dtype) -> dict | None:
    """Open-loop error at horizons 1..k on chained stretches of the data, beside predicting no change."""
    segments = chained_segments(data, k)
    if len(segments) == 0:
        return None
    if len(segments) > max_segments:
        keep = np.random.default_rng(seed + 1).choice(len(segments), size=max_segments, replace=False)
        segments = segments[np.sort(keep)]
    obs, act = segments_to_arrays(data, segments)
    obs_t = torch.as_tensor(obs, device=device, dtype=dtype)
    act_t = torch.as_tensor(act, device=device, dtype=dtype)
    error = multistep_error(model, obs_t, act_t)
    no_change = np.sqrt(((obs[:, 1:] - obs[:, :1]) ** 2).mean(axis=(0, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = error / no_change
    return {
        "k": k,
        "segments": int(len(segments)),
        "rms_error": error.tolist(),
        "rms_no_change": no_change.tolist(),
        "relative": relative.tolist(),
    }


def _symmetry_rows(model, s, a, s_next, settings, chunk: int = 512):
    """:func:`~kfc_lite.symmetry_rows.build_rows` of the sample, in chunks over the host's cores with one torch
    thread each, as the symmetry table is built: batched ``eig`` on several OpenMP threads ran about 40 times
    slower on a busy 2-core machine than on one."""
    from kfc_lite.settings import available_cores, thread_pool

    starts = range(0, len(s), chunk)
    one = lambda i: build_rows(model, s[i : i + chunk], a[i : i + chunk], s_next[i : i + chunk], settings)
    pool = thread_pool(max(1, min(available_cores(), len(starts))), name="kfc_lite-report")
    try:
        parts = list(pool.map(one, starts))
    finally:
        pool.shutdown(wait=True)
    return SymmetryRows(*(None if fields[0] is None else torch.cat(fields) for fields in zip(*parts)))


@torch.no_grad()
def koopman_report(
    model,
    transitions: dict,
    augmenter=None,
    *,
    variant: str = "kfc++",
    shift_sigma: float = 1.0,
    gauged: bool = False,
    sample: int = 4096,
    k: int = 10,
    seed: int = 0,
    history: dict | None = None,
) -> dict:
    """The quality report of ``model`` on ``transitions``, for the symmetry a KFC run would apply (module docstring).

    Args:
        model: the frozen Koopman model: ``encode``, ``decode``, ``operator`` (and ``rollout`` for the k-step
            error), e.g. a :class:`~kfc_lite.koopman.KoopmanForwardModel`.
        transitions: ``observations``, ``actions``, ``next_observations``, ``terminals`` (optionally
            ``timeouts``, ``episode_starts``), as :func:`~kfc_lite.koopman.fit_koopman` takes them.
        augmenter: the run's :class:`~kfc_lite.rl.koopman_augment.KoopmanAugmenter`; its variant, ``shift_sigma``, form
            (``gauged``), guard settings and ``eps`` distribution are used. Without it, ``variant``,
            ``shift_sigma`` and ``gauged`` describe the symmetry (the defaults are TrainConfig's).
        sample: how many non-terminal transitions (drawn with ``seed``) enter every number but the k-step error.
        k: horizon of the k-step error; at most ``sample // k`` stretches of ``k`` chained rows enter it.
        seed: the sample and the ``eps`` draws; the global random state is left as it was.
        history: ``fit_koopman``'s history, for how pre-training ended; default: ``model.extra["history"]``
            (what :func:`~kfc_lite.koopman.load_koopman` attaches), if any.

    Returns a dict of plain numbers and lists (NaN where a number is undefined; :func:`jsonable` turns those into
    None for JSON). ``gate`` holds the threshold, whether the offset dominates, and whether the gate is triggered
    (the configured form is plain and the offset dominates).
    """
    from kfc_lite.rl.augment import KoopmanAugmenter  # here: kfc_lite.rl imports the Koopman tools

    for name, value, low in (("sample", sample, 1), ("k", k, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"koopman_report: {name} must be an integer >= {low}, got {value!r}")
    was_training = getattr(model, "training", False)
    if augmenter is None:
        augmenter = KoopmanAugmenter(model, variant=variant, shift_sigma=shift_sigma, gauged=gauged)
    elif not isinstance(augmenter, KoopmanAugmenter):
        raise TypeError(
            f"augmenter must be a KoopmanAugmenter (the run's KFC/KFC++ augmenter), got "
            f"{type(augmenter).__name__}; or leave it out and pass variant=, shift_sigma=, gauged="
        )
    if history is None:
        history = (getattr(model, "extra", None) or {}).get("history")

    data = validate_transitions(transitions)
    rows_idx = _sample_rows(data, sample, seed)
    device, dtype = model_device_dtype(model)
    dtype = dtype or torch.float32
    as_t = lambda key: torch.as_tensor(data[key][rows_idx], device=device, dtype=dtype)
    s, a, s_next = as_t("observations"), as_t("actions"), as_t("next_observations")
    if hasattr(model, "eval"):
        model.eval()

    # how well the model reconstructs and predicts
    z = model.encode(s)
    offset = model.decode(z) - s
    offset_norm = torch.linalg.vector_norm(offset, dim=-1)
    spread = s.std(dim=0) if len(s) > 1 else torch.zeros_like(s[0])
    per_dim = offset.abs().mean(dim=0) / spread  # inf or NaN where a dimension does not vary in the sample
    predicted = model.decode((model.operator(a) @ z.unsqueeze(-1)).squeeze(-1))
    one_step = torch.linalg.vector_norm(predicted - s_next, dim=-1).mean()
    no_change = torch.linalg.vector_norm(s_next - s, dim=-1).mean()

    # what the configured symmetry does, plain and gauged, with the same eps
    rows = _symmetry_rows(model, s, a, s_next, augmenter.table_settings)
    with torch.random.fork_rng(devices=[]):  # the report must not move the run's random streams
        torch.manual_seed(seed)
        eps = augmenter.draw_eps(len(s), z.shape[-1], "cpu", dtype).to(device)
    moved = model.decode(moved_latents(rows, eps))[:, 0]
    valid = rows.valid
    shift_plain = torch.linalg.vector_norm(moved - s, dim=-1)[valid]
    shift_gauged = torch.linalg.vector_norm(moved - model.decode(rows.latent[:, 0]), dim=-1)[valid]
    if hasattr(model, "train"):
        model.train(was_training)

    mean = lambda x: float(x.double().mean()) if x.numel() else float("nan")
    offset_mean, gauged_mean = mean(offset_norm), mean(shift_gauged)
    ratio = offset_mean / gauged_mean if gauged_mean > 0 else (math.inf if offset_mean > 0 else float("nan"))
    dominates = bool(ratio > OFFSET_DOMINATES_RATIO)
    per_dim = per_dim.double().cpu().numpy()
    worst = int(np.nanargmax(np.where(np.isfinite(per_dim), per_dim, np.nan))) if np.isfinite(per_dim).any() else None
    n_data = int(len(data["observations"]))
    report = {
        "sample": {
            "rows": int(len(rows_idx)),
            "non_terminal_rows": int((~data["terminals"]).sum()),
            "dataset_rows": n_data,
            "seed": int(seed),
        },
        "symmetry": {
            "variant": augmenter.variant,
            "shift_sigma": augmenter.shift_sigma,
            "form": "gauged" if augmenter.gauged else "plain",
        },
        "training": training_summary(history),
        "reconstruction_offset": offset_mean,
        "reconstruction_offset_per_dim": per_dim.tolist(),
        "reconstruction_offset_worst_dim": worst,
        "state_norm": mean(torch.linalg.vector_norm(s, dim=-1)),
        "one_step_error": float(one_step),
        "no_change_error": float(no_change),
        "one_step_relative": float(one_step / no_change) if float(no_change) > 0 else float("nan"),
        "multistep": _multistep(model, data, k, max(1, sample // k), seed, device, dtype)
        if hasattr(model, "rollout")
        else None,
        "shift_plain": mean(shift_plain),
        "shift_gauged": gauged_mean,
        "offset_to_shift_ratio": ratio,
        "commutation_error": mean(rows.commutation[valid]),
        "fallback_rate": 1.0 - float(valid.double().mean()),
        "gate": {
            "threshold": OFFSET_DOMINATES_RATIO,
            "offset_dominates": dominates,
            "triggered": dominates and not augmenter.gauged,
        },
    }
    return report


# -- reading it -------------------------------------------------------------------------------------------------
def gate_message(report: dict) -> str | None:
    """The gate's text (numbers and both remedies) when the report triggers it, else None.

    Only the plain form is gated: the gauged form's shift ``D((I + sigma) z) - D(z)`` does not contain the offset.
    """
    if not report["gate"]["triggered"]:
        return None
    sym = report["symmetry"]
    training = report.get("training") or {}
    how = f" Pre-training was capped: {training['cap']}." if training.get("cap") else ""
    return (
        f"the Koopman model's reconstruction offset dominates the plain {sym['variant'].upper()} augmentation: "
        f"mean ||D(E(s)) - s|| = {report['reconstruction_offset']:.3g}, while the symmetry itself "
        f"(shift_sigma={sym['shift_sigma']:g}) moves a state by {report['shift_gauged']:.3g} "
        f"(offset / symmetry shift = {report['offset_to_shift_ratio']:.3g} > {report['gate']['threshold']:g}); "
        f"the plain form moves states by {report['shift_plain']:.3g} on average, mostly towards D(E(s)), so the "
        f"critic would train on states of the model rather than of the data.{how} Remedies: train the Koopman "
        "model longer (--set koopman.max_epochs=400 and no koopman.max_steps cap, so that the paper's early "
        "stopping ends it), or use the gauged form, which leaves the offset out (--set gauged=true; "
        "TrainConfig(augment=AugmentConfig(gauged=True))). koopman_gate='off' turns this check off, 'error' "
        "makes it an error."
    )


def _g(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def format_report(report: dict) -> str:
    """A short readable block of the report's numbers (what ``kfc-lite train`` prints before Q-learning)."""
    sym, smp = report["symmetry"], report["sample"]
    lines = [
        f"Koopman model report ({smp['rows']:,} of {smp['non_terminal_rows']:,} non-terminal transitions, "
        f"seed {smp['seed']}; {sym['variant']}, shift_sigma={sym['shift_sigma']:g}, {sym['form']} form)"
    ]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<18}{text}")

    t = report.get("training")
    if t is not None:
        if t["cap"]:
            row("pre-training", f"capped by {t['cap']}")
        else:
            end = "by early stopping" if t["stopped"] == "early_stopping" else f"at max_epochs={t['max_epochs']}"
            row(
                "pre-training", f"stopped {end} after {t['epochs']} epochs ({t['steps']:,} steps): the paper's schedule"
            )
    worst = report["reconstruction_offset_worst_dim"]
    worst_text = (
        ""
        if worst is None
        else (f" (largest in dimension {worst}: {_g(report['reconstruction_offset_per_dim'][worst], 2)} x its spread)")
    )
    row(
        "reconstruction",
        f"offset ||D(E(s)) - s|| = {_g(report['reconstruction_offset'])}{worst_text}; "
        f"mean ||s|| = {_g(report['state_norm'])}",
    )
    row(
        "one-step error",
        f"{_g(report['one_step_relative'])} x predicting no change "
        f"({_g(report['one_step_error'])} against {_g(report['no_change_error'])})",
    )
    ms = report["multistep"]
    if ms is not None:
        row(
            f"{ms['k']}-step error",
            f"{_g(ms['relative'][-1])} x predicting no change "
            f"(RMS {_g(ms['rms_error'][-1])} against {_g(ms['rms_no_change'][-1])}, "
            f"{ms['segments']} stretches)",
        )
    else:
        row("k-step error", "n/a (no chained stretches of trajectory in the data)")
    row(
        "state shift",
        f"plain {_g(report['shift_plain'])}, gauged {_g(report['shift_gauged'])}; "
        f"offset / symmetry shift = {_g(report['offset_to_shift_ratio'])} "
        f"(gate above {report['gate']['threshold']:g})",
    )
    row(
        "symmetry",
        f"commutation error {_g(report['commutation_error'])}, guard fall-back rate {report['fallback_rate']:.2%}",
    )
    gate = report["gate"]
    if gate["triggered"]:
        verdict = "TRIGGERED: the plain form's shift is mostly the reconstruction offset"
    elif gate["offset_dominates"]:
        verdict = "not applied: the offset dominates, but the gauged form leaves it out"
    else:
        verdict = "passed: the symmetry moves states more than the offset does"
    row("gate", verdict)
    return "\n".join(lines)


def jsonable(value):
    """The report with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
