"""Statistics of results: intervals for accuracies and paired differences, McNemar's test, linear CKA.

Written with the standard library and numpy (the normal quantile from :class:`statistics.NormalDist`, the binomial
tails in exact integers, Holm and Benjamini–Hochberg as statsmodels computes them), and ``scipy.special`` for the
t quantile only: importing ``scipy.stats`` and statsmodels cost ``zoo-survey report`` a second. tests/test_stats.py
holds every function equal to its scipy / statsmodels counterpart.

Every single-vs-ensemble difference is paired: both sides are scored on the same test
images (and for few-shot on the same draws), so differences get paired intervals. Over test
images a difference gets Newcombe's interval and McNemar's exact p, and is significant when
that p (adjusted for multiple comparisons by the caller) is below 0.05; docs/statistics.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..errors import ZooSurveyError


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval; half-width is nan for one value.

    >>> m, h = t_interval([0.5, 0.6, 0.7]); round(m, 2), round(h, 3)
    (0.6, 0.248)
    """
    from scipy.special import stdtrit  # what scipy.stats.t.ppf computes; lazy, so --help does not wait for scipy

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    half = float(stdtrit(len(x) - 1, 0.5 + level / 2) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean difference ``b - a`` over paired seeds, and the half-width of its t interval."""
    if len(a) != len(b):
        raise ZooSurveyError(f"a paired interval needs the same seeds on both sides; got {len(a)} and {len(b)}")
    return t_interval(np.asarray(b, float) - np.asarray(a, float), level)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau between two rankings of the same items; None below two items or when undefined."""
    if len(x) < 2:
        return None
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu_indices(len(a), 1)  # every pair once
    sx, sy = np.sign(a[:, None] - a[None, :])[upper], np.sign(b[:, None] - b[None, :])[upper]
    untied_x, untied_y = int(np.count_nonzero(sx)), int(np.count_nonzero(sy))
    if not untied_x or not untied_y:
        return None
    tau = float(np.sum(sx * sy)) / math.sqrt(untied_x * untied_y)  # tau-b: scipy.stats.kendalltau's default
    return None if math.isnan(tau) else min(1.0, max(-1.0, tau))


# --------------------------------------------------------------------------- paired differences over test images

LEVEL = 0.95
ALPHA = 1 - LEVEL
POWER = 0.80  # the power at which a row states the smallest difference it could detect
N_RESAMPLES = 9999


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same test images: Newcombe's 95% interval for paired
    proportions and McNemar's exact p-value. Significant when ``p_value < ALPHA``: the verdict comes from the test
    whose p is shown (after a multiple-comparison adjustment, when the caller has one: :func:`holm`, :func:`bh`)."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    only_a: int  # images a got right and b wrong
    only_b: int  # images b got right and a wrong
    both: int  # images both got right

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def verdict(self) -> str:
        """``win`` (b better), ``loss`` or ``tie`` (not significant), by McNemar's p."""
        return verdict(self.delta, self.p_value)

    @property
    def detectable(self) -> float:
        """The smallest difference this many test images could detect (see :func:`detectable_difference`)."""
        return detectable_difference(self.only_a + self.only_b, self.n)


def verdict(delta: float, p: float, alpha: float = ALPHA) -> str:
    """``win`` / ``loss`` when ``p < alpha`` (by the sign of ``delta``), else ``tie`` (not significant)."""
    return "tie" if not p < alpha else "win" if delta > 0 else "loss"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of the discordant pairs (1.0 when there are none).

    >>> round(mcnemar_exact(2, 10), 4)
    0.0386
    """
    n = only_a + only_b
    if only_a == only_b:  # also n == 0
        return 1.0
    # scipy.stats.binomtest(only_b, n, 0.5).pvalue: the distribution is symmetric, so twice the smaller tail, in
    # exact integers (C(n, 0) + ... + C(n, k)) / 2^n
    k, term, tail = min(only_a, only_b), 1, 1
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2**n)


def detectable_difference(discordant: int, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest accuracy difference a paired test on ``n`` images detects with probability ``power`` at ``alpha``,
    given the observed discordance (McNemar's normal approximation: ``(z_{1-alpha/2} + z_power) * sqrt(rho / n)``,
    ``rho`` the discordant share). With no discordant image, ``rho`` is its rule-of-three bound 3/n.

    >>> round(detectable_difference(75, 1000), 4)     # Fashion-MNIST-like: 75 discordant images of 1,000
    0.0243
    """
    rho = max(discordant, 3) / n
    return float((_z(1 - alpha / 2) + _z(power)) * math.sqrt(rho / n))


def newcombe_interval(both: int, only_a: int, only_b: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for ``p_b - p_a`` from paired outcomes: each side's Wilson score interval,
    combined with the correlation of the pairs. Near-exact coverage with few discordant pairs, never degenerate
    (with no discordant image it still spans the differences the test set cannot rule out).

    ``both``: images both got right; ``only_a`` / ``only_b``: images only that side got right; ``n``: all images.

    >>> [round(x, 4) for x in newcombe_interval(836, 0, 4, 1000)]   # 4-0 of 1,000: McNemar p = 0.125, and 0 is inside
    [-0.0006, 0.0088]
    """
    both_wrong = n - both - only_a - only_b
    la, ua = wilson_interval(both + only_a, n, level)
    lb, ub = wilson_interval(both + only_b, n, level)
    pa, pb = (both + only_a) / n, (both + only_b) / n
    den = (both + only_a) * (only_b + both_wrong) * (both + only_b) * (only_a + both_wrong)
    phi = 0.0 if den == 0 else (both * both_wrong - only_a * only_b) / math.sqrt(den)
    below = math.sqrt(max((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0.0))
    above = math.sqrt(max((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0.0))
    return pb - pa - below, pb - pa + above


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


def paired_difference(a_correct: np.ndarray, b_correct: np.ndarray, level: float = LEVEL) -> PairedDifference:
    """``mean(b) - mean(a)`` over paired 0/1 outcomes (the same test images), Newcombe's interval
    (:func:`newcombe_interval`) and McNemar's exact p-value, which alone decides significance.

    The interval is closed-form, not a bootstrap: with few, lopsided discordant images the percentile bootstrap
    was liberal (4 images only the ensemble got right, of 1,000: [+0.1, +0.8] points beside McNemar's p = 0.125)
    and with none it was [0, 0]. ``benchmarks/ci_coverage.py`` checks the coverage.

    >>> d = paired_difference(np.array([1, 0, 1, 1]), np.array([1, 0, 1, 1]))
    >>> (d.delta, d.p_value, d.verdict, d.low < 0 < d.high)
    (0.0, 1.0, 'tie', True)
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ZooSurveyError(f"a paired difference needs two equal-length outcome vectors; got {a.shape} and {b.shape}")
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    low, high = newcombe_interval(both, only_a, only_b, len(a), level)
    return PairedDifference((only_b - only_a) / len(a), low, high, mcnemar_exact(only_a, only_b), len(a), only_a, only_b,
                            both)


@dataclass(frozen=True)
class PooledDifference:
    """The mean over datasets of ``mean(b) - mean(a)``: its two-level bootstrap interval, the bootstrap's two-sided p
    (twice the share of resamples on the far side of 0), and the smallest difference it could detect."""

    delta: float
    low: float
    high: float
    p_value: float
    detectable: float


def pooled_difference(pairs: Sequence[tuple[np.ndarray, np.ndarray]], level: float = LEVEL,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> PooledDifference:
    """The mean over datasets of ``mean(b) - mean(a)``, with a two-level percentile bootstrap interval.

    Each resample draws the datasets with replacement, then, within each drawn dataset, its test images
    with replacement (paired), and averages the datasets' differences. A dataset drawn twice gets two
    independent image resamples. The interval therefore counts both which datasets were surveyed and
    which images they hold; with few datasets it is wide, as it should be. Per dataset the image resampling
    is drawn as in :func:`_resampled_means`.
    """

    if not pairs:
        raise ZooSurveyError("a pooled difference needs at least one dataset")
    rng = np.random.default_rng(seed)
    diffs = [np.asarray(b, float) - np.asarray(a, float) for a, b in pairs]
    k = len(diffs)
    picks = rng.integers(0, k, size=(n_resamples, k))
    drawn = np.empty((n_resamples, k))
    for slot in range(k):  # every (resample, slot) gets its own image resample of the dataset drawn there
        for j, d in enumerate(diffs):
            where = np.flatnonzero(picks[:, slot] == j)
            drawn[where, slot] = _resampled_means(d, len(where), rng)
    means = drawn.mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    delta = float(np.mean([d.mean() for d in diffs]))
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    z = _z(1 - (1 - level) / 2)
    detect = float((high - low) / 2 / z * (z + _z(POWER)))  # the interval's standard error, scaled
    # at least what the images alone leave undetectable (the mean of k per-dataset estimates), also with no discordance
    floor = math.sqrt(sum(detectable_difference(int(np.count_nonzero(d)), len(d)) ** 2 for d in diffs)) / k
    return PooledDifference(delta, float(low), float(high), p, max(detect, floor))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values (family-wise error), in the order given (as statsmodels'
    ``multipletests(method="holm")``: the i-th smallest times (m - i), running maximum, at most 1)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1.0)
    return [float(x) for x in adjusted]


def bh(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg (1995) q-values (false discovery rate), in the order given (as statsmodels'
    ``multipletests(method="fdr_bh")``: the i-th smallest times m / i, running minimum from the largest, at most 1)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    raw = p[order] / (np.arange(1, len(p) + 1) / len(p))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.minimum.accumulate(raw[::-1])[::-1], 1.0)
    return [float(x) for x in adjusted]


def equivalent(d: PairedDifference, margin: float, alpha: float = ALPHA) -> bool:
    """TOST: both one-sided tests reject a difference of ``margin`` or more, i.e. the ``1 - 2 alpha`` Newcombe interval
    lies inside ``(-margin, +margin)``."""
    low, high = newcombe_interval(d.both, d.only_a, d.only_b, d.n, 1 - 2 * alpha)
    return -margin < low and high < margin


def wilson_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of an accuracy (for one model's error bars)."""
    # scipy.stats.binomtest(correct, n).proportion_ci(level, method="wilson"), written out (Newcombe 1998)
    p, z = correct / n, _z(0.5 + 0.5 * level)
    denom = 2 * (n + z**2)
    center, delta = (2 * n * p + z**2) / denom, z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    return (0.0 if correct == 0 else center - delta), (1.0 if correct == n else center + delta)


def _z(q: float) -> float:
    """The standard normal quantile (scipy.stats.norm.ppf)."""
    return NormalDist().inv_cdf(q)


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


# --------------------------------------------------------------------------- seeds x images (few-shot)


def crossed_difference(a_correct: np.ndarray, b_correct: np.ndarray, level: float = LEVEL,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``mean(b) - mean(a)`` over seeds x test images (0/1 outcomes, shape seeds x images, paired: the same seeds'
    shots and the same images on both sides), with a percentile interval from a two-way bootstrap that carries
    both noises: each resample draws the seeds with replacement and, independently, the test images with
    replacement, one image draw shared by every seed (the images are the same for all seeds: crossed, not nested;
    Owen 2007, the "pigeonhole" bootstrap, which is slightly conservative). Returns (delta, low, high).

    >>> a = np.zeros((5, 100), bool); b = a.copy(); b[:, :10] = True
    >>> d, low, high = crossed_difference(a, b); (round(d, 2), low < 0.1 < high)
    (0.1, True)
    """
    A, B = np.asarray(a_correct, dtype=float), np.asarray(b_correct, dtype=float)
    if A.shape != B.shape or A.ndim != 2 or 0 in A.shape:
        raise ZooSurveyError(f"a seeds x images difference needs two equal 2-D outcome arrays; got {A.shape} and {B.shape}")
    D = B - A
    s, n = D.shape
    if n_resamples * n <= _CROSSED_MEMO_CELLS:
        seed_w, img_ws = _crossed_draws(s, n, n_resamples, seed)
    else:
        seed_w, img_ws = _crossed_draws.__wrapped__(s, n, n_resamples, seed)
    # 0/1 outcomes (the report's): the image sums in integers by einsum, exact like the float product and on this
    # thread; BLAS's own threads, on a machine busy with the report's plot workers, took seconds instead of 0.1 s
    ints = D.astype(np.int16) if np.array_equal(D, np.rint(D)) and np.abs(D).max() <= 1 else None
    means = np.empty(n_resamples)
    for start, img_w in zip(range(0, n_resamples, _CROSSED_CHUNK), img_ws, strict=True):
        stop = start + len(img_w)
        sums = np.einsum("ij,kj->ik", img_w, ints) if ints is not None else img_w.astype(float) @ D.T
        means[start:stop] = (seed_w[start:stop] * sums).sum(axis=1) / (s * n)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(D.mean()), float(low), float(high)


_CROSSED_CHUNK = 256  # image draws per chunk: 256 x n at a time
_CROSSED_MEMO_CELLS = 8_000_000  # resamples x images up to which the draws are kept (16 MB as uint16)


@functools.lru_cache(maxsize=4)
def _crossed_draws(s: int, n: int, n_resamples: int, seed: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The resampling weights of :func:`crossed_difference`: the draws of each seed (n_resamples x s) and, in chunks,
    of each image (n x draws). They depend on the shape and the seed only, not on the outcomes, so the report's many
    differences on the same test images (every setting of every family) draw them once: the multinomial draws are
    most of the bootstrap's time. The counts are exact integers, so the means are the same numbers either way."""
    rng = np.random.default_rng(seed)
    seed_w = rng.multinomial(s, np.full(s, 1.0 / s), size=n_resamples).astype(float)  # draws of each seed
    seed_w.flags.writeable = False
    dtype = np.uint16 if n <= np.iinfo(np.uint16).max else np.int64
    chunks = []
    for start in range(0, n_resamples, _CROSSED_CHUNK):
        stop = min(start + _CROSSED_CHUNK, n_resamples)
        img_w = rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start).astype(dtype)
        img_w.flags.writeable = False
        chunks.append(img_w)
    return seed_w, tuple(chunks)
