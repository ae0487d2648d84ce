"""A wheel built from this tree works without the checkout (issue 18, item 1).

The wheel is installed non-editably into a fresh venv that sees the project's dependencies (the running
interpreter's site-packages, by a path line in a ``.pth`` file, whose own ``.pth`` files, such as the editable
install's finder, are not executed) but not this checkout. From a folder outside the checkout the installed
``zoo-survey`` lists the shipped registry, validates it, and runs a one-dataset survey of the offline family.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
             "zoo-survey-out")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(the venv's bin folder, a folder outside the checkout, the environment to run in)."""
    import importlib.util

    # offline, the wheel is built without build isolation, by this venv's setuptools (the `test` extra installs it)
    assert importlib.util.find_spec("setuptools"), "building the wheel offline needs setuptools: pip install -e '.[test]'"
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ZOO_SURVEY_REGISTRY"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               OMP_NUM_THREADS="1")
    # Build from a copy, so the build leaves no build/ or *.egg-info in the checkout.
    src, before = tmp / "src", sorted(os.listdir(ROOT))
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*GENERATED))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
         tmp, env)
    (wheel,) = (tmp / "dist").glob("zoo_survey-*.whl")
    assert sorted(os.listdir(ROOT)) == before  # no build/ or *.egg-info left in the checkout
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "zoo_survey" / "registries").rglob("*.yaml"))
    assert shipped and not set(shipped) - set(names), "the wheel lacks shipped registry YAML"

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (purelib / "zoo-survey-test-deps.pth").write_text("".join(f"{p}\n" for p in deps))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp, env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return bindir, elsewhere, env


def test_the_installed_package_is_the_wheel_not_the_checkout(wheel_venv):
    bindir, elsewhere, env = wheel_venv
    code = ("import zoo_survey, sysconfig; from zoo_survey.zoo.registry import SHIPPED_REGISTRY as r; "
            "print(zoo_survey.__file__, r, sysconfig.get_path('purelib'), sep='\\n')")
    init, registry, purelib = _run([str(bindir / "python"), "-c", code], elsewhere, env).stdout.splitlines()
    assert Path(init).is_relative_to(Path(purelib).resolve()) or Path(init).is_relative_to(Path(purelib))
    assert not Path(init).resolve().is_relative_to(ROOT)
    assert Path(registry) == (Path(init).resolve().parent / "registries") and (Path(registry) / "models" / "convnext.yaml").is_file()


def test_registry_list_validate_and_help_run_from_the_wheel(wheel_venv):
    bindir, elsewhere, env = wheel_venv
    zoo = str(bindir / "zoo-survey")
    listed = _run([zoo, "registry", "list"], elsewhere, env).stdout
    convnext = [line for line in listed.splitlines() if "convnext_" in line]
    assert len(convnext) >= 3, listed
    assert "tf_efficientnet_lite0.pypi" in listed
    assert "OK:" in _run([zoo, "registry", "validate"], elsewhere, env).stdout
    assert "registry" in _run([zoo, "--help"], elsewhere, env).stdout


def test_a_one_dataset_survey_of_the_offline_family_runs_from_the_wheel(wheel_venv):
    bindir, elsewhere, env = wheel_venv
    out, cache = elsewhere / "out", elsewhere / "cache"
    _run([str(bindir / "zoo-survey"), "run", "-d", "digits", "--image-size", "32", "--max-train", "200", "--max-test", "100",
          "--probes", "linear", "--out", str(out), "--cache-dir", str(cache)], elsewhere, env, timeout=300)
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT role, comparison, dataset, top1 FROM results").fetchall()
    assert {r[0] for r in rows} >= {"baseline", "ensemble"}, rows
    assert {r[2] for r in rows} == {"digits"} and all(r[3] is not None and 0 < r[3] <= 1 for r in rows), rows
    assert any("lite2" in r[1] for r in rows if r[0] == "baseline"), rows
    _run([str(bindir / "zoo-survey"), "report", "--out", str(out)], elsewhere, env)  # the README's next command
    assert "efficientnet-lite" in (out / "report.md").read_text()
    assert not (elsewhere / "registries").exists()
