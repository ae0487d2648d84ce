"""End-to-end extraction rate divided by the forward-only rate of the same model, side by side.

End to end (steady state): Fashion-MNIST images read from the pixel cache, resized, cropped and
normalized on the device, forward, feature shards written to a fresh cache; the one-off costs
before it (decoding the split into the pixel cache, counting GMACs) are timed and printed
beside it. Forward only: the same model, batch size, resolution, dtype and memory format on
tensors already on the device. Then a second checkpoint extracts the same rows, and the number
of images it decoded is printed (0: the pixel cache serves every model). ``--compare-pil``
also times the exact path (timm's PIL transform in the loader) on the same rows.

    python benchmarks/extract_throughput.py [--device cpu|cuda] [--dtype bfloat16] [--images 1000 | --all]
    python benchmarks/extract_throughput.py --loader-only [--all]     # the device path's host side, no model
    python benchmarks/extract_throughput.py --sweep-batch 4,8,16,32,64 # forward-only rate per batch size
    python benchmarks/extract_throughput.py --pil-loader 0,1,2         # the exact path's loader, by workers

``--all`` takes all 70,000 Fashion-MNIST images (train, val and test splits). Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import LITE

from zoo_survey.data.datasets import prepare
from zoo_survey.data.pixels import PixelCache
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions, default_batch_size, default_workers, make_loader, pixel_batches
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


def _dataset(args):
    reg = load_registry()
    if args.all:
        ds = prepare(reg.dataset(args.dataset))
        return ds, ("train", "val", "test")
    return prepare(reg.dataset(args.dataset), max_test=args.images), ("test",)


def pil_loader_rates(args) -> None:
    """Images/s of the exact path's loader alone (decode, resize, crop, collate, pin) by number of workers."""
    ckpt = resolve(load_registry().checkpoint(LITE[0]), image_size=args.image_size)
    split = _dataset(args)[0].splits["test"]
    rates, first = {}, {}
    for w in (int(v) for v in args.pil_loader.split(",")):
        opts = ExtractOptions(device=args.device, batch_size=args.batch_size or default_batch_size(args.device), workers=w)
        t = time.perf_counter()
        for i, _ in enumerate(make_loader(split, range(len(split)), ckpt.preprocessing, opts)):
            if i == 0:
                first[w] = round(time.perf_counter() - t, 2)
        rates[w] = round(len(split) / (time.perf_counter() - t), 1)
    print(f"PIL loader only, {args.image_size}px, {len(split)} images: img/s by workers {rates}; seconds to first batch {first}")
    print(json.dumps({"benchmark": "extract_pil_loader_rate", "device": args.device, "image_size": args.image_size,
                      "img_s_by_workers": rates, "first_batch_s_by_workers": first}))


