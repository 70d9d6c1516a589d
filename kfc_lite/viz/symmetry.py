"""Moving transitions along symmetries of a Koopman model, and the static figures of notebook 03.

:func:`shift_transition` moves a batch of logged transitions ``(s, a, s')`` along the symmetries the explorer's sliders
describe and returns the numbers; :func:`episode_indices` finds the stretch of consecutive transitions around one. The
explorer that draws them, with its sliders (:func:`symmetry_explorer_update`, :func:`symmetry_explorer`,
:func:`explorer_caption`, ``FORMS``), lives in :mod:`kfc_lite.viz.symmetry_explorer` and is re-exported here.
:func:`plot_augmented_batch`, :func:`consistency_study` and :func:`plot_consistency` compare augmenters on a whole
batch. The model is anything with ``encode``, ``decode`` and ``operator`` (a
:class:`~kfc_lite.koopman.model.KoopmanForwardModel`, or a stand-in); the data is a transitions dict (``observations``,
``actions``, ``next_observations``; NumPy or torch).

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

#: the names defined in kfc_lite.viz.symmetry_explorer that this module re-exports (see __getattr__)
_EXPLORER_NAMES = ("symmetry_explorer_update", "symmetry_explorer", "explorer_caption", "FORMS")

__all__ = [
    "shift_transition",
    "episode_indices",
    *_EXPLORER_NAMES,
    "plot_augmented_batch",
    "consistency_study",
    "plot_consistency",
    "EXPLORER_KFC_SCALE",
]

#: the explorer's KFC generator has unit RMS gain per latent direction (sliders in the same units as KFC++)
EXPLORER_KFC_SCALE = 1.0


def __getattr__(name):
    # The explorer is built on shift_transition and episode_indices from this module, so importing it here at the
    # top would be circular; it is imported when one of its names is first asked for (PEP 562).
    if name in _EXPLORER_NAMES:
        from kfc_lite.viz import symmetry_explorer

        return getattr(symmetry_explorer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPLORER_NAMES])


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
