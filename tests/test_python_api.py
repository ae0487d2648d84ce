"""The public Python API: zoo_survey.survey / features / load, against what `zoo-survey run` writes."""

from __future__ import annotations

import doctest
import inspect
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_cli import TINY_RUN, zoo

import zoo_survey as zs
import zoo_survey.features.source as source_mod
from zoo_survey.errors import ZooSurveyError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn", "pandas", "scipy", "matplotlib", "datasets", "huggingface_hub")
# The same survey as test_cli's TINY_RUN, as keyword arguments.
TINY = dict(family="tiny", ensemble=2, datasets=["digits"], max_train=100, max_test=60, image_size=32, workers=0,
            device="cpu", grid=[0.01, 0.1, 1, 10], probes=["linear"])
TINY_FEATURES = dict(device="cpu", image_size=32, max_train=100, max_test=60, workers=0)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


@pytest.fixture()
def forwards(monkeypatch) -> list[str]:
    """Every forward pass the feature source starts (one entry per checkpoint and split it extracts)."""
    calls: list[str] = []
    real = source_mod.run_forward

    def counting(model, split, rows, *args, **kwargs):
        calls.append(f"{len(rows)} rows")
        return real(model, split, rows, *args, **kwargs)

    monkeypatch.setattr(source_mod, "run_forward", counting)
    return calls


def test_import_is_light_and_help_imports_no_torch():
    check = f"import sys; heavy = [m for m in {HEAVY!r} if m in sys.modules]; print('HEAVY', heavy)"
    done = _python("import zoo_survey; zoo_survey.__version__, zoo_survey.survey, zoo_survey.features; " + check)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    done = _python("import sys; sys.argv = ['zoo-survey', '--help']\nfrom zoo_survey.cli import main\n"
                   "try:\n    main()\nexcept SystemExit:\n    pass\n" + check)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "HEAVY []" in done.stdout
    # --help registers every command, though the script imports only the one it runs
    assert all(c in done.stdout for c in ("run", "extract", "prefetch", "report", "pretrain", "registry", "cache"))


@pytest.mark.parametrize(("argv", "threads"), [(["report", "--out", "no-such-folder"], "1"),
                                               (["registry", "list", "--format", "tsv"], None)])
def test_a_report_keeps_its_blas_to_one_thread(argv, threads, monkeypatch):
    """A report draws its plots in worker processes on the other CPUs: its own BLAS and OpenMP get one thread; other
    commands every usable CPU (set before numpy loads; a count the user set wins)."""
    from zoo_survey.threads import THREAD_VARS, usable_cpus

    for v in THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    done = _python(f"import os, sys; sys.argv = ['zoo-survey', *{argv!r}]\nfrom zoo_survey.cli import main\n"
                   "try:\n    main()\nexcept SystemExit:\n    pass\n"
                   f"print('THREADS', [os.environ.get(v) for v in {THREAD_VARS!r}])")
    want = threads or str(usable_cpus())
    assert f"THREADS {[want] * len(THREAD_VARS)!r}" in done.stdout, done.stdout + done.stderr


def test_a_mistyped_command_is_named_with_the_closest_one():
    """The script imports only the module of the command it runs; a name that is no command loads them all, so click
    can say which one was meant."""
    done = _python("import sys; sys.argv = ['zoo-survey', 'reprot']\nfrom zoo_survey.cli import main\nmain()\n")
    assert done.returncode == 2
    assert "No such command 'reprot'. Did you mean 'report'?" in done.stderr


# What a step that needs no model, no forward and no fit must not import (issue 20): the report, the listings and a
# rerun whose rows are all stored.
NO_MODEL = ("torch", "timm", "sklearn")


# What a report does not import either: the other commands' modules, the registry and its sources (pydantic
# they still import: typer coerces option values with it).
NOT_FOR_REPORT = ("zoo_survey.cli.run", "zoo_survey.cli.pretrain", "zoo_survey.zoo.registry", "zoo_survey.sources", "yaml")


