"""Wall time of the default offline survey on a local Ray cluster (`--ray local`) divided by the plain run.

Runs `zoo-survey run --device cpu` (efficientnet-lite on digits, lfw-subset and
fashion-mnist, CPU limits) and the same command with `--ray local`, side by side in one
run, each in a subprocess with a fresh cache and output folder, alternating when
`--repeats` is above 1. The Ray run includes starting Ray; that start-up (``ray.init`` of
a local instance to connected, and its shutdown) is also measured alone in its own
subprocess and printed separately. Both runs must write the same row keys with equal
top-1 (up to thread-count numerics: a Ray worker computes with one thread per CPU it
holds). Target: ratio <= 1.3. Prints a final JSON line.

On a shared machine pass ``--threads 1``: a 2-thread torch process on 2 oversubscribed
cores spends most of its time waiting at OpenMP barriers, which slows the plain run far
more than Ray's one-thread workers (measured here: digits alone took 65 s with one thread
and 908 s with two, under a load average of 8).

    python benchmarks/ray_overhead.py [--datasets digits,lfw-subset,fashion-mnist] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_START = """
import time
from zoo_survey.survey.ray_runner import connect
t = time.perf_counter()
with connect("local") as cluster:
    up = time.perf_counter() - t
    t = time.perf_counter()
print(f"{up:.3f} {time.perf_counter() - t:.3f} {cluster.cpus:g}")
"""


def _rows(store: Path) -> dict[str, float | None]:
    with sqlite3.connect(store) as con:
        return dict(con.execute("SELECT row_key, top1 FROM results").fetchall())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,lfw-subset,fashion-mnist", help="[default: the default run's]")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; medians are reported")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both runs [default: unset]")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    exe = Path(sys.executable).parent / "zoo-survey"
    env = {**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    times: dict[str, list[float]] = {"plain": [], "ray": []}
    rows: dict[str, dict[str, float | None]] = {}
    batches: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for kind, extra in (("plain", []), ("ray", ["--ray", "local"])):
                run = Path(tmp) / f"{kind}-{i}"
                cmd = [str(exe), "run", "--datasets", args.datasets, "--device", "cpu", "--cache-dir", str(run / "cache"),
                       "--out", str(run / "out"), *extra]
                t = time.perf_counter()
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                times[kind].append(time.perf_counter() - t)
                if done.returncode:
                    sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
                batches[kind] = int(re.search(r"(\d+) forward batch", done.stdout).group(1))
                rows[kind] = _rows(run / "out" / "results.sqlite")
                print(f"{kind} run {i + 1}: {times[kind][-1]:.1f} s, {batches[kind]} forward batches, {len(rows[kind])} rows",
                      flush=True)
        start = subprocess.run([sys.executable, "-c", _START], env=env, capture_output=True, text=True, check=True)
    up_s, down_s, cpus = start.stdout.split()[-3:]
    same_keys = set(rows["plain"]) == set(rows["ray"])
    top1_diff = max((abs((rows["plain"][k] or 0) - (rows["ray"][k] or 0)) for k in rows["plain"] if k in rows["ray"]), default=0)
    plain, ray = statistics.median(times["plain"]), statistics.median(times["ray"])
    print(f"plain {plain:.1f} s, on local Ray {ray:.1f} s (ratio {ray / plain:.3f}); Ray start-up alone {float(up_s):.1f} s "
          f"(+{float(down_s):.1f} s shutdown, {cpus} CPUs); same row keys: {same_keys}, largest top-1 difference {top1_diff:.2e}")
    print(json.dumps({"benchmark": "ray_overhead", "plain_s": round(plain, 2), "ray_s": round(ray, 2),
                      "ratio": round(ray / plain, 3), "ray_startup_s": round(float(up_s), 2),
                      "ray_shutdown_s": round(float(down_s), 2), "repeats": args.repeats, "threads": args.threads,
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "forward_batches": batches, "rows": len(rows["plain"]), "same_row_keys": same_keys,
                      "max_top1_diff": top1_diff, "target_ratio": 1.3}))


if __name__ == "__main__":
    main()
