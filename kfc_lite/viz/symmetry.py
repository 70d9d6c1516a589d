"""The symmetry explorer of notebook 03: move a logged transition along symmetries of a Koopman model.

:func:`symmetry_explorer_update` (plain, testable) draws one figure; :func:`symmetry_explorer` adds sliders.
The model is anything with ``encode``, ``decode`` and ``operator`` (a :class:`KoopmanForwardModel`, or a
stand-in); the data is a transitions dict (``observations``, ``actions``, ``next_observations``; NumPy or torch).

What the sliders do: ``K(a)`` of the chosen transition is eigen-decomposed; its eigenvalues are grouped into
real directions (a real eigenvalue, or a conjugate pair) sorted by how much of ``E(s)`` lies in them (the
amplitude ``|c_i| ||u_i||`` of ``E(s) = sum_i c_i u_i``: how far ``eps_i = 1`` moves the latent), and slider ``j`` sets the
KFC++ parameter of the ``j``-th group (both members of a pair get the same value, which is what the real part
keeps anyway). The KFC slider scales KFC's single generator, taken here at unit RMS gain so that both kinds
of slider are in the same units. The two symmetries commute with ``K(a)``, so their sum does too:
``s~ = D((I + sigma) E(s))`` and ``s~' = D((I + sigma) E(s'))`` with the same ``sigma``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from kfc_lite.symmetry import commutation_error, eigen_directions, eigendecompose, kfc_symmetry, kfcpp_symmetry

__all__ = ["shift_transition", "episode_indices", "symmetry_explorer_update", "symmetry_explorer",
           "plot_augmented_batch", "consistency_study", "plot_consistency", "EXPLORER_KFC_SCALE"]

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


def shift_transition(model, s, a, s_next, eps_directions=(), kfc_eps: float = 0.0, *, gauged: bool = False,
                     kfc_scale: float = EXPLORER_KFC_SCALE, kfc_seed: int = 0, cond_threshold=None,
                     true_step=None) -> dict:
    """Move transitions ``(s, a, s')`` (batches (B, d)) along the symmetries the sliders describe.

    ``eps_directions[j]`` is the KFC++ parameter of the ``j``-th leading real eigen-direction of each
    ``K(a)`` (leading: largest component of ``E(s)``, see module docstring), ``kfc_eps`` the scalar of KFC's generator. Returns a dict of NumPy
    arrays: ``s``, ``s_next``, ``s_tilde``, ``s_next_tilde``, ``sigma`` (B, n, n), ``valid`` (B,),
    ``commutation_error`` (B,), ``model_error`` (B,) = ``||model(s~, a) - s~'||`` and
    ``model_error_original`` = ``||model(s, a) - s'||``, ``eigenvalues`` (B, n), ``directions`` (per sample,
    the groups of eigenvalue indices), and with ``true_step(s, a) -> s'`` (NumPy, batched) also
    ``true_next`` = ``true_step(s~, a)`` and ``true_error`` = ``||true_step(s~, a) - s~'||``, the question that
    matters: is the moved transition a transition of the real system?
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
            for j, value in enumerate(list(eps_directions)[:len(groups)]):
                eps[b, groups[j]] = float(value)
        sigma_pp, valid = kfcpp_symmetry(K, eps, eig=eig)
        sigma_kfc, valid_kfc = kfc_symmetry(K, torch.full((B,), float(kfc_eps), dtype=K.dtype, device=K.device),
                                            scale=kfc_scale, seed=kfc_seed, eig=eig)
        sigma = sigma_pp + sigma_kfc
        valid = valid & (valid_kfc | (kfc_eps == 0))
        z = model.encode(torch.cat([s_t, sn_t]))
        z_new = z + (torch.cat([sigma, sigma]) @ z.unsqueeze(-1)).squeeze(-1)
        x_new = model.decode(z_new)
        if gauged:
            x_new = torch.cat([s_t, sn_t]) + x_new - model.decode(z)
        s_tl, sn_tl = x_new[:B], x_new[B:]
        err = torch.linalg.vector_norm(_predict(model, s_tl, a_t) - sn_tl, dim=-1)
        err0 = torch.linalg.vector_norm(_predict(model, s_t, a_t) - sn_t, dim=-1)
        comm = commutation_error(sigma.double(), K.double())
    out = {"s": _to_numpy(s_t), "a": _to_numpy(a_t), "s_next": _to_numpy(sn_t), "s_tilde": _to_numpy(s_tl),
           "s_next_tilde": _to_numpy(sn_tl), "sigma": _to_numpy(sigma), "valid": _to_numpy(valid),
           "commutation_error": _to_numpy(comm), "model_error": _to_numpy(err),
           "model_error_original": _to_numpy(err0), "eigenvalues": _to_numpy(eig.values), "directions": groups_all}
    if true_step is not None:
        true_next = np.asarray(true_step(out["s_tilde"].astype(np.float64), out["a"].astype(np.float64)))
        out["true_next"] = true_next
        out["true_error"] = np.linalg.norm(true_next - out["s_next_tilde"], axis=-1)
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


