"""Statistics with a known truth: Newcombe's paired interval and McNemar's exact p decide together (never
significant with p >= 0.05), zero discordant images give a non-degenerate interval, the family bootstrap
resamples a dataset drawn twice independently (checked against a direct implementation), Holm and BH
against their definitions, the detectable difference, TOST, and CKA against the reference Gram-matrix code."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy import stats

from zoo_survey.errors import ZooSurveyError
from zoo_survey.results.analysis import answer_of, comparison_lines
from zoo_survey.results.stats import (
    _resampled_means,
    bh,
    detectable_difference,
    equivalent,
    holm,
    linear_cka,
    mcnemar_exact,
    newcombe_interval,
    paired_difference,
    pooled_difference,
    wilson_interval,
)
from zoo_survey.results.store import ResultRow


def _outcomes(n=400, p_single=0.75, flip=0.15, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < p_single).astype(int)
    b = np.where(rng.random(n) < flip, 1 - a, a)
    return a, b


def test_the_resampled_means_are_those_of_resampling_images_one_by_one():
    a, b = _outcomes()
    d = (b - a).astype(float)
    ours = _resampled_means(d, 20000, np.random.default_rng(1))
    rng = np.random.default_rng(2)  # the direct implementation: draw n image indices with replacement, average
    direct = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(20000)])
    assert ours.mean() == pytest.approx(direct.mean(), abs=0.002)
    assert ours.std() == pytest.approx(direct.std(), rel=0.03)
    assert np.quantile(ours, [0.025, 0.975]) == pytest.approx(np.quantile(direct, [0.025, 0.975]), abs=0.005)


def _lopsided(only_b: int, only_a: int = 0, n: int = 1000):
    """n test images, 84% right on both sides but for ``only_b`` images only b gets right and ``only_a`` only a."""
    a = np.zeros(n, bool)
    a[: int(0.84 * n)] = True
    b = a.copy()
    b[:only_a] = False  # a right, b wrong
    b[int(0.84 * n): int(0.84 * n) + only_b] = True  # b right, a wrong
    return a, b


@pytest.mark.parametrize("only_b", [4, 5])
def test_four_or_five_to_nothing_is_not_significant_as_mcnemar_says(only_b):
    # issue 19: 4-0 of 1,000 gave the bootstrap interval [+0.1, +0.8] and "significant" beside p = 0.125
    a, b = _lopsided(only_b)
    d = paired_difference(a, b)
    assert (d.only_a, d.only_b) == (0, only_b) and d.p_value == pytest.approx(2 / 2**only_b)
    assert not d.significant and d.verdict == "tie"
    assert d.low < 0 < d.high if only_b == 4 else d.low < 0.0002  # 4-0: the interval holds 0 as the test says


def test_significance_never_disagrees_with_the_p_shown():
    # over a grid of discordant counts, "significant" is exactly p < 0.05: the same test decides
    for only_a in range(0, 12):
        for only_b in range(0, 12):
            d = paired_difference(*_lopsided(only_b, only_a))
            assert d.significant == (d.p_value < 0.05) == (d.verdict != "tie")


@pytest.mark.parametrize("n", [50, 449, 1000])
def test_no_discordant_image_still_gets_an_interval(n):
    a = np.zeros(n, bool)
    a[: int(0.9 * n)] = True
    d = paired_difference(a, a.copy())
    assert d.delta == 0 and d.low < 0 < d.high  # issue 19: it was [0, 0], certainty the data cannot give
    assert d.high - d.low < 8 / n  # but no wider than what n images leave open (rule of three: ~3/n each side)


def test_one_discordant_image_does_not_jump_from_zero_width():
    a = np.zeros(449, bool)
    a[:400] = True
    b = a.copy()
    b[400] = True
    zero, one = paired_difference(a, a.copy()), paired_difference(a, b)
    assert 0.5 < (one.high - one.low) / (zero.high - zero.low) < 3


def test_newcombe_interval_by_its_definition():
    # Newcombe (1998) method 10, written out here from the paper's formulas with scipy's Wilson intervals
    both, only_a, only_b, n = 700, 20, 35, 1000
    wrong = n - both - only_a - only_b
    ci_a = stats.binomtest(both + only_a, n).proportion_ci(method="wilson")
    ci_b = stats.binomtest(both + only_b, n).proportion_ci(method="wilson")
    pa, pb = (both + only_a) / n, (both + only_b) / n
    phi = (both * wrong - only_a * only_b) / np.sqrt((both + only_a) * (only_b + wrong) * (both + only_b) * (only_a + wrong))
    dl = np.sqrt((pb - ci_b.low) ** 2 - 2 * phi * (pb - ci_b.low) * (ci_a.high - pa) + (ci_a.high - pa) ** 2)
    du = np.sqrt((ci_b.high - pb) ** 2 - 2 * phi * (ci_b.high - pb) * (pa - ci_a.low) + (pa - ci_a.low) ** 2)
    assert newcombe_interval(both, only_a, only_b, n) == pytest.approx((pb - pa - dl, pb - pa + du), abs=1e-9)


def test_coverage_with_few_discordant_images():
    # a known truth: 1,000 images, ~15 discordant, true gain +0.88 points (ci_coverage.py's setting), 400 draws
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        single = rng.random(1000) < 0.84
        ens = np.where(rng.random(1000) < 0.08, rng.random(1000) < 0.95, single)
        d = paired_difference(single, ens)
        covered += d.low <= 0.08 * (0.95 - 0.84) <= d.high
    assert 0.92 <= covered / 400 <= 0.99


def test_mcnemar_exact_by_hand():
    # 2 images only the single got right, 10 only the ensemble: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    by_hand = 2 * sum(comb(12, k) for k in range(3)) / 2**12
    assert mcnemar_exact(2, 10) == pytest.approx(by_hand) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == pytest.approx(1.0)
    a, b = np.array([1] * 2 + [0] * 10 + [1] * 30), np.array([0] * 2 + [1] * 10 + [1] * 30)
    d = paired_difference(a, b)
    assert (d.only_a, d.only_b, d.n) == (2, 10, 42) and d.p_value == pytest.approx(by_hand)


def test_an_ensemble_identical_to_the_single_differs_by_exactly_zero():
    a, _ = _outcomes()
    d = paired_difference(a, a.copy())
    assert (d.delta, d.p_value, d.significant, d.verdict) == (0.0, 1.0, False, "tie") and d.low < 0 < d.high
    pooled = pooled_difference([(a, a), (a[:100], a[:100])])
    assert (pooled.delta, pooled.low, pooled.high, pooled.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_identical_rows_in_a_store_give_zero_in_the_report():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    preds = np.where(rng.random(200) < 0.7, labels, (labels + 1) % 3)

    def row(role, comparison):
        return ResultRow(row_key=role, family="f", comparison=comparison, role=role, members=[comparison], combine="single",
                         dataset="d", probe="linear", top1=float((preds == labels).mean()), mean_per_class=None, top5=None,
                         hparams={}, params_m=1, gflops=1, feature_dim=8, n_train=10, n_val=5, n_test=200,
                         extract_seconds=0, warnings=[], provenance={}, test_key="t", predictions=preds, test_labels=labels)

    (line,) = comparison_lines([row("baseline", "a"), row("ensemble", "a+b")])
    assert line.delta == 0 and line.paired.low < 0 < line.paired.high
    (fam,) = answer_of([line]).to_dict("records")
    assert (fam["mean_difference_pts"], fam["ci_low_pts"], fam["ci_high_pts"], fam["ties"]) == (0.0, 0.0, 0.0, 1)
    assert fam["verdict"] == "not significant" and fam["detectable_pts"] > 0


def test_a_clear_gain_is_significant_and_its_interval_excludes_zero():
    a, _ = _outcomes(n=1000, flip=0.0)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:60]] = 1  # the ensemble fixes 60 errors and breaks none
    d = paired_difference(a, b)
    assert d.delta == pytest.approx(0.06) and d.low > 0 and d.significant and d.verdict == "win" and d.p_value < 1e-10


def test_pooled_interval_over_datasets_is_wider_than_one_datasets():
    pairs = [_outcomes(seed=s) for s in range(3)]
    pooled = pooled_difference(pairs)
    mean, low, high = pooled.delta, pooled.low, pooled.high
    assert mean == pytest.approx(np.mean([np.mean(b - a) for a, b in pairs]))
    one = paired_difference(*pairs[0])
    assert low <= mean <= high and (high - low) > 0.5 * (one.high - one.low)
    with pytest.raises(ZooSurveyError, match="at least one dataset"):
        pooled_difference([])


def test_wilson_interval_matches_scipy():
    lo, hi = wilson_interval(80, 100)
    ref = stats.binomtest(80, 100).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high)) and lo < 0.8 < hi


# --------------------------------------------------------------------------- CKA


def _reference_cka(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    """Kornblith et al.'s Gram-matrix CKA (the published colab's gram_linear / center_gram / cka), transcribed."""

    def gram_linear(x):
        return x.dot(x.T)

    def center_gram(gram, unbiased):
        gram = gram.copy()
        if unbiased:
            n = gram.shape[0]
            np.fill_diagonal(gram, 0)
            means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
            means -= np.sum(means) / (2 * (n - 1))
            gram -= means[:, None]
            gram -= means[None, :]
            np.fill_diagonal(gram, 0)
        else:
            means = np.mean(gram, 0, dtype=np.float64)
            means -= np.mean(means) / 2
            gram -= means[:, None]
            gram -= means[None, :]
        return gram

    gx, gy = center_gram(gram_linear(X), debiased), center_gram(gram_linear(Y), debiased)
    scaled_hsic = gx.ravel().dot(gy.ravel())
    return scaled_hsic / (np.linalg.norm(gx) * np.linalg.norm(gy))


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_matches_the_reference_gram_implementation(debiased):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(120, 30))
    Y = X[:, :10] @ rng.normal(size=(10, 25)) + 0.5 * rng.normal(size=(120, 25))
    Z = rng.normal(size=(120, 40))
    for A, B in ((X, Y), (X, Z), (Y, Z), (X, X)):
        assert linear_cka(A, B, debiased=debiased) == pytest.approx(_reference_cka(A, B, debiased), abs=1e-10)


def test_cka_properties():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 16))
    Q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, 5 * X @ Q + 2) == pytest.approx(1.0)  # invariant to rotation, isotropic scale and shift
    assert abs(linear_cka(X, rng.normal(size=(300, 16)))) < 0.05  # independent: near 0 (debiased)
    with pytest.raises(ZooSurveyError, match="same rows"):
        linear_cka(X, X[:10])


def _direct_two_level(pairs, n_resamples, rng):
    """The two-level bootstrap written plainly: draw datasets, and for every draw its own image resample."""
    diffs = [np.asarray(b, float) - np.asarray(a, float) for a, b in pairs]
    out = np.empty(n_resamples)
    for r in range(n_resamples):
        picks = rng.integers(0, len(diffs), len(diffs))
        out[r] = np.mean([diffs[j][rng.integers(0, len(diffs[j]), len(diffs[j]))].mean() for j in picks])
    return np.quantile(out, [0.025, 0.975])


def test_the_family_bootstrap_resamples_each_draw_of_a_dataset_on_its_own():
    # two tiny, noisy datasets with the same mean gain: between-dataset spread is 0, so the interval is all image
    # noise, and reusing one image resample for a dataset drawn twice (issue 19) widens it by ~20%
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(2):
        a = (rng.random(40) < 0.5).astype(int)
        b = a.copy()
        b[:12] = 1 - b[:12]
        b[:12] = np.where(np.arange(12) < 8, 1, 0)
        a[:12] = np.where(np.arange(12) < 8, 0, 1)
        pairs.append((a, b))
    pooled = pooled_difference(pairs, n_resamples=20000)
    lo, hi = _direct_two_level(pairs, 6000, np.random.default_rng(11))
    assert (pooled.low, pooled.high) == pytest.approx((lo, hi), abs=0.02)  # one image step is 0.0125; reuse: [-0.05, +0.25]


def test_holm_and_bh_by_their_definitions():
    p = [0.01, 0.04, 0.03, 0.5]
    # Holm: sorted p times (m - rank), running maximum, capped at 1; BH: p * m / rank, running minimum from the top
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert bh(p) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5], abs=1e-6)
    assert holm([]) == [] and bh([]) == []


def test_detectable_difference_and_equivalence():
    # 75 discordant of 1,000: (1.96 + 0.84) * sqrt(0.075 / 1000) = 2.43 points; more images, a smaller one
    assert detectable_difference(75, 1000) == pytest.approx(0.02426, abs=1e-4)
    assert detectable_difference(75 * 4, 4000) < detectable_difference(75, 1000)
    assert detectable_difference(0, 1000) == detectable_difference(3, 1000)  # rule of three with none
    a = np.zeros(1000, bool)
    a[:840] = True
    b = a.copy()
    b[840:845] = True  # 5-0: +0.5 points
    d = paired_difference(a, b)
    assert equivalent(d, 0.02) and not equivalent(d, 0.005)


def test_the_light_statistics_equal_scipy_and_statsmodels():
    """stats.py computes without scipy.stats and statsmodels (the report's import time): the same numbers."""
    from statsmodels.stats.multitest import multipletests

    from zoo_survey.results.stats import bh, holm, kendall_tau, mcnemar_exact, t_interval, wilson_interval

    for a, b in [(0, 0), (2, 10), (10, 2), (7, 7), (0, 1), (3, 4), (40, 61), (480, 530), (1200, 1311)]:
        want = 1.0 if a + b == 0 else stats.binomtest(b, a + b, 0.5).pvalue
        assert mcnemar_exact(a, b) == pytest.approx(want, rel=1e-9, abs=1e-300), (a, b)
    for k, n in [(0, 10), (10, 10), (3, 10), (836, 1000), (1, 2), (4999, 10000)]:
        for level in (0.95, 0.9):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            assert wilson_interval(k, n, level) == pytest.approx((ci.low, ci.high), rel=1e-12, abs=1e-15)
    rng = np.random.default_rng(0)
    for values in ([0.5, 0.6, 0.7], rng.normal(size=5).tolist(), rng.normal(size=30).tolist()):
        m = np.mean(values)
        half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
        assert t_interval(values) == pytest.approx((m, half), rel=1e-12)
    for p in ([0.01, 0.04, 0.03, 0.2, 0.04], rng.uniform(size=12).tolist(), [0.5], [], [0.9, 0.9, 0.001]):
        for mine, method in ((holm, "holm"), (bh, "fdr_bh")):
            want = multipletests(p, method=method)[1].tolist() if p else []
            assert mine(p) == pytest.approx(want, rel=1e-12), (p, method)
    for x, y in [([1, 2, 3, 4], [1, 3, 2, 4]), ([1, 1, 2, 3], [2, 1, 1, 3]), ([1, 2], [2, 1]),
                 (rng.normal(size=15).tolist(), rng.normal(size=15).tolist()), ([1, 1, 1], [1, 2, 3])]:
        want = stats.kendalltau(x, y).statistic
        got = kendall_tau(x, y)
        assert (got is None and np.isnan(want)) or got == pytest.approx(want, rel=1e-12), (x, y)
