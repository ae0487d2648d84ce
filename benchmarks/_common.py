"""Shared set-up for the benchmark scripts: the offline family's features on Fashion-MNIST."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo_survey.cache import FeatureCache, cache_root  # noqa: E402
from zoo_survey.checkpoints import resolve  # noqa: E402
from zoo_survey.datasets import prepare  # noqa: E402
from zoo_survey.extract import ExtractOptions, default_workers  # noqa: E402
from zoo_survey.features import FeatureSource  # noqa: E402
from zoo_survey.registry import load_registry  # noqa: E402

LITE = ("tf_efficientnet_lite0.pypi", "tf_efficientnet_lite1.pypi", "tf_efficientnet_lite2.pypi")


def lite_features(max_train: int = 2000, max_test: int = 1000, image_size: int = 96, cache_dir: Path | None = None):
    """{checkpoint id: {split: Features}} for the efficientnet-lite family on Fashion-MNIST (cached)."""
    reg = load_registry()
    ds = prepare(reg.dataset("fashion-mnist"), max_train=max_train, max_test=max_test)
    src = FeatureSource(FeatureCache(cache_root(cache_dir)), ExtractOptions(workers=default_workers("cpu")))
    out = {}
    for cid in LITE:
        ckpt = resolve(reg.checkpoint(cid), image_size=image_size)
        out[cid] = {s: src.get(ckpt, ds, s) for s in ("train", "val", "test")}
    return out
