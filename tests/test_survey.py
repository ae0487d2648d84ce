"""Combination rules: equal member weight in concatenation, output averaging."""

from __future__ import annotations

import numpy as np

from zoo_survey.probes.combine import weight_blocks


def test_every_member_block_gets_the_same_total_variance_whatever_its_width():
    rng = np.random.default_rng(0)
    narrow, wide = rng.normal(size=(50, 4)) * 100, rng.normal(size=(50, 64)) * 0.01
    blocks = {s: [narrow, wide] for s in ("train", "val", "test")}
    X = weight_blocks(blocks)["train"]
    assert X.shape == (50, 68)
    assert np.isclose(X[:, :4].var(0).sum(), 1.0, atol=1e-3) and np.isclose(X[:, 4:].var(0).sum(), 1.0, atol=1e-3)


def test_weights_come_from_train_only():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(40, 3)), rng.normal(size=(10, 3)) + 5
    out = weight_blocks({"train": [train, train], "val": [train, train], "test": [test, test]})
    assert out["test"][:, :3].mean() > 2  # shifted by train's mean, not re-centred on test


def test_a_single_block_is_left_as_it_is():
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert weight_blocks({"train": [X], "val": [X], "test": [X]})["train"] is X


def test_members_on_different_samples_are_refused(tiny_registry, tmp_path):
    import pytest

    from zoo_survey.errors import ZooSurveyError
    from zoo_survey.features.cache import FeatureCache
    from zoo_survey.features.extract import ExtractOptions
    from zoo_survey.survey.options import RunOptions
    from zoo_survey.survey.plan import plan_family
    from zoo_survey.survey.units import Workspace
    from zoo_survey.zoo.registry import load_registry, registry_folders

    reg = load_registry(registry_folders([tiny_registry]))
    plan = plan_family(reg.family("tiny"), 2)
    spec = reg.dataset("lfw-subset")
    ws = Workspace(FeatureCache(tmp_path), RunOptions(image_size=32, offline=True, extract=ExtractOptions(workers=0)))
    fingerprint = ws.dataset(spec).fingerprint
    ws.comparison_features(plan.ensemble, spec, fingerprint)  # same samples: fine
    other = Workspace(ws.source.cache, RunOptions(image_size=32, offline=True, max_train=60,
                                                   extract=ExtractOptions(workers=0))).dataset(spec)

    real_get = ws.source.get

    def get(ckpt, d, split):  # the second member reads another subsample of the same dataset
        return real_get(ckpt, other if ckpt.spec.id == plan.ensemble.members[1].id else d, split)

    ws.source.get = get  # type: ignore[method-assign] - the test swaps in a reader of other samples
    ws._features = None
    with pytest.raises(ZooSurveyError, match=r"members disagree on the train samples of 'lfw-subset'"):
        ws.comparison_features(plan.ensemble, spec, fingerprint)
