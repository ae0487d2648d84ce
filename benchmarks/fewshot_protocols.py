"""Few-shot under both ways of choosing C, side by side on the built-ins: figures and cost.

`--fewshot-val shots` (the default: C by cross-validation within the k examples per class;
1-shot at a fixed C) against `--fewshot-val full` (C on the whole validation split, the
earlier protocol), for the offline family (efficientnet-lite: single lite2 against the lite0 +
lite1 ensemble) on digits, lfw-subset and fashion-mnist at the default CPU limits, with
k = 1, 5, 10, 25 and 5 seeds. Features come from the cache (extracted first if missing), so
the times are the probes'. Prints per dataset and k the mean top-1 of both sides and the
paired difference with its t interval over seeds, under each protocol; then a final JSON line.

    python benchmarks/fewshot_protocols.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.features.cache import FeatureCache, cache_root
from zoo_survey.results.analysis import seed_lines
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import extract_all, run_survey
from zoo_survey.zoo.registry import load_registry

DATASETS = ("digits", "lfw-subset", "fashion-mnist")


def main() -> None:
    reg = load_registry()
    plan = plan_family(reg.family("efficientnet-lite"))
    datasets = [reg.dataset(d) for d in DATASETS]
    cache = FeatureCache(cache_root())
    extract_all(plan.checkpoints, datasets, cache, resolve_options(device="cpu", probes=("fewshot",)))  # warm the cache
    out: dict = {"benchmark": "fewshot_protocols", "seconds": {}, "figures": {}}
    for protocol in ("shots", "full"):
        options = resolve_options(device="cpu", probes=("fewshot",), fewshot_val=protocol)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            report = run_survey([plan], datasets, cache, Path(tmp) / "results.sqlite", options)
            out["seconds"][protocol] = round(time.perf_counter() - start, 1)
        for ln in seed_lines(report.rows, "fewshot"):
            if ln.baseline is None or ln.ensemble is None or ln.delta is None:
                continue
            key = f"{ln.dataset} {ln.setting}"
            out["figures"][key] = {
                "single": round(100 * ln.baseline[0], 1), "ensemble": round(100 * ln.ensemble[0], 1),
                "difference": round(100 * ln.delta[0], 1), "half_width": round(100 * ln.delta[1], 1),
            }
            print(f"{protocol:>5}  {key:<28} single {100 * ln.baseline[0]:5.1f}  ensemble {100 * ln.ensemble[0]:5.1f}  "
                  f"difference {100 * ln.delta[0]:+5.1f} ± {100 * ln.delta[1]:.1f}")
    out["ratio_shots_over_full"] = round(out["seconds"]["shots"] / out["seconds"]["full"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
