"""Feature cache: what changes the key, atomic shards, resume after a crash, reruns do no forward."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from zoo_survey.data.datasets import prepare
from zoo_survey.features.cache import FeatureCache, FeatureKey, cache_root
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.source import FeatureSource, feature_key
from zoo_survey.zoo.checkpoints import resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry, registry_folders

OPTS = ExtractOptions(device="cpu", batch_size=16, workers=0)


@pytest.fixture()
def setup(tiny_registry):
    reg = load_registry(registry_folders([tiny_registry]))
    ckpt = resolve(reg.checkpoint("test_resnet.hub"), offline=True, image_size=32)
    ds = prepare(load_registry([SHIPPED_REGISTRY]).dataset("lfw-subset"))
    return reg, ckpt, ds


def test_cache_root_precedence(tmp_path):
    assert cache_root(tmp_path / "cli", env={"ZOO_SURVEY_CACHE": "/env"}) == tmp_path / "cli"
    assert str(cache_root(None, env={"ZOO_SURVEY_CACHE": "/env"})) == "/env"
    assert str(cache_root(None, env={"XDG_CACHE_HOME": "/xdg"})) == "/xdg/zoo-survey"


def test_key_changes_with_what_changes_the_features(setup):
    reg, ckpt, ds = setup
    base = feature_key(ckpt, ds, "train", OPTS).digest
    pre = dataclasses.replace(ckpt.preprocessing, interpolation="nearest")
    changed = {
        "preprocessing": feature_key(dataclasses.replace(ckpt, preprocessing=pre), ds, "train", OPTS),
        "revision": feature_key(dataclasses.replace(ckpt, revision="0" * 40), ds, "train", OPTS),
        "split": feature_key(ckpt, ds, "test", OPTS),
        "dtype": feature_key(ckpt, ds, "train", dataclasses.replace(OPTS, device="cuda", dtype="bfloat16")),
        "indices": feature_key(ckpt, prepare(ds.spec, max_train=50), "train", OPTS),
        "fingerprint": feature_key(ckpt, dataclasses.replace(ds, fingerprint="other"), "train", OPTS),
        "layer": feature_key(ckpt, ds, "train", dataclasses.replace(OPTS, feature_output="avg")),
    }
    for what, key in changed.items():
        assert key.digest != base, what


def test_key_ignores_what_does_not_change_the_features(setup):
    reg, ckpt, ds = setup
    base = feature_key(ckpt, ds, "train", OPTS).digest
    same = [
        feature_key(ckpt, ds, "train", dataclasses.replace(OPTS, batch_size=7, workers=3)),
        feature_key(dataclasses.replace(ckpt, weights=ckpt.weights.parent / "elsewhere.safetensors"), ds, "train", OPTS),
        feature_key(ckpt, prepare(ds.spec), "train", OPTS),
    ]
    assert all(k.digest == base for k in same)


def _key(**payload) -> FeatureKey:
    return FeatureKey("fam", "arch.tag", "ds", "train", {"x": 1, **payload})


def test_writer_shards_manifest_and_checksums(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = _key()
    feats = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    w = cache.writer(key, total_rows=10)
    assert w.pending() == [0, 1, 2]
    assert cache.get(key) is None
    for s in w.pending():
        r = w.shard_rows_range(s)
        w.write(s, feats[r.start : r.stop], np.arange(r.start, r.stop) * 2, np.arange(r.start, r.stop) % 3)
    assert cache.get(key) is None  # no manifest yet: not visible
    manifest = w.finalize()
    got = cache.get(key)
    assert np.array_equal(got.features, feats) and np.array_equal(got.indices, np.arange(10) * 2)
    assert manifest["rows"] == 10 and len(manifest["shards"]) == 3
    assert all(len(s["features_sha256"]) == 64 for s in manifest["shards"])
    assert (tmp_path / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert not list(tmp_path.rglob("*.incomplete"))
    rel = cache.path(key).relative_to(tmp_path)
    assert rel.parts[:4] == ("fam", "arch.tag", "ds", "train")


def test_a_torn_shard_is_not_counted(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = _key()
    w = cache.writer(key, total_rows=8)
    w.write(0, np.ones((4, 2), np.float32), np.arange(4), np.zeros(4))
    w.write(1, np.ones((4, 2), np.float32), np.arange(4, 8), np.zeros(4))
    # Truncate shard 1's features, as a crash in a non-atomic writer would.
    f = cache.path(key) / "shard-00001.feat.npy"
    f.write_bytes(f.read_bytes()[:20])
    assert w.pending() == [1]
    with pytest.raises(RuntimeError, match=r"shards \[1\] are incomplete"):
        w.finalize()


def test_extraction_resumes_after_a_crash_and_reruns_do_no_forward(setup, tmp_path, monkeypatch):
    reg, ckpt, ds = setup
    cache = FeatureCache(tmp_path, shard_rows=32)  # lfw train has 120 rows: 4 shards
    src = FeatureSource(cache, OPTS)

    import zoo_survey.features.source as features_mod

    real = features_mod.run_forward
    calls = {"n": 0}

    def crashing(*a, **k):
        for item in real(*a, **k):
            calls["n"] += 1
            if calls["n"] == 5:  # after two full shards (16-row batches, 32-row shards)
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(features_mod, "run_forward", crashing)
    with pytest.raises(KeyboardInterrupt):
        src.get(ckpt, ds, "train")
    key = feature_key(ckpt, ds, "train", OPTS)
    writer = cache.writer(key, total_rows=len(ds.splits["train"]))
    assert writer.pending() == [2, 3]
    assert cache.get(key) is None

    monkeypatch.setattr(features_mod, "run_forward", real)
    resumed = FeatureSource(cache, OPTS)
    feats = resumed.get(ckpt, ds, "train")
    assert resumed.forward_batches == 4  # only the 56 missing rows: 2 + 2 batches
    fresh = FeatureSource(FeatureCache(tmp_path / "fresh", shard_rows=32), OPTS).get(ckpt, ds, "train")
    np.testing.assert_allclose(feats.features, fresh.features, rtol=1e-5, atol=1e-5)
    assert np.array_equal(feats.labels, ds.splits["train"].labels)

    again = FeatureSource(cache, OPTS)
    again.get(ckpt, ds, "train")
    assert again.forward_batches == 0


def test_deleted_shard_makes_the_entry_recompute(setup, tmp_path):
    reg, ckpt, ds = setup
    cache = FeatureCache(tmp_path, shard_rows=64)
    FeatureSource(cache, OPTS).get(ckpt, ds, "val")
    key = feature_key(ckpt, ds, "val", OPTS)
    manifest = json.loads((cache.path(key) / "manifest.json").read_text())
    (cache.path(key) / manifest["shards"][0]["features"]).unlink()
    assert cache.get(key) is None


def test_another_feature_output_is_another_entry_with_other_features(setup, tmp_path):
    reg, ckpt, ds = setup
    ckpt = dataclasses.replace(ckpt, preprocessing=dataclasses.replace(ckpt.preprocessing, input_size=96))  # a 3x3 map
    cache = FeatureCache(tmp_path)
    pre = FeatureSource(cache, OPTS).get(ckpt, ds, "val")
    mx = FeatureSource(cache, dataclasses.replace(OPTS, feature_output="max")).get(ckpt, ds, "val")
    assert pre.features.shape == mx.features.shape == (30, 96)
    assert not np.allclose(pre.features, mx.features)
    assert mx.manifest["key"]["layer"] == "max"  # the key keeps the old field name (existing caches)


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    from zoo_survey.files import atomic_write

    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.txt", lambda f: f.write(b"hi"))
    finally:
        os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_engine_features_equal_the_timm_transform_then_the_model(setup):
    """The engine normalizes whole uint8 batches on the device; that must be timm's per-image transform."""
    import torch

    from zoo_survey.features.extract import run_forward
    from zoo_survey.zoo.checkpoints import load_model

    reg, ckpt, ds = setup
    model = load_model(ckpt)
    split = ds.splits["test"]
    (batch, *_) = list(run_forward(model, split, range(8), ckpt.preprocessing, dataclasses.replace(OPTS, batch_size=8)))
    tf = ckpt.preprocessing.transform()
    x = torch.stack([tf(split.image(i)) for i in range(8)])
    with torch.inference_mode():
        ref = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(batch.features, ref, rtol=1e-4, atol=1e-5)


