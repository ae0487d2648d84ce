"""What keying a local image folder by its bytes costs: the Fashion-MNIST test and train images written as an
image folder (70,000 PNGs, ``<folder>/<split>/<class>/<i>.png``), then ``data.datasets.content_digest`` over them
on a first run (every file read, hashed and remembered in the on-disk memo, ``digests.remembered_hashes``), on a
rerun in a new process (the in-process memo cleared) with the on-disk memo, and the same rerun without it, beside
listing the files alone; bytes read from ``/proc/self/io`` (rchar). Prints a final JSON line.

    python benchmarks/content_fingerprint.py [--limit 70000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path
from PIL import Image

from zoo_survey import digests
from zoo_survey.data.datasets import FASHION_MNIST_DIR, content_digest


def images(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x, y


def rchar() -> int:
    return int(next(ln.split()[1] for ln in Path("/proc/self/io").read_text().splitlines() if ln.startswith("rchar")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=70000, help="images in all (test first, then train)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, n = Path(tmp) / "fashion", 0
        t0 = time.perf_counter()
        for split in ("test", "train"):
            x, y = images(split)
            for i in range(len(x)):
                if n >= args.limit:
                    break
                d = root / split / str(int(y[i]))
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x[i]).save(d / f"{i}.png")
                n += 1
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        files = [p for p in root.rglob("*") if p.is_file()]
        list_s = time.perf_counter() - t0
        mb = sum(p.stat().st_size for p in files) / 1e6
        db = Path(tmp) / "cache" / "file-hashes.sqlite"
        db.parent.mkdir()  # the feature cache's folder, as after a first run

        def timed(memo: bool) -> tuple[str, float, int]:
            digests._sha256_memo.cache_clear()  # as in a new process
            start, r0 = time.perf_counter(), rchar()
            listed = [p for p in root.rglob("*") if p.is_file()]
            if memo:
                with digests.remembered_hashes(db):
                    d = content_digest(listed)
            else:
                d = content_digest(listed)
            return d, time.perf_counter() - start, rchar() - r0

        first, first_s, first_b = timed(memo=True)
        again, again_s, again_b = timed(memo=True)
        plain, plain_s, plain_b = timed(memo=False)
        assert first == again == plain
    print(f"{n} PNGs ({mb:.1f} MB, written in {write_s:.0f} s): listing {list_s:.2f} s; content digest (listing "
          f"included): first run {first_s:.2f} s ({first_b / 1e6:.0f} MB read), rerun with the on-disk memo "
          f"{again_s:.2f} s ({again_b / 1e6:.0f} MB read), rerun without it {plain_s:.2f} s ({plain_b / 1e6:.0f} MB read)")
    print(json.dumps({"benchmark": "content_fingerprint", "files": n, "mb": round(mb, 1), "list_s": round(list_s, 2),
                      "first_s": round(first_s, 2), "rerun_memo_s": round(again_s, 2), "rerun_no_memo_s": round(plain_s, 2),
                      "rerun_memo_mb_read": round(again_b / 1e6, 1), "rerun_no_memo_mb_read": round(plain_b / 1e6, 1),
                      "bytes_ratio": round(plain_b / max(again_b, 1), 1)}))

if __name__ == "__main__":
    main()
