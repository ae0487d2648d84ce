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


def _store_with_rows(path):
    from zoo_survey.results.store import ResultRow, ResultStore

    store = ResultStore(path)
    for i in range(200):
        store.put(ResultRow(row_key=f"k{i}", family="f", comparison="c", role="baseline", members=["c"], combine="single",
                            dataset="d", probe="linear", top1=0.5, mean_per_class=None, top5=None, hparams={}, params_m=1,
                            gflops=1, feature_dim=8, n_train=10, n_val=5, n_test=200, extract_seconds=0,
                            warnings=["w" * 200], provenance={"p": "v" * 500}, test_key="t",
                            predictions=np.arange(200), test_labels=np.arange(200)))
    return store


def test_a_store_damaged_past_its_header_is_one_line_in_python_and_on_the_cli(tmp_path, monkeypatch, capsys):
    from zoo_survey.errors import ZooSurveyFailure
    from zoo_survey.results.store import ResultStore

    path = tmp_path / "results.sqlite"
    assert len(_store_with_rows(path).rows()) == 200
    data = bytearray(path.read_bytes())
    for off in range(8192, len(data) - 4096, 4096):  # the header and schema page stay; the rows' pages do not
        data[off:off + 200] = b"\xde\xad" * 100
    path.write_bytes(bytes(data))
    with pytest.raises(ZooSurveyFailure, match=r"results store is damaged \(database disk image is malformed\).*\.recover"):
        ResultStore(path, create=False).rows()
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(tmp_path))
    line = " ".join(err.split())
    assert code == 1 and "Traceback" not in err and "the results store is damaged" in line and "--out" in line


def test_a_stored_value_that_no_longer_decodes_is_damage_not_a_traceback(tmp_path):
    # found by tests/test_fuzz.py: one flipped byte in a predictions blob raised zlib.error from store.rows()
    import sqlite3

    from zoo_survey.results.store import StoreDamaged

    store = _store_with_rows(tmp_path / "results.sqlite")
    con = sqlite3.connect(store.path)
    with con:
        con.execute("UPDATE results SET predictions = ? WHERE row_key = 'k7'", (b"x\x9c not zlib",))
    con.close()
    with pytest.raises(StoreDamaged, match="a stored value does not decode"):
        store.rows()
