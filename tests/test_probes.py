"""Linear probe: matches scikit-learn's LogisticRegression at the same C; bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes import LinearProbe


def _blobs(n=600, d=40, k=5, seed=0, noise=2.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 1.5
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(size=(n, d)) * noise
    scale = rng.uniform(0.1, 10, d)  # unequal feature scales: standardization matters
    return (X * scale).astype(np.float32), y


def _split(X, y):
    n = len(y)
    a, b = int(n * 0.6), int(n * 0.8)
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


@pytest.mark.parametrize(("d", "n"), [(40, 600), (300, 200), (700, 200)])  # n > d, n < d, and d > 4 n (row space)
def test_accuracy_matches_sklearn_at_the_chosen_C(d, n):
    X, y = _blobs(n=n, d=d)
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _split(X, y)
    probe = LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    ours = probe.evaluate(Xte, yte)
    X_all, y_all = np.concatenate([Xtr, Xv]), np.concatenate([ytr, yv])
    mean, std = X_all.mean(0), X_all.std(0)
    ref = LogisticRegression(C=probe.best_C_, max_iter=5000).fit((X_all - mean) / std, y_all)
    ref_acc = ref.score((Xte - mean) / std, yte)
    assert abs(ours.top1 - ref_acc) <= 0.005, (ours.top1, ref_acc, probe.best_C_)
    agree = (probe.predict(Xte) == ref.predict((Xte - mean) / std)).mean()
    assert agree >= 0.97


def test_records_chosen_hparams_and_metrics():
    X, y = _blobs(k=7)
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _split(X, y)
    probe = LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    res = probe.evaluate(Xte, yte)
    assert res.hparams["C"] == probe.best_C_ and res.hparams["C"] in probe.val_scores_
    assert res.hparams["val_top1"] == max(probe.val_scores_.values())
    assert 0 <= res.mean_per_class <= 1 and res.top5 is not None and res.top5 >= res.top1
    assert 12 <= res.hparams["grid_evaluated"] <= 19  # coarse-to-fine over the 45-value grid


def test_a_validation_split_that_cannot_choose_c_is_noted_and_one_that_can_is_not():
    # Two far-apart balanced classes: every C, down to the grid's 1e-6, gets every validation image right.
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    X = (np.where(y[:, None] == 1, 3.0, -3.0) + rng.normal(size=(200, 10))).astype(np.float32)
    (Xtr, ytr), (Xv, yv), _ = _split(X, y)
    tied = LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert set(tied.val_correct_.values()) == {len(yv)} and tied.best_C_ == min(tied.val_correct_)
    assert any(f"every C got the same {len(yv)} of {len(yv)} validation images right" in w for w in tied.warnings_)
    X, y = _blobs(k=7)
    (Xtr, ytr), (Xv, yv), _ = _split(X, y)
    chosen = LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert len(set(chosen.val_correct_.values())) > 1
    assert not any("every C got the same" in w for w in chosen.warnings_)


def test_top5_only_with_more_than_five_classes():
    X, y = _blobs(k=3)
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _split(X, y)
    assert LinearProbe(grid=(0.1, 1.0)).fit(Xtr, ytr, X_val=Xv, y_val=yv).evaluate(Xte, yte).top5 is None


def test_invariant_to_training_order():
    X, y = _blobs()
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _split(X, y)
    perm = np.random.default_rng(1).permutation(len(ytr))
    a = LinearProbe(grid=(0.01, 0.1, 1.0)).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    b = LinearProbe(grid=(0.01, 0.1, 1.0)).fit(Xtr[perm], ytr[perm], X_val=Xv, y_val=yv)
    assert a.best_C_ == b.best_C_
    assert (a.predict(Xte) == b.predict(Xte)).mean() >= 0.99


def test_labels_need_not_be_contiguous():
    X, y = _blobs(k=3)
    y = np.array([3, 7, 11])[y]
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _split(X, y)
    probe = LinearProbe(grid=(0.1, 1.0)).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert set(probe.predict(Xte)) <= {3, 7, 11}
    assert probe.score(Xte, yte) > 0.5


@pytest.fixture()
def data():
    X, y = _blobs(n=200, d=8, k=3)
    return _split(X, y)


def test_count_mismatch(data):
    (Xtr, ytr), (Xv, yv), _ = data
    with pytest.raises(ZooSurveyError, match=r"train features have 120 rows but there are 119 labels"):
        LinearProbe().fit(Xtr, ytr[:-1], X_val=Xv, y_val=yv)


def test_nan_features(data):
    (Xtr, ytr), (Xv, yv), _ = data
    Xtr = Xtr.copy()
    Xtr[3, 2] = np.nan
    with pytest.raises(ZooSurveyError, match=r"train features contain NaN or inf in 1 of 120 rows"):
        LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)


def test_single_class(data):
    (Xtr, ytr), (Xv, yv), _ = data
    with pytest.raises(ZooSurveyError, match=r"only one class \(\[0\]\); a probe needs at least 2"):
        LinearProbe().fit(Xtr, np.zeros_like(ytr), X_val=Xv, y_val=np.zeros_like(yv))


def test_class_missing_from_validation(data):
    (Xtr, ytr), (Xv, yv), _ = data
    keep = yv != 2
    with pytest.raises(ZooSurveyError, match=r"classes \[2\] are missing from the validation split"):
        LinearProbe().fit(Xtr, ytr, X_val=Xv[keep], y_val=yv[keep])


def test_scored_on_another_dimension(data):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = data
    probe = LinearProbe(grid=(1.0,)).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    with pytest.raises(ZooSurveyError, match=r"X has 5 features, but LinearProbe is expecting 8 features as input"):
        probe.score(Xte[:, :5], yte)


@pytest.mark.parametrize("grid", [(0.1, 0.0, 1.0), (-1.0,), ()])
def test_grid_must_be_positive(data, grid):
    (Xtr, ytr), (Xv, yv), _ = data
    with pytest.raises(ZooSurveyError, match=r"grid must"):
        LinearProbe(grid=grid).fit(Xtr, ytr, X_val=Xv, y_val=yv)


def test_the_missing_class_message_names_parameters_not_flags(data):
    (Xtr, ytr), (Xv, yv), _ = data
    with pytest.raises(ZooSurveyError, match=r"use more train data \(max_train\) or a larger val_fraction") as err:
        LinearProbe().fit(Xtr, ytr, X_val=Xv[yv != 2], y_val=yv[yv != 2])
    assert "--" not in str(err.value)


def test_unfitted_probe():
    with pytest.raises(ZooSurveyError, match=r"not fitted yet"):
        LinearProbe().predict(np.zeros((2, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_equal_scikit_learns(seed):
    """The metrics are computed in numpy (a tenth of scikit-learn's cost a row) and must equal scikit-learn's, bit for
    bit: top-1 and mean per-class accuracy, with predicted classes absent from the test labels too."""
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from zoo_survey.probes.base import classification_metrics

    rng = np.random.default_rng(seed)
    classes = np.arange(7) * 3
    y = rng.choice(classes[: 4 + seed % 3], size=50 + seed)  # some classes never occur in y
    proba = rng.random((len(y), len(classes)))
    m = classification_metrics(proba, y, classes)
    pred = classes[proba.argmax(1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert m["mean_per_class"] == balanced_accuracy_score(y, pred)
    assert m["top1"] == accuracy_score(y, pred)
