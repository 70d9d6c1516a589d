"""Notebook 05's exercise on the paired interval: the solution passes, each typical mistake gets its own hint."""

import numpy as np
import pytest
from scipy import stats as st

from kfc_lite.exercises import nb05


def solution(a, b):
    d = np.array([a[s] - b[s] for s in sorted(a)])
    half = st.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean(), d.mean() - half, d.mean() + half


def by_position(a, b):
    return solution(dict(enumerate(a.values())), dict(enumerate(b.values())))


def unpaired(a, b):
    xa, xb = np.array([a[s] for s in sorted(a)]), np.array([b[s] for s in sorted(a)])
    n, m = xa.size, xa.mean() - xb.mean()
    half = st.t.ppf(0.975, n - 1) * np.sqrt(xa.var(ddof=1) / n + xb.var(ddof=1) / n)
    return m, m - half, m + half


def with_z(a, b):
    d = np.array([a[s] - b[s] for s in sorted(a)])
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean(), d.mean() - half, d.mean() + half


def population_sd(a, b):
    d = np.array([a[s] - b[s] for s in sorted(a)])
    half = st.t.ppf(0.975, d.size - 1) * d.std() / np.sqrt(d.size)
    return d.mean(), d.mean() - half, d.mean() + half


def test_the_solution_passes_and_agrees_with_kfc_lite_stats():
    fb = nb05.check_paired_interval(solution)
    assert fb.passed, fb
    from kfc_lite import stats

    a, b = nb05._paired_cases()[0]
    iv = stats.paired_difference(a, b).difference
    assert np.allclose(solution(a, b), (iv.estimate, iv.low, iv.high))


@pytest.mark.parametrize(
    "wrong, words",
    [
        (by_position, "by position"),
        (unpaired, "unpaired"),
        (with_z, "Student's t"),
        (population_sd, "ddof=1"),
        (lambda a, b: None, "return"),
        (lambda a, b: (1.0, 2.0), "three numbers"),
    ],
)
def test_each_mistake_is_named(wrong, words):
    fb = nb05.check_paired_interval(wrong)
    assert not fb.passed
    assert words in str(fb), str(fb)


def test_a_stub_is_not_done():
    def stub(a, b):
        raise NotImplementedError

    from kfc_lite.exercises import NOT_DONE

    assert nb05.check_paired_interval(stub).status == NOT_DONE


def shift_solution(model, s, a, s_next, eps):
    from kfc_lite.symmetry import kfcpp_symmetry

    sigma, _ = kfcpp_symmetry(model.operator(a), eps)
    move = lambda z: z + (sigma @ z.unsqueeze(-1)).squeeze(-1)
    return model.decode(move(model.encode(s))), model.decode(move(model.encode(s_next)))


def shift_without_identity(model, s, a, s_next, eps):
    from kfc_lite.symmetry import kfcpp_symmetry

    sigma, _ = kfcpp_symmetry(model.operator(a), eps)
    move = lambda z: (sigma @ z.unsqueeze(-1)).squeeze(-1)
    return model.decode(move(model.encode(s))), model.decode(move(model.encode(s_next)))


def shift_transposed(model, s, a, s_next, eps):
    from kfc_lite.symmetry import kfcpp_symmetry

    sigma, _ = kfcpp_symmetry(model.operator(a), eps)
    move = lambda z: z + (z.unsqueeze(-2) @ sigma).squeeze(-2)
    return model.decode(move(model.encode(s))), model.decode(move(model.encode(s_next)))


def shift_only_s(model, s, a, s_next, eps):
    return shift_solution(model, s, a, s_next, eps)[0], s_next


def shift_not_moved(model, s, a, s_next, eps):
    return model.decode(model.encode(s)), model.decode(model.encode(s_next))


def test_the_augmenter_solution_passes():
    fb = nb05.check_kfcpp_shift(shift_solution)
    assert fb.passed, fb


@pytest.mark.parametrize(
    "wrong, words",
    [
        (shift_without_identity, "(I + sigma) z"),
        (shift_transposed, "other side"),
        (shift_only_s, "s' must move too"),
        (shift_not_moved, "did not move"),
        (lambda *args: None, "return"),
    ],
)
def test_each_augmenter_mistake_is_named(wrong, words):
    fb = nb05.check_kfcpp_shift(wrong)
    assert not fb.passed
    assert words in str(fb), str(fb)


def test_the_training_run_uses_the_learners_function_once_it_passes(capsys):
    import torch

    from kfc_lite.rl.augment import KoopmanAugmenter
    from kfc_lite.symmetry import kfcpp_shift

    model, s, a, s_next, _ = nb05._shift_case()
    batch = {
        "observations": s,
        "actions": a,
        "next_observations": s_next,
        "rewards": torch.zeros(8),
        "terminals": torch.zeros(8, dtype=torch.bool),
    }
    calls = []

    def counted(*args):
        calls.append(1)
        return shift_solution(*args)

    yours = nb05.augmenter_with(counted, model)
    assert "moves its batches with your kfcpp_shift" in capsys.readouterr().out
    calls.clear()
    torch.manual_seed(3)
    moved = yours(batch)
    assert calls == [1]
    torch.manual_seed(3)
    eps = torch.randn(8, model.latent_dim, dtype=torch.float64) * 3e-3
    expected, expected_next, _ = kfcpp_shift(model, s, a, s_next, eps)
    assert torch.allclose(moved["observations"], expected) and torch.allclose(moved["next_observations"], expected_next)
    assert moved["actions"] is a  # only the states move

    def stub(*args):
        raise NotImplementedError

    library = nb05.augmenter_with(stub, model)
    assert isinstance(library, KoopmanAugmenter)
    assert "does not pass its check yet" in capsys.readouterr().out
