"""Issue 21, item 6: cache files that parse but are damaged (a list, a flipped key, a size that is text, a path
that climbs out) are treated as missing and recomputed, or reported by `cache ls/verify/gc`: never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import zoo

from zoo_survey import shards
from zoo_survey.features.cache import FILES, FeatureCache, FeatureKey, scan


def _entry(cache: FeatureCache, key: FeatureKey) -> None:
    w = cache.writer(key, total_rows=8)
    for s in w.pending():
        r = w.shard_rows_range(s)
        w.write(s, np.ones((len(r), 3), np.float32), np.arange(r.start, r.stop), np.zeros(len(r)))
    w.finalize()


def _damage(manifest: dict, how: str):
    if how == "a list":
        return manifest["shards"]
    if how == "a flipped key":
        return {("shardz" if k == "shards" else k): v for k, v in manifest.items()}
    if how == "a size that is text":
        manifest["shards"][0]["features_bytes"] = "abc"
        return manifest
    if how == "a path out of the entry":
        manifest["shards"][0]["features"] = "../../../../etc/passwd"
        return manifest
    if how == "shards that are numbers":
        manifest["shards"] = [1, 2]
        return manifest
    raise AssertionError(how)


HOWS = ["a list", "a flipped key", "a size that is text", "a path out of the entry", "shards that are numbers"]


@pytest.mark.parametrize("how", HOWS)
def test_a_damaged_manifest_is_recomputed_not_a_crash(tmp_path, how):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 1})
    _entry(cache, key)
    path = cache.path(key) / "manifest.json"
    path.write_text(json.dumps(_damage(json.loads(path.read_text()), how)))
    assert cache.get(key) is None
    assert "manifest" in cache.repaired[-1] and "recomputing" in cache.repaired[-1]
    (info,) = scan(cache, verify=True)
    assert info.status in ("corrupt", "partial")  # the damaged manifest is gone: its complete shards await resume
    assert cache.writer(key, total_rows=8).pending() == []  # the intact shards are kept for the resume


@pytest.mark.parametrize("how", HOWS[:3])
def test_scan_reports_a_damaged_manifest(tmp_path, how):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 2})
    _entry(cache, key)
    path = cache.path(key) / "manifest.json"
    path.write_text(json.dumps(_damage(json.loads(path.read_text()), how)))
    (info,) = scan(cache, verify=False)
    assert info.status == "corrupt" and "manifest is damaged" in info.detail


def test_a_damaged_sidecar_means_the_shard_is_written_again(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 3})
    w = cache.writer(key, total_rows=8)
    w.write(0, np.ones((4, 3), np.float32), np.arange(4), np.zeros(4))
    side = cache.path(key) / "shard-00000.json"
    side.write_text(json.dumps(["not", "a", "record"]))
    assert w.pending() == [0, 1]
    side.write_text(json.dumps({**json.loads("{}"), "rows": "four"}))
    assert w.pending() == [0, 1]
    assert shards.shape_problem({"shards": [{}]}, FILES)


def test_cache_commands_on_a_damaged_manifest(tmp_path, monkeypatch, capsys):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 4})
    _entry(cache, key)
    (cache.path(key) / "manifest.json").write_text("[1, 2, 3]")
    for cmd, code in (("ls", 0), ("verify", 1), ("gc", 0)):
        got, out, err = zoo(monkeypatch, capsys, "cache", cmd, "--cache-dir", str(tmp_path))
        assert got == code and "Traceback" not in out + err, (cmd, out, err)
    assert "corrupt" in zoo(monkeypatch, capsys, "cache", "ls", "--cache-dir", str(tmp_path))[1]
