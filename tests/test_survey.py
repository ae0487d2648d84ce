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