def loader_only(args) -> None:
    """The device path's host side: pixel-cache read, batch assembly by size, staging (page-locked when CUDA is
    there); no resize, no forward. The pixel cache is built first and its build time printed."""
    import torch

    ds, splits = _dataset(args)
    batch = args.batch_size or default_batch_size("cuda")  # the batch a GPU run stages
    pin = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        cache = PixelCache(Path(tmp))
        t = time.perf_counter()
        pixels = {s: cache.ensure(ds, s) for s in splits}
        build = time.perf_counter() - t
        n, t = 0, time.perf_counter()
        for s in splits:
            for staged in pixel_batches(pixels[s], range(len(pixels[s])), batch, pin=pin):
                n += len(staged.rows)
        rate = n / (time.perf_counter() - t)
    print(f"pixel cache: built {cache.decoded} images in {build:.2f}s; host side of the device path "
          f"(read, assemble, {'pinned' if pin else 'unpinned: no CUDA here'} staging, batch {batch}): {rate:,.0f} img/s")
    print(json.dumps({"benchmark": "extract_loader_only", "images": n, "batch_size": batch, "pinned": pin,
                      "pixel_cache_build_s": round(build, 3), "host_img_s": round(rate, 1)}))


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=1000, help="test images (without --all)")
    ap.add_argument("--all", action="store_true", help="all 70,000 Fashion-MNIST images: train, val and test")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=None, help="[default: zoo-survey's default for the device]")
    ap.add_argument("--dtype", default="float32", help="float32, or bfloat16/float16 (CUDA autocast)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers [default: zoo-survey's default]")
    ap.add_argument("--dataset", default="fashion-mnist", help="registry id of a Fashion-MNIST entry")
    ap.add_argument("--arch", default=None, help="a timm architecture with random weights instead of lite0 (e.g. resnet50)")
    ap.add_argument("--compare-pil", action="store_true", help="also time the exact PIL path on the same rows")
    ap.add_argument("--no-second", action="store_true", help="skip the second checkpoint")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repeats of each measurement; the best of each counts")
    ap.add_argument("--sweep-batch", default=None, help="only compare forward-only rates at these batch sizes, e.g. 4,8,16,64")
    ap.add_argument("--loader-only", action="store_true", help="only time the device path's host side (no model)")
    ap.add_argument("--pil-loader", default=None, help="only time the exact path's loader with these worker counts, e.g. 0,1,4")
    args = ap.parse_args()
    if args.loader_only:
        return loader_only(args)
    if args.pil_loader:
        return pil_loader_rates(args)
    if args.sweep_batch:
        return sweep_batch(args)
    args.batch_size = args.batch_size or default_batch_size(args.device)
    reg = load_registry()
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=args.image_size)
    ds, splits = _dataset(args)
    n_images = sum(len(ds.splits[s]) for s in splits)
    workers = default_workers(args.device) if args.workers is None else args.workers
    opts = ExtractOptions(device=args.device, batch_size=args.batch_size, workers=workers, dtype=args.dtype)

    if args.arch:  # another network with random weights (speed only), fed with lite0's preprocessing
        import timm

        model = timm.create_model(args.arch, pretrained=False).eval()
        update = {"arch": args.arch, "id": f"{args.arch}.random", "feature_dim": model.num_features}
        ckpt = dataclasses.replace(ckpt, spec=ckpt.spec.model_copy(update=update))
    else:
        model = load_model(ckpt)
    model = model.to(args.device).to(memory_format=torch.channels_last)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)

    out: dict = {"benchmark": "extract_throughput", "model": ckpt.spec.id, "device": args.device, "workers": workers,
                 "image_size": args.image_size, "batch_size": args.batch_size, "dtype": args.dtype, "images": n_images}
    with tempfile.TemporaryDirectory() as tmp:
        src = FeatureSource(FeatureCache(Path(tmp)), opts)
        src._model = (ckpt.spec.id, model)  # the same model object: only the pipeline around it differs
        t = time.perf_counter()
        for s in splits:
            src.pixels.ensure(ds, s, workers=workers)
        out["pixel_cache_build_s"] = round(time.perf_counter() - t, 3)
        out["images_decoded"] = src.pixels.decoded
        t = time.perf_counter()
        src._gmacs(ckpt)
        out["gmacs_count_s"] = round(time.perf_counter() - t, 3)
        pil = FeatureSource(FeatureCache(Path(tmp)), dataclasses.replace(opts, pixel_route="pil"))
        pil._model, pil._gmacs_seen = src._model, src._gmacs_seen

        def extract(source: FeatureSource) -> float:
            shutil.rmtree(Path(tmp) / ckpt.spec.family, ignore_errors=True)  # the features, not the pixel cache
            t = time.perf_counter()
            for s in splits:
                source.get(ckpt, ds, s)
            return n_images / (time.perf_counter() - t)

        # Interleaved repeats, best of each: on a shared machine a neighbour's load hits one phase, not all.
        rates: dict[str, list[float]] = {"forward": [], "tensor": [], "pil": []}
        for _ in range(args.repeat):
            rates["forward"].append(forward_rate(model, args.batch_size, args.image_size, args.device, amp, min(n_images, 20_000)))
            rates["tensor"].append(extract(src))
            if args.compare_pil:
                rates["pil"].append(extract(pil))
        forward, e2e = max(rates["forward"]), max(rates["tensor"])
        out.update(end_to_end_img_s=round(e2e, 1), forward_only_img_s=round(forward, 1), ratio=round(e2e / forward, 3),
                   runs={k: [round(v, 1) for v in vs] for k, vs in rates.items() if vs})
        print(f"{ckpt.spec.id} at {args.image_size}px on {args.device} ({args.dtype}, batch {args.batch_size}), "
              f"{n_images:,} images: pixel cache built in {out['pixel_cache_build_s']}s ({src.pixels.decoded:,} decoded), "
              f"GMACs counted in {out['gmacs_count_s']}s; steady state end to end {e2e:,.1f} img/s, forward only "
              f"{forward:,.1f} img/s, ratio {e2e / forward:.3f} (runs: {out['runs']})", flush=True)
        if args.compare_pil:
            rate = max(rates["pil"])
            out.update(pil_end_to_end_img_s=round(rate, 1), pil_ratio=round(rate / forward, 3))
            print(f"exact PIL path on the same rows: {rate:,.1f} img/s, ratio {rate / forward:.3f}", flush=True)

        if not args.no_second and not args.arch:
            second = resolve(reg.checkpoint(LITE[1]), image_size=args.image_size)
            before = src.pixels.decoded
            t = time.perf_counter()
            for s in splits:
                src.get(second, ds, s)
            out["second_checkpoint"] = {"model": second.spec.id, "images_decoded": src.pixels.decoded - before,
                                        "seconds": round(time.perf_counter() - t, 1)}
            print(f"second checkpoint {second.spec.id} on the same rows: decoded {src.pixels.decoded - before} images")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
