"""Statistics across seeds, the way deep RL reports them.

A handful of seeds per method is the norm in offline RL, and a table of "mean +- std" over three seeds says little
about which method is better. Agarwal et al. (2021, "Deep reinforcement learning at the edge of the statistical
precipice", NeurIPS) set out what to report instead, and this module follows them:

* **one score per run**: :func:`run_score`, the mean normalized score of a run's last ``last_k`` evaluations. Every
  table and every results file uses this one definition, so a number quoted from one can be found in the other.
* **mean and IQM** over runs (:func:`mean`, :func:`iqm`): the interquartile mean is the mean of the middle half of the
  scores (``scipy.stats.trim_mean(x, 0.25)``, the definition rliable uses), less swayed by one lucky or failed seed
  than the mean and less coarse than the median. ``trim_mean`` cuts ``int(0.25 n)`` runs from each end, so the
  middle "half" is exact only when 4 divides n: it keeps 6 of 10 runs, 3 of 5, and all of them when n < 4 (the IQM
  of three seeds is their mean). It earns its keep pooled over datasets or with more seeds.
* **sample SD** (:func:`sample_sd`, ``ddof=1``) wherever a spread is shown: the population SD (``ddof=0``)
  understates the spread of the runs a method would produce, by a factor sqrt((n-1)/n), 0.82 at n = 3.
* **stratified-bootstrap 95% intervals** (:func:`mean_ci`, :func:`iqm_ci`): resample runs with replacement, within
  each dataset when several datasets are pooled (so every resample keeps each dataset's number of runs), and take
  the 2.5th and 97.5th percentiles of the statistic.
* **paired comparisons** (:func:`paired_difference`): two methods trained on the same seeds share data order and
  initial weights, so their scores are compared seed by seed; the verdict is "A above B" or "A below B" only when the
  interval of the mean difference excludes zero, else "not distinguishable". That interval is a Student-t interval,
  not a bootstrap one: with a handful of seeds the percentile bootstrap is far too narrow to base a verdict on
  (:func:`paired_difference` says by how much).
* **probability of improvement** (:func:`probability_of_improvement`): P(X_A > X_B) for a run X_A of method A and a
  run X_B of method B, counted over all pairs of runs with ties as 1/2 (the Mann-Whitney U statistic over n_A n_B);
  0.5 means neither tends to beat the other.

Why scipy and not rliable, the field's own library: rliable 1.2.0 imports and runs only with ``arch<8`` (arch 8
changed the bootstrap classes rliable calls) and ``pandas<3`` (arch 7 fails to import under pandas 3). Those pins
would hold back packages the rest of the stack moves with, for a few lines of resampling. ``scipy.stats.bootstrap``
(scipy is already a dependency) does the same percentile bootstrap, and passing one sample per dataset with
``paired=False`` is exactly rliable's stratified bootstrap: each sample is resampled on its own.

What an interval from three seeds means: a percentile bootstrap can only recombine the runs it has, so with three
seeds the 95% interval of the mean is close to the range of the three scores and it covers the true mean less often
than 95% of the time. It is still the honest thing to print for a mean (a difference whose interval includes zero
at three seeds is not evidence of a difference), but not a sound basis for a verdict, which is why
:func:`paired_difference` uses a t interval.

Every bootstrap uses a fixed seed (:data:`BOOTSTRAP_SEED`), so a table rewritten from the same scores is the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

#: the bootstrap's random seed: the same scores always give the same intervals
BOOTSTRAP_SEED = 0
#: resamples per interval; Agarwal et al. recommend at least 2,000, and small arrays make 10,000 cheap
N_RESAMPLES = 10_000
#: the intervals' confidence level
LEVEL = 0.95

NOT_DISTINGUISHABLE = "not distinguishable"

# scipy 1.15 renamed bootstrap's ``random_state`` to ``rng``; the project supports scipy >= 1.10
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap interval: ``estimate`` in [``low``, ``high``] at confidence ``level``."""

    estimate: float
    low: float
    high: float
    n: int  #: the runs it was computed from (per method; pairs of runs for a paired statistic)
    level: float = LEVEL

    def includes(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.1f} [{self.low:.1f}, {self.high:.1f}]"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Method A against method B over the same seeds: the mean paired difference A - B and what it supports."""

    difference: Interval
    verdict: str  #: "A above B", "A below B" or "not distinguishable" (the interval includes zero)


