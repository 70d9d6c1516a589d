"""A picture of the method (notebook 03): the Koopman forward model and how a symmetry moves a transition.

:func:`method_schematic` draws two panels with Matplotlib alone (text, boxes and arrows, no images), so it
renders under any backend:

* the forward model ``s -> E -> z -> K(a) -> D``: the encoder lifts a state into a latent space where one step
  is the matrix ``K(a) = K0 + sum_i a_i K_i``, and the decoder maps latents back to states;
* the symmetry as a commuting diagram: ``s, s'`` are encoded, moved by the same ``I + sigma`` and decoded to
  ``s~, s~'``. Because ``sigma K(a) = K(a) sigma``, the moved latents are again one ``K(a)`` step apart, so the
  moved pair is a transition of the model (and of the real system as far as the model is right).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

__all__ = ["method_schematic"]

_STATE = dict(boxstyle="round,pad=0.35", facecolor="#dbe9f6", edgecolor="C0", lw=1.5)
_LATENT = dict(boxstyle="round,pad=0.35", facecolor="#fde3c8", edgecolor="C1", lw=1.5)
_NET = dict(boxstyle="round,pad=0.4", facecolor="0.93", edgecolor="0.35", lw=1.2)


def _node(ax, xy, text, style, size=13, half=(0.3, 0.22)):
    """A box with ``text`` at ``xy``; returns its centre and half-extent in data units (for the arrows)."""
    ax.text(*xy, text, ha="center", va="center", fontsize=size, bbox=style, zorder=3)
    return (xy[0], xy[1], half[0], half[1])


def _arrow(ax, a, b, label="", color="0.2", side=(0.0, 0.14), ls="-", size=11):
    """An arrow from the edge of node ``a`` to the edge of node ``b`` (horizontal or vertical neighbours)."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = a, b
    if abs(ya - yb) < 1e-9:
        step = 1 if xb > xa else -1
        start, end = (xa + step * (wa + 0.08), ya), (xb - step * (wb + 0.08), yb)
    else:
        step = 1 if yb > ya else -1
        start, end = (xa, ya + step * (ha + 0.06)), (xb, yb - step * (hb + 0.06))
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        zorder=2,
        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6, ls=ls, shrinkA=0, shrinkB=0),
    )
    if label:
        mid = ((start[0] + end[0]) / 2 + side[0], (start[1] + end[1]) / 2 + side[1])
        ax.text(*mid, label, ha="center", va="center", fontsize=size, color=color, zorder=4)


def _forward_model(ax):
    ax.set_xlim(-0.5, 11.3)
    ax.set_ylim(-1.25, 1.45)
    ax.set_axis_off()
    ax.set_title("(a) the Koopman forward model: one step is linear in the latent space", fontsize=11, loc="left")
    s = _node(ax, (0, 0), r"$s$", _STATE, half=(0.17, 0.2))
    enc = _node(ax, (1.6, 0), "encoder\n$E$", _NET, size=10, half=(0.42, 0.3))
    z = _node(ax, (3.4, 0), r"$z = E(s)$", _LATENT, half=(0.62, 0.2))
    op = _node(ax, (5.2, 0), r"$K(a)$", _NET, half=(0.42, 0.2))
    kz = _node(ax, (7.0, 0), r"$K(a)\,z$", _LATENT, half=(0.5, 0.2))
    dec = _node(ax, (8.6, 0), "decoder\n$D$", _NET, size=10, half=(0.42, 0.3))
    out = _node(ax, (10.35, 0), r"$D(K(a)\,z) \approx s'$", _STATE, size=12, half=(0.92, 0.2))
    for a, b in ((s, enc), (enc, z), (z, op), (op, kz), (kz, dec), (dec, out)):
        _arrow(ax, a, b)
    act = _node(
        ax,
        (5.2, 1.15),
        r"action $a$",
        dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor="0.5"),
        size=10,
        half=(0.4, 0.15),
    )
    _arrow(ax, act, op)
    ax.text(
        5.4,
        -0.95,
        r"$K(a) = K_0 + \Sigma_i\, a_i K_i$, an $n \times n$ matrix;   $E$, $D$: neural networks, "
        r"trained so that $D(K(a)E(s)) \approx s'$ and $D(E(s)) \approx s$",
        ha="center",
        fontsize=10,
    )


