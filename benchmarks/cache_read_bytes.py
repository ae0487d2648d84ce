"""Bytes a process reads to serve repeated reads of one cached feature entry: the per-process verified-shard memo
(``FeatureCache.get`` hashes each shard once per (path, size, mtime)) against hashing on every read, as before.

A survey's probe units read the same member entries again and again (every probe, setting and seed of a
comparison; every ensemble the member is in). The script writes one entry (``--rows`` x ``--dim`` float32 in
``--shard-rows`` shards), reads it ``--reads`` times each way, and takes the bytes from ``/proc/self/io``
(``rchar``: everything read through read(2), page cache included; the features themselves are memory-mapped and
do not count, the hashing does). Prints a final JSON line.

    python benchmarks/cache_read_bytes.py [--rows 20000 --dim 1280 --reads 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey import shards
from zoo_survey.digests import sha256_of
from zoo_survey.features.cache import FEATURE_FORMAT, FILES, FeatureCache, FeatureKey


def rchar() -> int:
    return int(next(ln.split()[1] for ln in Path("/proc/self/io").read_text().splitlines() if ln.startswith("rchar")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shard-rows", type=int, default=4096)
    ap.add_argument("--reads", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp), shard_rows=args.shard_rows)
        key = FeatureKey("fam", "arch.tag", "ds", "train", {"bench": 1})
        w = cache.writer(key, total_rows=args.rows)
        rng = np.random.default_rng(0)
        for s in w.pending():
            r = w.shard_rows_range(s)
            w.write(s, rng.standard_normal((len(r), args.dim), dtype=np.float32), np.arange(r.start, r.stop), np.zeros(len(r)))
        w.finalize()
        entry_bytes = sum(f.stat().st_size for f in cache.path(key).iterdir())
        start = rchar()
        for _ in range(args.reads):  # before: every read re-hashes every shard
            assert shards.read_manifest(cache.path(key), FILES, FEATURE_FORMAT, hasher=sha256_of)[0] is not None
        every_read = rchar() - start
        start = rchar()
        for _ in range(args.reads):  # now: FeatureCache.get, hashing each shard once per process
            assert cache.get(key) is not None
        memo = rchar() - start
    print(f"entry {entry_bytes / 1e6:.1f} MB, {args.reads} reads: hashing every read {every_read / 1e6:.1f} MB read, "
          f"memo {memo / 1e6:.1f} MB read")
    print(json.dumps({"benchmark": "cache_read_bytes", "entry_mb": round(entry_bytes / 1e6, 1), "reads": args.reads,
                      "rchar_mb_hash_every_read": round(every_read / 1e6, 1), "rchar_mb_memo": round(memo / 1e6, 1),
                      "ratio": round(every_read / max(memo, 1), 1)}))


if __name__ == "__main__":
    main()
