"""End-to-end extraction rate divided by the forward-only rate of the same model, side by side.

End to end: decode Fashion-MNIST images from the Debian files, resize, normalize (DataLoader
workers), forward, and write feature shards to a fresh cache. Forward only: the same model,
batch size, resolution, dtype and memory format on tensors already in memory. Prints a final
JSON line with both rates (images/s) and their ratio.

    python benchmarks/extract_throughput.py [--device cpu|cuda] [--images 2000] [--image-size 224]
    python benchmarks/extract_throughput.py --sweep-batch 4,8,16,32,64   # forward-only rate per batch size
    python benchmarks/extract_throughput.py --loader-only 0,1,2          # the loader alone, by workers
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import LITE

from zoo_survey.data.datasets import prepare
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions, default_batch_size, default_workers, make_loader
from zoo_survey.features.source import FeatureSource
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry


def forward_rate(model, batch_size: int, image_size: int, device: str, amp, n_images: int) -> float:
    """Images/s of the pooled forward on an in-memory channels_last batch (one warm-up batch first)."""
    import torch

    x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    n_batches = max(1, n_images // batch_size)
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=amp, enabled=amp is not None):
        model.forward_head(model.forward_features(x), pre_logits=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n_batches):
            model.forward_head(model.forward_features(x), pre_logits=True).float().cpu()
        return n_batches * batch_size / (time.perf_counter() - t)


def sweep_batch(args) -> None:
    import torch

    ckpt = resolve(load_registry().checkpoint(LITE[0]), image_size=args.image_size)
    model = load_model(ckpt).to(args.device).to(memory_format=torch.channels_last)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)
    rates = {int(b): round(forward_rate(model, int(b), args.image_size, args.device, amp, args.images // 4), 1)
             for b in args.sweep_batch.split(",")}
    print(f"{LITE[0]} forward-only img/s by batch size at {args.image_size}px on {args.device}: {rates}")
    print(json.dumps({"benchmark": "extract_throughput_batch_sweep", "device": args.device, "image_size": args.image_size,
                      "img_s_by_batch": rates, "best_over_64": round(max(rates.values()) / rates.get(64, max(rates.values())), 2)}))


def loader_rates(args) -> None:
    """Images/s of the loader alone (decode, resize, crop, collate, pin) by number of workers, no model."""
    reg = load_registry()
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=args.image_size)
    split = prepare(reg.dataset(args.dataset), max_test=args.images).splits["test"]
    rates, first = {}, {}
    for w in (int(v) for v in args.loader_only.split(",")):
        opts = ExtractOptions(device=args.device, batch_size=args.batch_size or default_batch_size(args.device), workers=w)
        t = time.perf_counter()
        for i, _ in enumerate(make_loader(split, range(len(split)), ckpt.preprocessing, opts)):
            if i == 0:
                first[w] = round(time.perf_counter() - t, 2)
        rates[w] = round(len(split) / (time.perf_counter() - t), 1)
    print(f"loader only, {args.image_size}px, {len(split)} images: img/s by workers {rates}; seconds to first batch {first}")
    print(json.dumps({"benchmark": "extract_loader_rate", "device": args.device, "image_size": args.image_size,
                      "img_s_by_workers": rates, "first_batch_s_by_workers": first}))


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=None, help="[default: zoo-survey's default for the device]")
    ap.add_argument("--dtype", default="float32", help="float32, or bfloat16/float16 (CUDA autocast)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers [default: zoo-survey's default]")
    ap.add_argument("--dataset", default="fashion-mnist", help="registry id of a Fashion-MNIST entry")
    ap.add_argument("--sweep-batch", default=None, help="only compare forward-only rates at these batch sizes, e.g. 4,8,16,64")
    ap.add_argument("--loader-only", default=None, help="only time the loader (no model) with these worker counts, e.g. 0,1,4,8")
    args = ap.parse_args()
    if args.loader_only:
        return loader_rates(args)
    if args.sweep_batch:
        return sweep_batch(args)
    args.batch_size = args.batch_size or default_batch_size(args.device)
    reg = load_registry()
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=args.image_size)
    ds = prepare(reg.dataset(args.dataset), max_test=args.images)
    opts = ExtractOptions(device=args.device, batch_size=args.batch_size, workers=default_workers(args.device) if args.workers is None else args.workers, dtype=args.dtype)

    # Forward only, same model / batch / resolution / dtype / channels_last, tensors in memory.
    model = load_model(ckpt).to(args.device).to(memory_format=torch.channels_last)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)
    forward = forward_rate(model, args.batch_size, args.image_size, args.device, amp, args.images)

    with tempfile.TemporaryDirectory() as tmp:
        src = FeatureSource(FeatureCache(Path(tmp)), opts)
        src._model = (ckpt.spec.id, model)  # the same model object: only the pipeline around it differs
        t = time.perf_counter()
        src.get(ckpt, ds, "test")
        e2e_rate = len(ds.splits["test"]) / (time.perf_counter() - t)
    print(f"{LITE[0]} at {args.image_size}px on {args.device}: end to end {e2e_rate:.1f} img/s, "
          f"forward only {forward:.1f} img/s")
    print(json.dumps({"benchmark": "extract_throughput", "model": LITE[0], "device": args.device, "workers": opts.workers,
                      "image_size": args.image_size, "batch_size": args.batch_size, "dtype": args.dtype,
                      "end_to_end_img_s": round(e2e_rate, 1), "forward_only_img_s": round(forward, 1),
                      "ratio": round(e2e_rate / forward, 3)}))


if __name__ == "__main__":
    main()
