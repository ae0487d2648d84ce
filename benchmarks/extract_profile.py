"""Where end-to-end extraction time goes: run_forward alone (cold, then warm) and a cProfile of
FeatureSource.get (the cache path the CLI uses), same model, batch, dtype and workers. Both take the
device path from the same pixel cache, built first (its build time is printed); ``--preprocess pil``
profiles the exact path instead.

    python benchmarks/extract_profile.py --device cuda --dtype bfloat16 --workers 15 --images 10000

Prints the rates, the profile's top entries, and a final JSON line with the warm run_forward rate
and the FeatureSource.get rate as fractions of each other.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from _common import LITE, engine_args

from zoo_survey.data.datasets import prepare
from zoo_survey.data.pixels import PixelCache
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions, default_batch_size, run_forward
from zoo_survey.features.source import FeatureSource
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_args(ap, images=2000, workers=0)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preprocess", default="tensor", help="tensor (the device path) or pil (the exact path)")
    args = ap.parse_args()
    reg = load_registry()
    ds = prepare(reg.dataset(args.dataset), max_test=args.images)
    split = ds.splits["test"]
    ckpt = resolve(reg.checkpoint(LITE[0]), image_size=args.image_size)
    model = load_model(ckpt).to(args.device).to(memory_format=torch.channels_last)
    opts = ExtractOptions(device=args.device, batch_size=args.batch_size or default_batch_size(args.device),
                          workers=args.workers, dtype=args.dtype, pixel_route=args.preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pixels = PixelCache(Path(tmp)).ensure(ds, "test") if args.preprocess == "tensor" else None
        print(f"pixel cache built in {time.perf_counter() - t:.2f}s", flush=True)
        rates = []
        for rep in ("cold", "warm"):
            t, n = time.perf_counter(), 0
            for b in run_forward(model, split, range(len(split)), ckpt.preprocessing, opts, pixels):
                n += len(b.rows)
            rates.append(n / (time.perf_counter() - t))
            print(f"run_forward only ({rep}): {rates[-1]:.1f} img/s", flush=True)
        src = FeatureSource(FeatureCache(Path(tmp)), opts)
        src._model = (ckpt.spec.id, model)  # the same model object: only the pipeline around it differs
        prof = cProfile.Profile()
        prof.enable()
        t = time.perf_counter()
        src.get(ckpt, ds, "test")
        get_rate = len(split) / (time.perf_counter() - t)
        prof.disable()
    print(f"FeatureSource.get: {get_rate:.1f} img/s")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumtime").print_stats(20)
    print(json.dumps({"benchmark": "extract_profile", "device": args.device, "workers": args.workers, "preprocess": args.preprocess,
                      "images": len(split), "run_forward_cold_img_s": round(rates[0], 1),
                      "run_forward_warm_img_s": round(rates[1], 1), "feature_source_get_img_s": round(get_rate, 1),
                      "get_over_warm_run_forward": round(get_rate / rates[1], 3)}))


if __name__ == "__main__":
    main()
