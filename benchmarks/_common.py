"""Shared set-up for the benchmark scripts: the offline family's features on Fashion-MNIST."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo_survey.features.cache import FeatureCache, cache_root  # noqa: E402 - after the sys.path insert above
from zoo_survey.survey.options import resolve_options  # noqa: E402 - after the sys.path insert above
from zoo_survey.survey.units import SPLITS, Workspace  # noqa: E402 - after the sys.path insert above
from zoo_survey.zoo.registry import load_registry  # noqa: E402 - after the sys.path insert above

LITE = ("tf_efficientnet_lite0.pypi", "tf_efficientnet_lite1.pypi", "tf_efficientnet_lite2.pypi")


def lite_features(max_train: int = 2000, max_test: int = 1000, image_size: int = 96, cache_dir: Path | None = None):
    """{checkpoint id: {split: Features}} for the efficientnet-lite family on Fashion-MNIST (cached)."""
    reg = load_registry()
    options = resolve_options(device="cpu", image_size=image_size, max_train=max_train, max_test=max_test)
    ws = Workspace(FeatureCache(cache_root(cache_dir)), options)
    ds = ws.dataset(reg.dataset("fashion-mnist"))
    return {cid: {s: ws.source.get(ws.checkpoint(reg.checkpoint(cid)), ds, s) for s in SPLITS} for cid in LITE}


def engine_args(ap: argparse.ArgumentParser, images: int, workers: int | None) -> None:
    """The flags of a benchmark that runs the extraction engine: device, dtype, images, size, batch, workers."""
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32, or bfloat16/float16 (CUDA autocast)")
    ap.add_argument("--images", type=int, default=images)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=None, help="[default: zoo-survey's default for the device]")
    ap.add_argument("--workers", type=int, default=workers, help="DataLoader workers [default: zoo-survey's default]")


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine similarity between matching rows of two feature matrices."""
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
