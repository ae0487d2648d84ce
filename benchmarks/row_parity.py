"""Do the same survey's rows come out the same on 1 and 2 threads, plain and on local Ray? (issue 22)

Runs one `zoo-survey run` per configuration, each in a subprocess with a fresh cache and
output folder, and compares every row against the first configuration's: the same row
keys, top-1 to 1e-6, the same chosen hyper-parameters (C, k, ...) and the same predicted
class on every test image. Configurations:

- ``omp1``: ``OMP_NUM_THREADS=1`` (and MKL's), plain;
- ``omp2``: ``OMP_NUM_THREADS=2``, plain;
- ``ray``: ``--ray local`` (the process's default threads).

Two cases of the issue:

    # the default survey (digits, lfw-subset, fashion-mnist; linear and few-shot), 1 against 2 threads
    python benchmarks/row_parity.py --configs omp1,omp2
    # the offline family on digits and lfw-subset, linear and knn, plain against --ray local
    python benchmarks/row_parity.py --configs omp2,ray --datasets digits,lfw-subset --probes linear,knn

``--quick`` adds ``--max-train 200 --max-test 100 --image-size 32``. Prints a final JSON line.
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

import numpy as np

CONFIGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "omp1": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, []),
    "omp2": ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, []),
    "ray": ({}, ["--ray", "local"]),
}


def _rows(out: Path) -> dict:
    from zoo_survey.results.store import ResultStore

    return {r.row_key: r for r in ResultStore(out / "results.sqlite", create=False).rows()}


def _compare(a: dict, b: dict) -> dict:
    common = sorted(set(a) & set(b))
    top1 = [abs((a[k].top1 or 0.0) - (b[k].top1 or 0.0)) for k in common]
    score = [abs((a[k].score or 0.0) - (b[k].score or 0.0)) for k in common]
    hp = [k for k in common if {n: v for n, v in a[k].hparams.items() if n != "val_top1"}
          != {n: v for n, v in b[k].hparams.items() if n != "val_top1"}]
    images = differing_rows = 0
    for k in common:
        pa, pb = a[k].predictions, b[k].predictions
        if pa is None or pb is None:
            continue
        n = int((np.asarray(pa) != np.asarray(pb)).sum())
        images += n
        differing_rows += n > 0
    return {"rows": len(common), "same_row_keys": set(a) == set(b), "max_top1_diff": max(top1, default=0.0),
            "max_score_diff": max(score, default=0.0), "rows_with_other_hparams": len(hp),
            "rows_with_other_predictions": differing_rows, "test_images_predicted_differently": images,
            "examples": [[k[:16], a[k].dataset, a[k].probe, a[k].setting, a[k].top1, b[k].top1] for k in hp[:5]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="omp1,omp2", help=f"comma-separated, from {sorted(CONFIGS)}")
    ap.add_argument("--datasets", default=None, help="[default: the default run's]")
    ap.add_argument("--probes", default=None, help="[default: the default run's]")
    ap.add_argument("--quick", action="store_true", help="--max-train 200 --max-test 100 --image-size 32")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or len(names) < 2:
        sys.exit(f"--configs takes two or more of {sorted(CONFIGS)}, got {args.configs!r}")
    root = Path(__file__).resolve().parent.parent
    exe = Path(sys.executable).parent / "zoo-survey"
    extra = [*(["--datasets", args.datasets] if args.datasets else []), *(["--probes", args.probes] if args.probes else []),
             *(["--max-train", "200", "--max-test", "100", "--image-size", "32"] if args.quick else [])]
    base_env = {**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    rows, walls = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            env, flags = CONFIGS[name]
            run = Path(tmp) / name
            cmd = [str(exe), "run", "--offline", "--device", "cpu", "--cache-dir", str(run / "cache"), "--out",
                   str(run / "out"), *extra, *flags]
            t = time.perf_counter()
            done = subprocess.run(cmd, env={**base_env, **env}, capture_output=True, text=True)
            walls[name] = round(time.perf_counter() - t, 1)
            if done.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            rows[name] = _rows(run / "out")
            print(f"{name}: {walls[name]} s, {len(rows[name])} rows", flush=True)
    pairs = {f"{names[0]}-vs-{n}": _compare(rows[names[0]], rows[n]) for n in names[1:]}
    for pair, c in pairs.items():
        print(f"{pair}: {c['rows']} rows, same keys {c['same_row_keys']}, largest top-1 difference {c['max_top1_diff']:.2e}, "
              f"{c['rows_with_other_hparams']} rows with another choice, {c['test_images_predicted_differently']} test "
              f"images predicted differently")
    equal = all(c["same_row_keys"] and c["max_top1_diff"] <= 1e-6 and not c["rows_with_other_hparams"]
                and not c["test_images_predicted_differently"] for c in pairs.values())
    print(json.dumps({"benchmark": "row_parity", "configs": names, "args": extra, "wall_s": walls, "pairs": pairs,
                      "equal": equal, "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
