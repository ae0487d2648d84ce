"""Linear-probe sweep-and-refit: zoo-survey's torch solver against scikit-learn, same grid, same features.

Features: efficientnet-lite on Fashion-MNIST (2,000 train+val / 1,000 test at 96 px, from the
cache; extracted first if missing). Cases: lite0 alone (1,280 dims) and lite0+lite1+lite2
concatenated (3,840 dims). scikit-learn fits every C of the grid with lbfgs
(cold starts, as a plain sweep does), picks C on val, refits on train+val and tests once;
zoo-survey runs LinearProbe (coarse-to-fine over the same grid) as the survey does, with one
fit thread (``FIT_THREADS``, issue 22) on the batched engine (issue 20), then again with the
process's torch threads (the cost of thread-independent fits), and the sequential engine it
replaced (``_reference_probes.RefLinearProbe``, one thread). Prints one line per case, then a
final JSON line with wall times, speed-ups and the test accuracies.

    python benchmarks/probe_speed.py [--grid-size 45] [--quick] [--cache-dir DIR]

``--quick``: 500 train+val / 250 test at 64 px (the features extract in about a minute).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _common import LITE, lite_features
from _reference_probes import RefLinearProbe

from zoo_survey.probes import LinearProbe, numerics


def sklearn_sweep(Xtr, ytr, Xv, yv, Xte, yte, grid) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    mean, std = Xtr.mean(0), Xtr.std(0)
    std[std < 1e-6] = 1
    best = (-1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for C in grid:
            m = LogisticRegression(C=C, max_iter=1000).fit((Xtr - mean) / std, ytr)
            best = max(best, (m.score((Xv - mean) / std, yv), -C))
        X_all, y_all = np.concatenate([Xtr, Xv]), np.concatenate([ytr, yv])
        mean, std = X_all.mean(0), X_all.std(0)
        std[std < 1e-6] = 1
        m = LogisticRegression(C=-best[1], max_iter=1000).fit((X_all - mean) / std, y_all)
    return float(m.score((Xte - mean) / std, yte)), -best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid-size", type=int, default=45, help="values in logspace(-6, 5)")
    ap.add_argument("--quick", action="store_true", help="500 / 250 images at 64 px instead of 2,000 / 1,000 at 96 px")
    ap.add_argument("--cache-dir", type=Path, default=None, help="the features cache [default: zoo-survey's]")
    args = ap.parse_args()
    import torch

    grid = tuple(float(c) for c in np.logspace(-6, 5, args.grid_size))
    feats = lite_features(500, 250, 64, args.cache_dir) if args.quick else lite_features(cache_dir=args.cache_dir)
    threads = torch.get_num_threads()
    cases = {"lite0_1280d": [LITE[0]], "lite012_concat_3840d": list(LITE)}
    result: dict[str, object] = {"benchmark": "probe_speed", "grid_size": args.grid_size, "quick": args.quick,
                                 "fit_threads": numerics.FIT_THREADS, "process_threads": threads}
    for name, members in cases.items():
        X = {s: np.concatenate([feats[m][s].features for m in members], axis=1) for s in ("train", "val", "test")}
        y = {s: feats[members[0]][s].labels for s in ("train", "val", "test")}
        LinearProbe(grid=(1.0,)).fit(X["train"][:50], y["train"][:50], X_val=X["val"], y_val=y["val"])  # warm torch up once
        t = time.perf_counter()
        probe = LinearProbe(grid=grid).fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
        ours = probe.score(X["test"], y["test"])
        t_ours = time.perf_counter() - t
        pinned, numerics.FIT_THREADS = numerics.FIT_THREADS, threads  # the fit as before issue 22: the process's threads
        try:
            t = time.perf_counter()
            free = LinearProbe(grid=grid).fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
            free_top1 = free.score(X["test"], y["test"])
            t_free = time.perf_counter() - t
        finally:
            numerics.FIT_THREADS = pinned
        t = time.perf_counter()
        ref = RefLinearProbe(grid=grid).fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
        ref_top1 = ref.score(X["test"], y["test"])
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        skl, skl_C = sklearn_sweep(X["train"], y["train"], X["val"], y["val"], X["test"], y["test"], grid)
        t_skl = time.perf_counter() - t
        print(f"{name}: zoo-survey {t_ours:.1f}s (C={probe.best_C_:.3g}, top-1 {ours:.4f}); "
              f"scikit-learn {t_skl:.1f}s (C={skl_C:.3g}, top-1 {skl:.4f}); speed-up {t_skl / t_ours:.1f}x; "
              f"with {threads} fit threads {t_free:.1f}s (C={free.best_C_:.3g}, top-1 {free_top1:.4f}), "
              f"one thread costs {t_ours / t_free:.2f}x; sequential engine {t_ref:.1f}s (C={ref.best_C_:.3g}, "
              f"top-1 {ref_top1:.4f}): batched {t_ref / t_ours:.1f}x")
        result[name] = {
            "zoo_survey_s": round(t_ours, 2), "sklearn_s": round(t_skl, 2), "speedup": round(t_skl / t_ours, 2),
            "zoo_survey_top1": round(ours, 4), "sklearn_top1": round(skl, 4),
            "zoo_survey_C": probe.best_C_, "sklearn_C": skl_C,
            "process_threads_s": round(t_free, 2), "one_thread_cost": round(t_ours / t_free, 2),
            "process_threads_top1": round(free_top1, 4), "process_threads_C": free.best_C_,
            "sequential_s": round(t_ref, 2), "sequential_top1": round(ref_top1, 4), "sequential_C": ref.best_C_,
            "vs_sequential": round(t_ref / t_ours, 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
