"""Combination rules: equal member weight in concatenation, output averaging."""

from __future__ import annotations

import numpy as np

from zoo_survey.survey import weight_blocks


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
    import dataclasses

    import pytest

    from zoo_survey.cache import FeatureCache
    from zoo_survey.checkpoints import resolve
    from zoo_survey.datasets import prepare
    from zoo_survey.errors import ZooSurveyError
    from zoo_survey.extract import ExtractOptions
    from zoo_survey.features import FeatureSource
    from zoo_survey.plan import plan_family
    from zoo_survey.registry import load_registry, registry_folders
    from zoo_survey.survey import _comparison_features

    reg = load_registry(registry_folders([tiny_registry]))
    plan = plan_family(reg.family("tiny"), 2)
    ds = prepare(reg.dataset("lfw-subset"))
    resolved = {m.id: resolve(m, offline=True, image_size=32) for m in plan.ensemble.members}
    source = FeatureSource(FeatureCache(tmp_path), ExtractOptions(workers=0))
    _comparison_features(plan.ensemble, ds, resolved, source)  # same samples: fine
    other = prepare(reg.dataset("lfw-subset"), max_train=60)  # another subsample for the second member

    real_get = source.get

    def get(ckpt, d, split):
        return real_get(ckpt, other if ckpt.spec.id == plan.ensemble.members[1].id else d, split)

    source = dataclasses.replace(source)
    source.get = get
    with pytest.raises(ZooSurveyError, match=r"members disagree on the train samples of 'lfw-subset'"):
        _comparison_features(plan.ensemble, ds, resolved, source)