def _eigen_panel(ax, values, directions, n_highlight):
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, label="unit circle")
    ax.scatter(values.real, values.imag, s=14, color="0.5", label="eigenvalues of K(a)")
    for j, group in enumerate(directions[:n_highlight]):
        v = values[group[0]]
        ax.scatter(values[group].real, values[group].imag, s=40, facecolors="none", edgecolors=f"C{j + 2}")
        ax.annotate(str(j + 1), (v.real, v.imag), xytext=(4, 4), textcoords="offset points", color=f"C{j + 2}")
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title("eigenvalues of K(a); circled: slider directions")
    ax.legend(loc="lower left", fontsize=7)


def symmetry_explorer_update(model, data, index=0, eps_values=(), kfc_eps: float = 0.0, *, trajectory: bool = False,
                             gauged: bool = False, true_step=None, state_labels=None, kfc_scale=EXPLORER_KFC_SCALE,
                             max_background: int = 2000, render_env: str | None = None, fig=None):
    """Draw transition ``index`` of ``data`` and its image under the symmetry set by the sliders.

    ``eps_values``: KFC++ parameters of the leading eigen-directions; ``kfc_eps``: KFC's scalar;
    ``trajectory=True`` moves every transition of the stretch around ``index``, each with its own
    ``sigma_{a_t}`` (2-D states only). 2-D states are drawn as a phase portrait with the eigenvalues of
    ``K(a)``; larger states as per-dimension bars of ``s, s~`` and ``s', s~'``. ``true_step(s, a) -> s'``
    (NumPy) adds where the real system goes from ``s~``. ``render_env`` ('hopper', 'halfcheetah',
    'walker2d') adds MuJoCo pictures of ``s`` and ``s~`` under the bars (``kfc_lite.viz.render``; without an
    offscreen renderer the bars stay alone). Returns the figure; ``fig.explorer_state`` holds the numbers
    (commutation error, model errors, states).
    """
    obs = _to_numpy(data["observations"])
    N, d = obs.shape
    index = int(index)
    if not 0 <= index < N:
        raise IndexError(f"index {index} is outside the dataset of {N} transitions")
    idx = episode_indices(data, index) if (trajectory and d == 2) else np.array([index])
    acts = _to_numpy(data["actions"]).reshape(N, -1)
    res = shift_transition(model, obs[idx], acts[idx], _to_numpy(data["next_observations"])[idx], eps_values,
                           kfc_eps, gauged=gauged, true_step=true_step, kfc_scale=kfc_scale)
    k = int(np.where(idx == index)[0][0])
    labels = list(state_labels) if state_labels is not None else [f"state {i}" for i in range(d)]
    n_sliders = len(list(eps_values))
    frames = None
    if render_env is not None and d > 2:
        from kfc_lite.viz.render import render_observations

        frames = render_observations(render_env, np.stack([res["s"][k], res["s_tilde"][k]]), width=320, height=240)
    if fig is None:
        fig = plt.figure(figsize=(12, 4.6) if d == 2 else (13, 4.6 if frames is None else 8.6))
    fig.clf()
    if d == 2:
        ax, ax_eig = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        rng = np.random.default_rng(0)
        bg = obs[rng.choice(N, size=min(N, max_background), replace=False)]
        ax.scatter(bg[:, 0], bg[:, 1], s=2, color="0.85", label="data states")
        s, sn, st, snt = res["s"], res["s_next"], res["s_tilde"], res["s_next_tilde"]
        if len(idx) > 1:
            ax.plot(np.r_[s[:, 0], sn[-1:, 0]], np.r_[s[:, 1], sn[-1:, 1]], color="C0", lw=1, label="logged stretch")
            for i in range(len(idx)):
                ax.plot([st[i, 0], snt[i, 0]], [st[i, 1], snt[i, 1]], color="C1", lw=1.5,
                        label="moved transitions (each its own σ)" if i == 0 else None)
        for (p, q, c, lab) in ((s[k], sn[k], "C0", "(s, s')"), (st[k], snt[k], "C1", "(s~, s~')")):
            ax.annotate("", xy=q, xytext=p, arrowprops=dict(arrowstyle="->", color=c, lw=2))
            ax.scatter(*p, color=c, s=30, zorder=3, label=lab)
        if "true_next" in res:
            ax.scatter(*res["true_next"][k], marker="x", color="C3", s=60, zorder=4, label="true step from s~")
        # zoom on the transitions (the background shows where the data lies, but would hide a small shift)
        pts = np.concatenate([s, sn, st, snt] + ([res["true_next"]] if "true_next" in res else []))
        lo, hi = pts.min(0), pts.max(0)
        pad = np.maximum(0.25 * (hi - lo), 0.15 * np.maximum(np.abs(obs).max(0) - 0, 1e-3) * 0.5)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(f"transition {index}: logged (blue) and moved (orange)")
        ax.legend(loc="best", fontsize=7)
        _eigen_panel(ax_eig, res["eigenvalues"][k], res["directions"][k], n_sliders)
    else:
        rows = 1 if frames is None else 2
        ax_s, ax_n, ax_eig = (fig.add_subplot(rows, 3, i) for i in (1, 2, 3))
        if frames is not None:
            for j, (frame, name) in enumerate(zip(frames, ("s (logged)", "s~ (moved)"))):
                ax_img = fig.add_subplot(rows, 3, 4 + j)
                ax_img.imshow(frame)
                ax_img.set_axis_off()
                ax_img.set_title(f"{render_env}: {name}")
        x = np.arange(d)
        for ax, a, b, name in ((ax_s, res["s"][k], res["s_tilde"][k], "s"),
                               (ax_n, res["s_next"][k], res["s_next_tilde"][k], "s'")):
            ax.bar(x - 0.2, a, width=0.4, color="C0", label=f"{name} (logged)")
            ax.bar(x + 0.2, b, width=0.4, color="C1", label=f"{name}~ (moved)")
            if name == "s'" and "true_next" in res:
                ax.scatter(x + 0.2, res["true_next"][k], marker="x", color="C3", zorder=3, label="true step from s~")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=90, fontsize=7)
            ax.set_ylabel("value (state units)")
            ax.set_title(f"{name} of transition {index}")
            ax.legend(fontsize=7)
        _eigen_panel(ax_eig, res["eigenvalues"][k], res["directions"][k], n_sliders)
    text = (f"commutation error {res['commutation_error'][k]:.1e} · model error: logged "
            f"{res['model_error_original'][k]:.3g}, moved {res['model_error'][k]:.3g}")
    if "true_error" in res:
        text += f" · true-dynamics error of the moved transition {res['true_error'][k]:.3g}"
    if not res["valid"][k]:
        text += " · GUARD: K(a) is ill-conditioned, the augmenter would fall back to noise"
    fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    fig.explorer_state = {key: (v[k] if isinstance(v, np.ndarray) and v.shape[:1] == (len(idx),) else v)
                          for key, v in res.items() if key != "directions"}
    fig.explorer_state["indices"] = idx
    return fig


