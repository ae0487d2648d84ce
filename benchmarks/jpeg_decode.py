"""JPEG sources: decoding on the device (nvjpeg on CUDA) against the decoded pixel cache, side by side.

A synthetic photo-sized JPEG dataset (Fashion-MNIST images upscaled to 500 x 375, tinted, with
noise, quality 90; held in memory as a dataset source that hands out its JPEG bytes) goes
through tf_efficientnet_lite0 twice: with the pixel cache holding decoded pixels (`jpeg: host`,
decoded once by PIL in DataLoader workers) and holding the JPEG bytes for the device to decode
per batch (`jpeg: device`). Prints, for each, the pixel cache's one-off build time, its size
on disk and the steady-state extraction rate; the forward-only rate; the smallest cosine
between the two routes' features and between each and the exact PIL path on the first
images; and a final JSON line.

    python benchmarks/jpeg_decode.py --device cuda --dtype bfloat16 [--images 4000]
    python benchmarks/jpeg_decode.py --images 64 --image-size 64      # CPU: torchvision's libjpeg stands in for nvjpeg
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import LITE, engine_args, min_cosine
from extract_throughput import forward_rate

from zoo_survey.data.datasets import PreparedDataset, Split, prepare
from zoo_survey.digests import string_digest
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions, default_batch_size, default_workers
from zoo_survey.features.preprocess import device_decodes_jpeg
from zoo_survey.features.source import FeatureSource
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry


class JpegBytes:
    """An image source of JPEG files held in memory (what a parquet or image-folder copy of a photo dataset hands over)."""

    def __init__(self, blobs: list[bytes]):
        self.blobs = blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def encoded(self, i: int) -> bytes:
        return self.blobs[int(i)]

    def raw(self, i: int):
        from PIL import Image

        img = Image.open(io.BytesIO(self.blobs[int(i)]))
        img.load()
        return img

    def __getitem__(self, i: int):
        return self.raw(i).convert("RGB")


def _photo(args: tuple[np.ndarray, int]) -> bytes:
    from PIL import Image

    small, seed = args
    rng = np.random.default_rng(seed)
    gray = np.asarray(Image.fromarray(small).resize((500, 375), Image.BICUBIC), dtype=np.float32)
    tint = rng.uniform(0.4, 1.0, 3)
    rgb = gray[..., None] * tint + rng.normal(0, 6, (375, 500, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photo_dataset(n: int) -> PreparedDataset:
    fm = prepare(load_registry().dataset("fashion-mnist"), max_test=n)
    split = fm.splits["test"]
    small = [split.images.array[int(i)] for i in split.indices]
    with ProcessPoolExecutor() as pool:
        blobs = list(pool.map(_photo, zip(small, range(len(small)), strict=True), chunksize=64))
    images = JpegBytes(blobs)
    spec = fm.spec.model_copy(update={"id": "jpeg-photos"})
    fp = string_digest(f"jpeg-photos:{n}:" + "".join(string_digest(b.hex()[:64]) for b in blobs[:16]))
    return PreparedDataset(spec, fp, {"test": Split("test", images, np.arange(len(blobs)), split.labels)}, revision=f"data:{fp}")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_args(ap, images=4000, workers=None)
    ap.add_argument("--exact-images", type=int, default=256, help="images also run through the exact PIL path")
    args = ap.parse_args()
    batch = args.batch_size or default_batch_size(args.device)
    workers = default_workers(args.device) if args.workers is None else args.workers
    t = time.perf_counter()
    ds = photo_dataset(args.images)
    print(f"{args.images} JPEGs (500 x 375) made in {time.perf_counter() - t:.1f}s; nvjpeg usable here: "
          f"{device_decodes_jpeg(args.device)}", flush=True)
    ckpt = resolve(load_registry().checkpoint(LITE[0]), image_size=args.image_size)
    model = load_model(ckpt).to(args.device).to(memory_format=torch.channels_last)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)
    forward = forward_rate(model, batch, args.image_size, args.device, amp, min(args.images, 20_000))
    out: dict = {"benchmark": "jpeg_decode", "device": args.device, "dtype": args.dtype, "images": args.images,
                 "image_size": args.image_size, "batch_size": batch, "workers": workers, "forward_only_img_s": round(forward, 1)}
    feats = {}
    base = ExtractOptions(device=args.device, batch_size=batch, workers=workers, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        for jpeg in ("host", "device"):
            src = FeatureSource(FeatureCache(Path(tmp) / jpeg), dataclasses.replace(base, jpeg=jpeg))
            src._model = (ckpt.spec.id, model)
            via = src.route(ckpt, ds, "test")
            t = time.perf_counter()
            pixels = src.pixels.ensure(ds, "test", via.pixels, workers=workers)
            build = time.perf_counter() - t
            src._gmacs(ckpt)
            t = time.perf_counter()
            feats[jpeg] = src.get(ckpt, ds, "test").features
            rate = args.images / (time.perf_counter() - t)
            out[f"jpeg_{jpeg}"] = {"form": via.pixels.form if via.pixels else "", "decoder": via.decoder,
                                   "pixel_cache_build_s": round(build, 2), "pixel_cache_mib": round(pixels.manifest["bytes"] / 2**20, 1),
                                   "end_to_end_img_s": round(rate, 1), "ratio": round(rate / forward, 3)}
            print(f"jpeg {jpeg}: {out[f'jpeg_{jpeg}']}", flush=True)
        n = min(args.exact_images, args.images)
        small = dataclasses.replace(ds, splits={"test": dataclasses.replace(ds.splits["test"], indices=np.arange(n),
                                                                             labels=ds.splits["test"].labels[:n])})
        exact = FeatureSource(FeatureCache(Path(tmp) / "pil"), dataclasses.replace(base, pixel_route="pil"))
        exact._model = (ckpt.spec.id, model)
        ref = exact.get(ckpt, small, "test").features
    out["min_cosine_device_vs_host_decode"] = round(min_cosine(feats["device"], feats["host"]), 6)
    out["min_cosine_vs_exact"] = {k: round(min_cosine(v[:n], ref), 6) for k, v in feats.items()}
    print(f"min cosine: nvjpeg route vs decoded pixels {out['min_cosine_device_vs_host_decode']}; each vs the exact "
          f"PIL path on {n} images {out['min_cosine_vs_exact']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
