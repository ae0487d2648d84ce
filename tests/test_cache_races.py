"""Issue 21, item 7: the cache's three races, each with two processes, and gmacs.json damaged on disk.

- ``gmacs.json``: two processes remembering different models keep both (a lock around read-change-write);
  a damaged file or entry is counted again, never an error.
- ``cache gc``: an entry a run starts writing after the plan was made is not deleted under it.
- ``FeatureCache.get``: each shard is hashed once per (path, size, mtime) in a process; a changed shard is
  still caught.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np

from zoo_survey import digests, shards
from zoo_survey.features.cache import FeatureCache, FeatureKey, gc_execute, gc_plan
from zoo_survey.zoo.flops import GmacsMemo


def _remember(path: str, start: int, n: int) -> None:
    memo = GmacsMemo(path)
    for i in range(start, start + n):
        memo.get({"arch": f"model{i}"}, lambda i=i: float(i + 1))


def test_two_processes_remembering_gmacs_keep_every_value(tmp_path):
    path = str(tmp_path / "gmacs.json")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_remember, args=(path, start, 40)) for start in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    # without the lock, each process rewrote the file from what it had read and lost the other's entries
    assert len(json.loads(open(path).read())) == 80


def test_damaged_gmacs_json_is_counted_again_not_an_error(tmp_path):
    path = tmp_path / "gmacs.json"
    memo = GmacsMemo(path)
    for damaged in ('{"x": "abc"}', "[1, 2]", '{"x": -1, "y": NaN}', "\x00\xff not json", '{"x": true}'):
        path.write_text(damaged)
        counted: list[int] = []
        assert memo.get({"arch": "a"}, lambda c=counted: c.append(1) or 2.5) == 2.5 and counted == [1]
        assert memo.get({"arch": "a"}, lambda: 1 / 0) == 2.5  # remembered now, from a rewritten file


def _entry(cache: FeatureCache, key: FeatureKey, rows: int = 8) -> None:
    w = cache.writer(key, total_rows=rows)
    for s in w.pending():
        r = w.shard_rows_range(s)
        w.write(s, np.ones((len(r), 3), np.float32) * s, np.arange(r.start, r.stop), np.zeros(len(r)))
    w.finalize()


def test_get_hashes_each_shard_once_per_process_and_still_catches_a_change(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 1})
    _entry(cache, key)
    before = digests._sha256_memo.cache_info().misses
    assert cache.get(key) is not None
    first = digests._sha256_memo.cache_info().misses - before
    for _ in range(5):  # every probe unit of a comparison reads the entry again
        assert cache.get(key) is not None
    assert first == 4 and digests._sha256_memo.cache_info().misses - before == first  # 2 shards x 2 files, once
    f = cache.path(key) / "shard-00001.feat.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # same size, a flipped byte; the write moves the mtime
    time.sleep(0.01)
    f.write_bytes(bytes(data))
    assert cache.get(key) is None and cache.repaired  # caught, dropped, to be recomputed


def test_gc_leaves_an_entry_a_run_started_writing_after_the_plan(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=4)
    key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 2})
    w = cache.writer(key, total_rows=8)
    w.write(0, np.ones((4, 3), np.float32), np.arange(4), np.zeros(4))  # a partial entry, nobody writing it
    plan = gc_plan(cache)
    assert [p for p, _, _ in plan] == [cache.path(key)]
    lock = shards.lock_path(tmp_path, key.digest)
    holder = subprocess.Popen(  # a run resumes the entry: it holds the entry's lock
        [sys.executable, "-c", f"from filelock import FileLock; import time; l = FileLock({str(lock)!r}); l.acquire(); "
                               "print('held', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert gc_execute(plan, tmp_path) == 0
        assert cache.path(key).is_dir()  # not deleted under the writer
    finally:
        holder.kill()
        holder.wait()
    assert gc_execute(plan, tmp_path) > 0 and not cache.path(key).exists()  # abandoned again: now it goes
    assert os.path.isdir(tmp_path)


def test_remembered_hashes_spare_a_rerun_the_bytes_and_see_an_edit(tmp_path, monkeypatch):
    data = tmp_path / "img.bin"
    data.write_bytes(b"a" * 1000)
    db = tmp_path / "cache" / "file-hashes.sqlite"
    with digests.remembered_hashes(db):  # no cache folder yet (a first run, before its inputs are checked)
        first = digests.file_sha256(data)
    assert not (tmp_path / "cache").exists()  # nothing created: bad input must leave no cache folder behind
    (tmp_path / "cache").mkdir()
    with digests.remembered_hashes(db):
        assert digests.file_sha256(data) == first
    digests._sha256_memo.cache_clear()  # a new process: only the on-disk memo is left

    def no_reading(path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(digests, "sha256_of", no_reading)
    with digests.remembered_hashes(db):
        assert digests.file_sha256(data) == first  # from the memo, the file not read
    st = data.stat()
    data.write_bytes(b"b" * 1000)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: ctime still moves
    monkeypatch.undo()
    with digests.remembered_hashes(db):
        assert digests.file_sha256(data) != first
