"""The symmetry explorer of notebook 03: move a logged transition along symmetries of a Koopman model.

:func:`symmetry_explorer_update` (plain, testable) draws one figure; :func:`symmetry_explorer` adds sliders.
The model is anything with ``encode``, ``decode`` and ``operator`` (a :class:`KoopmanForwardModel`, or a
stand-in); the data is a transitions dict (``observations``, ``actions``, ``next_observations``; NumPy or torch).

What the sliders do: ``K(a)`` of the chosen transition is eigen-decomposed; its eigenvalues are grouped into
real directions (a real eigenvalue, or a conjugate pair) sorted by how much of ``E(s)`` lies in them (the
amplitude ``|c_i| ||u_i||`` of ``E(s) = sum_i c_i u_i``: how far ``eps_i = 1`` moves the latent), and slider
``j`` sets the KFC++ parameter of the ``j``-th group (both members of a pair get the same value, which is what
the real part keeps anyway). The KFC slider sets KFC's scalar ``eps`` in ``sigma = eps G``, with the generator
``G`` taken here at unit RMS gain so that both kinds of slider are in the same units. The two symmetries commute
with ``K(a)``, so their sum does too. The moved states come in two forms, with the same ``sigma``:

* plain (the paper's): ``s~ = D((I + sigma) E(s))``, ``s~' = D((I + sigma) E(s'))``;
* gauged (an option of this library): ``s~ = s + D((I + sigma) E(s)) - D(E(s))``, and likewise for ``s'``.

At ``sigma = 0`` the plain form gives ``D(E(s))``, the model's reconstruction, which sits away from ``s`` by the
reconstruction offset ``D(E(s)) - s``; the gauged form gives ``s`` itself (docs/koopman-quality.md).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from kfc_lite.symmetry import commutation_error, eigen_directions, eigendecompose, kfc_symmetry, kfcpp_symmetry

__all__ = [
    "shift_transition",
    "episode_indices",
    "symmetry_explorer_update",
    "symmetry_explorer",
    "explorer_caption",
    "FORMS",
    "plot_augmented_batch",
    "consistency_study",
    "plot_consistency",
    "EXPLORER_KFC_SCALE",
]

#: the explorer's KFC generator has unit RMS gain per latent direction (sliders in the same units as KFC++)
EXPLORER_KFC_SCALE = 1.0


def _model_device_dtype(model):
    try:
        p = next(iter(model.parameters()))
        return p.device, p.dtype
    except (AttributeError, StopIteration):
        for name in ("A0", "K0"):
            t = getattr(model, name, None)
            if isinstance(t, torch.Tensor):
                return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _as_tensor(x, device, dtype):
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device=device, dtype=dtype)


def _to_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _predict(model, s, a):
    z = model.encode(s)
    K = model.operator(a)
    return model.decode((K @ z.unsqueeze(-1)).squeeze(-1))


def shift_transition(
    model,
    s,
    a,
    s_next,
    eps_directions=(),
    kfc_eps: float = 0.0,
    *,
    gauged: bool = False,
    kfc_scale: float = EXPLORER_KFC_SCALE,
    kfc_seed: int = 0,
    cond_threshold=None,
    true_step=None,
) -> dict:
    """Move transitions ``(s, a, s')`` (batches (B, d)) along the symmetries the sliders describe.

    ``eps_directions[j]`` is the KFC++ parameter of the ``j``-th leading real eigen-direction of each ``K(a)``
    (leading: largest component of ``E(s)``, see module docstring), ``kfc_eps`` the scalar of KFC's generator.
    Returns a dict of NumPy arrays: ``s``, ``s_next``; both forms of the moved states, ``s_tilde_plain`` =
    ``D((I + sigma) E(s))`` and ``s_tilde_gauged`` = ``s + D((I + sigma) E(s)) - D(E(s))`` (and
    ``s_next_tilde_plain``, ``s_next_tilde_gauged``); ``s_tilde``, ``s_next_tilde``: the form ``gauged`` picks;
    ``s_recon``, ``s_next_recon`` = ``D(E(s))``, ``D(E(s'))`` and ``reconstruction_offset`` (B,) =
    ``||D(E(s)) - s||``; ``sigma`` (B, n, n), ``valid`` (B,), ``commutation_error`` (B,), ``model_error`` (B,) =
    ``||model(s~, a) - s~'||`` and ``model_error_original`` = ``||model(s, a) - s'||``, ``eigenvalues`` (B, n),
    ``directions`` (per sample, the groups of eigenvalue indices), and with ``true_step(s, a) -> s'`` (NumPy,
    batched) also ``true_next`` = ``true_step(s~, a)`` and ``true_error`` = ``||true_step(s~, a) - s~'||`` (with
    ``true_next_plain``/``_gauged``, ``true_error_plain``/``_gauged`` for both forms), the question that matters:
    is the moved transition a transition of the real system?
    """
    device, dtype = _model_device_dtype(model)
    s_t, a_t, sn_t = (_as_tensor(x, device, dtype) for x in (s, a, s_next))
    if s_t.ndim == 1:
        s_t, a_t, sn_t = s_t[None], a_t.reshape(1, -1), sn_t[None]
    B = s_t.shape[0]
    with torch.no_grad():
        K = model.operator(a_t)
        n = K.shape[-1]
        eig = eigendecompose(K, cond_threshold)
        eps = torch.zeros(B, n, dtype=K.dtype, device=K.device)
        # leading = the directions in which E(s) has the largest component: those the sliders move most
        coeff = (eig.inverse @ model.encode(s_t).to(eig.inverse.dtype).unsqueeze(-1)).squeeze(-1)
        amplitude = coeff.abs() * torch.linalg.vector_norm(eig.vectors, dim=-2)
        groups_all = []
        for b in range(B):
            groups = eigen_directions(eig.values[b], amplitude[b])
            groups_all.append(groups)
            for j, value in enumerate(list(eps_directions)[: len(groups)]):
                eps[b, groups[j]] = float(value)
        sigma_pp, valid = kfcpp_symmetry(K, eps, eig=eig)
        sigma_kfc, valid_kfc = kfc_symmetry(
            K, torch.full((B,), float(kfc_eps), dtype=K.dtype, device=K.device), scale=kfc_scale, seed=kfc_seed, eig=eig
        )
        sigma = sigma_pp + sigma_kfc
        valid = valid & (valid_kfc | (kfc_eps == 0))
        x = torch.cat([s_t, sn_t])
        z = model.encode(x)
        z_new = z + (torch.cat([sigma, sigma]) @ z.unsqueeze(-1)).squeeze(-1)
        x_plain = model.decode(z_new)
        x_recon = model.decode(z)
        # the symmetry's own move first, then added to s: at sigma = 0 it is exactly 0 and s stays s bit for bit
        x_gauged = x + (x_plain - x_recon)
        x_new = x_gauged if gauged else x_plain
        s_tl, sn_tl = x_new[:B], x_new[B:]
        err = torch.linalg.vector_norm(_predict(model, s_tl, a_t) - sn_tl, dim=-1)
        err0 = torch.linalg.vector_norm(_predict(model, s_t, a_t) - sn_t, dim=-1)
        comm = commutation_error(sigma.double(), K.double())
    out = {
        "s": _to_numpy(s_t),
        "a": _to_numpy(a_t),
        "s_next": _to_numpy(sn_t),
        "s_tilde": _to_numpy(s_tl),
        "s_next_tilde": _to_numpy(sn_tl),
        "s_tilde_plain": _to_numpy(x_plain[:B]),
        "s_next_tilde_plain": _to_numpy(x_plain[B:]),
        "s_tilde_gauged": _to_numpy(x_gauged[:B]),
        "s_next_tilde_gauged": _to_numpy(x_gauged[B:]),
        "s_recon": _to_numpy(x_recon[:B]),
        "s_next_recon": _to_numpy(x_recon[B:]),
        "reconstruction_offset": _to_numpy(torch.linalg.vector_norm(x_recon[:B] - s_t, dim=-1)),
        "gauged": bool(gauged),
        "sigma": _to_numpy(sigma),
        "valid": _to_numpy(valid),
        "commutation_error": _to_numpy(comm),
        "model_error": _to_numpy(err),
        "model_error_original": _to_numpy(err0),
        "eigenvalues": _to_numpy(eig.values),
        "directions": groups_all,
    }
    if true_step is not None:
        a64 = out["a"].astype(np.float64)
        for form in ("plain", "gauged"):
            true_next = np.asarray(true_step(out[f"s_tilde_{form}"].astype(np.float64), a64))
            out[f"true_next_{form}"] = true_next
            out[f"true_error_{form}"] = np.linalg.norm(true_next - out[f"s_next_tilde_{form}"], axis=-1)
        chosen = "gauged" if gauged else "plain"
        out["true_next"], out["true_error"] = out[f"true_next_{chosen}"], out[f"true_error_{chosen}"]
    return out


def episode_indices(data, index: int, max_length: int = 200) -> np.ndarray:
    """The indices of the stretch of consecutive transitions around ``index`` (``s'_i == s_{i+1}``)."""
    obs, nxt = _to_numpy(data["observations"]), _to_numpy(data["next_observations"])
    N = obs.shape[0]
    if not 0 <= index < N:
        raise IndexError(f"index {index} is outside the dataset of {N} transitions")
    lo = hi = index
    while lo > 0 and hi - lo < max_length - 1 and np.array_equal(nxt[lo - 1], obs[lo]):
        lo -= 1
    while hi < N - 1 and hi - lo < max_length - 1 and np.array_equal(nxt[hi], obs[hi + 1]):
        hi += 1
    return np.arange(lo, hi + 1)


#: the slider directions' colours, apart from those of the logged (C0) and moved (C1, C2) states
_DIRECTION_COLORS = ("C4", "C5", "C6", "C8", "C9")


def _eigen_panel(ax, values, directions, n_highlight):
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
    k = int(np.where(idx == index)[0][0])
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
        rng = np.random.default_rng(0)
        bg = obs[rng.choice(N, size=min(N, max_background), replace=False)]
        ax.scatter(bg[:, 0], bg[:, 1], s=2, color="0.85", label="data states")
        s, sn = res["s"], res["s_next"]
        rec, rec_n = res["s_recon"][k], res["s_next_recon"][k]
        if len(idx) > 1:
            ax.plot(np.r_[s[:, 0], sn[-1:, 0]], np.r_[s[:, 1], sn[-1:, 1]], color="C0", lw=1, label="logged stretch")
            for f in forms:
                st, snt = res[f"s_tilde_{f}"], res[f"s_next_tilde_{f}"]
                for i in range(len(idx)):
                    ax.plot(
                        [st[i, 0], snt[i, 0]],
                        [st[i, 1], snt[i, 1]],
                        color=_FORM_COLOR[f],
                        lw=1.5,
                        label=f"moved transitions, {f} (each its own σ)" if i == 0 else None,
                    )
        # the model's reconstruction: where the plain form puts s and s' before any symmetry acts
        # drawn on top, as rings: at eps = 0 the plain pair starts exactly there and would hide them
        ax.plot(
            [s[k, 0], rec[0]], [s[k, 1], rec[1]], ls=":", color="0.2", lw=1.4, zorder=5, label="reconstruction offset"
        )
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
        # the logged pair last, on top: at eps = 0 the gauged pair lies exactly on it
        arrows = [
            (res[f"s_tilde_{f}"][k], res[f"s_next_tilde_{f}"][k], _FORM_COLOR[f], f"(s~, s~') {_FORM_NAME[f]}")
            for f in forms
        ]
        arrows.append((s[k], sn[k], "C0", "(s, s') logged"))
        for p, q, c, lab in arrows:
            if np.allclose(p, q):
                ax.scatter(*p, color=c, s=30, zorder=3, label=lab)
                continue
            lw = 1.4 if c == "C0" else 2.4
            ax.annotate("", xy=q, xytext=p, arrowprops=dict(arrowstyle="->", color=c, lw=lw))
            ax.scatter(*p, color=c, s=30 if c == "C0" else 45, zorder=3, label=lab)
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
        # zoom on the transitions (the background shows where the data lies, but would hide a small shift)
        pts = [s, sn, res["s_recon"], res["s_next_recon"]]
        for f in forms:
            pts += [res[f"s_tilde_{f}"], res[f"s_next_tilde_{f}"]]
            if f"true_next_{f}" in res:
                pts.append(res[f"true_next_{f}"])
        pts = np.concatenate(pts)
        lo, hi = pts.min(0), pts.max(0)
        pad = np.maximum(0.25 * (hi - lo), 0.15 * np.maximum(np.abs(obs).max(0), 1e-3) * 0.5)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        shown = " and ".join(f"{f} ({'orange' if f == 'plain' else 'green'})" for f in forms)
        ax.set_title(f"transition {index}: logged (blue), moved: {shown}", fontsize=10)
        ax.legend(loc="best", fontsize=7)
        _eigen_panel(ax_eig, res["eigenvalues"][k], res["directions"][k], n_sliders)
    else:
        rows = 1 if frames is None else 2
        ax_s, ax_n, ax_eig = (fig.add_subplot(rows, 3, i) for i in (1, 2, 3))
        if frames is not None:
            for j, (frame, name) in enumerate(zip(frames, ("s (logged)", "s~ (moved)"), strict=True)):
                ax_img = fig.add_subplot(rows, 3, 4 + j)
                ax_img.imshow(frame)
                ax_img.set_axis_off()
                ax_img.set_title(f"{render_env}: {name}")
        x = np.arange(d)
        width = 0.8 / (1 + len(forms))
        for ax, name, key in ((ax_s, "s", "s"), (ax_n, "s'", "s_next")):
            offsets = (np.arange(1 + len(forms)) - len(forms) / 2) * width
            ax.bar(x + offsets[0], res[key][k], width=width, color="C0", label=f"{name} (logged)")
            recon = res["s_recon" if key == "s" else "s_next_recon"][k]
            ax.scatter(
                x + offsets[0], recon, marker="_", s=120, color="0.2", zorder=3, label=f"D(E({name})) (reconstruction)"
            )
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
        _eigen_panel(ax_eig, res["eigenvalues"][k], res["directions"][k], n_sliders)
    state = {
        key: (v[k] if isinstance(v, np.ndarray) and v.shape[:1] == (len(idx),) else v)
        for key, v in res.items()
        if key != "directions"
    }
    fig.suptitle(explorer_caption(state, forms), fontsize=9)
    fig.tight_layout()
    fig.explorer_state = state
    fig.explorer_state["indices"] = idx
    fig.explorer_state["forms"] = forms
    return fig


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


def plot_augmented_batch(
    original: dict, augmented: dict[str, dict], state_labels=None, dims=(0, 1), ax=None, state_unit: str = "state units"
):
    """Histograms of the state shift ``||s~ - s||`` per augmenter, and a scatter of ``s~ - s`` in two dims.

    ``augmented`` maps a name (``"S4RL"``, ``"KFC++"``, ...) to the augmented batch.
    """
    s = _to_numpy(original["observations"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4)) if ax is None else (ax[0].figure, ax)
    labels = list(state_labels) if state_labels is not None else [f"state {i}" for i in range(s.shape[1])]
    shifts = {name: _to_numpy(b["observations"]) - s for name, b in augmented.items()}
    norms = {name: np.linalg.norm(v, axis=1) for name, v in shifts.items()}
    top = max(max(float(v.max()) for v in norms.values()), 1e-12)
    bins = np.linspace(0, top, 40)
    for j, (name, v) in enumerate(norms.items()):
        axes[0].hist(v, bins=bins, alpha=0.6, color=f"C{j}", label=f"{name} (mean {v.mean():.2g})")
    axes[0].set_xlabel(f"state shift ||s~ − s|| ({state_unit})")
    axes[0].set_ylabel("transitions")
    axes[0].set_title("how far each augmenter moves a state")
    axes[0].legend(fontsize=8)
    i, k = dims
    for j, (name, v) in enumerate(shifts.items()):
        axes[1].scatter(v[:, i], v[:, k], s=4, alpha=0.5, color=f"C{j}", label=name)
    axes[1].set_xlabel(f"Δ {labels[i]}")
    axes[1].set_ylabel(f"Δ {labels[k]}")
    axes[1].set_title("direction of the shift s~ − s")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def consistency_study(
    model,
    batch: dict,
    true_step,
    shift_sigmas=(1, 3, 10, 30, 100),
    noise_sigmas=(3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    gauged: bool = True,
) -> dict:
    """How far each augmenter moves states, and how far the moved pair is from a real transition.

    For every setting, augment ``batch`` (torch tensors; all samples take the symmetry branch) and measure
    the mean state shift ``||s~ - s||`` and the mean true-dynamics error ``||true_step(s~, a) - s~'||``
    (``true_step`` works on NumPy batches). Returns ``{name: {"shift": array, "error": array, "setting":
    array}}`` for "S4RL noise", "KFC", "KFC++" (gauged as given: the residual form isolates the symmetry from
    the autoencoder's reconstruction error) and "KFC++ (plain decode)". Draws from torch's global RNG.
    """
    from kfc_lite.rl.augment import GaussianNoise, KoopmanAugmenter

    a = _to_numpy(batch["actions"]).astype(np.float64)
    s0 = batch["observations"]

    def measure(aug):
        out = aug(batch)
        s, sn = (_to_numpy(out[k]).astype(np.float64) for k in ("observations", "next_observations"))
        shift = float(np.linalg.norm(s - _to_numpy(s0), axis=1).mean())
        error = float(np.linalg.norm(np.asarray(true_step(s, a)) - sn, axis=1).mean())
        return shift, error

    settings = {"S4RL noise": [(sg, GaussianNoise(sg)) for sg in noise_sigmas]}
    for variant, label in (("kfc", "KFC"), ("kfc++", "KFC++")):
        settings[label] = [
            (ss, KoopmanAugmenter(model, variant=variant, shift_sigma=ss, p_koopman=1.0, gauged=gauged))
            for ss in shift_sigmas
        ]
    settings["KFC++ (plain decode)"] = [
        (ss, KoopmanAugmenter(model, variant="kfc++", shift_sigma=ss, p_koopman=1.0)) for ss in shift_sigmas
    ]
    results = {}
    for name, items in settings.items():
        rows = [measure(aug) for _, aug in items]
        results[name] = {
            "setting": np.array([s for s, _ in items], dtype=float),
            "shift": np.array([r[0] for r in rows]),
            "error": np.array([r[1] for r in rows]),
        }
    return results


def plot_consistency(results: dict, state_unit: str = "state units", ax=None):
    """Mean true-dynamics error of moved transitions against the mean state shift, one curve per augmenter."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5)) if ax is None else (ax.figure, ax)
    styles = {
        "S4RL noise": dict(color="C0", marker="o"),
        "KFC": dict(color="C2", marker="s"),
        "KFC++": dict(color="C1", marker="^"),
        "KFC++ (plain decode)": dict(color="C1", marker="v", ls="--"),
    }
    lo = min(float(r["shift"].min()) for r in results.values())
    hi = max(float(r["shift"].max()) for r in results.values())
    ax.loglog([lo, hi], [lo, hi], color="0.7", lw=1, label="error = shift")
    for name, r in results.items():
        ax.loglog(r["shift"], r["error"], label=name, **styles.get(name, {}))
    ax.set_xlabel(f"mean state shift ||s~ − s|| ({state_unit})")
    ax.set_ylabel(f"mean error ||F(s~, a) − s~'|| ({state_unit})")
    ax.set_title("is the moved pair a transition of the real system?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
