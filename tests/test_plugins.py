"""Plug-ins from outside the tree: the example package under tests/plugins/ is installed with pip (into a temp
folder, never into the shared venv) and its probe and dataset source run through the ``zoo-survey`` CLI."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "plugins" / "zoo_survey_example"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The example package, pip-installed into a folder of its own (its entry_points.txt is what gets read)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(EXAMPLE, tmp / "src")  # setuptools writes build/ and egg-info next to the sources
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    assert (target / "zoo_survey_example").is_dir()
    return target


def zoo(plugin_path: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    paths = ([str(plugin_path)] if plugin_path else []) + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "zoo_survey", *args], env=env, capture_output=True, text=True, timeout=600)


def synthetic_datasets(folder: Path) -> None:
    (folder / "synthetic.yaml").write_text(textwrap.dedent("""
        datasets:
          - id: synth
            source: {type: synthetic, seed: 3, classes: 4, per_class: 30, size: 16}
            num_classes: 4
    """))


def test_a_plugin_probe_and_dataset_source_run_through_the_cli(plugin_path, tiny_registry, cache_env, tmp_path):
    synthetic_datasets(tiny_registry)
    out_dir = tmp_path / "out"
    listing = zoo(plugin_path, "registry", "list", "--registry", str(tiny_registry))
    assert listing.returncode == 0, listing.stderr
    assert "synth" in listing.stdout and "synthetic" in listing.stdout

    run = zoo(plugin_path, "run", "--registry", str(tiny_registry), "--out", str(out_dir), "--family", "tiny",
              "--ensemble", "2", "-d", "synth", "--image-size", "32", "--workers", "0", "--device", "cpu",
              "--probes", "centroid,ncm")
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        rows = con.execute("SELECT dataset, probe, role, top1 FROM results").fetchall()
    by_probe = {p: [r for r in rows if r[1] == p] for p in ("centroid", "ncm")}
    assert len(by_probe["centroid"]) == len(by_probe["ncm"]) > 0, rows
    assert {r[0] for r in rows} == {"synth"}
    assert {r[2] for r in by_probe["centroid"]} >= {"baseline", "member", "ensemble"}
    assert all(0.0 <= r[3] <= 1.0 for r in rows)
    # The classes differ in colour and stripes: a nearest-centroid probe on any features beats chance (0.25).
    assert max(r[3] for r in by_probe["centroid"]) > 0.5

    report = zoo(plugin_path, "report", "--out", str(out_dir), "--format", "md")
    assert report.returncode == 0, report.stderr
    assert "centroid" in (out_dir / "report.md").read_text()


def test_without_the_plugin_its_names_are_unknown(tiny_registry, cache_env):
    synthetic_datasets(tiny_registry)
    bad = zoo(None, "registry", "list", "--registry", str(tiny_registry))
    assert bad.returncode == 2 and "unknown source type 'synthetic'" in bad.stderr and "Traceback" not in bad.stderr


def _broken_plugin(tmp_path: Path, target: str) -> Path:
    """A package whose only content is a dist-info with one entry point (what pip writes for an install)."""
    site = tmp_path / "broken-site"
    info = site / "zoo_survey_broken-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-survey-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[zoo_survey.probes]\nbroken = {target}\n")
    (site / "zoo_survey_broken.py").write_text("import no_such_module_here\nclass NotAProbe: pass\n")
    return site


@pytest.mark.parametrize("target, says", [
    ("zoo_survey_broken:Anything", "failed to load (ModuleNotFoundError: No module named 'no_such_module_here')"),
    ("json:JSONDecoder", "is not a zoo_survey.probes.base.Probe subclass"),
])
def test_a_broken_entry_point_is_one_line_naming_the_plugin(tmp_path, target, says):
    site = _broken_plugin(tmp_path, target)
    bad = zoo(site, "run", "--family", "resnet", "-d", "digits", "--probes", "linear", "--out", str(tmp_path / "out"))
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert "zoo-survey-broken" in lines[0] and "'broken'" in lines[0] and says in lines[0], lines[0]


def test_plugins_load_on_first_lookup_not_at_import(plugin_path):
    code = ("import sys, zoo_survey.probes as p; assert 'zoo_survey_example' not in sys.modules; "
            "assert 'centroid' in p.PROBES.names(); assert 'zoo_survey_example' in sys.modules; "
            "from zoo_survey.sources import DATASET_SOURCES; assert 'synthetic' in DATASET_SOURCES.names(); print('ok')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(ROOT)])}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "ok", got.stderr


def test_a_duplicate_name_is_an_error():
    from zoo_survey.errors import ZooSurveyError
    from zoo_survey.probes import NCMProbe, ProbeRegistry
    from zoo_survey.sources import DatasetSource, HFSource, SourceRegistry

    with pytest.raises(ZooSurveyError, match="a probe named 'ncm' is already registered"):
        ProbeRegistry([NCMProbe, NCMProbe])
    with pytest.raises(ZooSurveyError, match="a dataset source of type 'hf' is already registered"):
        SourceRegistry("dataset", DatasetSource, [HFSource, HFSource])
