"""Figures for notebook 01 (Koopman on toy systems) and its interactive explorer.

Every function returns a Matplotlib figure (tests call them with the Agg backend); the explorer is
:func:`toy_explorer_update` (plain, testable) plus :func:`toy_explorer` (a thin ipywidgets layer).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

#: explorer dictionary choices -> (label, factory building an observables object or None for DMD)
EXPLORER_DICTIONARIES = {
    "state (DMD)": "x1, x2: plain DMD",
    "exact (x1, x2, x1²)": "the three observables that close the map",
    "polynomial degree 2": "1, x1, x2, x1², x1x2, x2²",
    "polynomial degree 3": "all monomials up to degree 3",
    "radial basis (20)": "x1, x2 and 20 Gaussian bumps",
}


def _make_model(dictionary: str, rank=None):
    from kfc_lite.koopman.edmd import DMD, EDMD
    from kfc_lite.koopman.observables import Polynomial, RadialBasis
    from kfc_lite.koopman.systems import SlowManifold

    if dictionary == "state (DMD)":
        return DMD(rank=rank)
    if dictionary == "exact (x1, x2, x1²)":
        return EDMD(SlowManifold.exact_observables(), rank=rank)
    if dictionary == "polynomial degree 2":
        return EDMD(Polynomial(2), rank=rank)
    if dictionary == "polynomial degree 3":
        return EDMD(Polynomial(3), rank=rank)
    if dictionary == "radial basis (20)":
        return EDMD(RadialBasis(n_centers=20, gamma=2.0, seed=0), rank=rank)
    raise ValueError(f"unknown dictionary {dictionary!r}: choose one of {list(EXPLORER_DICTIONARIES)}")


def plot_eigenvalues(estimated, truth=None, ax=None, title: str = "Koopman eigenvalues", label: str = "estimated"):
    """Estimated eigenvalues (dots) against the true ones (rings) in the complex plane, with the unit circle."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    fig = ax.figure
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), color="0.7", lw=1, label="unit circle |λ| = 1")
    est = np.asarray(estimated, dtype=complex)
    if truth is not None:
        tr = np.asarray(truth, dtype=complex)
        ax.scatter(tr.real, tr.imag, s=140, facecolors="none", edgecolors="C3", lw=2, label="truth", zorder=3)
    ax.scatter(est.real, est.imag, s=30, color="C0", label=label, zorder=4)
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.set_aspect("equal")
    lim = max(1.1, float(np.max(np.abs(est))) * 1.1 if est.size else 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("Re λ (per step)")
    ax.set_ylabel("Im λ (per step)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_trajectories(
    true, predicted, dt: float | None = None, state_names=None, title: str = "Predicted vs true trajectory", fig=None
):
    """Each state coordinate over time: the true trajectory (line) and a model's prediction (dashed)."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape:
        raise ValueError(f"true has shape {true.shape} and predicted {predicted.shape}: they must match")
    d = true.shape[1]
    names = list(state_names) if state_names is not None else [f"x{i + 1} (state units)" for i in range(d)]
    if fig is None:
        fig = plt.figure(figsize=(4.5 * d, 3.2))
    axes = fig.subplots(1, d, squeeze=False)[0]
    t = np.arange(len(true)) * (dt if dt else 1)
    for i, ax in enumerate(axes):
        ax.plot(t, true[:, i], color="k", lw=2, label="true")
        ax.plot(t, predicted[:, i], "--", color="C1", lw=2, label="Koopman model")
        ax.set_xlabel("time [s]" if dt else "step k")
        ax.set_ylabel(names[i])
        ax.set_title(f"{names[i].split(' ')[0]} over time")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_eigenfunctions(
    model,
    box,
    n_grid: int = 80,
    which=None,
    state_names=("x1", "x2"),
    part: str = "real",
    trajectory=None,
    title: str = "Koopman eigenfunctions",
):
    """Eigenfunctions of a fitted 2-D model over the box ((low1, low2), (high1, high2)), one panel each.

    ``part`` is "real", "imag" or "abs" (for complex pairs the modulus shows the level sets best).
    A trajectory, when given, is drawn on top.
    """
    low, high = (np.asarray(b, float) for b in box)
    if low.shape != (2,) or high.shape != (2,):
        raise ValueError("plot_eigenfunctions draws 2-D state spaces: box must be ((low1, low2), (high1, high2))")
    g1, g2 = np.meshgrid(np.linspace(low[0], high[0], n_grid), np.linspace(low[1], high[1], n_grid))
    grid = np.column_stack([g1.ravel(), g2.ravel()])
    phi = model.eigenfunctions(grid)
    lam = model.eigenvalues
    idx = list(range(phi.shape[1]) if which is None else which)
    take = {"real": np.real, "imag": np.imag, "abs": np.abs}[part]
    fig, axes = plt.subplots(1, len(idx), figsize=(3.8 * len(idx), 3.4), squeeze=False)
    for ax, i in zip(axes[0], idx):
        values = take(phi[:, i]).reshape(g1.shape)
        scale = np.max(np.abs(values)) or 1.0  # eigenfunctions are defined up to a factor: show them normalised
        cs = ax.contourf(g1, g2, values / scale, levels=21, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.contour(g1, g2, values / scale, levels=[0.0], colors="k", linewidths=1)
        if trajectory is not None:
            ax.plot(trajectory[:, 0], trajectory[:, 1], ".-", color="gold", ms=3, lw=1)
        ax.set_title(
            f"{part} φ for λ = {lam[i].real:.3f}" + (f"{lam[i].imag:+.3f}i" if abs(lam[i].imag) > 1e-9 else ""),
            fontsize=9,
        )
        ax.set_xlabel(state_names[0])
        ax.set_ylabel(state_names[1])
        fig.colorbar(cs, ax=ax, shrink=0.8, label="φ / max|φ|")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def toy_explorer_update(
    mu: float = 0.9,
    lam: float = 0.5,
    dictionary: str = "exact (x1, x2, x1²)",
    c: float = 1.0,
    n_trajectories: int = 10,
    data_steps: int = 20,
    n_steps: int = 30,
    x0=(1.0, -0.5),
    seed: int = 0,
    fig=None,
):
    """Fit the chosen dictionary to the slow-manifold map (μ, λ, c) and draw what it gets right and wrong.

    The data are ``n_trajectories`` seeded trajectories of ``data_steps`` steps from starts in [-1, 1]²,
    cut into snapshot pairs, as a time series would give them.

    Left: the fitted eigenvalues against the truth μ, λ, μ². Right: a trajectory from ``x0`` predicted
    by the linear Koopman model against the true one. Returns the figure; its title reports the
    relative one-step residual and the eigenvalue error, so a test can read what the figure shows.
    """
    from kfc_lite.koopman.systems import SlowManifold

    system = SlowManifold(mu, lam, c)
    X, Y = system.trajectory_snapshots(n_trajectories, data_steps, seed)
    model = _make_model(dictionary).fit(X, Y)
    truth = system.eigenvalues
    est = model.eigenvalues
    # error of the eigenvalue estimates closest to each true eigenvalue
    err = max(float(np.min(np.abs(est - t))) for t in truth)
    true_traj = system.trajectory(np.asarray(x0, float), n_steps)
    pred_traj = model.simulate(np.asarray(x0, float), n_steps)

    if fig is None:
        fig = plt.figure(figsize=(13, 4))
    fig.clear()
    ax_eig, ax1, ax2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1]})
    plot_eigenvalues(est, truth, ax=ax_eig, title=f"eigenvalues: {dictionary}")
    k = np.arange(n_steps + 1)
    for ax, i in ((ax1, 0), (ax2, 1)):
        ax.plot(k, true_traj[:, i], color="k", lw=2, label="true")
        ax.plot(k, pred_traj[:, i], "--", color="C1", lw=2, label="Koopman model")
        ax.set_xlabel("step k")
        ax.set_ylabel(f"x{i + 1} (dimensionless)")
        ax.set_title(f"x{i + 1} from x0 = {tuple(float(v) for v in x0)}")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"slow-manifold map μ={mu:.2f}, λ={lam:.2f}, c={c:.2f} · {len(est)} eigenvalues · "
        f"one-step residual {model.residual_:.1e} · worst eigenvalue error {err:.1e}"
    )
    fig.tight_layout()
    fig.explorer_state = {
        "residual": model.residual_,
        "eigenvalue_error": err,
        "eigenvalues": est,
        "true_trajectory": true_traj,
        "predicted_trajectory": pred_traj,
    }
    return fig


def toy_explorer(mu: float = 0.9, lam: float = 0.5, dictionary: str = "exact (x1, x2, x1²)"):
    """Sliders for μ and λ and a dictionary drop-down around :func:`toy_explorer_update`; returns the widget."""
    import ipywidgets as widgets
    from IPython.display import display

    mu_w = widgets.FloatSlider(value=mu, min=-1.2, max=1.2, step=0.05, description="μ", continuous_update=False)
    lam_w = widgets.FloatSlider(value=lam, min=-1.2, max=1.2, step=0.05, description="λ", continuous_update=False)
    dict_w = widgets.Dropdown(
        options=list(EXPLORER_DICTIONARIES),
        value=dictionary,
        description="dictionary",
        style={"description_width": "initial"},
    )
    out = widgets.Output()

    def redraw(mu, lam, dictionary):
        with out:
            out.clear_output(wait=True)
            fig = toy_explorer_update(mu, lam, dictionary)
            display(fig)
            plt.close(fig)

    widgets.interactive_output(redraw, {"mu": mu_w, "lam": lam_w, "dictionary": dict_w})
    help_text = widgets.HTML(
        "<small>" + " · ".join(f"<b>{k}</b>: {v}" for k, v in EXPLORER_DICTIONARIES.items()) + "</small>"
    )
    return widgets.VBox([widgets.HBox([mu_w, lam_w, dict_w]), help_text, out])
