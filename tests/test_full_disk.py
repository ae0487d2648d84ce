"""Issue 21, item 10: a run whose --cache-dir or --out fills up stops with one line naming the path; after space is
freed, the rerun finishes with rows equal to a clean run's. Needs a small tmpfs, so it runs as root (CI does) and
is skipped otherwise, saying so."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from test_cli import TINY_RUN, zoo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


def _mount(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


def _rows(out: Path) -> dict[str, float]:
    with sqlite3.connect(out / "results.sqlite") as con:
        return dict(con.execute("SELECT row_key, top1 FROM results"))


@pytest.mark.parametrize("full", ["cache", "out"])
def test_a_full_disk_is_one_line_and_the_rerun_equals_a_clean_run(tmp_path, monkeypatch, capsys, tiny_registry, full):
    clean = tmp_path / "clean"
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(clean / "out"),
                         "--cache-dir", str(clean / "cache"), *TINY_RUN)
    assert code == 0, err
    small = tmp_path / "small"
    _mount(small, "48k")  # room for a little, not for a whole run's cache or store
    try:
        cache_dir = small / "cache" if full == "cache" else tmp_path / "cache"
        out_dir = small / "out" if full == "out" else tmp_path / "out"
        if full == "out":  # the features fit elsewhere; the store's folder fills up
            (small / "filler").write_bytes(b"\0" * (40 * 1024))
        args = ("run", "--registry", str(tiny_registry), "--out", str(out_dir), "--cache-dir", str(cache_dir), *TINY_RUN)
        code, out, err = zoo(monkeypatch, capsys, *args)
        line = " ".join(err.split())
        assert code == 1 and "Traceback" not in err, err[-2000:]
        assert "free space" in line and str(small) in line, line  # names the full folder and what to do
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space freed
        (small / "filler").unlink(missing_ok=True)
        code, out, err = zoo(monkeypatch, capsys, *args)
        assert code == 0, err
        assert _rows(out_dir) == _rows(clean / "out")  # equal row keys and top-1, nothing lost or twice
        code, out, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(cache_dir))
        assert code == 0, out + err
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
