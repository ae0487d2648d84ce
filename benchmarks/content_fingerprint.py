"""What keying a local image folder by its bytes costs: the Fashion-MNIST test and train images written as an
image folder (70,000 PNGs, ``<folder>/<split>/<class>/<i>.png``), then ``data.datasets.content_digest`` over them
in a fresh process (every file read and hashed), and again in the same process (the memo: a stat per file), beside
listing the files alone. Prints a final JSON line.

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

from zoo_survey.data.datasets import FASHION_MNIST_DIR, content_digest


def images(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x, y


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
        t0 = time.perf_counter()
        first = content_digest(files)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = content_digest([p for p in root.rglob("*") if p.is_file()])
        again_s = time.perf_counter() - t0
        assert first == again
    print(f"{n} PNGs ({mb:.1f} MB, written in {write_s:.0f} s): listing {list_s:.2f} s, content digest "
          f"{first_s:.2f} s in a fresh process, {again_s:.2f} s again in the same one (listing included)")
    print(json.dumps({"benchmark": "content_fingerprint", "files": n, "mb": round(mb, 1), "list_s": round(list_s, 2),
                      "digest_first_s": round(first_s, 2), "digest_again_same_process_s": round(again_s, 2),
                      "first_over_listing": round(first_s / max(list_s, 1e-9), 1)}))


if __name__ == "__main__":
    main()
