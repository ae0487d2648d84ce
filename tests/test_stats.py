"""Statistics: paired intervals against direct resampling and scipy, McNemar by hand, CKA against the
reference Gram-matrix implementation, and identical sides giving exactly 0 with [0, 0]."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy import stats

from zoo_survey.errors import ZooSurveyError
from zoo_survey.results.analysis import answer_of, comparison_lines
from zoo_survey.results.stats import (
    _resampled_means,
    linear_cka,
    mcnemar_exact,
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_interval_matches_scipys_paired_bootstrap(seed):
    a, b = _outcomes(seed=seed)
    ours = paired_difference(a, b)
    ref = stats.bootstrap((b.astype(float), a.astype(float)), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                          vectorized=True, n_resamples=9999, method="percentile",
                          random_state=np.random.default_rng(seed + 10))
    assert ours.delta == pytest.approx(float(np.mean(b - a)))
    # two independent 9,999-resample runs: endpoints agree to Monte Carlo error (interval width here ~0.07)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.006)


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
    assert (d.delta, d.low, d.high, d.p_value, d.significant, d.verdict) == (0.0, 0.0, 0.0, 1.0, False, "tie")
    assert pooled_difference([(a, a), (a[:100], a[:100])]) == (0.0, 0.0, 0.0)


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
    assert line.delta == 0 and (line.paired.low, line.paired.high) == (0.0, 0.0)
    (fam,) = answer_of([line]).to_dict("records")
    assert (fam["mean_difference_pts"], fam["ci_low_pts"], fam["ci_high_pts"], fam["ties"]) == (0.0, 0.0, 0.0, 1)


def test_a_clear_gain_is_significant_and_its_interval_excludes_zero():
    a, _ = _outcomes(n=1000, flip=0.0)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:60]] = 1  # the ensemble fixes 60 errors and breaks none
    d = paired_difference(a, b)
    assert d.delta == pytest.approx(0.06) and d.low > 0 and d.significant and d.verdict == "win" and d.p_value < 1e-10


def test_pooled_interval_over_datasets_is_wider_than_one_datasets():
    pairs = [_outcomes(seed=s) for s in range(3)]
    mean, low, high = pooled_difference(pairs)
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