# -- input -------------------------------------------------------------------------------------------------------
def _scores(x, min_n: int = 1, what: str = "this statistic", unit: str = "runs") -> np.ndarray:
    """``x`` as a 1-D float array of finite scores, with at least ``min_n`` of them."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of scores (one per run), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("no scores: expected at least one run")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"scores must be finite, got {arr.tolist()}")
    if arr.size < min_n:
        raise ValueError(f"{what} needs at least {min_n} {unit}, got {arr.size}")
    return arr


def _strata(x, min_n: int, what: str) -> list[np.ndarray]:
    """One array per dataset: a mapping ``dataset -> scores`` is stratified, a single array is one stratum."""
    if isinstance(x, Mapping):
        if not x:
            raise ValueError("no datasets: expected at least one")
        return [_scores(v, min_n, f"{what} (dataset {k!r})") for k, v in x.items()]
    return [_scores(x, min_n, what)]


def _paired(a: Mapping, b: Mapping, min_n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of A and B in the same seed order; the two methods must have run exactly the same seeds."""
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError("paired statistics take two mappings seed -> score, so that seeds can be matched")
    if set(a) != set(b):
        raise ValueError(
            f"paired statistics need the same seeds for both methods: A has {sorted(a)}, B has "
            f"{sorted(b)}; compare only the seeds both finished"
        )
    seeds = sorted(a)
    return _scores([a[s] for s in seeds], min_n, what), _scores([b[s] for s in seeds], min_n, what)


# -- one run -----------------------------------------------------------------------------------------------------
def run_score(evaluations: Sequence[float], last_k: int) -> float:
    """The score of one run: the mean of its last ``last_k`` evaluations (in step order).

    One evaluation is noisy (a few episodes of one policy snapshot), and the last one alone rewards a run that
    happened to end on a good snapshot; the mean of the last few is the convention of the KFC and CQL papers.
    """
    if last_k < 1:
        raise ValueError(f"last_k must be at least 1, got {last_k}")
    scores = _scores(evaluations, last_k, "a run score", unit="evaluations")
    return float(scores[-last_k:].mean())


# -- point statistics --------------------------------------------------------------------------------------------
def mean(x) -> float:
    """The mean score over runs (pooled over datasets when given a mapping ``dataset -> scores``)."""
    return float(np.concatenate(_strata(x, 1, "the mean")).mean())


def iqm(x) -> float:
    """The interquartile mean: the mean of the scores left after cutting ``int(0.25 n)`` from each end (the middle
    half when 4 divides n; rliable's definition)."""
    return float(scipy.stats.trim_mean(np.concatenate(_strata(x, 1, "the IQM")), 0.25))


def sample_sd(x) -> float:
    """The sample standard deviation (``ddof=1``): the spread of runs a method would produce, from ``n`` of them."""
    return float(np.std(_scores(x, 2, "a sample standard deviation"), ddof=1))


