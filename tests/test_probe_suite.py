"""One common suite run against every probe: shapes, determinism, error messages, order invariance."""

from __future__ import annotations

import numpy as np
import pytest

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes import KNNProbe, LinearProbe, NCMProbe

PROBES = {
    "linear": lambda: LinearProbe(grid=(0.01, 0.1, 1.0)),
    "knn": lambda: KNNProbe(ks=(5, 10)),
    "ncm": lambda: NCMProbe(),
}


def _data(seed=0, n=300, d=16, k=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    return (X[:180], y[:180]), (X[180:240], y[180:240]), (X[240:], y[240:])


@pytest.fixture(params=sorted(PROBES))
def make(request):
    return PROBES[request.param]


def test_shapes_and_learning(make):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    p = make().fit(Xtr, ytr, Xv, yv)
    proba = p.predict_proba(Xte)
    assert proba.shape == (60, 4) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert p.predict(Xte).shape == (60,)
    assert p.score(Xte, yte).top1 > 0.8  # well-separated blobs


def test_deterministic(make):
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    a, b = make().fit(Xtr, ytr, Xv, yv), make().fit(Xtr, ytr, Xv, yv)
    assert np.allclose(a.predict_proba(Xte), b.predict_proba(Xte), atol=1e-5)


def test_invariant_to_training_order(make):
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    perm = np.random.default_rng(3).permutation(len(ytr))
    a, b = make().fit(Xtr, ytr, Xv, yv), make().fit(Xtr[perm], ytr[perm], Xv, yv)
    assert (a.predict(Xte) == b.predict(Xte)).mean() >= 0.98


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d[0][0], d[0][1][:-1], *d[1]), r"have 180 rows but there are 179 labels"),
        (lambda d: (np.where(np.arange(180)[:, None] == 0, np.nan, d[0][0]), d[0][1], *d[1]), r"contain NaN or inf"),
        (lambda d: (d[0][0], np.zeros(180, int), d[1][0], np.zeros(60, int)), r"single class"),
    ],
)
def test_bad_input_is_named(make, mutate, message):
    d = _data()
    with pytest.raises(ZooSurveyError, match=message):
        make().fit(*mutate(d))


def test_scored_on_another_dimension(make):
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _data()
    p = make().fit(Xtr, ytr, Xv, yv)
    with pytest.raises(ZooSurveyError, match=r"features have 8 columns, but the probe was fitted on 16"):
        p.score(Xte[:, :8], yte)


def test_knn_rejects_k_below_one():
    (Xtr, ytr), (Xv, yv), _ = _data()
    with pytest.raises(ZooSurveyError, match=r"kNN needs k >= 1"):
        KNNProbe(ks=(0, 5)).fit(Xtr, ytr, Xv, yv)


def test_knn_blocks_do_not_change_the_answer():
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data()
    a = KNNProbe(ks=(10,), batch_size=7).fit(Xtr, ytr, Xv, yv).predict_proba(Xte)
    b = KNNProbe(ks=(10,), batch_size=4096).fit(Xtr, ytr, Xv, yv).predict_proba(Xte)
    assert np.allclose(a, b, atol=1e-6)


def test_knn_matches_a_brute_force_vote():
    (Xtr, ytr), (Xv, yv), (Xte, _) = _data(seed=5)
    p = KNNProbe(ks=(7,), temperature=0.1).fit(Xtr, ytr, Xv, yv)
    bank = np.concatenate([Xtr, Xv])
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = np.concatenate([ytr, yv])
    q = Xte[0] / np.linalg.norm(Xte[0])
    sims = bank @ q
    top = np.argsort(-sims)[:7]
    votes = np.zeros(4)
    np.add.at(votes, labels[top], np.exp(sims[top] / 0.1))
    assert np.allclose(p.predict_proba(Xte[:1])[0], votes / votes.sum(), atol=1e-4)
