"""Wall time of a second identical `zoo-survey run` divided by the first, on a fresh cache.

Runs the default offline survey (efficientnet-lite on digits, lfw-subset and fashion-mnist, CPU budget) twice
in subprocesses with a new cache and output folder, and checks the rerun's forward-batch
count. Prints a final JSON line: {"first_s", "rerun_s", "ratio", "rerun_forward_batches"}.

    python benchmarks/cache_rerun.py [--datasets digits,lfw-subset,fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,lfw-subset,fashion-mnist", help="[default: the default run's]")
    args = ap.parse_args()
    exe = Path(sys.executable).parent / "zoo-survey"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ZOO_SURVEY_CACHE": str(Path(tmp) / "cache"), "COLUMNS": "200"}
        cmd = [str(exe), "run", "--datasets", args.datasets, "--out", str(Path(tmp) / "out"), "--device", "cpu"]
        times, outs = [], []
        for _ in range(2):
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - t)
            outs.append(done.stdout)
    batches = [int(re.search(r"(\d+) forward batch", o).group(1)) for o in outs]
    print(f"first run {times[0]:.1f}s ({batches[0]} forward batches), rerun {times[1]:.1f}s ({batches[1]})")
    print(json.dumps({"benchmark": "cache_rerun", "first_s": round(times[0], 2), "rerun_s": round(times[1], 2),
                      "ratio": round(times[1] / times[0], 3), "first_forward_batches": batches[0],
                      "rerun_forward_batches": batches[1]}))


if __name__ == "__main__":
    main()
