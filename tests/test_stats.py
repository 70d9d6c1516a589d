"""kfc_lite.stats: run scores, mean/IQM/sample SD, bootstrap intervals, paired verdicts, probability of improvement."""

from __future__ import annotations

import numpy as np
import pytest

from kfc_lite import stats


def test_run_score_is_the_mean_of_the_last_k_evaluations():
    assert stats.run_score([0.0, 10.0, 20.0, 40.0], last_k=2) == pytest.approx(30.0)
    assert stats.run_score([0.0, 10.0, 20.0, 40.0], last_k=1) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="at least 3 evaluations"):
        stats.run_score([1.0, 2.0], last_k=3)
    with pytest.raises(ValueError, match="last_k"):
        stats.run_score([1.0, 2.0], last_k=0)


def test_iqm_is_the_mean_of_the_middle_half():
    # eight runs: the two lowest and the two highest are dropped, whatever their size
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)
    assert stats.iqm([-1000, 0, 3, 4, 5, 6, 1e6, 1e9]) == pytest.approx(4.5)
    assert stats.mean([-1000, 0, 3, 4, 5, 6, 1e6, 1e9]) > 1e8
    # order does not matter; below four runs nothing is trimmed, so the IQM is the mean
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    assert stats.iqm([28.0, 37.3, 59.8]) == pytest.approx(np.mean([28.0, 37.3, 59.8]))
    # pooled over datasets when given dataset -> scores
    assert stats.iqm({"a": [1, 2, 3, 4], "b": [5, 6, 7, 8]}) == pytest.approx(4.5)


def test_sample_sd_not_population_sd():
    scores = [28.0, 37.3, 59.8]
    assert stats.sample_sd(scores) == pytest.approx(16.35, abs=0.01)  # np.std(scores) would be 13.35
    assert stats.sample_sd([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.sample_sd([5.0])


def test_intervals_are_reproducible_and_contain_the_estimate():
    x = [3.0, 9.0, 4.0, 12.0, 7.0]
    a, b = stats.mean_ci(x), stats.mean_ci(x)
    assert a == b and a.n == 5
    assert a.estimate == pytest.approx(7.0) and a.low < a.estimate < a.high
    assert min(x) <= a.low and a.high <= max(x)
    y = np.random.default_rng(5).normal(size=20)
    assert stats.mean_ci(y, seed=1) != stats.mean_ci(y, seed=2)  # the seed is what fixes them
    i = stats.iqm_ci(x)
    assert i.low <= i.estimate <= i.high and i.estimate == pytest.approx(stats.iqm(x))
    assert str(a).startswith("7.0 [")
    # every run the same: no spread to resample
    flat = stats.mean_ci([2.0, 2.0, 2.0])
    assert (flat.low, flat.estimate, flat.high) == (2.0, 2.0, 2.0)


def test_mean_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(123)
    trials, covered = 200, 0
    for t in range(trials):
        x = rng.normal(10.0, 3.0, size=12)
        covered += stats.mean_ci(x, seed=t, n_resamples=1000).includes(10.0)
    # a percentile bootstrap under-covers a little at n = 12 (about 0.92); 200 trials put the rate within +-0.04
    assert 0.85 <= covered / trials <= 0.99


def test_stratified_bootstrap_keeps_each_datasets_runs():
    # two datasets on very different scales: a resample that drew dataset b's runs for dataset a would move the pooled
    # mean far outside what any stratified resample can reach
    scores = {"a": [0.0, 1.0, 2.0], "b": [100.0, 101.0, 102.0]}
    ci = stats.mean_ci(scores)
    assert ci.estimate == pytest.approx(51.0) and ci.n == 6
    assert 50.0 <= ci.low <= ci.high <= 52.0
    pooled = stats.mean_ci(scores["a"] + scores["b"])  # the unstratified bootstrap mixes them
    assert pooled.high - pooled.low > 10 * (ci.high - ci.low)


def test_paired_verdicts():
    cql = {0: 10.0, 1: 80.0, 2: 35.0, 3: 60.0, 4: 20.0}
    better = {s: v + 5.0 + 0.5 * s for s, v in cql.items()}  # 5 to 7 points up on every seed
    clear = stats.paired_difference(better, cql, names=("kfc", "cql"))
    assert clear.verdict == "kfc above cql" and clear.difference.low > 0
    assert clear.difference.estimate == pytest.approx(6.0)
    assert stats.paired_difference(cql, better, names=("cql", "kfc")).verdict == "cql below kfc"
    # pairing matters: the seed-to-seed spread (10..80) dwarfs the +6, yet every pair moves the same way
    assert stats.mean_ci(list(cql.values())).includes(stats.mean(list(better.values())))
    # an overlapping arm: some seeds up, some down
    mixed = {0: 15.0, 1: 70.0, 2: 45.0, 3: 52.0, 4: 24.0}
    overlap = stats.paired_difference(mixed, cql)
    assert overlap.verdict == stats.NOT_DISTINGUISHABLE and overlap.difference.includes(0.0)


def test_t_interval_of_known_scores():
    # mean 2, SD 1, n = 3: half-width t_{0.975, 2} / sqrt(3) = 4.303 / 1.732
    ci = stats.t_interval([1.0, 2.0, 3.0])
    assert ci.estimate == pytest.approx(2.0)
    assert (ci.low, ci.high) == (pytest.approx(2.0 - 2.4841, abs=1e-3), pytest.approx(2.0 + 2.4841, abs=1e-3))


def test_verdicts_from_three_seeds_err_at_the_nominal_rate_only_with_the_t_interval():
    # two equal methods, three seeds: a 95% verdict should call a difference about 5% of the time
    rng = np.random.default_rng(7)
    trials, wrong = 300, {"t": 0, "percentile": 0}
    for t in range(trials):
        a = dict(enumerate(rng.normal(50.0, 10.0, size=3)))
        b = dict(enumerate(rng.normal(50.0, 10.0, size=3)))
        for method in wrong:
            c = stats.paired_difference(a, b, method=method, seed=t, n_resamples=500)
            wrong[method] += c.verdict != stats.NOT_DISTINGUISHABLE
    assert wrong["t"] / trials <= 0.10
    assert wrong["percentile"] / trials >= 0.15  # about 1 in 4: all three differences share a sign


def test_probability_of_improvement():
    a = {0: 10.0, 1: 11.0, 2: 12.0}
    b = {0: 1.0, 1: 2.0, 2: 3.0}
    p = stats.probability_of_improvement(a, b)
    assert (p.estimate, p.low, p.high) == (1.0, 1.0, 1.0)
    assert stats.probability_of_improvement(b, a).estimate == 0.0
    same = stats.probability_of_improvement(a, a)
    assert same.estimate == 0.5 and same.includes(0.5)
    # counted over all pairs of runs, ties as 1/2: A = (1, 3), B = (2, 3): pairs 1>2 no, 1>3 no, 3>2 yes, 3=3 half
    assert stats.probability_of_improvement({0: 1.0, 1: 3.0}, {0: 2.0, 1: 3.0}).estimate == pytest.approx(0.375)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no scores"):
        stats.mean([])
    with pytest.raises(ValueError, match="finite"):
        stats.mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        stats.mean([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.mean_ci([4.0])
    with pytest.raises(ValueError, match="dataset 'b'"):
        stats.iqm_ci({"a": [1.0, 2.0], "b": [3.0]})
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 2: 2.0})
    with pytest.raises(TypeError, match="seed -> score"):
        stats.paired_difference([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.probability_of_improvement({0: 1.0}, {0: 2.0})