def _symmetry_square(ax):
    ax.set_xlim(-1.0, 10.0)
    ax.set_ylim(-2.1, 3.0)
    ax.set_axis_off()
    ax.set_title(
        "(b) a symmetry moves a logged transition $(s, a, s')$ to $(\\tilde s, a, \\tilde s')$", fontsize=11, loc="left"
    )
    # the two spaces as shaded bands: state space at the sides, latent space in the middle
    for x0, x1, color, name in (
        (-0.9, 1.1, "#eef5fb", "state space"),
        (2.0, 7.0, "#fff3e6", "latent space"),
        (7.9, 9.9, "#eef5fb", "state space"),
    ):
        ax.add_patch(
            FancyBboxPatch(
                (x0, -1.1), x1 - x0, 3.55, boxstyle="round,pad=0.02", facecolor=color, edgecolor="none", zorder=0
            )
        )
        ax.text((x0 + x1) / 2, 2.2, name, ha="center", fontsize=10, color="0.35")
    top, bottom = 1.35, -0.45
    s = _node(ax, (0, top), r"$s$", _STATE, half=(0.17, 0.22))
    sn = _node(ax, (0, bottom), r"$s'$", _STATE, half=(0.17, 0.22))
    z = _node(ax, (3.0, top), r"$z = E(s)$", _LATENT, half=(0.62, 0.22))
    zn = _node(ax, (3.0, bottom), r"$z' = E(s')$", _LATENT, half=(0.68, 0.22))
    zt = _node(ax, (6.0, top), r"$(I + \sigma)\,z$", _LATENT, half=(0.68, 0.22))
    znt = _node(ax, (6.0, bottom), r"$(I + \sigma)\,z'$", _LATENT, half=(0.7, 0.22))
    st = _node(ax, (9.0, top), r"$\tilde s$", _STATE, half=(0.17, 0.22))
    snt = _node(ax, (9.0, bottom), r"$\tilde s'$", _STATE, half=(0.17, 0.22))
    _arrow(ax, s, z, r"$E$")
    _arrow(ax, sn, zn, r"$E$")
    _arrow(ax, z, zt, r"$I + \sigma$", color="C3")
    _arrow(ax, zn, znt, r"$I + \sigma$  (the same $\sigma$)", color="C3")
    _arrow(ax, zt, st, r"$D$")
    _arrow(ax, znt, snt, r"$D$")
    _arrow(ax, s, sn, r"$F(\cdot, a)$", side=(-0.55, 0.0), size=10)
    _arrow(ax, z, zn, r"$K(a)$", side=(0.45, 0.0))
    _arrow(ax, zt, znt, r"$K(a)$", side=(0.45, 0.0))
    _arrow(ax, st, snt, "$F(\\cdot, a)$\nas far as\nthe model\nis right", side=(0.55, 0.0), size=9, ls="--")
    ax.text(
        4.5,
        -1.55,
        r"$\sigma K(a) = K(a)\sigma$  $\Rightarrow$  $K(a)(I + \sigma)z = (I + \sigma)K(a)z = "
        r"(I + \sigma)z'$: the moved latents are one step apart",
        ha="center",
        fontsize=10,
    )
    ax.text(
        4.5,
        -2.0,
        r"plain (the paper's): $\tilde s = D((I + \sigma)E(s))$;   gauged (an option): "
        r"$\tilde s = s + D((I + \sigma)E(s)) - D(E(s))$;   the action, reward and done stay as logged",
        ha="center",
        fontsize=9,
        color="0.25",
    )


def method_schematic(fig=None):
    """Draw the method's schematic (forward model on top, the symmetry's commuting diagram below); returns the
    figure. ``fig``: draw into this figure instead of a new one."""
    if fig is None:
        fig = plt.figure(figsize=(12, 7.2))
    fig.clf()
    ax_model, ax_square = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 1.75]})
    _forward_model(ax_model)
    _symmetry_square(ax_square)
    fig.suptitle("KFC in one picture: encode, move along a symmetry of K(a), decode", fontsize=12)
    fig.tight_layout()
    return fig
