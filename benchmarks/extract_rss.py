"""Peak resident memory while extracting all 70,000 Fashion-MNIST images (60k train + 10k test).

Loads tf_efficientnet_lite0, records the process RSS (baseline: model and data loaded),
then extracts every image of every split into a fresh cache while a thread samples RSS
(main process plus DataLoader workers) every 50 ms. Peak memory must not grow with the
dataset size: shards of fixed row count are written as they fill. Prints a final JSON line
with the baseline, the peak and the peak above the baseline, in MiB.

    python benchmarks/extract_rss.py [--image-size 64] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from _common import LITE

from zoo_survey.data.datasets import prepare
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.source import FeatureSource
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry


def rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its children, from /proc (Linux)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    reg = load_registry()
    ds = prepare(reg.dataset("fashion-mnist"))  # every image: 48k train + 12k val + 10k test
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=args.image_size)
    model = load_model(ckpt)
    baseline = rss_mib(os.getpid())
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(os.getpid()))
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = FeatureSource(FeatureCache(Path(tmp)), ExtractOptions(batch_size=args.batch_size, workers=args.workers))
        src._model = (ckpt.spec.id, model)
        rows = 0
        for split in ("train", "val", "test"):
            rows += len(src.get(ckpt, ds, split).features)
    stop.set()
    t.join()
    seconds = time.perf_counter() - start
    print(f"{rows} images in {seconds:.0f}s; RSS baseline {baseline:.0f} MiB, peak {peak[0]:.0f} MiB")
    print(json.dumps({"benchmark": "extract_rss", "images": rows, "image_size": args.image_size, "seconds": round(seconds, 1),
                      "baseline_mib": round(baseline), "peak_mib": round(peak[0]),
                      "peak_above_baseline_mib": round(peak[0] - baseline)}))


if __name__ == "__main__":
    main()
