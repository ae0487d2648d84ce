"""Issue 21, item 9: SIGKILL at random moments of a small survey (extraction, probing, the report), a rerun each
time, then a clean finish: the rows and top-1 equal a clean run's, no row twice, `cache verify` clean, and the
report either absent or whole. The same with two and four runs sharing one --out and --cache-dir."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import TINY_RUN

SEEDS = {1: 11, 2: 12, 4: 14}


def _cmd(registry: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zoo_survey", "run", "--registry", str(registry), "--out", str(out),
            "--cache-dir", str(cache), *TINY_RUN[:-1], "linear,fewshot", "--shots", "1,3", "--seeds", "2", *extra]


def _rows(out: Path) -> dict[str, float | None]:
    with sqlite3.connect(out / "results.sqlite") as con:
        rows = con.execute("SELECT row_key, top1 FROM results").fetchall()
    assert len(rows) == len({k for k, _ in rows})  # no row twice
    return dict(rows)


def _env(hub: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_CACHE": str(hub), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("runs", [1, 2, 4])
def test_random_kills_lose_and_duplicate_nothing(tmp_path, hub_env, tiny_registry, runs):
    env = _env(hub_env)
    clean_out, clean_cache = tmp_path / "clean" / "out", tmp_path / "clean" / "cache"
    t0 = time.monotonic()
    subprocess.run(_cmd(tiny_registry, clean_out, clean_cache), env=env, check=True, capture_output=True, timeout=600)
    took = time.monotonic() - t0
    clean = _rows(clean_out)
    out, cache = tmp_path / "out", tmp_path / "cache"
    rng = random.Random(SEEDS[runs])
    kills = 0
    for _ in range(3):  # three rounds: `runs` processes at once, one of them killed at a random moment
        procs = [subprocess.Popen(_cmd(tiny_registry, out, cache), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(runs)]
        time.sleep(rng.uniform(0.2, 1.0) * took)
        victim = rng.choice(procs)
        if victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            kills += 1
        for p in procs:
            p.wait(timeout=600)
    report = subprocess.Popen([sys.executable, "-m", "zoo_survey", "report", "--out", str(out)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.5, 3.0))
    report.send_signal(signal.SIGKILL)
    report.wait()
    md = out / "report.md"
    assert not md.exists() or md.read_text().startswith("# zoo-survey report")  # written whole (atomic) or not at all
    done = subprocess.run(_cmd(tiny_registry, out, cache), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert kills >= 1
    assert _rows(out) == clean  # the same keys and top-1: nothing lost, nothing twice, nothing different
    print(f"runs={runs} kills={kills} rows={len(clean)} lost=0 twice=0")
    verify = subprocess.run([sys.executable, "-m", "zoo_survey", "cache", "verify", "--cache-dir", str(cache)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout[-2000:]
