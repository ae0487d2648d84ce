"""A fully cached rerun of `zoo-survey run`, and `zoo-survey report` on its store, beside the first run's time.

Runs the default offline survey (efficientnet-lite on digits, lfw-subset and fashion-mnist, CPU budget, the
default probes) in subprocesses with a new cache and output folder: once cold, then again with every row stored
(targets, issue 20: the rerun <= 2.5 s, the report <= 1.5 s, on 2 CPU cores). The report is timed first on the new
output, where it draws every plot (`first_report_s`), then --repeat times more, which keep them (the plot memo
`plots/.inputs.json`; `report_s`, the median). Checks the rerun ran no forward batch,
wrote no row and left the store as it was (row keys, accuracies, predictions), and says which of torch, timm and
scikit-learn each step imported (none, for both). Prints a final JSON line.

    python benchmarks/cache_rerun.py [--quick] [--datasets digits,lfw-subset,fashion-mnist] [--repeat 3]

--quick: digits only, 200 train / 100 test images at 32 px, the linear probe (a first run of seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_MODEL = ("torch", "timm", "sklearn", "pandas")
# The CLI in a child interpreter that says, after the command, which of NO_MODEL it imported, then ends as the
# zoo-survey script does (at once after a report that succeeded: cli.app.end_quickly).
CHILD = ("import sys\nsys.argv = ['zoo-survey', *sys.argv[1:]]\nfrom zoo_survey.cli import main\n"
         "from zoo_survey.cli.app import end_quickly\n"
         "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
         f"print('IMPORTED', ','.join(m for m in {NO_MODEL!r} if m in sys.modules), file=sys.stderr)\n"
         "if code == 0:\n    end_quickly()\nsys.exit(code)\n")


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str, list[str]]:
    """Wall seconds of one CLI command in a fresh interpreter (the interpreter's start included), its stdout, and the
    NO_MODEL modules it imported."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = re.findall(r"^IMPORTED (.*)$", done.stderr, re.M)
    return wall, done.stdout, [m for m in found[-1].split(",") if m] if found else ["?"]


def store_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT row_key, top1, score, predictions FROM results ORDER BY row_key").fetchall()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=None, help="[default: the default run's; --quick: digits]")
    ap.add_argument("--quick", action="store_true", help="digits only, 200/100 images at 32 px, the linear probe")
    ap.add_argument("--repeat", type=int, default=3, help="cached reruns, and reports after the first, each timed [3]; "
                    "the median is reported")
    args = ap.parse_args()
    datasets = args.datasets or ("digits" if args.quick else "digits,lfw-subset,fashion-mnist")
    quick = ["--max-train", "200", "--max-test", "100", "--image-size", "32", "--probes", "linear"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        env = {**os.environ, "ZOO_SURVEY_CACHE": str(Path(tmp) / "cache"), "COLUMNS": "200"}
        run = ["run", "--offline", "--datasets", datasets, "--out", str(out), "--device", "cpu", *quick]
        first_s, first_out, first_imported = timed(run, env)
        before = store_rows(out / "results.sqlite")
        reruns = [timed(run, env) for _ in range(args.repeat)]
        after = store_rows(out / "results.sqlite")
        first_report_s, _, first_report_imported = timed(["report", "--out", str(out)], env)  # draws every plot
        drawn = sorted(p.name for p in (out / "plots").glob("*") if p.suffix in (".png", ".svg"))
        reports = [timed(["report", "--out", str(out)], env) for _ in range(args.repeat)]
    batches = [int(re.search(r"(\d+) forward batch", o).group(1)) for o in (first_out, reruns[0][1])]
    written = int(re.search(r"(\d+) result row\(s\) written", reruns[0][1]).group(1))
    rerun_s = sorted(r[0] for r in reruns)[len(reruns) // 2]
    report_s = sorted(r[0] for r in reports)[len(reports) // 2]
    rerun_imported = sorted({m for r in reruns for m in r[2]})
    report_imported = sorted({m for r in reports for m in r[2]} | set(first_report_imported))
    print(f"first run {first_s:.1f}s ({batches[0]} forward batches, {len(before)} rows)")
    print(f"cached rerun {rerun_s:.2f}s median of {[round(r[0], 2) for r in reruns]} (target <= 2.5 s): "
          f"{batches[1]} forward batches, {written} rows written, store unchanged: {before == after}; "
          f"imported {rerun_imported or 'none'} of {', '.join(NO_MODEL)}")
    print(f"zoo-survey report, first (draws {len(drawn)} plot files) {first_report_s:.2f}s (target <= 1.5 s); "
          f"again (plots kept) {report_s:.2f}s median of {[round(r[0], 2) for r in reports]} (target <= 1.5 s); "
          f"imported {report_imported or 'none'} of {', '.join(NO_MODEL)}")
    print(json.dumps({"benchmark": "cache_rerun", "quick": args.quick, "datasets": datasets, "first_s": round(first_s, 2),
                      "rerun_s": round(rerun_s, 2), "first_report_s": round(first_report_s, 2),
                      "report_s": round(report_s, 2), "plot_files": len(drawn), "ratio": round(rerun_s / first_s, 3),
                      "first_forward_batches": batches[0], "rerun_forward_batches": batches[1],
                      "rerun_rows_written": written, "rows": len(before), "store_unchanged": before == after,
                      "rerun_imported": rerun_imported, "report_imported": report_imported,
                      "load_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