def _cli_modules(*argv: str, among: tuple[str, ...] = NO_MODEL) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI with ``argv`` in a fresh interpreter; its output and the modules of ``among`` it imported."""
    code = (f"import sys; sys.argv = ['zoo-survey', *{list(argv)!r}]\nfrom zoo_survey.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            f"print('EXIT', code, 'IMPORTED', sorted(m for m in {among!r} if m in sys.modules))")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    tail = done.stdout.rsplit("EXIT ", 1)[1]
    assert tail.startswith("0 ") or tail.startswith("None "), done.stdout + done.stderr
    return done, eval(tail.split("IMPORTED ", 1)[1])  # a list literal printed just above


def test_report_listings_and_a_cached_rerun_import_no_model_library(tmp_path, monkeypatch, capsys, tiny_registry,
                                                                   cache_env):
    out_dir = tmp_path / "out"
    run = ("run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN)
    code, out, err = zoo(monkeypatch, capsys, *run)  # the first run: the cache, the store and the metadata memo
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        before = con.execute("SELECT row_key, top1, predictions FROM results ORDER BY row_key").fetchall()
    done, imported = _cli_modules(*run)
    assert "0 result row(s) written, 7 already done; 0 forward batch(es) run" in done.stdout  # 5 + 2 width controls
    assert imported == []
    with sqlite3.connect(out_dir / "results.sqlite") as con:  # the same rows: keys, accuracies, predictions
        assert con.execute("SELECT row_key, top1, predictions FROM results ORDER BY row_key").fetchall() == before
    for argv in (("report", "--out", str(out_dir)), ("registry", "list", "--registry", str(tiny_registry)),
                 ("cache", "ls")):
        done, imported = _cli_modules(*argv)
        assert imported == [], argv
    assert (out_dir / "report.md").is_file()
    # Only the command's own module is imported (cli.app.load_commands): a report parses no registry YAML.
    done, imported = _cli_modules("report", "--out", str(out_dir), among=NOT_FOR_REPORT)
    assert imported == []
    for argv in (("cache", "ls"), ("registry", "list", "--registry", str(tiny_registry))):
        done, imported = _cli_modules(*argv, among=NOT_FOR_REPORT)
        assert "zoo_survey.zoo.registry" in imported and "zoo_survey.cli.run" not in imported, argv
    # --device auto on a machine without a GPU driver decides 'cpu' without torch as well
    done, imported = _cli_modules(*[a if a != "cpu" else "auto" for a in run])
    assert "7 already done" in done.stdout
    from zoo_survey.features.extract import _GPU_DRIVER_PATHS

    if not any(Path(p).exists() for p in _GPU_DRIVER_PATHS):
        assert imported == []


def test_public_names():
    assert set(zs.__all__) <= set(dir(zs))
    for name in zs.__all__:
        assert getattr(zs, name) is not None
    assert zs.load.__module__ == "zoo_survey.api" and zs.ZooSurveyError is ZooSurveyError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zs.nope  # noqa: B018
    # survey and features are also subpackages: callable, and their modules are still reachable
    import zoo_survey.survey.run as run_mod

    assert callable(zs.survey) and callable(zs.features) and zs.survey.run is run_mod
    assert list(inspect.signature(zs.survey).parameters)[:5] == ["family", "ensemble", "strategy", "datasets", "probes"]
    assert list(inspect.signature(zs.features).parameters)[:3] == ["checkpoint", "dataset", "split"]


def test_survey_gives_the_rows_the_cli_writes(tmp_path, monkeypatch, capsys, tiny_registry, cache_env, forwards):
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    code, _, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(cli_out), *TINY_RUN)
    assert code == 0, err
    assert forwards  # the CLI extracted
    forwards.clear()

    res = zs.survey(**TINY, registry=tiny_registry, out=api_out)
    assert forwards == [] and res.forward_batches == 0  # the same cache keys as the CLI's
    assert (res.written, res.skipped, res.store) == (7, 0, api_out / "results.sqlite")  # 5 models + 2 width controls
    assert "7 row(s)" in repr(res) and "tiny" in repr(res)

    df = res.to_pandas()
    with sqlite3.connect(cli_out / "results.sqlite") as con:
        cli_rows = sorted(con.execute("SELECT row_key, top1 FROM results").fetchall())
    assert len(df) == 7
    assert sorted(zip(df["row_key"], df["top1"], strict=True)) == cli_rows  # row keys and top-1, exactly
    assert sorted(df["role"]) == ["baseline", "ensemble", "ensemble-avg", "member", "member", "width-pca", "width-random"]
    for col in ("provenance.revisions", "provenance.dataset_fingerprint", "hparams.C", "members", "top1"):
        assert col in df.columns
    assert not any(c in df.columns for c in ("provenance", "hparams", "predictions"))

    cli_df = zs.load(cli_out).to_pandas()  # every column the CLI stored, but when each row was made
    pd.testing.assert_frame_equal(df.drop(columns="created_at"), cli_df.drop(columns="created_at"))
    pd.testing.assert_frame_equal(zs.load(api_out).to_pandas(), df)
    assert zs.load(api_out / "results.sqlite").rows == res.rows

    ans = res.answer()
    assert list(ans["family"]) == ["tiny"] and int(ans["datasets"].iloc[0]) == 1
    assert int(ans[["wins", "ties", "losses"]].sum(axis=1).iloc[0]) == 1
    assert ans["ci_low_pts"].iloc[0] <= ans["mean_difference_pts"].iloc[0] <= ans["ci_high_pts"].iloc[0]
    pd.testing.assert_frame_equal(ans, zs.load(cli_out).answer())
    assert "<table" in res._repr_html_()

    again = zs.survey(**TINY, registry=tiny_registry, out=api_out)  # a rerun: everything stored
    assert (again.written, again.skipped, again.forward_batches) == (0, 7, 0)


def test_features_extract_once_then_read_the_cache(tiny_registry, cache_env, forwards):
    X, y = zs.features("test_resnet.hub", "digits", registry=tiny_registry, **TINY_FEATURES)
    assert forwards  # the first call extracted
    assert X.dtype.name == "float32" and y.dtype.name == "int64"
    assert X.ndim == 2 and X.shape[1] == 96 and y.shape == (X.shape[0],) and 0 < X.shape[0] <= 100
    forwards.clear()
    X2, y2 = zs.features("test_resnet.hub", "digits", "train", registry=tiny_registry, **TINY_FEATURES)
    assert forwards == []  # the second call read the cache
    assert (X2 == X).all() and (y2 == y).all()
    Xt, yt = zs.features("test_resnet.hub", "digits", split="test", registry=tiny_registry, **TINY_FEATURES)
    Xv, _ = zs.features("test_resnet.hub", "digits", split="val", registry=tiny_registry, **TINY_FEATURES)
    assert forwards == []  # the first call extracted every split, as a run does
    assert Xt.shape == (60, 96) and yt.shape == (60,) and Xv.shape[1] == 96 and len(Xv) + len(X) <= 100
    assert any((cache_env / "tiny" / "test_resnet.hub" / "digits" / s).is_dir() for s in ("train", "test"))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: zs.survey(family="nope"), "unknown family 'nope'"),
        (lambda: zs.survey(ensemble=0, datasets="digits", probes="linear", device="cpu"), "must be at least 1"),
        (lambda: zs.survey(datasets=["digits"], probes=["linaer"], device="cpu"), "linear"),
        (lambda: zs.features("tf_efficientnet_lite0.pypi", "digits", split="training"), "unknown split 'training'"),
        (lambda: zs.features("no-such-checkpoint", "digits"), "unknown checkpoint"),
    ],
)
def test_bad_input_raises_before_any_work(call, message, tmp_path, monkeypatch, cache_env, forwards):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZooSurveyError, match=message):
        call()
    assert forwards == [] and not (tmp_path / "zoo-survey-out").exists()


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="unknown split 'training'") as err:
        zs.features("tf_efficientnet_lite0.pypi", "digits", split="training")
    assert isinstance(err.value, ZooSurveyError) and not isinstance(err.value, RuntimeError)
    with pytest.raises(ValueError, match="unknown parameter 'image_sise'; did you mean 'image_size'"):
        zs.features("tf_efficientnet_lite0.pypi", "digits", image_sise=32)


def test_load_a_missing_store_names_the_path(tmp_path):
    with pytest.raises(ZooSurveyError, match=f"no results store at {tmp_path / 'nowhere' / 'results.sqlite'}"):
        zs.load(tmp_path / "nowhere")


def test_docs_python_api_examples_pass(tmp_path, monkeypatch):
    """docs/python-api.md's examples, as doctests, in an empty folder with an empty feature cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_SURVEY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_SURVEY_REGISTRY", raising=False)
    result = doctest.testfile(str(ROOT / "docs" / "python-api.md"), module_relative=False, report=True,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0, "docs/python-api.md: a doctest failed (the report is above)"
