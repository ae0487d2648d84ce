"""The default survey's probe phase on a shared machine: quiet, then beside one busy-loop process per usable core.

Extracts the features first (the offline efficientnet-lite family on digits, lfw-subset and
fashion-mnist, with the CPU limits: the default survey), then times the probe phase (linear and
few-shot, the default probes) from those cached features, each trial in a fresh process with a
fresh store: quiet, then with one ``while True: pass`` process per CPU this process may use
(:func:`zoo_survey.threads.usable_cpus`). The target is loaded ÷ quiet ≤ 3 (a fair share of the
cores is 2×). Each trial runs once per OpenMP wait policy (``--policies``): ``unset`` is what a
run did before the CLI set one, ``PASSIVE`` what ``zoo-survey`` sets now. Prints one line per
trial, then a final JSON line. The probe seconds are the run's own (``RunReport.timings``).

    python benchmarks/shared_machine.py [--quick] [--policies unset,PASSIVE] [--extract] [--cache-dir DIR]

``--quick``: digits only, 400 train / 200 test at 64 px, few-shot k 1,5 with 2 seeds.
``--extract``: also time the extraction (a fresh cache each trial) the same four ways: the
forward is where torch runs several OpenMP threads, so where a wait policy can matter (every
probe fit runs with one thread since issue 22).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo_survey.threads import usable_cpus  # noqa: E402 - after the sys.path insert above

TRIAL = r"""
import json, sys, time
from pathlib import Path
from zoo_survey.features.cache import FeatureCache
from zoo_survey.survey.options import DEFAULT_FAMILY, resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import extract_all, run_survey
from zoo_survey.zoo.registry import load_registry

cfg = json.loads(sys.argv[1])
reg = load_registry()
plan = plan_family(reg.family(DEFAULT_FAMILY), 2)
datasets = [reg.dataset(d) for d in cfg["datasets"]]
options = resolve_options(device="cpu", offline=True, **cfg["options"])
cache = FeatureCache(Path(cfg["cache"]))
start = time.perf_counter()
if cfg["store"] is None:
    extract_all(plan.checkpoints, datasets, cache, options)
    seconds = time.perf_counter() - start
    print(json.dumps({"extract_s": seconds, "probe_s": seconds, "wall_s": seconds, "rows": 0}))
else:
    report = run_survey([plan], datasets, cache, Path(cfg["store"]), options)
    assert report.forward_batches == 0, "the features were not cached"
    print(json.dumps({"wall_s": time.perf_counter() - start, "probe_s": report.timings.probe_s, "rows": report.written}))
"""


def trial(cfg: dict, policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", TRIAL, json.dumps(cfg)], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--policies", default="unset,PASSIVE", help="OpenMP wait policies to compare [default: unset,PASSIVE]")
    ap.add_argument("--cache-dir", type=Path, default=None, help="feature cache [default: a temporary folder]")
    ap.add_argument("--extract", action="store_true", help="also time the extraction, quiet and loaded, per policy")
    args = ap.parse_args()
    if args.quick:
        datasets = ["digits"]
        options = {"image_size": 64, "max_train": 400, "max_test": 200, "probes": ["linear", "fewshot"], "shots": [1, 5],
                   "seeds": 2}
    else:
        datasets = ["digits", "lfw-subset", "fashion-mnist"]
        options = {"probes": ["linear", "fewshot"]}
    cores = usable_cpus()
    with tempfile.TemporaryDirectory(prefix="shared-machine-") as tmp:
        cache = str(args.cache_dir or Path(tmp) / "cache")
        cfg = {"datasets": datasets, "options": options, "cache": cache, "store": None}
        load0 = os.getloadavg()
        t = trial(cfg, "PASSIVE")
        print(f"features: {t['extract_s']:.1f} s (cached after the first run); {cores} usable CPU(s); "
              f"load average {load0[0]:.2f} before", flush=True)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for phase in ["probe"] + (["extract"] if args.extract else []):
            for policy in args.policies.split(","):
                for loaded in (False, True):
                    name = f"{phase}-{policy}-{int(loaded)}"
                    cfg["store"] = str(Path(tmp) / f"{name}.sqlite") if phase == "probe" else None
                    cfg["cache"] = cache if phase == "probe" else str(Path(tmp) / f"cache-{name}")
                    hogs = busy(cores) if loaded else []
                    try:
                        time.sleep(0.5 if loaded else 0)
                        got = trial(cfg, policy)
                    finally:
                        for h in hogs:
                            h.kill()
                            h.wait()
                    results.setdefault(phase, {}).setdefault(policy, {})["loaded_s" if loaded else "quiet_s"] = round(got["probe_s"], 2)
                    what = f"beside {cores} busy loop(s)" if loaded else "quiet"
                    print(f"{phase:7s} OMP_WAIT_POLICY={policy:8s} {what:22s} {got['probe_s']:.1f} s"
                          + (f" ({got['rows']} rows; process wall {got['wall_s']:.1f} s)" if phase == "probe" else ""), flush=True)
        for phase, by_policy in results.items():
            for policy, r in by_policy.items():
                r["ratio"] = round(r["loaded_s"] / r["quiet_s"], 2)
                print(f"{phase} phase, OMP_WAIT_POLICY={policy}: loaded / quiet = {r['ratio']:.2f}"
                      + (" (target <= 3)" if phase == "probe" else ""))
        load1 = os.getloadavg()
        print(json.dumps({"benchmark": "shared_machine", "quick": args.quick, "cores": cores, "datasets": datasets,
                          "options": options, "phases": results, "load_before": round(load0[0], 2),
                          "load_after": round(load1[0], 2)}))


if __name__ == "__main__":
    main()
