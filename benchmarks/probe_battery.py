"""The default survey's whole probe phase, batched engine against the sequential reference, same cached features.

The default survey (the offline efficientnet-lite family with its default ensembles; digits, lfw-subset and
fashion-mnist; linear and few-shot at k = 1, 5, 10, 25 with 5 seeds) is planned and its features extracted (or
read) through the library's cache in ``--cache-dir``. Then every probe unit runs twice in this process, each
timed over the whole phase: first the product's batched engine (``zoo_survey.probes``), then the sequential
reference (``benchmarks/_reference_probes.py``: one C, one few-shot fit, one averaged member at a time), both
with one fit thread, as the survey runs them. Prints the ratio, the largest and the mean absolute top-1
difference over the rows, the share of rows with the same chosen C, whether the per-family answers are equal,
and a final JSON line.

A per-family answer: for each dataset and probe setting (few-shot: mean over seeds), the sign of every
ensemble's top-1 minus the baseline's (+, -, or 0 when equal).

    python benchmarks/probe_battery.py [--quick] [--cache-dir DIR] [--device cpu]

``--quick``: 300 train+val / 150 test images at 32 px, k = 1, 5, 10 with 3 seeds. The default: the survey's CPU
limits (2,000 / 1,000 at 96 px), all shots and seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _reference_probes import RefFewShotProbe, RefLinearProbe  # noqa: E402 - after the sys.path insert above

from zoo_survey.api import prepare_survey  # noqa: E402 - after the sys.path insert above
from zoo_survey.probes.base import fit_threads  # noqa: E402
from zoo_survey.survey.run import extract_all  # noqa: E402
from zoo_survey.survey.runner import RunReport  # noqa: E402
from zoo_survey.survey.units import probe_units  # noqa: E402

REFERENCE = {"linear": RefLinearProbe, "fewshot": RefFewShotProbe}


def phase(units, feats, engine: str) -> tuple[float, dict[str, object], dict[str, float]]:
    """Seconds for every unit's probe on its features (``feats``, by row key), each row's outcome, and the seconds
    per probe and combination rule."""
    out, parts = {}, {}
    t = time.perf_counter()
    for u in units:
        probe = u.probe if engine == "batched" else REFERENCE[u.probe.name]
        t0 = time.perf_counter()
        with fit_threads():
            out[u.row_key] = probe.run(feats[u.row_key], u.setting, u.options.probe_config)
        part = f"{u.probe.name}/{u.comparison.combine}"
        parts[part] = parts.get(part, 0.0) + time.perf_counter() - t0
    return time.perf_counter() - t, out, {k: round(v, 2) for k, v in sorted(parts.items())}


def warm(units, ws) -> None:
    """One small linear fit with each engine, untimed."""
    u = next(u for u in units if u.probe.name == "linear")
    data = ws.comparison_features(u.comparison, u.dataset, u.fingerprint)
    X, y = data.blocks["train"][0][:200], data.labels["train"][:200]
    for cls in (REFERENCE["linear"], u.probe):
        with fit_threads():
            cls(grid=(0.1, 1.0)).fit(X, y, X_val=X, y_val=y)


def chosen_C(hp: dict) -> object:
    return [m.get("C") for m in hp["members"]] if "members" in hp else hp.get("C")


def answers(units, rows) -> dict[str, str]:
    """{family/dataset/probe/setting/comparison: sign of its top-1 minus the baseline's}."""
    by: dict[tuple, list[float]] = {}
    for u in units:
        label = u.setting.label or "full"
        by.setdefault((u.family, u.dataset.id, u.probe.name, label, u.comparison.name, u.comparison.role), []).append(
            rows[u.row_key].top1)
    mean = {k: float(np.mean(v)) for k, v in by.items()}
    base = {k[:4]: v for k, v in mean.items() if k[5] == "baseline"}
    return {"/".join(k[:5]): "+" if v > base[k[:4]] else "-" if v < base[k[:4]] else "0"
            for k, v in mean.items() if k[5].startswith("ensemble")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 / 150 images at 32 px, k = 1, 5, 10, 3 seeds")
    ap.add_argument("--cache-dir", type=Path, default=None, help="the features cache [default: zoo-survey's]")
    ap.add_argument("--device", default="cpu", help="where the probes (and the extraction) run")
    args = ap.parse_args()
    sizes = dict(max_train=300, max_test=150, image_size=32, shots=(1, 5, 10), seeds=3) if args.quick else {}
    job = prepare_survey(offline=True, device=args.device, cache_dir=args.cache_dir, workers=0, **sizes)
    checkpoints = list({c.id: c for plan in job.plans for c in plan.checkpoints}.values())
    t = time.perf_counter()
    runner = extract_all(checkpoints, job.datasets, job.cache, job.options, None, RunReport(), None)
    extract_s = time.perf_counter() - t
    units = probe_units(job.plans, runner.ws.prepared, runner.ws.resolved, job.options)
    # Every unit's features before timing, as the survey gives them to its probe (a width-matched control's projection
    # included), and both engines warmed up on a tiny fit (importing torch and its first kernels cost ~1.5 s, which
    # whichever engine ran first used to pay).
    with fit_threads():
        feats = {u.row_key: u.features(runner.ws) for u in units}
    warm(units, runner.ws)
    new_s, new, new_parts = phase(units, feats, "batched")
    ref_s, ref, ref_parts = phase(units, feats, "reference")
    diffs = np.array([abs(new[k].top1 - ref[k].top1) * 100 for k in new])
    same_C = np.mean([chosen_C(new[k].hparams) == chosen_C(ref[k].hparams) for k in new])
    worst = max(new, key=lambda k: abs(new[k].top1 - ref[k].top1))
    worst_u = next(u for u in units if u.row_key == worst)
    a_new, a_ref = answers(units, new), answers(units, ref)
    flipped = sorted(k for k in a_new if a_new[k] != a_ref[k])
    by_probe = {}
    for name in sorted({u.probe.name for u in units}):
        keys = [u.row_key for u in units if u.probe.name == name]
        by_probe[name] = {"rows": len(keys), "max_diff_points": round(float(max(abs(new[k].top1 - ref[k].top1) for k in keys) * 100), 2),
                          "mean_abs_diff_points": round(float(np.mean([abs(new[k].top1 - ref[k].top1) for k in keys]) * 100), 3),
                          "same_C": round(float(np.mean([chosen_C(new[k].hparams) == chosen_C(ref[k].hparams) for k in keys])), 3)}
    counts = ", ".join(f"{n}: {v['rows']}" for n, v in by_probe.items())
    print(f"{len(units)} rows ({counts}); features {extract_s:.1f}s")
    print(f"probe phase: batched {new_s:.1f}s, reference {ref_s:.1f}s: {ref_s / new_s:.2f}x")
    for k in ref_parts:  # averaged rows reuse the members' own fits in the product (0 s after the members' rows)
        print(f"  {k}: batched {new_parts.get(k, 0):.1f}s, reference {ref_parts[k]:.1f}s")
    print(f"top-1 difference: max {diffs.max():.2f} points ({worst_u.name}), mean |diff| {diffs.mean():.3f} points")
    for n, v in by_probe.items():
        print(f"  {n}: max {v['max_diff_points']:.2f}, mean {v['mean_abs_diff_points']:.3f} points, same C {v['same_C']:.0%}")
    print(f"same chosen C: {same_C:.1%} of rows; per-family answers equal: {not flipped}"
          + (f" (differ: {', '.join(flipped)})" if flipped else ""))
    print(json.dumps({
        "benchmark": "probe_battery", "quick": args.quick, "device": args.device, "rows": len(units),
        "batched_s": round(new_s, 2), "reference_s": round(ref_s, 2), "ratio": round(ref_s / new_s, 2),
        "max_top1_diff_points": round(float(diffs.max()), 2), "mean_abs_top1_diff_points": round(float(diffs.mean()), 3),
        "same_C_share": round(float(same_C), 3), "answers_equal": not flipped, "answers_differ": flipped,
        "by_probe": by_probe, "extract_s": round(extract_s, 1), "batched_parts_s": new_parts, "reference_parts_s": ref_parts,
    }))


if __name__ == "__main__":
    main()
