"""What the width-matched controls (issue 19) cost: the linear probe's rows of one dataset, timed one by one.

Times every linear-probe row a default run makes for the offline family on Fashion-MNIST (the single lite2, the
members lite0 and lite1, their concatenation, output averaging, and the two controls: the concatenation projected to
lite2's width by PCA on train and by a seeded Gaussian projection, projection included), under ``fit_threads()`` as
the survey runs them, and prints each row's seconds and top-1, then a JSON line with the controls' share of the
linear probe's time. Features come from the cache (``--cache-dir``; missing ones are extracted at the default CPU
sizes: 96 px, 2,000 train / 1,000 test). ``--quick``: Gaussian features of the same widths (1,280 each) and 10
classes, 600 / 300 rows, nothing extracted.

    python benchmarks/width_controls.py [--quick] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import LITE, lite_features

from zoo_survey.probes.linear import LinearProbe
from zoo_survey.probes.numerics import fit_threads
from zoo_survey.probes.protocol import MemberFeatures, ProbeConfig, Setting
from zoo_survey.survey.controls import control_features
from zoo_survey.survey.plan import Comparison
from zoo_survey.survey.units import SPLITS


def _synthetic(rows: dict[str, int], width: int = 1280, classes: int = 10):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, classes, width))
    labels = {s: np.arange(n) % classes for s, n in rows.items()}
    feats = {cid: {s: (centres[i][labels[s]] * 0.08 + rng.normal(size=(n, width))).astype(np.float32)
                   for s, n in rows.items()} for i, cid in enumerate(LITE)}
    return feats, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="synthetic features, 600 / 300 rows (no extraction)")
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        feats, labels = _synthetic({"train": 480, "val": 120, "test": 300})
    else:
        cached = lite_features(cache_dir=args.cache_dir)
        feats = {cid: {s: f.features for s, f in by.items()} for cid, by in cached.items()}
        labels = {s: cached[LITE[0]][s].labels for s in SPLITS}
    lite0, lite1, lite2 = LITE
    members = {s: [feats[lite0][s], feats[lite1][s]] for s in SPLITS}
    config, setting = ProbeConfig(), Setting()
    rows = {
        "single lite2": MemberFeatures({s: [feats[lite2][s]] for s in SPLITS}, labels, "single"),
        "member lite0": MemberFeatures({s: [feats[lite0][s]] for s in SPLITS}, labels, "single"),
        "member lite1": MemberFeatures({s: [feats[lite1][s]] for s in SPLITS}, labels, "single"),
        "ensemble (concat)": MemberFeatures(members, labels, "concat"),
        "ensemble (average)": MemberFeatures(members, labels, "average"),
    }
    width = feats[lite2]["train"].shape[1]
    seconds, top1 = {}, {}
    LinearProbe.run(rows["member lite0"], setting, ProbeConfig(grid=(1.0,)))  # warm-up (torch's first call), not timed
    for name, data in rows.items():
        t = time.perf_counter()
        top1[name] = LinearProbe.run(data, setting, config).top1
        seconds[name] = time.perf_counter() - t
    for how in ("pca", "random"):
        name = f"width-{how}"
        t = time.perf_counter()
        with fit_threads():
            data = control_features(Comparison(name, name, (), "concat", how, None),  # type: ignore[arg-type]
                                    MemberFeatures(members, labels, "concat"), width)
        projected = time.perf_counter() - t
        top1[name] = LinearProbe.run(data, setting, config).top1
        seconds[name] = time.perf_counter() - t
        print(f"{name}: projection {projected:.2f} s, {data.width} dims")
    for name in seconds:
        print(f"{name:20s} {seconds[name]:7.2f} s   top-1 {100 * (top1[name] or 0):.1f}")
    controls = seconds["width-pca"] + seconds["width-random"]
    total = sum(seconds.values())
    print(json.dumps({"quick": args.quick, "rows": {k: round(v, 3) for k, v in seconds.items()},
                      "controls_seconds": round(controls, 3), "linear_seconds": round(total, 3),
                      "controls_share": round(controls / total, 3)}))


if __name__ == "__main__":
    main()
