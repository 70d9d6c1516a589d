"""The symmetry table: rows equal to the per-batch construction, a guard that decides as before, and a cache that
never serves a stale or damaged table."""

import json
import math

import numpy as np
import pytest
import torch

from kfc_lite.koopman import KoopmanForwardModel
from kfc_lite.rl.augment import KoopmanAugmenter
from kfc_lite.symmetry import eigendecompose, kfc_symmetry, kfcpp_shift, kfcpp_symmetry
from kfc_lite.symmetry_table import (
    SymmetryTable,
    TableSettings,
    build_rows,
    moved_latents,
    real_eigenbasis,
    symmetry_table,
    table_key,
)

DS, DA, N = 5, 2, 600


def model_and_data(seed=0, n=600):
    torch.manual_seed(seed)
    model = KoopmanForwardModel(DS, DA, latent_dim=8, hidden_dim=32).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 1)
    data = {
        "observations": torch.randn(n, DS, generator=g),
        "actions": torch.rand(n, DA, generator=g) * 2 - 1,
        "next_observations": torch.randn(n, DS, generator=g),
    }
    return model, {k: v.numpy() for k, v in data.items()}


def per_batch_reference(model, s, a, s_next, variant, eps):
    """What KFC / KFC++ did before the table: decompose K(a) for the batch, form sigma, move E(s) and E(s')."""
    K = model.operator(a)
    sigma, valid = kfcpp_symmetry(K, eps) if variant == "kfc++" else kfc_symmetry(K, eps)
    z = model.encode(torch.stack([s, s_next], dim=1))
    return z + (sigma.unsqueeze(1) @ z.unsqueeze(-1)).squeeze(-1), z, valid