# -- bootstrap ---------------------------------------------------------------------------------------------------
def _bootstrap(
    samples: list[np.ndarray], statistic, paired: bool, seed: int, n_resamples: int, level: float, method: str
) -> tuple[float, float]:
    """scipy's bootstrap interval of ``statistic(*samples, axis)``; a statistic that never varies is its own interval.

    ``paired=False`` resamples every sample on its own (the stratified bootstrap, one sample per dataset);
    ``paired=True`` draws the same run indices for all samples (the same seeds for both methods).
    """
    with warnings.catch_warnings():
        # constant resamples (every seed scores the same, or one method beats the other in every resample) make
        # BCa's acceleration 0/0; scipy warns and returns nan, which is handled below
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.bootstrap(
            tuple(samples),
            statistic,
            paired=paired,
            vectorized=True,
            axis=-1,
            n_resamples=n_resamples,
            confidence_level=level,
            method=method,
            **{_RNG_KEYWORD: np.random.default_rng(seed)},
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    dist = np.asarray(res.bootstrap_distribution)
    if not (np.isfinite(low) and np.isfinite(high)) and np.ptp(dist) == 0:
        low = high = float(dist.flat[0])
    return low, high


def _stratified_ci(x, statistic, what: str, seed: int, n_resamples: int, level: float, method: str) -> Interval:
    strata = _strata(x, 2, f"a bootstrap interval of {what}")

    def pooled(*samples, axis=-1):
        return statistic(np.concatenate(samples, axis=axis), axis=axis)

    estimate = float(pooled(*strata))
    low, high = _bootstrap(strata, pooled, False, seed, n_resamples, level, method)
    return Interval(estimate, low, high, sum(s.size for s in strata), level)


def mean_ci(
    x, seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES, level: float = LEVEL, method: str = "percentile"
) -> Interval:
    """The mean with its (stratified) bootstrap interval; ``x`` is one array of run scores or ``dataset -> scores``."""
    return _stratified_ci(x, np.mean, "the mean", seed, n_resamples, level, method)


def iqm_ci(
    x, seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES, level: float = LEVEL, method: str = "percentile"
) -> Interval:
    """The IQM with its (stratified) bootstrap interval; ``x`` is one array of run scores or ``dataset -> scores``."""

    def trimmed(x, axis=-1):
        return scipy.stats.trim_mean(x, 0.25, axis=axis)

    return _stratified_ci(x, trimmed, "the IQM", seed, n_resamples, level, method)


# -- two methods -------------------------------------------------------------------------------------------------
def verdict(difference: Interval, a: str = "A", b: str = "B") -> str:
    """What an interval of A - B supports: "A above B", "A below B", or "not distinguishable" when it includes 0."""
    if difference.low > 0:
        return f"{a} above {b}"
    if difference.high < 0:
        return f"{a} below {b}"
    return NOT_DISTINGUISHABLE


def t_interval(x, level: float = LEVEL) -> Interval:
    """The mean with its Student-t interval, mean +- t_{n-1} * SD / sqrt(n): exact for normal scores at any n >= 2."""
    x = _scores(x, 2, "a t interval")
    m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))
    half = float(scipy.stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    return Interval(m, m - half, m + half, x.size, level)


def paired_difference(
    a: Mapping,
    b: Mapping,
    names: tuple[str, str] = ("A", "B"),
    method: str = "t",
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
) -> Comparison:
    """Mean of A - B over the seeds both ran (``a``, ``b``: seed -> score), its interval, and the verdict.

    Differencing seed by seed removes what the two runs of a seed share (data order, initial weights), which an
    unpaired comparison of the two means would count as noise.

    Why a Student-t interval (``method="t"``) and not a bootstrap by default: a verdict is a test, and with the 2-5
    seeds of a benchmark the percentile bootstrap fails as one. It can only recombine the differences it has, so at
    n = 3 its interval is about [min, max] of the three and it excludes zero whenever all three differences share a
    sign, which two equal methods do 1 time in 4: a "5%" test that errs 25% of the time (15% at n = 5, 9% at n = 10;
    tests/test_stats.py measures it). The t interval widens with few seeds as it should (t_2 = 4.3 at n = 3).
    ``method="percentile"`` or ``"BCa"`` gives the bootstrap interval, fine from a few dozen pairs on.
    """
    xa, xb = _paired(a, b, 2, "a paired interval")
    d = xa - xb
    if method == "t":
        diff = t_interval(d, level)
    else:
        low, high = _bootstrap([d], lambda x, axis=-1: np.mean(x, axis=axis), False, seed, n_resamples, level, method)
        diff = Interval(float(d.mean()), low, high, d.size, level)
    return Comparison(diff, verdict(diff, *names))


def _p_improvement(xa: np.ndarray, xb: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X_A > X_B) + P(X_A = X_B) / 2 over all pairs of runs (the last axis holds the runs)."""
    xa, xb = np.moveaxis(xa, axis, -1), np.moveaxis(xb, axis, -1)
    greater = (xa[..., :, None] > xb[..., None, :]).mean(axis=(-2, -1))
    ties = (xa[..., :, None] == xb[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def probability_of_improvement(
    a: Mapping,
    b: Mapping,
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    method: str = "percentile",
) -> Interval:
    """P(a run of A scores above a run of B), ties counted 1/2, with a bootstrap interval over the shared seeds.

    The resamples draw seeds, and both methods' runs of a drawn seed come together, as in :func:`paired_difference`.
    """
    xa, xb = _paired(a, b, 2, "a probability of improvement with an interval")
    low, high = _bootstrap([xa, xb], _p_improvement, True, seed, n_resamples, level, method)
    return Interval(float(_p_improvement(xa, xb)), low, high, xa.size, level)
