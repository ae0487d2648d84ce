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
ensemble's top-1 minus the baseline's (+, -, or 0 when equal); where two differ, the two margins behind them. And
what the report would say of each ensemble row against its baseline row: the paired test's verdict (win, loss
or tie by McNemar's exact p on the same test images, unadjusted), and on how many rows it differs.

The floor those differences are judged against: each engine run again on the same features with every train and
validation matrix multiplied by (1 + 1e-6 N(0, 1)), about 8 float32 rounding steps, far less than another
device's or library's extraction changes, and compared with its own rows (``--floor-draws`` draws of that noise,
each engine; ``--floor-noise`` another size). A difference between the engines that each engine also shows
against itself is the protocol's, not the batched engine's.

    python benchmarks/probe_battery.py [--quick] [--cache-dir DIR] [--device cpu] [--floor-draws 1] [--floor-noise 1e-6]

``--quick``: 300 train+val / 150 test images at 32 px, k = 1, 5, 10 with 3 seeds. The default: the survey's CPU
limits (2,000 / 1,000 at 96 px), all shots and seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _reference_probes import RefFewShotProbe, RefLinearProbe  # noqa: E402 - after the sys.path insert above

from zoo_survey.api import prepare_survey  # noqa: E402 - after the sys.path insert above
from zoo_survey.digests import arrays_digest  # noqa: E402
from zoo_survey.probes.base import fit_threads  # noqa: E402
from zoo_survey.results.stats import paired_difference  # noqa: E402
from zoo_survey.survey.run import extract_all  # noqa: E402
from zoo_survey.survey.runner import RunReport  # noqa: E402
from zoo_survey.survey.units import probe_units  # noqa: E402

REFERENCE = {"linear": RefLinearProbe, "fewshot": RefFewShotProbe}
FLOOR_NOISE = 1e-6  # relative noise on the features of the floor's runs (--floor-noise)


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


def margins(units, rows) -> dict[str, float]:
    """{family/dataset/probe/setting/comparison: its top-1 minus the baseline's, in points}."""
    by: dict[tuple, list[float]] = {}
    for u in units:
        label = u.setting.label or "full"
        by.setdefault((u.family, u.dataset.id, u.probe.name, label, u.comparison.name, u.comparison.role), []).append(
            rows[u.row_key].top1)
    mean = {k: float(np.mean(v)) for k, v in by.items()}
    base = {k[:4]: v for k, v in mean.items() if k[5] == "baseline"}
    return {"/".join(k[:5]): (v - base[k[:4]]) * 100 for k, v in mean.items() if k[5].startswith("ensemble")}


def answers(units, rows) -> dict[str, str]:
    """{family/dataset/probe/setting/comparison: the sign of its top-1 minus the baseline's}."""
    return {k: "+" if v > 0 else "-" if v < 0 else "0" for k, v in margins(units, rows).items()}


def verdicts(units, rows, feats) -> dict[str, str]:
    """{family/dataset/probe/setting/seed/comparison: the paired test's verdict on its top-1 against the baseline's}:
    win, loss or tie by McNemar's exact p on the same test images (:func:`zoo_survey.results.stats.paired_difference`,
    unadjusted), one per row."""
    key = {u.row_key: (u.family, u.dataset.id, u.probe.name, u.setting.label or "full", str(u.setting.seed)) for u in units}
    base = {key[u.row_key]: u.row_key for u in units if u.comparison.role == "baseline"}

    def correct(k):
        return rows[k].predictions == feats[k].labels["test"]

    return {"/".join((*key[u.row_key], u.comparison.name)):
            paired_difference(correct(base[key[u.row_key]]), correct(u.row_key)).verdict
            for u in units if u.comparison.role.startswith("ensemble")}


def compare(units, a: dict, b: dict, feats: dict) -> dict[str, object]:
    """Two sets of rows (by row key) side by side: the largest and the mean absolute top-1 difference (points), the
    share of rows with the same chosen C, per probe, the per-family answers that differ, with the two margins
    (ensemble minus baseline, points) behind each, and the ensemble rows whose paired-test verdicts differ."""
    def summary(keys: list) -> dict[str, object]:
        d = np.array([abs(a[k].top1 - b[k].top1) * 100 for k in keys])
        worst = keys[int(d.argmax())]
        return {"rows": len(keys), "max_diff_points": round(float(d.max()), 2), "mean_abs_diff_points": round(float(d.mean()), 3),
                "same_C": round(float(np.mean([chosen_C(a[k].hparams) == chosen_C(b[k].hparams) for k in keys])), 3),
                "worst": next(u.name for u in units if u.row_key == worst)}
    ans_a, ans_b = answers(units, a), answers(units, b)
    m_a, m_b = margins(units, a), margins(units, b)
    differ = sorted(k for k in ans_a if ans_a[k] != ans_b[k])
    v_a, v_b = verdicts(units, a, feats), verdicts(units, b, feats)
    return {**summary([u.row_key for u in units]),
            "by_probe": {name: summary([u.row_key for u in units if u.probe.name == name])
                         for name in sorted({u.probe.name for u in units})},
            "answers_differ": differ, "margins_differ": {k: [round(m_a[k], 2), round(m_b[k], 2)] for k in differ},
            "verdicts": len(v_a), "verdicts_differ": {k: [v_a[k], v_b[k]] for k in sorted(v_a) if v_a[k] != v_b[k]}}