def test_real_eigenbasis_gives_the_real_part_of_the_complex_symmetry():
    g = torch.Generator().manual_seed(0)
    K = torch.randn(50, 7, 7, generator=g, dtype=torch.float64)  # odd size: real eigenvalues and complex pairs
    eig = eigendecompose(K)
    basis, partner = real_eigenbasis(eig)
    assert basis.dtype == torch.float64 and (partner >= 0).all()
    assert (eig.values.imag != 0).any() and (eig.values.imag == 0).any()
    assert torch.equal(partner.gather(-1, partner), torch.arange(7).expand(50, 7))  # partners pair up
    eps = torch.randn(50, 7, generator=g, dtype=torch.float64)
    sigma, valid = kfcpp_symmetry(K, eps, eig=eig)
    d = 0.5 * (eps + eps.gather(-1, partner))
    sigma_r = basis @ torch.diag_embed(d) @ torch.linalg.inv(basis)
    assert valid.all()
    torch.testing.assert_close(sigma_r, sigma, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", ["kfc++", "kfc"])
@pytest.mark.parametrize("storage, tol", [("float32", 1e-4), ("float16", 2e-2)])
def test_rows_move_states_as_the_per_batch_construction(variant, storage, tol):
    """Same eps, same moved latents as decomposing the batch's K(a) in the step, to the stated tolerance: relative to
    the size of the shift, float32 storage is round-off (measured ~3e-5 at worst), float16 storage rounds the basis
    and coordinates to 2^-11 relatively (measured ~2e-3 at worst; 2e-2 leaves room for an ill-conditioned basis)."""
    model, data = model_and_data()
    s, a, s_next = (torch.as_tensor(data[k]) for k in ("observations", "actions", "next_observations"))
    torch.manual_seed(5)
    eps = torch.randn(N, 8) * 3e-3 if variant == "kfc++" else torch.randn(N)
    want, z, valid = per_batch_reference(model, s, a, s_next, variant, eps)
    rows = build_rows(model, s, a, s_next, TableSettings(variant=variant, storage=storage), storage_round=True)
    assert torch.equal(rows.valid, valid) and valid.float().mean() > 0.9
    got = moved_latents(rows, eps)
    torch.testing.assert_close(rows.latent, z)
    shift = (want - z).norm(dim=-1)[valid]
    err = (got - want).norm(dim=-1)[valid]
    assert float((err / shift).max()) < tol
    assert float(rows.commutation[valid].max()) < (1e-4 if storage == "float32" else 5e-3)


def test_a_jordan_block_row_is_invalid_and_falls_back_to_noise():
    """A model whose K(a) is an exact Jordan block for one action: that row's verdict is the guard's (invalid), it
    contributes nothing to the symmetry and the augmenter gives it S4RL noise."""

    class Jordan(torch.nn.Module):
        state_dim = latent_dim = 3

        def encode(self, s):
            return s

        def decode(self, z):
            return z

        def operator(self, a):
            diag = torch.diag_embed(torch.tensor([0.9, 0.5, -0.3]).expand(a.shape[0], 3).clone())
            jordan = 0.9 * torch.eye(3) + torch.diag(torch.ones(2), 1)
            return torch.where((a[:, 0] > 0)[:, None, None], jordan, diag)

    s = torch.randn(6, 3)
    a = torch.tensor([[1.0], [-1.0]] * 3)
    rows = build_rows(Jordan(), s, a, s, TableSettings())
    assert rows.valid.tolist() == [False, True] * 3
    assert torch.equal(rows.basis[0], torch.zeros(3, 3))
    aug = KoopmanAugmenter(Jordan(), p_koopman=1.0)
    aug({"observations": s, "next_observations": s, "actions": a})
    assert aug.stats["fallback_rate"] == 0.5


def test_cache_is_reused_and_never_stale(tmp_path):
    model, data = model_and_data()
    settings = TableSettings(storage="float16")
    first = symmetry_table(model, data, settings, tmp_path, progress=False)
    assert first.build_seconds is not None and len(first) == N and first.path.parent == tmp_path
    again = symmetry_table(model, data, settings, tmp_path, progress=False)
    assert again.build_seconds is None and again.key == first.key  # served from the cache
    for k in first.arrays:
        assert torch.equal(first.arrays[k], again.arrays[k])
    # another model, other data, other settings: other keys, other folders
    other_model, _ = model_and_data(seed=7)
    other_data = dict(data, actions=data["actions"].copy())
    other_data["actions"][3, 0] += 1e-3
    keys = {
        first.key,
        table_key(other_model, data, settings),
        table_key(model, other_data, settings),
        table_key(model, data, TableSettings(storage="float32")),
        table_key(model, data, TableSettings(variant="kfc")),
    }
    assert len(keys) == 5
    rebuilt = symmetry_table(model, other_data, settings, tmp_path, progress=False)
    assert rebuilt.build_seconds is not None and rebuilt.path != first.path
    assert not torch.equal(rebuilt.arrays["basis"][3], first.arrays["basis"][3])
    assert torch.equal(rebuilt.arrays["basis"][4], first.arrays["basis"][4])


def test_a_damaged_table_is_refused_and_built_again(tmp_path):
    model, data = model_and_data()
    table = symmetry_table(model, data, TableSettings(), tmp_path, progress=False)
    good = table.arrays["basis"].clone()
    path = table.path / "basis.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # 64 bytes zeroed in the middle of the data
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="basis.npy is missing or damaged"):
        again = symmetry_table(model, data, TableSettings(), tmp_path, progress=False)
    assert again.build_seconds is not None and torch.equal(again.arrays["basis"], good)
    (again.path / "manifest.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="manifest.json cannot be read"):
        symmetry_table(model, data, TableSettings(), tmp_path, progress=False)


def test_an_interrupted_build_leaves_nothing_that_looks_whole(tmp_path, monkeypatch):
    from kfc_lite import symmetry_table as module

    model, data = model_and_data(n=5000)
    calls = []
    real = module.build_rows

    def dies_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "build_rows", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        symmetry_table(model, data, TableSettings(), tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_rows_do_not_depend_on_the_number_of_workers_or_on_memory_mapping(tmp_path):
    model, data = model_and_data(n=5000)  # several chunks
    one = symmetry_table(model, data, TableSettings(), tmp_path / "one", workers=1, progress=False)
    two = symmetry_table(model, data, TableSettings(), tmp_path / "two", workers=2, memory_budget_gb=0, progress=False)
    assert two.mapped and not one.mapped
    for k in one.arrays:
        assert torch.equal(one.arrays[k], two.arrays[k]), k
    idx = torch.tensor([4999, 0, 1024, 17])
    for a, b in zip(one.rows(idx), two.rows(idx), strict=False):
        assert torch.equal(a, b)
    manifest = json.loads((one.path / "manifest.json").read_text())
    assert manifest["rows"] == 5000 and manifest["settings"]["storage"] == "float32" and manifest["workers"] == 1
    assert one.bytes_per_row == sum(v[0].numel() * v.element_size() for v in one.arrays.values())


def test_augmenter_with_a_table_equals_the_augmenter_without(tmp_path):
    """A batch with indices gathers its rows from the table; the same batch without indices builds them on the
    spot: same draws, same augmented states (to float32 round-off with float32 storage)."""
    model, data = model_and_data()
    plain = KoopmanAugmenter(model, p_koopman=0.5, per="sample", seed=3)
    tabled = KoopmanAugmenter(model, p_koopman=0.5, per="sample", seed=3)
    table = symmetry_table(model, data, tabled.table_settings, tmp_path, progress=False)
    tabled.use_table(table)
    idx = torch.randperm(N)[:64]
    batch = {k: torch.as_tensor(v)[idx] for k, v in data.items()}
    torch.manual_seed(0)
    want = plain(batch)
    torch.manual_seed(0)
    got = tabled(dict(batch, indices=idx))
    for key in ("observations", "next_observations"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6)
    assert not torch.equal(got["observations"], batch["observations"])
    assert plain.stats["koopman_fraction"] == tabled.stats["koopman_fraction"] > 0
    assert math.isclose(plain.stats["commutation_error"], tabled.stats["commutation_error"], rel_tol=1e-2)


@pytest.mark.parametrize("tabled", [False, True], ids=["rows-built-per-batch", "rows-from-the-table"])
def test_the_augmenter_moves_states_as_kfcpp_shift(tabled, tmp_path):
    """The training loop's KFC++ (table rows, one small product, decode) is the plain formula of
    kfc_lite.symmetry.kfcpp_shift at the same eps, for a float64 model. Tolerance relative to each row's shift: the
    per-batch rows are float64 (round-off, 1e-9); the table stores latent codes and rows in float32, whose rounding
    of E(s) (~1e-8 absolute) is up to ~1e-5 of the smallest shifts here (measured), so 1e-4."""
    model, data = model_and_data()
    model = model.double()
    batch = {k: torch.as_tensor(v).double() for k, v in data.items()}
    aug = KoopmanAugmenter(model, variant="kfc++", shift_sigma=10.0, p_koopman=1.0)
    if tabled:
        aug.use_table(symmetry_table(model, data, aug.table_settings, tmp_path, progress=False))
        batch["indices"] = torch.arange(N)
    torch.manual_seed(3)
    out = aug(batch)
    torch.manual_seed(3)  # the augmenter's first draw from the global RNG is eps
    eps = aug.draw_eps(N, 8, "cpu", torch.float64)
    s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
    want, want_next, valid = kfcpp_shift(model, s, a, s_next, eps)
    assert valid.float().mean() > 0.9
    plain, plain_next, _ = kfcpp_shift(model, s, a, s_next, torch.zeros_like(eps))  # D(E(s)): no symmetry
    for got, w, p in ((out["observations"], want, plain), (out["next_observations"], want_next, plain_next)):
        shift = (w - p).norm(dim=-1)[valid]
        assert float(shift.min()) > 0
        assert float(((got - w).norm(dim=-1)[valid] / shift).max()) < (1e-4 if tabled else 1e-9)


def test_table_settings_must_match_the_augmenter(tmp_path):
    model, data = model_and_data()
    table = symmetry_table(model, data, TableSettings(variant="kfc"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="build the table from the augmenter's table_settings"):
        KoopmanAugmenter(model, variant="kfc++", table=table)
    with pytest.raises(TypeError, match="SymmetryTable"):
        KoopmanAugmenter(model).use_table({"basis": 1})
    with pytest.raises(ValueError, match="storage"):
        TableSettings(storage="int8")
    with pytest.raises(ValueError, match="memory_budget_gb"):
        symmetry_table(model, data, TableSettings(), tmp_path, memory_budget_gb=-1)
    assert isinstance(table, SymmetryTable) and table.summary()["rows"] == N
    assert np.isclose(table.summary()["fallback_rate"], table.fallback_rate)
