"""The contract suite, built from the probe registry: every registered probe (plug-ins included) runs
scikit-learn's estimator checks and ours: clone round-trip, shapes, probabilities, score, bad input, output averaging."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes import PROBES, KNNProbe, LogMEProbe, Probe, ProbeInputError, ProbeNotFittedError
from zoo_survey.probes.base import MemberFeatures, ProbeConfig, Setting

GRID = (0.01, 0.1, 1.0)  # a short C sweep keeps the suite fast


def _make(cls: type[Probe]) -> Probe:
    est = cls()
    if "grid" in est.get_params():
        est.set_params(grid=GRID)
    return est


ESTIMATORS = [_make(PROBES.get(p.name)) for p in PROBES]
CLASSIFIERS = [PROBES.get(p.name) for p in PROBES if is_classifier(PROBES.get(p.name)())]

# scikit-learn checks a shipped probe cannot pass, and why. Plug-ins get no exemption: they run every check.
SHIPPED_EXPECTED_FAILURES = {
    "check_dtype_object": "an object matrix holding a non-number is refused with the probes' one-line ValueError "
                          "(ProbeInputError), not numpy's TypeError",
}
EXPECTED_FAILURES: dict[type, dict[str, str]] = {
    LogMEProbe: {
        "check_n_features_in_after_fitting": "LogMEProbe.score(X, y) is the LogME of the features it is given; it "
                                             "uses no fitted state, so any width is valid",
    },
}


def expected_failed_checks(est: Probe) -> dict[str, str]:
    if not type(est).__module__.startswith("zoo_survey.probes."):
        return {}
    return {**SHIPPED_EXPECTED_FAILURES, **EXPECTED_FAILURES.get(type(est), {})}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(seed=0, n=300, d=16, k=4, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(size=(n, d)) * noise).astype(np.float32)
    return (X[:180], y[:180]), (X[180:240], y[180:240]), (X[240:], y[240:])


@pytest.fixture(params=PROBES.names())
def cls(request) -> type[Probe]:
    return PROBES.get(request.param)


@pytest.fixture(params=[c.name for c in CLASSIFIERS])
def make(request):
    return lambda: _make(PROBES.get(request.param))


def test_clone_round_trip(cls):
    est = _make(cls)
    params = est.get_params()
    twin = clone(est)
    assert type(twin) is cls and twin is not est and twin.get_params() == params
    (Xtr, ytr), (Xv, yv), _ = _data()
    est.fit(Xtr, ytr, X_val=Xv, y_val=yv)
    fresh = clone(est)
    assert not hasattr(fresh, "n_features_in_")  # a clone is unfitted: parameters only
    assert fresh.set_params(**params).get_params() == params


def test_fit_returns_self_and_scores_a_float(cls):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    est = _make(cls)
    assert est.fit(Xtr, ytr, X_val=Xv, y_val=yv) is est and est.n_features_in_ == 16
    s = est.score(Xte, yte)
    assert type(s) is float and np.isfinite(s)


def test_shapes_probabilities_and_learning(make):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    p = make().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    proba = p.predict_proba(Xte)
    assert proba.shape == (60, 4) and (proba >= 0).all() and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert list(p.classes_) == [0, 1, 2, 3]
    pred = p.predict(Xte)
    assert pred.shape == (60,) and np.array_equal(pred, p.classes_[proba.argmax(1)])
    acc = p.score(Xte, yte)
    assert type(acc) is float and acc == float((pred == yte).mean()) and acc > 0.8  # well-separated blobs
    assert p.evaluate(Xte, yte).top1 == acc


def test_validation_data_is_a_parameter(make):
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    X, y = np.concatenate([Xtr, Xv]), np.concatenate([ytr, yv])
    carved = make().fit(X, y)  # no X_val: probes that need one carve a stratified part of (X, y)
    assert carved.predict_proba(Xte).shape == (60, 4)
    with pytest.raises(ProbeInputError, match=r"pass X_val and y_val together"):
        make().fit(Xtr, ytr, X_val=Xv)


def test_deterministic(make):
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    a, b = make().fit(Xtr, ytr, X_val=Xv, y_val=yv), make().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert np.allclose(a.predict_proba(Xte), b.predict_proba(Xte), atol=1e-5)


def test_invariant_to_training_order(make):
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    perm = np.random.default_rng(3).permutation(len(ytr))
    a, b = make().fit(Xtr, ytr, X_val=Xv, y_val=yv), make().fit(Xtr[perm], ytr[perm], X_val=Xv, y_val=yv)
    assert (a.predict(Xte) == b.predict(Xte)).mean() >= 0.98


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d[0][0], d[0][1][:-1], *d[1]), r"have 180 rows but there are 179 labels"),
        (lambda d: (np.where(np.arange(180)[:, None] == 0, np.nan, d[0][0]), d[0][1], *d[1]), r"contain NaN or inf"),
        (lambda d: (d[0][0], np.zeros(180, int), d[1][0], np.zeros(60, int)), r"only one class"),
        (lambda d: (d[0][0][:, 0], d[0][1], *d[1]), r"must be a 2-D matrix"),
        (lambda d: (d[0][0], d[0][1], d[1][0][:, :5], d[1][1]), r"validation features have 5 columns but train features 16"),
    ],
)
def test_bad_input_is_named(cls, mutate, message):
    X, y, X_val, y_val = mutate(_data())
    with pytest.raises(ProbeInputError, match=message) as err:
        _make(cls).fit(X, y, X_val=X_val, y_val=y_val)
    assert isinstance(err.value, ZooSurveyError) and isinstance(err.value, ValueError)  # the CLI's one line; sklearn's type


def test_wrong_feature_width_is_named(make):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    p = make().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    for method in (p.predict_proba, p.predict):
        with pytest.raises(ProbeInputError, match=rf"X has 8 features, but {type(p).__name__} is expecting 16 features"):
            method(Xte[:, :8])
    with pytest.raises(ProbeInputError, match=r"X has 8 features"):
        p.score(Xte[:, :8], yte)


def test_unfitted(make):
    with pytest.raises(ProbeNotFittedError, match=r"is not fitted yet; call fit\(\) first"):
        make().predict(np.zeros((2, 16), np.float32))


def test_run_gives_one_outcome_per_combination(cls):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    config = ProbeConfig(grid=GRID, shots=(2,), seeds=1)
    for combine in cls.combines:
        blocks = {"train": [Xtr, Xtr[:, ::-1]], "val": [Xv, Xv[:, ::-1]], "test": [Xte, Xte[:, ::-1]]}
        if combine == "single":
            blocks = {s: b[:1] for s, b in blocks.items()}
        data = MemberFeatures(blocks, {"train": ytr, "val": yv, "test": yte}, combine)
        out = cls.run(data, cls.settings(config)[0], config)
        if cls.yields == "accuracy":
            assert 0 <= out.top1 <= 1 and out.predictions is not None and out.predictions.shape == (60,)
        else:
            assert out.top1 is None and isinstance(out.score, float)


# --------------------------------------------------------------------------- output averaging


def _members(seed=7):
    """Two members that see the classes through different noisy features, so they disagree on some test rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 400)
    blocks: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for d in (12, 20):
        X = (rng.normal(size=(5, d))[y] * 1.2 + rng.normal(size=(400, d)) * 1.5).astype(np.float32)
        for split, rows in (("train", slice(0, 240)), ("val", slice(240, 320)), ("test", slice(320, 400))):
            blocks[split].append(X[rows])
    return MemberFeatures(blocks, {"train": y[:240], "val": y[240:320], "test": y[320:]}, "average")