def perturbed(feats: dict, draw: int, noise: float = FLOOR_NOISE) -> dict:
    """Every row's features with each train and validation matrix multiplied by (1 + noise N(0, 1)). The noise
    is a function of the matrix's content and the draw, so rows that share a matrix (a member in its single row and
    in a concatenation, every few-shot setting of a comparison) share its perturbation, as they share the matrix."""
    done: dict[tuple, np.ndarray] = {}

    def noisy(x: np.ndarray) -> np.ndarray:
        key = (x.shape, x.dtype.str, arrays_digest(x))
        if key not in done:
            rng = np.random.default_rng([draw, int(key[2], 16)])
            done[key] = (x * (1 + noise * rng.standard_normal(x.shape, dtype=np.float32))).astype(x.dtype)
        return done[key]

    return {k: replace(f, blocks={s: [x if s == "test" else noisy(x) for x in xs] for s, xs in f.blocks.items()})
            for k, f in feats.items()}


def line(c: dict) -> str:
    per = "; ".join(f"{n} max {v['max_diff_points']:.2f}, mean {v['mean_abs_diff_points']:.3f}, same C {v['same_C']:.0%}"
                    for n, v in c["by_probe"].items())
    return (f"max {c['max_diff_points']:.2f} points ({c['worst']}), mean |diff| {c['mean_abs_diff_points']:.3f}, "
            f"same C {c['same_C']:.1%} ({per}); answers differ: "
            + (", ".join(f"{k} ({a:+.2f} against {b:+.2f})" for k, (a, b) in c["margins_differ"].items()) or "none")
            + f"; paired-test verdicts differ on {len(c['verdicts_differ'])} of {c['verdicts']} rows"
            + "".join(f", {k} ({a} against {b})" for k, (a, b) in c["verdicts_differ"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 / 150 images at 32 px, k = 1, 5, 10, 3 seeds")
    ap.add_argument("--cache-dir", type=Path, default=None, help="the features cache [default: zoo-survey's]")
    ap.add_argument("--device", default="cpu", help="where the probes (and the extraction) run")
    ap.add_argument("--floor-draws", type=int, default=1, metavar="N",
                    help="draws of relative feature noise each engine is compared with itself on (0: none)")
    ap.add_argument("--floor-noise", type=float, default=FLOOR_NOISE, metavar="EPS",
                    help="the floor's noise: features times (1 + EPS N(0, 1)) [default: 1e-6]")
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
    c = compare(units, new, ref, feats)
    floors: dict[str, list[dict]] = {"reference": [], "batched": []}
    for draw in range(args.floor_draws):
        noisy = perturbed(feats, draw, args.floor_noise)
        for engine, rows in (("reference", ref), ("batched", new)):
            floors[engine].append(compare(units, rows, phase(units, noisy, engine)[1], feats))
    counts = ", ".join(f"{n}: {v['rows']}" for n, v in c["by_probe"].items())
    print(f"{len(units)} rows ({counts}); features {extract_s:.1f}s")
    print(f"probe phase: batched {new_s:.1f}s, reference {ref_s:.1f}s: {ref_s / new_s:.2f}x")
    for k in ref_parts:  # averaged rows reuse the members' own fits in the product (0 s after the members' rows)
        print(f"  {k}: batched {new_parts.get(k, 0):.1f}s, reference {ref_parts[k]:.1f}s")
    print(f"batched against the reference: {line(c)}")
    for engine, runs in floors.items():
        for i, f in enumerate(runs):
            print(f"floor, {engine} against itself (noise {args.floor_noise:g}, draw {i}): {line(f)}")
    print(json.dumps({
        "benchmark": "probe_battery", "quick": args.quick, "device": args.device, "rows": len(units),
        "batched_s": round(new_s, 2), "reference_s": round(ref_s, 2), "ratio": round(ref_s / new_s, 2),
        "max_top1_diff_points": c["max_diff_points"], "mean_abs_top1_diff_points": c["mean_abs_diff_points"],
        "same_C_share": c["same_C"], "answers_equal": not c["answers_differ"], "answers_differ": c["answers_differ"],
        "margins_differ": c["margins_differ"], "verdicts_differ": c["verdicts_differ"],
        "by_probe": c["by_probe"], "floor_noise": args.floor_noise, "floor": floors,
        "extract_s": round(extract_s, 1), "batched_parts_s": new_parts, "reference_parts_s": ref_parts,
    }))


if __name__ == "__main__":
    main()