def symmetry_explorer(model, data, n_sliders: int = 4, eps_max: float = 0.5, true_step=None, state_labels=None,
                      index: int = 0, render_env: str | None = None):
    """Sliders (transition index, ``n_sliders`` KFC++ directions, KFC scalar, whole-stretch switch) around
    :func:`symmetry_explorer_update`; returns the widget."""
    import ipywidgets as widgets
    from IPython.display import display

    N = len(_to_numpy(data["observations"]))
    index_w = widgets.IntSlider(value=index, min=0, max=N - 1, description="transition", continuous_update=False)
    eps_w = [widgets.FloatSlider(value=0.0, min=-eps_max, max=eps_max, step=eps_max / 50, description=f"ε{j + 1}",
                                 continuous_update=False) for j in range(n_sliders)]
    kfc_w = widgets.FloatSlider(value=0.0, min=-eps_max, max=eps_max, step=eps_max / 50, description="KFC ε",
                                continuous_update=False)
    traj_w = widgets.Checkbox(value=False, description="move the whole stretch")
    out = widgets.Output()

    def redraw(**kw):
        with out:
            out.clear_output(wait=True)
            fig = symmetry_explorer_update(model, data, kw["index"], [kw[f"e{j}"] for j in range(n_sliders)],
                                           kw["kfc"], trajectory=kw["traj"], true_step=true_step,
                                           state_labels=state_labels, render_env=render_env)
            display(fig)
            plt.close(fig)

    controls = {"index": index_w, "kfc": kfc_w, "traj": traj_w, **{f"e{j}": w for j, w in enumerate(eps_w)}}
    widgets.interactive_output(redraw, controls)
    help_text = widgets.HTML("<small>ε<i>j</i>: KFC++ parameter of the <i>j</i>-th leading eigen-direction of K(a) "
                             "(circled in the eigenvalue plot) · KFC ε: the single KFC generator (unit gain)</small>")
    return widgets.VBox([widgets.HBox([index_w, traj_w]), widgets.HBox(eps_w[:2] + [kfc_w]),
                         widgets.HBox(eps_w[2:]), help_text, out])


