"""The symmetry explorer of notebook 03: move a logged transition along symmetries of a Koopman model and draw it.

:func:`symmetry_explorer_update` (plain, testable) draws one figure; :func:`symmetry_explorer` adds sliders.
The numbers come from :func:`kfc_lite.viz.symmetry.shift_transition`, whose docstring and module say what the
sliders do and what the plain and gauged forms of a moved state are; this module only draws them. 2-D states get
a phase portrait, larger ones per-dimension bars (with MuJoCo pictures when asked); both get the eigenvalues of
``K(a)`` with the slider directions circled. :mod:`kfc_lite.viz.symmetry` re-exports every name defined here.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kfc_lite.viz.symmetry import EXPLORER_KFC_SCALE, _to_numpy, episode_indices, shift_transition

__all__ = ["FORMS", "explorer_caption", "symmetry_explorer", "symmetry_explorer_update"]

#: the slider directions' colours, apart from those of the logged (C0) and moved (C1, C2) states
_DIRECTION_COLORS = ("C4", "C5", "C6", "C8", "C9")

#: the explorer's forms of the moved state: the paper's plain decode, the gauged residual, or both side by side
FORMS = ("plain", "gauged", "both")
_FORM_COLOR = {"plain": "C1", "gauged": "C2"}
_FORM_NAME = {"plain": "plain D((I+σ)E(s))", "gauged": "gauged s + D((I+σ)E(s)) − D(E(s))"}


def _forms(form: str | None, gauged: bool) -> tuple[str, ...]:
    form = form if form is not None else ("gauged" if gauged else "plain")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    return ("plain", "gauged") if form == "both" else (form,)


def explorer_caption(state: dict, forms=("plain", "gauged")) -> str:
    """The explorer's text above the figure: first the reconstruction offset (what the plain form adds even at
    ``sigma = 0``), then what the symmetry does in each shown form and the commutation and model errors."""
    offset = float(state["reconstruction_offset"])
    at_zero = not np.any(state["sigma"])
    lines = [
        f"reconstruction offset ‖D(E(s)) − s‖ = {offset:.3g}: "
        + (
            "at ε = 0 the plain form's s~ is D(E(s)), already this far from s; the gauged form's s~ is s itself"
            if at_zero
            else "the plain form's s~ carries it for every ε; the gauged form subtracts it"
        )
    ]
    parts = []
    for f in forms:
        shift = float(np.linalg.norm(state[f"s_tilde_{f}"] - state["s"]))
        text = f"{f}: ‖s~ − s‖ = {shift:.3g}"
        if f"true_error_{f}" in state:
            text += f", true-dynamics error {float(state[f'true_error_{f}']):.3g}"
        parts.append(text)
    lines.append(" · ".join(parts))
    line = (
        f"commutation error {float(state['commutation_error']):.1e} · model error: logged "
        f"{float(state['model_error_original']):.3g}, moved {float(state['model_error']):.3g}"
    )
    if not state["valid"]:
        line += " · GUARD: K(a) is ill-conditioned, the augmenter would fall back to noise"
    lines.append(line)
    return "\n".join(lines)


# -- the figure ------------------------------------------------------------------------------------------
def symmetry_explorer_update(
    model,
    data,
    index=0,
    eps_values=(),
    kfc_eps: float = 0.0,
    *,
    trajectory: bool = False,
    gauged: bool = False,
    form: str | None = None,
    true_step=None,
    state_labels=None,
    kfc_scale=EXPLORER_KFC_SCALE,
    max_background: int = 2000,
    render_env: str | None = None,
    fig=None,
):
    """Draw transition ``index`` of ``data`` and its image under the symmetry set by the sliders.

    ``eps_values``: KFC++ parameters of the leading eigen-directions; ``kfc_eps``: KFC's scalar;
    ``form``: which moved state to draw, ``"plain"`` (the paper's ``D((I + sigma) E(s))``, the default),
    ``"gauged"`` (``s + D((I + sigma) E(s)) - D(E(s))``) or ``"both"`` (``gauged=True`` is ``form="gauged"``).
    The model's reconstruction ``D(E(s))``, ``D(E(s'))`` is always drawn: it is where the plain form puts the
    states at ``eps = 0``. ``trajectory=True`` moves every transition of the stretch around ``index``, each with its
    own ``sigma_{a_t}`` (2-D states only). 2-D states are drawn as a phase portrait with the eigenvalues of
    ``K(a)``; larger states as per-dimension bars of ``s, s~`` and ``s', s~'``. ``true_step(s, a) -> s'``
    (NumPy) adds where the real system goes from ``s~``. ``render_env`` ('hopper', 'halfcheetah',
    'walker2d') adds MuJoCo pictures of ``s`` and ``s~`` under the bars (``kfc_lite.viz.render``; without an
    offscreen renderer the bars stay alone). Returns the figure; ``fig.explorer_state`` holds the numbers
    (both forms of the moved states, the reconstruction, the commutation error, model errors, states).
    """
    forms = _forms(form, gauged)
    obs = _to_numpy(data["observations"])
    N, d = obs.shape
    index = int(index)
    if not 0 <= index < N:
        raise IndexError(f"index {index} is outside the dataset of {N} transitions")
    idx = episode_indices(data, index) if (trajectory and d == 2) else np.array([index])
    acts = _to_numpy(data["actions"]).reshape(N, -1)
    res = shift_transition(
        model,
        obs[idx],
        acts[idx],
        _to_numpy(data["next_observations"])[idx],
        eps_values,
        kfc_eps,
        gauged=forms[0] == "gauged",
        true_step=true_step,
        kfc_scale=kfc_scale,
    )
    k = int(np.where(idx == index)[0][0])  # the chosen transition's row in the (possibly whole-stretch) batch
    labels = list(state_labels) if state_labels is not None else [f"state {i}" for i in range(d)]
    n_sliders = len(list(eps_values))
    frames = None
    if render_env is not None and d > 2:
        from kfc_lite.viz.render import render_observations

        frames = render_observations(render_env, np.stack([res["s"][k], res["s_tilde"][k]]), width=320, height=240)
    if fig is None:
        fig = plt.figure(figsize=(12, 5.2) if d == 2 else (13, 5.2 if frames is None else 9.2))
    fig.clf()
    if d == 2:
        ax, ax_eig = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        _draw_phase_portrait(ax, obs, res, k, forms, max_background)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        shown = " and ".join(f"{f} ({'orange' if f == 'plain' else 'green'})" for f in forms)
        ax.set_title(f"transition {index}: logged (blue), moved: {shown}", fontsize=10)
        ax.legend(loc="best", fontsize=7)
    else:
        ax_eig = _draw_bar_panels(fig, res, k, forms, labels, index, frames, render_env)
    _eigen_panel(ax_eig, res["eigenvalues"][k], res["directions"][k], n_sliders)
    state = _chosen_transition_state(res, k, len(idx))
    fig.suptitle(explorer_caption(state, forms), fontsize=9)
    fig.tight_layout()
    fig.explorer_state = state
    fig.explorer_state["indices"] = idx
    fig.explorer_state["forms"] = forms
    return fig


def _chosen_transition_state(res: dict, k: int, n: int) -> dict:
    """``shift_transition``'s numbers for row ``k`` of a batch of ``n``: per-transition arrays are cut to that row,
    everything else (the ``gauged`` flag) is kept; the eigen-direction groups are left out."""
    return {
        key: (v[k] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v)
        for key, v in res.items()
        if key != "directions"
    }


def _draw_phase_portrait(ax, obs, res, k, forms, max_background):
    """The 2-D panel: the data, the logged and moved transitions, the reconstruction, the true steps; zoomed on them."""
    rng = np.random.default_rng(0)
    N = obs.shape[0]
    bg = obs[rng.choice(N, size=min(N, max_background), replace=False)]
    ax.scatter(bg[:, 0], bg[:, 1], s=2, color="0.85", label="data states")
    if len(res["s"]) > 1:
        _draw_stretch(ax, res, forms)
    _draw_reconstruction(ax, res, k)
    _draw_transition_arrows(ax, res, k, forms)
    for f in forms:
        if f"true_next_{f}" in res:
            ax.scatter(
                *res[f"true_next_{f}"][k],
                marker="x",
                color=_FORM_COLOR[f],
                s=70,
                lw=2,
                zorder=4,
                label=f"true step from s~ ({f})",
            )
    _zoom_on_transitions(ax, obs, res, forms)


def _draw_stretch(ax, res, forms):
    """The logged stretch around the chosen transition as one line, and every moved transition (each its own σ)."""
    s, sn = res["s"], res["s_next"]
    ax.plot(np.r_[s[:, 0], sn[-1:, 0]], np.r_[s[:, 1], sn[-1:, 1]], color="C0", lw=1, label="logged stretch")
    for f in forms:
        st, snt = res[f"s_tilde_{f}"], res[f"s_next_tilde_{f}"]
        for i in range(len(s)):
            ax.plot(
                [st[i, 0], snt[i, 0]],
                [st[i, 1], snt[i, 1]],
                color=_FORM_COLOR[f],
                lw=1.5,
                label=f"moved transitions, {f} (each its own σ)" if i == 0 else None,
            )


def _draw_reconstruction(ax, res, k):
    """The model's reconstruction: where the plain form puts s and s' before any symmetry acts.

    Drawn on top, as rings: at eps = 0 the plain pair starts exactly there and would hide them.
    """
    s, sn = res["s"], res["s_next"]
    rec, rec_n = res["s_recon"][k], res["s_next_recon"][k]
    ax.plot([s[k, 0], rec[0]], [s[k, 1], rec[1]], ls=":", color="0.2", lw=1.4, zorder=5, label="reconstruction offset")
    ax.plot([sn[k, 0], rec_n[0]], [sn[k, 1], rec_n[1]], ls=":", color="0.2", lw=1.4, zorder=5)
    ax.scatter(
        *np.stack([rec, rec_n]).T,
        s=110,
        facecolors="none",
        edgecolors="0.2",
        linewidths=1.4,
        zorder=5,
        label="D(E(s)), D(E(s')): reconstruction",
    )


def _draw_transition_arrows(ax, res, k, forms):
    """An arrow from s to s' for each moved form, then for the logged pair: last, on top, because at eps = 0 the
    gauged pair lies exactly on it. A transition that does not move is a dot."""
    arrows = [
        (res[f"s_tilde_{f}"][k], res[f"s_next_tilde_{f}"][k], _FORM_COLOR[f], f"(s~, s~') {_FORM_NAME[f]}")
        for f in forms
    ]
    arrows.append((res["s"][k], res["s_next"][k], "C0", "(s, s') logged"))
    for p, q, c, lab in arrows:
        if np.allclose(p, q):
            ax.scatter(*p, color=c, s=30, zorder=3, label=lab)
            continue
        lw = 1.4 if c == "C0" else 2.4
        ax.annotate("", xy=q, xytext=p, arrowprops=dict(arrowstyle="->", color=c, lw=lw))
        ax.scatter(*p, color=c, s=30 if c == "C0" else 45, zorder=3, label=lab)


def _zoom_on_transitions(ax, obs, res, forms):
    """Limits around the drawn transitions: the background shows where the data lies, but would hide a small shift."""
    pts = [res["s"], res["s_next"], res["s_recon"], res["s_next_recon"]]
    for f in forms:
        pts += [res[f"s_tilde_{f}"], res[f"s_next_tilde_{f}"]]
        if f"true_next_{f}" in res:
            pts.append(res[f"true_next_{f}"])
    pts = np.concatenate(pts)
    lo, hi = pts.min(0), pts.max(0)
    pad = np.maximum(0.25 * (hi - lo), 0.15 * np.maximum(np.abs(obs).max(0), 1e-3) * 0.5)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def _draw_bar_panels(fig, res, k, forms, labels, index, frames, render_env):
    """Larger states: bars of s, s~ and of s', s~' per dimension, and the MuJoCo pictures of s and s~ below them
    when there are ``frames``. Returns the (empty) axes for the eigenvalues, third in the top row."""
    rows = 1 if frames is None else 2
    ax_s, ax_n, ax_eig = (fig.add_subplot(rows, 3, i) for i in (1, 2, 3))
    if frames is not None:
        for j, (frame, name) in enumerate(zip(frames, ("s (logged)", "s~ (moved)"), strict=True)):
            ax_img = fig.add_subplot(rows, 3, 4 + j)
            ax_img.imshow(frame)
            ax_img.set_axis_off()
            ax_img.set_title(f"{render_env}: {name}")
    for ax, name, key in ((ax_s, "s", "s"), (ax_n, "s'", "s_next")):
        _bar_panel(ax, res, k, forms, labels, index, name, key)
    return ax_eig


def _bar_panel(ax, res, k, forms, labels, index, name, key):
    """One state (``key`` "s" or "s_next") per dimension: logged, its reconstruction, each moved form and, for s',
    where the true dynamics go from s~."""
    x = np.arange(res[key].shape[-1])
    width = 0.8 / (1 + len(forms))
    offsets = (np.arange(1 + len(forms)) - len(forms) / 2) * width
    ax.bar(x + offsets[0], res[key][k], width=width, color="C0", label=f"{name} (logged)")
    recon = res["s_recon" if key == "s" else "s_next_recon"][k]
    ax.scatter(x + offsets[0], recon, marker="_", s=120, color="0.2", zorder=3, label=f"D(E({name})) (reconstruction)")
    for j, f in enumerate(forms):
        moved = res[f"s_tilde_{f}" if key == "s" else f"s_next_tilde_{f}"][k]
        ax.bar(x + offsets[1 + j], moved, width=width, color=_FORM_COLOR[f], label=f"{name}~ ({f})")
        if name == "s'" and f"true_next_{f}" in res:
            ax.scatter(
                x + offsets[1 + j],
                res[f"true_next_{f}"][k],
                marker="x",
                color="C3",
                zorder=3,
                label=f"true step from s~ ({f})",
            )
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel("value (state units)")
    ax.set_title(f"{name} of transition {index}")
    ax.legend(fontsize=7)


def _eigen_panel(ax, values, directions, n_highlight):
    """The eigenvalues of K(a) against the unit circle; the first ``n_highlight`` direction groups circled and
    numbered as their sliders."""
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, label="unit circle")
    ax.scatter(values.real, values.imag, s=14, color="0.5", label="eigenvalues of K(a)")
    for j, group in enumerate(directions[:n_highlight]):
        v = values[group[0]]
        color = _DIRECTION_COLORS[j % len(_DIRECTION_COLORS)]
        ax.scatter(values[group].real, values[group].imag, s=40, facecolors="none", edgecolors=color)
        ax.annotate(str(j + 1), (v.real, v.imag), xytext=(4, 4), textcoords="offset points", color=color)
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title("eigenvalues of K(a); circled: slider directions")
    ax.legend(loc="lower left", fontsize=7)


# -- the widget ------------------------------------------------------------------------------------------
def symmetry_explorer(
    model,
    data,
    n_sliders: int = 4,
    eps_max: float = 0.5,
    true_step=None,
    state_labels=None,
    index: int = 0,
    render_env: str | None = None,
    form: str = "plain",
):
    """Sliders (transition index, ``n_sliders`` KFC++ directions, KFC scalar), the form of the moved state
    (plain, gauged, both) and a whole-stretch switch around :func:`symmetry_explorer_update`; returns the widget."""
    import ipywidgets as widgets
    from IPython.display import display

    _forms(form, False)
    N = len(_to_numpy(data["observations"]))
    # a description width of its own: the default clips short labels such as "ε1" on the left inside an HBox
    style = {"description_width": "initial"}
    slider = dict(
        min=-eps_max,
        max=eps_max,
        step=eps_max / 50,
        continuous_update=False,
        style=style,
        layout=widgets.Layout(width="auto", min_width="16em"),
    )
    index_w = widgets.IntSlider(
        value=index,
        min=0,
        max=N - 1,
        description="transition",
        continuous_update=False,
        style=style,
        layout=widgets.Layout(width="auto", min_width="24em"),
    )
    eps_w = [widgets.FloatSlider(value=0.0, description=f"ε{j + 1}", **slider) for j in range(n_sliders)]
    kfc_w = widgets.FloatSlider(value=0.0, description="KFC ε", **slider)
    form_w = widgets.ToggleButtons(
        options=[("plain (paper)", "plain"), ("gauged", "gauged"), ("both", "both")],
        value=form,
        description="moved state",
        style=style,
    )
    traj_w = widgets.Checkbox(value=False, description="move the whole stretch", style=style)
    out = widgets.Output()

    def redraw(**kw):
        with out:
            out.clear_output(wait=True)
            fig = symmetry_explorer_update(
                model,
                data,
                kw["index"],
                [kw[f"e{j}"] for j in range(n_sliders)],
                kw["kfc"],
                trajectory=kw["traj"],
                form=kw["form"],
                true_step=true_step,
                state_labels=state_labels,
                render_env=render_env,
            )
            display(fig)
            plt.close(fig)

    controls = {
        "index": index_w,
        "kfc": kfc_w,
        "traj": traj_w,
        "form": form_w,
        **{f"e{j}": w for j, w in enumerate(eps_w)},
    }
    widgets.interactive_output(redraw, controls)
    help_text = widgets.HTML(
        "<small>ε<i>j</i>: the entry of KFC++'s vector <b>ε</b> on the <i>j</i>-th leading eigen-direction of K(a) "
        "(circled in the eigenvalue plot) · KFC ε: the scalar in σ = εG (G at unit gain) · moved state: plain "
        "s~ = D((I + σ)E(s)) (the paper's), gauged s~ = s + D((I + σ)E(s)) − D(E(s)) · at every ε = 0 the plain "
        "form sits at the reconstruction D(E(s)), the gauged form at s</small>"
    )
    return widgets.VBox(
        [
            widgets.HBox([index_w, traj_w]),
            form_w,
            widgets.HBox(eps_w[:2] + [kfc_w]),
            widgets.HBox(eps_w[2:]),
            help_text,
            out,
        ]
    )