@pytest.mark.parametrize("name", [c.name for c in CLASSIFIERS if "average" in c.combines and c.settings(ProbeConfig()) == (Setting(),)])
def test_output_averaging_is_the_mean_of_the_members_probabilities(name):
    cls = PROBES.get(name)
    data, config = _members(), ProbeConfig(grid=GRID)
    out = cls.run(data, Setting(), config)

    b, y = data.blocks, data.labels
    members = [cls.build(config, standardize=True).fit(b["train"][i], y["train"], X_val=b["val"][i], y_val=y["val"])
               for i in range(2)]
    probas = [m.predict_proba(b["test"][i]) for i, m in enumerate(members)]
    mean = (probas[0] + probas[1]) / 2
    expected = members[0].classes_[mean.argmax(1)]
    assert any((members[i].classes_[p.argmax(1)] != expected).any() for i, p in enumerate(probas))  # averaging matters
    assert np.array_equal(out.predictions, expected)
    assert out.top1 == float((expected == y["test"]).mean())
    per_class = [float((expected[y["test"] == c] == c).mean()) for c in np.unique(y["test"])]
    assert out.mean_per_class == pytest.approx(np.mean(per_class), abs=1e-12)
    assert out.hparams == {"members": [m.hparams() for m in members]}


# --------------------------------------------------------------------------- kNN specifics


def test_knn_rejects_k_below_one():
    (Xtr, ytr), (Xv, yv), _ = _data()
    with pytest.raises(ZooSurveyError, match=r"kNN needs k >= 1"):
        KNNProbe(ks=(0, 5)).fit(Xtr, ytr, X_val=Xv, y_val=yv)


def test_knn_blocks_do_not_change_the_answer():
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    a = KNNProbe(ks=(10,), batch_size=7).fit(Xtr, ytr, X_val=Xv, y_val=yv).predict_proba(Xte)
    b = KNNProbe(ks=(10,), batch_size=4096).fit(Xtr, ytr, X_val=Xv, y_val=yv).predict_proba(Xte)
    assert np.allclose(a, b, atol=1e-6)


def test_knn_matches_a_brute_force_vote():
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data(seed=5)
    p = KNNProbe(ks=(7,), temperature=0.1).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    bank = np.concatenate([Xtr, Xv])
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = np.concatenate([ytr, yv])
    q = Xte[0] / np.linalg.norm(Xte[0])
    sims = bank @ q
    top = np.argsort(-sims)[:7]
    votes = np.zeros(4)
    np.add.at(votes, labels[top], np.exp(sims[top] / 0.1))
    assert np.allclose(p.predict_proba(Xte[:1])[0], votes / votes.sum(), atol=1e-4)