def plot_augmented_batch(original: dict, augmented: dict[str, dict], state_labels=None, dims=(0, 1), ax=None,
                         state_unit: str = "state units"):
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


def consistency_study(model, batch: dict, true_step, shift_sigmas=(1, 3, 10, 30, 100),
                      noise_sigmas=(3e-3, 1e-2, 3e-2, 1e-1, 3e-1), gauged: bool = True) -> dict:
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
        settings[label] = [(ss, KoopmanAugmenter(model, variant=variant, shift_sigma=ss, p_koopman=1.0, gauged=gauged))
                           for ss in shift_sigmas]
    settings["KFC++ (plain decode)"] = [(ss, KoopmanAugmenter(model, variant="kfc++", shift_sigma=ss, p_koopman=1.0))
                                        for ss in shift_sigmas]
    results = {}
    for name, items in settings.items():
        rows = [measure(aug) for _, aug in items]
        results[name] = {"setting": np.array([s for s, _ in items], dtype=float),
                         "shift": np.array([r[0] for r in rows]), "error": np.array([r[1] for r in rows])}
    return results


def plot_consistency(results: dict, state_unit: str = "state units", ax=None):
    """Mean true-dynamics error of moved transitions against the mean state shift, one curve per augmenter."""
    fig, ax = (plt.subplots(figsize=(6.5, 4.5)) if ax is None else (ax.figure, ax))
    styles = {"S4RL noise": dict(color="C0", marker="o"), "KFC": dict(color="C2", marker="s"),
              "KFC++": dict(color="C1", marker="^"), "KFC++ (plain decode)": dict(color="C1", marker="v", ls="--")}
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