def test_compile_compiles_the_forward_that_runs_and_changes_no_feature(setup):
    """--compile: what runs is forward_feature_output(model, x), which calls model.forward_features; torch.compile(model)
    compiled only model.forward, so nothing was compiled. The engine compiles what it runs."""
    import torch

    from zoo_survey.features.extract import run_forward
    from zoo_survey.zoo.checkpoints import load_model

    reg, ckpt, ds = setup
    model, split = load_model(ckpt), ds.splits["test"]
    opts = dataclasses.replace(OPTS, batch_size=8)
    (eager, *_) = list(run_forward(model, split, range(8), ckpt.preprocessing, opts))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    (compiled, *_) = list(run_forward(model, split, range(8), ckpt.preprocessing, dataclasses.replace(opts, compile=True)))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # a graph was captured and compiled
    np.testing.assert_allclose(compiled.features, eager.features, rtol=1e-4, atol=1e-5)


def test_the_prefetch_thread_ends_when_its_consumer_stops_early():
    """A run that stops mid-split (a bad image, NaN features) must not leave the thread blocked on a full queue,
    holding its (pinned) batches: also when it already produced the last batch and only the end marker is left."""
    import threading
    import time

    from zoo_survey.features.extract import _prefetch

    for n in (3, 10):
        batches = _prefetch(iter(range(n)), depth=2)  # type: ignore[arg-type] - any items travel alike
        assert next(batches) == 0
        time.sleep(0.3)  # the thread fills the queue (and, for n = 3, reaches the end marker)
        batches.close()
        deadline = time.monotonic() + 5
        while any(t.name == "zoo-survey-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(t.name == "zoo-survey-prefetch" for t in threading.enumerate()), n
