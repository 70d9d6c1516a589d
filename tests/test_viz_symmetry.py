"""The symmetry explorer's numbers (plain and gauged forms, the reconstruction offset) and the method schematic."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from kfc_lite.viz.symmetry import shift_transition, symmetry_explorer, symmetry_explorer_update


@pytest.fixture(scope="module")
def model_and_data():
    """An untrained forward model: its decoder does not invert its encoder, so the reconstruction offset is large."""
    model = pytest.importorskip("kfc_lite.koopman.model").KoopmanForwardModel(2, 1, latent_dim=6, hidden_dim=16)
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.4)
    model.eval()
    g = np.random.default_rng(0)
    s = g.uniform(-1, 1, (40, 2)).astype(np.float32)
    a = g.uniform(-1, 1, (40, 1)).astype(np.float32)
    data = {"observations": s, "actions": a, "next_observations": s + 0.05 * g.standard_normal((40, 2)).astype("f4")}
    return model, data


def test_at_eps_zero_the_gauged_state_is_s_and_the_plain_one_is_the_reconstruction(model_and_data):
    model, data = model_and_data
    s, a, sn = data["observations"][:8], data["actions"][:8], data["next_observations"][:8]
    out = shift_transition(model, s, a, sn, eps_directions=[0.0, 0.0, 0.0], kfc_eps=0.0)
    assert not np.any(out["sigma"])
    # gauged: s + D(E(s)) - D(E(s)) is s itself, bit for bit, for both states
    assert np.array_equal(out["s_tilde_gauged"], s) and np.array_equal(out["s_next_tilde_gauged"], sn)
    # plain: D((I + 0) E(s)) is the model's reconstruction, and that is away from s
    with torch.no_grad():
        recon = model.decode(model.encode(torch.as_tensor(s))).numpy()
        recon_next = model.decode(model.encode(torch.as_tensor(sn))).numpy()
    assert np.array_equal(out["s_tilde_plain"], out["s_recon"])
    np.testing.assert_allclose(out["s_tilde_plain"], recon, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["s_next_tilde_plain"], recon_next, rtol=0, atol=1e-6)
    offset = np.linalg.norm(recon - s, axis=1)
    np.testing.assert_allclose(out["reconstruction_offset"], offset, rtol=1e-5)
    assert offset.min() > 1e-2, "the stand-in model should have a visible reconstruction offset"
    # `gauged` picks which form `s_tilde` is
    assert np.array_equal(out["s_tilde"], out["s_tilde_plain"])
    gauged = shift_transition(model, s, a, sn, eps_directions=[0.0], gauged=True)
    assert np.array_equal(gauged["s_tilde"], s)


def test_away_from_zero_the_two_forms_differ_by_the_reconstruction_offset(model_and_data):
    model, data = model_and_data
    s, a, sn = data["observations"][:8], data["actions"][:8], data["next_observations"][:8]
    out = shift_transition(model, s, a, sn, eps_directions=[0.2, -0.1], kfc_eps=0.05)
    assert np.any(out["sigma"]) and np.all(out["commutation_error"] < 1e-4)
    move_gauged = out["s_tilde_gauged"] - s
    move_plain = out["s_tilde_plain"] - s
    assert np.linalg.norm(move_gauged, axis=1).min() > 0  # the symmetry moves the state
    # plain = gauged + (D(E(s)) - s): what the symmetry does, plus the offset that does not depend on it
    np.testing.assert_allclose(move_plain, move_gauged + (out["s_recon"] - s), atol=1e-5)
    np.testing.assert_allclose(
        out["s_next_tilde_plain"] - out["s_next_recon"], out["s_next_tilde_gauged"] - sn, atol=1e-5
    )


def test_explorer_at_eps_zero_shows_and_names_the_offset(model_and_data):
    model, data = model_and_data
    fig = symmetry_explorer_update(model, data, 3, [0.0, 0.0], 0.0, form="both", state_labels=("x (m)", "v (m/s)"))
    st = fig.explorer_state
    assert st["forms"] == ("plain", "gauged")
    assert np.array_equal(st["s_tilde_gauged"], st["s"])
    assert np.array_equal(st["s_tilde_plain"], st["s_recon"])
    caption = fig._suptitle.get_text()
    assert f"{float(st['reconstruction_offset']):.3g}" in caption and "ε = 0" in caption
    assert "gauged: ‖s~ − s‖ = 0" in caption and "commutation error" in caption
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("reconstruction" in t for t in legend) and any("gauged" in t for t in legend)
    plt.close(fig)
    # with a symmetry switched on, the caption no longer claims eps = 0
    fig = symmetry_explorer_update(model, data, 3, [0.3], 0.0, form="gauged")
    assert "ε = 0" not in fig._suptitle.get_text() and fig.explorer_state["forms"] == ("gauged",)
    assert np.linalg.norm(fig.explorer_state["s_tilde"] - fig.explorer_state["s"]) > 0
    plt.close(fig)
    with pytest.raises(ValueError, match="form must be one of"):
        symmetry_explorer_update(model, data, 3, [0.0], form="sideways")


def test_explorer_bars_show_both_forms_for_larger_states():
    model = pytest.importorskip("kfc_lite.koopman.model").KoopmanForwardModel(5, 2, latent_dim=6, hidden_dim=16)
    g = np.random.default_rng(1)
    data = {
        "observations": g.standard_normal((30, 5)),
        "actions": g.uniform(-1, 1, (30, 2)),
        "next_observations": g.standard_normal((30, 5)),
    }
    fig = symmetry_explorer_update(model, data, 4, [0.0], 0.0, form="both")
    assert len(fig.axes) == 3
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(labels) == sorted(["s (logged)", "D(E(s)) (reconstruction)", "s~ (plain)", "s~ (gauged)"])
    logged, plain, gauged = (np.array([r.get_height() for r in c]) for c in fig.axes[0].containers)
    st = fig.explorer_state
    np.testing.assert_allclose(logged, st["s"])
    np.testing.assert_allclose(gauged, st["s"])  # at eps = 0 the gauged bar is the logged one
    np.testing.assert_allclose(plain, st["s_recon"])  # and the plain bar is the reconstruction
    plt.close(fig)


def test_explorer_widget_has_the_form_toggle_and_unclipped_labels(model_and_data):
    import ipywidgets as widgets

    model, data = model_and_data
    box = symmetry_explorer(model, data, n_sliders=3, form="both")

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    parts = list(walk(box))
    toggles = [w for w in parts if isinstance(w, widgets.ToggleButtons)]
    assert len(toggles) == 1 and toggles[0].value == "both"
    assert set(toggles[0].options) == {("plain (paper)", "plain"), ("gauged", "gauged"), ("both", "both")}
    sliders = [w for w in parts if isinstance(w, widgets.FloatSlider)]
    assert [w.description for w in sliders] == ["ε1", "ε2", "KFC ε", "ε3"]
    # a description width of their own, so that short labels are not cut by the default width
    assert all(w.style.description_width == "initial" for w in sliders)
    plt.close("all")


def test_method_schematic_draws_under_agg():
    from kfc_lite.viz.schematic import method_schematic

    fig = method_schematic()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(fig.axes) == 2
    for needle in ("$z = E(s)$", "$K(a)$", r"$(I + \sigma)\,z$", r"$\tilde s$", r"$\tilde s'$"):
        assert needle in texts, needle
    assert any("same" in t and r"I + \sigma" in t for t in texts)  # one draw of sigma for s and s'
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    assert buf.tell() > 10_000
    plt.close(fig)
