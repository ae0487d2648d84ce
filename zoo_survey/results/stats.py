"""Statistics of results: intervals for accuracies and paired differences, McNemar's test, linear CKA (scipy).

Every single-vs-ensemble difference is paired: both sides are scored on the same test
images (and for few-shot on the same draws), so differences get paired intervals. A
difference is significant only when its 95% interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ZooSurveyError


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval; half-width is nan for one value.

    >>> m, h = t_interval([0.5, 0.6, 0.7]); round(m, 2), round(h, 3)
    (0.6, 0.248)
    """
    from scipy import stats  # lazy: scipy.stats takes a while to import, and --help should not wait

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean difference ``b - a`` over paired seeds, and the half-width of its t interval."""
    if len(a) != len(b):
        raise ZooSurveyError(f"a paired interval needs the same seeds on both sides; got {len(a)} and {len(b)}")
    return t_interval(np.asarray(b, float) - np.asarray(a, float), level)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau between two rankings of the same items; None below two items or when undefined."""
    from scipy import stats

    if len(x) < 2:
        return None
    tau = float(stats.kendalltau(x, y).statistic)
    return None if math.isnan(tau) else tau


# --------------------------------------------------------------------------- paired differences over test images

LEVEL = 0.95
N_RESAMPLES = 9999


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same test images, with its 95% bootstrap interval
    and McNemar's exact p-value. Significant only when the interval excludes 0."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    only_a: int  # images a got right and b wrong
    only_b: int  # images b got right and a wrong

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """``win`` (b better), ``loss`` or ``tie``, by the interval."""
        return "win" if self.low > 0 else "loss" if self.high < 0 else "tie"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of the discordant pairs (1.0 when there are none).

    >>> round(mcnemar_exact(2, 10), 4)
    0.0386
    """
    from scipy import stats

    n = only_a + only_b
    return 1.0 if n == 0 else float(stats.binomtest(only_b, n, 0.5).pvalue)


def _resampled_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the mean of a paired 0/1 difference ``d`` (values -1, 0, +1).

    Resampling the n images with replacement and averaging depends only on how many images of
    each kind a resample draws, so the counts are drawn from their multinomial: the same
    distribution as resampling image by image (tests check it against scipy.stats.bootstrap with
    ``paired=True``), at a cost that does not grow with the test set (10,000 or 25,000 images).
    """
    p = np.array([(d < 0).mean(), (d == 0).mean(), (d > 0).mean()])
    counts = rng.multinomial(len(d), p / p.sum(), size=n_resamples)
    return (counts[:, 2] - counts[:, 0]) / len(d)


def paired_difference(a_correct: np.ndarray, b_correct: np.ndarray, level: float = LEVEL,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> PairedDifference:
    """``mean(b) - mean(a)`` over paired 0/1 outcomes (the same test images), a paired bootstrap percentile
    interval (seeded), and McNemar's exact p-value.

    The percentile interval, not BCa: with few discordant images (10-20, common between a single and an
    ensemble of its family) BCa's bias correction on this discrete statistic undercovered in
    ``benchmarks/ci_coverage.py`` (e.g. 89.8% at 6 discordant pairs), the percentile interval did not (94.3%).
    With no discordant image at all the interval is [0, 0]: the bootstrap sees no disagreement to resample.

    >>> d = paired_difference(np.array([1, 0, 1, 1]), np.array([1, 0, 1, 1]))
    >>> (d.delta, d.low, d.high, d.p_value)
    (0.0, 0.0, 0.0, 1.0)
    """
    a = np.asarray(a_correct, dtype=float)
    b = np.asarray(b_correct, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ZooSurveyError(f"a paired difference needs two equal-length outcome vectors; got {a.shape} and {b.shape}")
    d = b - a
    delta = float(d.mean())
    only_a, only_b = int((d < 0).sum()), int((d > 0).sum())
    if np.all(d == d[0]):  # no spread to resample: every bootstrap sample gives the same difference
        low = high = delta
    else:
        boot = _resampled_means(d, n_resamples, np.random.default_rng(seed))
        low, high = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return PairedDifference(delta, low, high, mcnemar_exact(only_a, only_b), len(d), only_a, only_b)


def pooled_difference(pairs: Sequence[tuple[np.ndarray, np.ndarray]], level: float = LEVEL,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The mean over datasets of ``mean(b) - mean(a)``, with a two-level percentile bootstrap interval.

    Each resample draws the datasets with replacement, then, within each drawn dataset, its test images
    with replacement (paired), and averages the datasets' differences. The interval therefore counts both
    which datasets were surveyed and which images they hold; with few datasets it is wide, as it should be.
    Per dataset the image resampling is drawn as in :func:`_resampled_means`.
    """
    if not pairs:
        raise ZooSurveyError("a pooled difference needs at least one dataset")
    rng = np.random.default_rng(seed)
    per = []
    boot = np.empty((n_resamples, len(pairs)))
    for j, (a, b) in enumerate(pairs):
        d = np.asarray(b, float) - np.asarray(a, float)
        per.append(d.mean())
        boot[:, j] = _resampled_means(d, n_resamples, rng)
    picks = rng.integers(0, len(pairs), size=(n_resamples, len(pairs)))
    means = np.take_along_axis(boot, picks, axis=1).mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(np.mean(per)), float(low), float(high)


def wilson_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of an accuracy (for one model's error bars)."""
    from scipy import stats

    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


# --------------------------------------------------------------------------- representation similarity


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same rows (Kornblith et al. 2019), by default with the
    debiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021), computed in feature space in O(n d):
    no n x n Gram matrix is formed, so 10,000 rows are cheap.

    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 8))
    >>> round(linear_cka(X, 3 * X @ np.linalg.qr(rng.normal(size=(8, 8)))[0]), 6)   # rotation and scale invariant
    1.0
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ZooSurveyError(f"CKA needs two matrices with the same rows; got {X.shape} and {Y.shape}")
    n = len(X)
    if debiased and n < 4:
        raise ZooSurveyError(f"debiased CKA needs at least 4 rows, got {n}")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)

    def similarity(A: np.ndarray, B: np.ndarray) -> float:
        dot = float(np.linalg.norm(A.T @ B) ** 2)
        if not debiased:
            return dot
        ra, rb = np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", B, B)
        return dot - n / (n - 2.0) * float(ra @ rb) + float(ra.sum() * rb.sum()) / ((n - 1) * (n - 2))

    xy, xx, yy = similarity(X, Y), similarity(X, X), similarity(Y, Y)
    if xx <= 0 or yy <= 0:
        return float("nan")  # a constant representation has no similarity to speak of
    return xy / np.sqrt(xx * yy)
