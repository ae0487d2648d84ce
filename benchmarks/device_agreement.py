"""CUDA checks that only a GPU can run: CPU vs CUDA features, and a real out-of-memory backoff.

1. tf_efficientnet_lite0 features of 512 Fashion-MNIST test images at 224 px: the reference is
   the exact path on CPU (timm's PIL transform, float32); against it, the device path (pixel
   cache, preprocessing on the device) on CPU, on CUDA in float32 and in bfloat16 autocast, and
   the exact path on CUDA: the smallest cosine similarity and the largest relative difference.
2. tf_efficientnet_lite2 at 512 px with a batch too large for the GPU, through the device path:
   the engine must catch the CUDA out-of-memory error (in the resize or the forward), halve the
   batch, finish, and give the same features as a run at a batch that fits. torch's own counter
   of out-of-memory errors shows it happened.

    python benchmarks/device_agreement.py [--dataset fashion-mnist] [--oom-images 16384]
Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import LITE

from zoo_survey.data.datasets import prepare
from zoo_survey.data.pixels import PixelCache
from zoo_survey.features.extract import ExtractOptions, run_forward
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry


def features(model, split, rows, ckpt, pixels=None, **opts) -> np.ndarray:
    """Features by the device path when ``pixels`` is given, else by the exact path."""
    return np.concatenate([b.features for b in run_forward(model, split, rows, ckpt.preprocessing, ExtractOptions(**opts), pixels)])


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": round(float(cos.min()), 5), "max_rel_diff": round(float(np.abs(a - b).max() / np.abs(a).max()), 5)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--oom-images", type=int, default=16384, help="one batch of this many 512 px images")
    args = ap.parse_args()
    reg = load_registry()
    out: dict = {"benchmark": "device_agreement", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}

    tmp = tempfile.TemporaryDirectory()
    pixel_cache = PixelCache(Path(tmp.name))
    ds = prepare(reg.dataset(args.dataset), max_test=512)
    split = ds.splits["test"]
    pixels = pixel_cache.ensure(ds, "test")
    rows = range(len(split))
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=224)
    model = load_model(ckpt)
    ref = features(model, split, rows, ckpt, device="cpu", batch_size=64, workers=4)
    out["device_path_cpu_float32_vs_exact_cpu"] = agreement(ref, features(model, split, rows, ckpt, pixels, device="cpu", batch_size=64))
    for dtype in ("float32", "bfloat16"):
        f = features(model, split, rows, ckpt, pixels, device="cuda", batch_size=256, dtype=dtype)
        out[f"device_path_cuda_{dtype}_vs_exact_cpu"] = agreement(ref, f)
    out["exact_path_cuda_float32_vs_exact_cpu"] = agreement(ref, features(model, split, rows, ckpt, device="cuda", batch_size=256, workers=4))
    print("against the exact path on CPU:", {k: v for k, v in out.items() if k.endswith("cpu")}, flush=True)

    ds = prepare(reg.dataset(args.dataset), max_test=args.oom_images)
    split = ds.splits["test"]
    pixels = pixel_cache.ensure(ds, "test")
    rows = range(len(split))
    ckpt = resolve(reg.checkpoint(LITE[2]), image_size=512)
    model = load_model(ckpt).cuda()
    ooms = torch.cuda.memory_stats().get("num_ooms", 0)
    t = time.perf_counter()
    big = features(model, split, rows, ckpt, pixels, device="cuda", batch_size=len(rows), dtype="bfloat16")
    elapsed = time.perf_counter() - t
    ooms = torch.cuda.memory_stats().get("num_ooms", 0) - ooms
    small = features(model, split, range(256), ckpt, pixels, device="cuda", batch_size=64, dtype="bfloat16")
    out["oom_backoff"] = {"images": len(rows), "image_size": 512, "batch_size": len(rows), "cuda_ooms_caught": int(ooms),
                          "rows_out": int(big.shape[0]), "seconds": round(elapsed, 1),
                          "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1), **agreement(small, big[:256])}
    print("OOM backoff:", out["oom_backoff"], flush=True)
    tmp.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
