"""Parity of the device path with the exact PIL path, on the offline family and the built-in datasets.

For each efficientnet-lite checkpoint and each built-in dataset (digits, lfw-subset,
fashion-mnist), with the default CPU limits of `zoo-survey run` (96 px, at most 2,000 train /
1,000 test images), features are extracted twice: from the pixel cache with preprocessing on
the device (`--preprocess tensor`, the default) and with timm's PIL transform
(`--preprocess pil`). Prints the smallest cosine similarity between the two feature vectors of
any image, per (dataset, checkpoint), and the linear-probe top-1 (the run's probe: sweep on
val, refit, test once) from each path, and a final JSON line. The bound: top-1 within 0.3 point.

    python benchmarks/pixel_parity.py [--datasets digits,lfw-subset,fashion-mnist] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import LITE, min_cosine

from zoo_survey.features.cache import FeatureCache
from zoo_survey.probes import LinearProbe
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.units import SPLITS, Workspace
from zoo_survey.zoo.registry import load_registry


def features(cache: Path, preprocess: str, datasets: list[str]) -> dict:
    """{dataset: {checkpoint: {split: Features}}} by one path, CPU limits."""
    reg = load_registry()
    ws = Workspace(FeatureCache(cache), resolve_options(device="cpu", pixel_route=preprocess))
    out: dict = {}
    for cid in LITE:  # checkpoints outermost: each model loads once
        ckpt = ws.checkpoint(reg.checkpoint(cid))
        for d in datasets:
            ds = ws.dataset(reg.dataset(d))
            out.setdefault(d, {})[cid] = {s: ws.source.get(ckpt, ds, s) for s in SPLITS}
    return out


def top1(f: dict) -> tuple[float, float, float]:
    """Test top-1, the C the validation split chose, and its validation accuracy (to tell a changed choice of C
    on a flat validation curve from changed features)."""
    probe = LinearProbe().fit(f["train"].features, f["train"].labels, f["val"].features, f["val"].labels)
    return float(probe.score(f["test"].features, f["test"].labels).top1), float(probe.best_C_), float(probe.val_scores_[probe.best_C_])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,lfw-subset,fashion-mnist")
    ap.add_argument("--cache-dir", type=Path, default=None, help="[default: a temporary folder]")
    args = ap.parse_args()
    datasets = args.datasets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        device, exact = features(cache, "tensor", datasets), features(cache, "pil", datasets)
        rows, worst = [], 1.0
        for d in datasets:
            for cid in LITE:
                a, b = device[d][cid], exact[d][cid]
                cos = min(min_cosine(a[s].features, b[s].features) for s in SPLITS)
                worst = min(worst, cos)
                (t_dev, c_dev, v_dev), (t_pil, c_pil, v_pil) = top1(a), top1(b)
                rows.append({"dataset": d, "checkpoint": cid, "min_cosine": round(cos, 6), "top1_device": round(t_dev, 4),
                             "top1_pil": round(t_pil, 4), "top1_diff_points": round(100 * (t_dev - t_pil), 2),
                             "C_device": c_dev, "C_pil": c_pil, "val_device": round(v_dev, 4), "val_pil": round(v_pil, 4)})
                print(f"{d:14s} {cid:28s} min cosine {cos:.6f}  linear top-1 device {t_dev:.4f} / PIL {t_pil:.4f} "
                      f"({100 * (t_dev - t_pil):+.2f} points; C {c_dev:.3g} / {c_pil:.3g}, best val {v_dev:.4f} / {v_pil:.4f})",
                      flush=True)
    fm = [r["top1_diff_points"] for r in rows if r["dataset"] == "fashion-mnist"]
    print(json.dumps({"benchmark": "pixel_parity", "min_cosine": round(worst, 6),
                      "fashion_mnist_max_abs_top1_diff_points": max(map(abs, fm)) if fm else None, "rows": rows}))


if __name__ == "__main__":
    main()
