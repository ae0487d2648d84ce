"""Does a survey's cost stay linear in the zoo's size? A synthetic zoo of N tiny random-weight checkpoints.

For each N (default 10, 100, 300; --quick 5, 10, 20) the zoo is N/5 families of five timm test models
(test_resnet, test_vit, test_convnext, test_efficientnet, with independent random weights saved as .safetensors) in
a registry folder of its own; the survey is `zoo-survey run` on digits (--max-train 100, --max-test 60, 32 px, the
linear probe on a 4-value grid, --ensemble 4: seven rows a family), cold, in a fresh interpreter with a new cache
and store, then again fully cached, then `zoo-survey report`. Per N it prints:

- cold wall (the interpreter's start included);
- forward seconds (inside the engine's batches, features/extract.run_forward) and probe seconds (inside each
  probe's fit and scoring, the `fit_threads` block of a probe unit);
- harness seconds per extraction unit (the extraction phase's wall less its forward, over its units) and per row
  (the probe phase's wall less the probes' seconds, over the rows);
- the cached rerun's wall and the report's wall;

then the log-log slope over N of each total (a slope of 1 is linear; target: all <= 1.1). Prints a final JSON line.

    python benchmarks/scale.py [--quick] [--sizes 10,100,300] [--family-size 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCHS = ("test_resnet", "test_vit", "test_convnext", "test_efficientnet")
# (params in M, GMACs, feature width) as the registry states them: the first is the family's baseline (the largest)
FACTS = {"test_resnet": (0.37, 0.01, 96), "test_vit": (0.31, 0.02, 64), "test_convnext": (0.21, 0.03, 64),
         "test_efficientnet": (0.10, 0.01, 256)}
SURVEY = ["-d", "digits", "--max-train", "100", "--max-test", "60", "--image-size", "32", "--workers", "0",
          "--device", "cpu", "--grid", "0.01,0.1,1,10", "--probes", "linear", "--offline"]

# The cold run, instrumented: the CLI in this interpreter with timers around the engine's batches, the probes' fits
# and the driver's two phases; one JSON line on stderr at the end.
CHILD = r"""
import json, sys, time
from contextlib import contextmanager
T0 = time.perf_counter()
import zoo_survey.features.source as source
import zoo_survey.survey.driver as driver
import zoo_survey.survey.units as units
acc = {"forward_s": 0.0, "probe_s": 0.0, "extract_phase_s": 0.0, "probe_phase_s": 0.0, "extract_units": 0, "rows": 0}
real_forward = source.run_forward
def forward(*a, **k):
    batches = real_forward(*a, **k)
    while True:
        t = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            acc["forward_s"] += time.perf_counter() - t
            return
        acc["forward_s"] += time.perf_counter() - t
        yield item
source.run_forward = forward
real_threads = units.fit_threads
@contextmanager
def timed_fit(*a, **k):
    t = time.perf_counter()
    with real_threads(*a, **k):
        yield
    acc["probe_s"] += time.perf_counter() - t
units.fit_threads = timed_fit
real_survey = driver.survey
def survey(runner, extract_units, probe_units, store, hooks, report):
    # Pipelined (issue 20): extraction and probe units interleave, so the phases come from the run's own timings:
    # the probe units' spans (report.timings.probe_s) and the rest of the survey's wall.
    try:
        return real_survey(runner, extract_units, probe_units, store, hooks, report)
    finally:
        acc["probe_phase_s"] += report.timings.probe_s
        acc["extract_phase_s"] += report.timings.wall_s - report.timings.probe_s
        acc["extract_units"] += len(extract_units)
        acc["rows"] += len(probe_units)
driver.survey = survey
sys.argv = ["zoo-survey", *sys.argv[1:]]
from zoo_survey.cli import main
try:
    main()
except SystemExit as e:
    if e.code:
        raise
