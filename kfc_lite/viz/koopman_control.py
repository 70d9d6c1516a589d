"""Figures for notebook 02: loss curves, predictions at several horizons, and eigenvalues of K(a).

Plain functions return a Matplotlib figure (tests call them directly); :func:`operator_eigs_explorer` is the
thin ipywidgets layer over :func:`operator_eigs_update`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_loss_curves(history: dict, title: str = "Koopman model training"):
    """Train/validation forward and reconstruction losses per epoch (log scale), and the multi-step error."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ep = history["epoch"]
    ax = axes[0]
    ax.semilogy(ep, history["train_forward"], label="train: prediction", color="C0")
    ax.semilogy(ep, history["val_forward"], "--", label="validation: prediction", color="C0")
    ax.semilogy(ep, history["train_recon"], label="train: reconstruction", color="C1")
    ax.semilogy(ep, history["val_recon"], "--", label="validation: reconstruction", color="C1")
    ax.set(xlabel="epoch", ylabel="Huber loss (mean over coordinates)", title=f"{title}: losses")
    ax.legend(fontsize=8)
    ax = axes[1]
    k = history.get("config", {}).get("multistep_k", "k")
    ax.semilogy(ep, history["val_multistep"], color="C2")
    ax.set(xlabel="epoch", ylabel="RMS error (state units)", title=f"validation {k}-step open-loop error")
    fig.tight_layout()
    return fig


def _predict(model, s0, actions):
    """Open-loop predictions (S, k, d) from a torch model or any object with ``simulate`` (EDMDc)."""
    if hasattr(model, "rollout"):
        import torch

        p = next(model.parameters())
        with torch.no_grad():
            out = model.rollout(
                torch.as_tensor(s0, dtype=p.dtype, device=p.device),
                torch.as_tensor(actions, dtype=p.dtype, device=p.device),
            )
        return out.cpu().numpy()
    return np.asarray(model.simulate(s0, actions))


def k_step_predictions(model, states, actions, k: int) -> np.ndarray:
    """For one trajectory, states (T+1, d), actions (T, d_a): the k-step-ahead prediction of every state.

    Entry ``t`` (t >= k) is the prediction of ``states[t]`` made from ``states[t-k]`` with the k actions in
    between; entries before k are NaN.
    """
    states, actions = np.asarray(states), np.asarray(actions)
    actions = actions[:, None] if actions.ndim == 1 else actions
    T = actions.shape[0]
    out = np.full(states.shape, np.nan)
    if k > T:
        return out
    starts = np.arange(T - k + 1)
    windows = actions[starts[:, None] + np.arange(k)[None, :]]
    pred = _predict(model, states[starts], windows)
    out[starts + k] = pred[:, -1]
    return out


def plot_predictions(
    model,
    states,
    actions,
    horizons=(1, 10, 50),
    dt: float = 1.0,
    labels=None,
    time_unit="s",
    title="predicted vs true trajectory",
):
    """The true trajectory and the model's k-step-ahead predictions for several horizons k, one panel per state."""
    states = np.asarray(states)
    d = states.shape[1]
    labels = labels or [f"x{i}" for i in range(d)]
    t = np.arange(states.shape[0]) * dt
    fig, axes = plt.subplots(d, 1, figsize=(10, 2.6 * d), sharex=True, squeeze=False)
    preds = {k: k_step_predictions(model, states, actions, k) for k in horizons}
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, states[:, i], color="black", lw=2, label="true")
        for j, k in enumerate(horizons):
            ax.plot(t, preds[k][:, i], color=f"C{j}", lw=1.2, label=f"{k}-step prediction")
        ax.set_ylabel(labels[i])
    axes[0, 0].set_title(title)
    axes[0, 0].legend(fontsize=8, ncol=len(horizons) + 1)
    axes[-1, 0].set_xlabel(f"time ({time_unit})")
    fig.tight_layout()
    return fig


def plot_multistep_errors(curves: dict, dt: float = 1.0, time_unit: str = "s", title="open-loop error vs horizon"):
    """RMS error against prediction horizon for several models: ``curves`` maps a name to errors for k=1..K."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, err in curves.items():
        err = np.asarray(err)
        ax.semilogy(np.arange(1, len(err) + 1) * dt, err, label=name)
    ax.set(xlabel=f"prediction horizon ({time_unit})", ylabel="RMS error (state units)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def operator_matrix(model, action) -> np.ndarray:
    """K(a) as a NumPy matrix, from the neural model (torch) or an :class:`~kfc_lite.koopman.control.EDMDc` (NumPy)."""
    action = np.atleast_1d(np.asarray(action, dtype=np.float64))
    if hasattr(model, "parameters"):
        import torch

        p = next(model.parameters())
        with torch.no_grad():
            return model.operator(torch.as_tensor(action, dtype=p.dtype, device=p.device)).cpu().double().numpy()
    return np.asarray(model.operator(action))


def operator_eigs_update(model, action, reference_action=None, ax=None, title=None):
    """Eigenvalues of K(action) in the complex plane, with the unit circle and K(reference_action) for comparison.

    An eigenvalue ``lambda`` of a one-step operator is a mode that is multiplied by ``lambda`` every step: inside
    the unit circle it decays, outside it grows, and its angle is the rotation (frequency) per step.
    """
    action = np.atleast_1d(np.asarray(action, dtype=np.float64))
    ref = np.zeros_like(action) if reference_action is None else np.atleast_1d(np.asarray(reference_action, float))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 5))
    else:
        fig = ax.figure
    theta = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(theta), np.sin(theta), color="0.6", lw=1, label="unit circle |λ| = 1")
    ev_ref = np.linalg.eigvals(operator_matrix(model, ref))
    ev = np.linalg.eigvals(operator_matrix(model, action))
    ax.scatter(
        ev_ref.real, ev_ref.imag, s=30, facecolors="none", edgecolors="0.4", label=f"K(a = {np.round(ref, 2).tolist()})"
    )
    ax.scatter(ev.real, ev.imag, s=30, color="C3", label=f"K(a = {np.round(action, 2).tolist()})")
    r = max(1.05, float(np.abs(ev).max(initial=0)) * 1.05, float(np.abs(ev_ref).max(initial=0)) * 1.05)
    ax.set(
        xlim=(-r, r),
        ylim=(-r, r),
        aspect="equal",
        xlabel="Re λ",
        ylabel="Im λ",
        title=title or f"eigenvalues of K(a), max |λ| = {np.abs(ev).max():.3f}",
    )
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def operator_eigs_explorer(model, action_low=-1.0, action_high=1.0, step=0.05):
    """A slider per action coordinate that redraws :func:`operator_eigs_update` (ipywidgets)."""
    import ipywidgets as widgets
    from IPython.display import display

    d_a = getattr(model, "action_dim", None) or model.K_actions.shape[0]
    low = np.broadcast_to(np.asarray(action_low, float), (d_a,))
    high = np.broadcast_to(np.asarray(action_high, float), (d_a,))
    sliders = [
        widgets.FloatSlider(
            value=0.0, min=float(lo), max=float(hi), step=step, description=f"a[{i}]", continuous_update=False
        )
        for i, (lo, hi) in enumerate(zip(low, high))
    ]
    out = widgets.Output()

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            fig = operator_eigs_update(model, [s.value for s in sliders])
            display(fig)
            plt.close(fig)

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox(sliders), out])
    return box