acc["in_process_s"] = time.perf_counter() - T0
print("SCALE " + json.dumps(acc), file=sys.stderr)
"""


def write_zoo(folder: Path, n: int, family_size: int) -> list[str]:
    """N checkpoints with random weights in families of ``family_size``, as registry YAML; returns the family names."""
    import timm
    import torch
    from safetensors.torch import save_file

    weights = folder / "weights"
    weights.mkdir(parents=True)
    families = []
    for f in range(n // family_size):
        name = f"scale{f:03d}"
        lines = [f"family: {name}", "defaults:", "  pretrain: {data: random-init}", "checkpoints:"]
        for j in range(family_size):
            arch = ARCHS[j % len(ARCHS)]
            torch.manual_seed(f * family_size + j)
            model = timm.create_model(arch, pretrained=False, num_classes=10)
            path = weights / f"{name}_{j}.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
            params, gmacs, dim = FACTS[arch]
            params = params + 1.0 if j == 0 else params  # the first is the family's largest: its baseline
            lines.append(f"  - {{id: {arch}.{name}_{j}, source: {{type: file, path: weights/{path.name}}}, "
                         f"params_m: {params}, gmacs: {gmacs}, feature_dim: {dim}}}")
        (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
        families.append(name)
    return families


def cli(args: list[str], env: dict[str, str], child: bool = False) -> tuple[float, dict]:
    t = time.perf_counter()
    cmd = [sys.executable, "-c", CHILD, *args] if child else [sys.executable, "-m", "zoo_survey", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = [line for line in done.stderr.splitlines() if line.startswith("SCALE ")]
    return wall, json.loads(found[-1][6:]) if found else {}


def slope(ns: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(N); None when a value is not positive."""
    if len(ns) < 2 or any(v <= 0 for v in values):
        return None
    xs, ys = [math.log(n) for n in ns], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help="comma-separated N [10,100,300; --quick: 5,10,20]")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--family-size", type=int, default=5, help="checkpoints a family (its ensemble: the rest) [5]")
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("5,10,20" if args.quick else "10,100,300")).split(",")]
    fs = args.family_size
    if fs < 3 or any(n % fs for n in sizes):
        raise SystemExit(f"every N must be a multiple of the family size ({fs}, at least 3)")
    root = Path(__file__).resolve().parent.parent
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            reg = Path(tmp) / "registry"
            families = write_zoo(reg, n, fs)
            out = Path(tmp) / "out"
            env = {**os.environ, "ZOO_SURVEY_CACHE": str(Path(tmp) / "cache"), "COLUMNS": "200",
                   "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
            run = ["run", "--registry", str(reg), "--family", ",".join(families), "--ensemble", str(fs - 1),
                   "--out", str(out), *SURVEY]
            cold, acc = cli(run, env, child=True)
            rerun, _ = cli(run, env)
            report, _ = cli(["report", "--out", str(out)], env)
        r = {"n": n, "cold_s": cold, "forward_s": acc["forward_s"], "probe_s": acc["probe_s"],
             "extract_harness_s": acc["extract_phase_s"] - acc["forward_s"],
             "probe_harness_s": acc["probe_phase_s"] - acc["probe_s"], "extract_units": acc["extract_units"],
             "rows": acc["rows"], "rerun_s": rerun, "report_s": report}
        r["harness_per_extract_unit_ms"] = 1000 * r["extract_harness_s"] / max(r["extract_units"], 1)
        r["harness_per_row_ms"] = 1000 * r["probe_harness_s"] / max(r["rows"], 1)
        results.append(r)
        print(f"N={n:4d}: cold {cold:7.1f}s  forward {r['forward_s']:6.1f}s  probes {r['probe_s']:6.1f}s  "
              f"harness {r['harness_per_extract_unit_ms']:5.0f} ms/extraction unit ({r['extract_units']}), "
              f"{r['harness_per_row_ms']:5.0f} ms/row ({r['rows']})  cached rerun {rerun:5.2f}s  report {report:5.2f}s",
              flush=True)
    ns = [r["n"] for r in results]
    totals = ("cold_s", "forward_s", "probe_s", "extract_harness_s", "probe_harness_s", "rerun_s", "report_s")
    slopes = {k: slope(ns, [r[k] for r in results]) for k in totals}
    print("log-log slopes over N (1 = linear; target <= 1.1): "
          + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in slopes.items()))
    worst = max((v for v in slopes.values() if v is not None), default=None)
    print(json.dumps({"benchmark": "scale", "quick": args.quick, "family_size": fs,
                      "results": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in results],
                      "slopes": {k: round(v, 3) if v is not None else None for k, v in slopes.items()},
                      "max_slope": round(worst, 3) if worst is not None else None,
                      "target_met": worst is not None and worst <= 1.1, "load_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
