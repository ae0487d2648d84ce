"""End to end through the command line, on tiny models and tiny data; bad input exits 2 with one line."""

from __future__ import annotations

import csv
import io
import sqlite3
import sys

import pytest

from zoo_survey.cli import main


def zoo(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["zoo-survey", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


TINY_RUN = ("--family", "tiny", "--ensemble", "2", "-d", "digits", "--max-train", "100", "--max-test", "60",
            "--image-size", "32", "--workers", "0", "--device", "cpu", "--grid", "0.01,0.1,1,10", "--probes", "linear")


def test_run_then_rerun_then_report(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    args = ("run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN)
    code, out, err = zoo(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "single vs ensemble" in out and "7 result row(s) written" in out  # 5 models + 2 width-matched controls
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        rows = con.execute("SELECT comparison, role, top1, feature_dim, provenance FROM results").fetchall()
    roles = sorted(r[1] for r in rows)
    assert roles == ["baseline", "ensemble", "ensemble-avg", "member", "member", "width-pca", "width-random"]
    base_dim = next(r[3] for r in rows if r[1] == "baseline")
    assert {r[3] for r in rows if r[1] == "width-random"} == {base_dim}  # held to the single's width
    ens = next(r for r in rows if r[1] == "ensemble")
    assert ens[0] == "test_convnext.hub+test_vit.hub" and ens[3] == 128  # the two smallest, 64 + 64 dims
    assert all(0.0 <= r[2] <= 1.0 for r in rows)
    assert '"revisions"' in ens[4] and '"dataset_fingerprint"' in ens[4]

    code, out, err = zoo(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "0 result row(s) written, 7 already done; 0 forward batch(es) run" in out

    for fmt in ("md", "csv", "html"):
        code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir), "--format", fmt)
        assert code == 0, err
        assert (out_dir / f"report.{fmt}").is_file()
    table = list(csv.DictReader(io.StringIO((out_dir / "report.csv").read_text())))
    by_name = {r["comparison"]: float(r["top1"]) for r in table}
    assert by_name == pytest.approx({r[0]: r[2] for r in rows})
    md = (out_dir / "report.md").read_text()
    assert "test_resnet.mine" in md and "Across architectures" in md


def test_missing_weights_file_stops_before_any_work(tmp_path, monkeypatch, capsys, cache_env):
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "f.yaml").write_text(
        "family: f\ncheckpoints:\n"
        "  - {id: test_resnet.a, source: {type: file, path: gone.pth}, params_m: 1, gmacs: 1, feature_dim: 96}\n"
        "  - {id: test_resnet.b, source: {type: file, path: gone2.pth}, params_m: 2, gmacs: 1, feature_dim: 96}\n"
    )
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "-r", str(reg), "-f", "f", "-k", "1", "-d", "lfw-subset", "--out", str(out_dir))
    assert code == 2
    assert "error:" in err and "field 'source.path': weights file" in err and "Traceback" not in err
    assert not (out_dir / "results.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--ensemble", "0"), "--ensemble must be at least 1"),
        (("run", "--ensemble", "5"), "--ensemble 5 is larger than family 'efficientnet-lite' allows"),
        (("run", "--family", "resnt"), "unknown family 'resnt'; did you mean 'resnet' or 'regnet'?"),
        (("run", "--datasets", "digts"), "unknown dataset 'digts'; did you mean 'digits'"),
        (("run", "--probes", "linaer"), "unknown probe 'linaer'; did you mean 'linear'?"),
        (("run", "--grid", "1,-1"), "--grid values must be positive"),
        (("run", "--device", "tpu"), "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (("report", "--format", "pdf"), "unknown report format 'pdf'"),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path, monkeypatch, capsys, cache_env, args, message):
    code, out, err = zoo(monkeypatch, capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap a long line)
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_report_without_a_store(tmp_path, monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(tmp_path / "none"))
    assert code == 2 and "no results store at" in err and "zoo-survey run" in err


def test_registry_commands_on_a_user_folder(monkeypatch, capsys, tiny_registry):
    code, out, err = zoo(monkeypatch, capsys, "registry", "list", "--registry", str(tiny_registry))
    assert code == 0 and "test_resnet.mine" in out and "efficientnet-lite" in out
    code, out, err = zoo(monkeypatch, capsys, "registry", "show", "test_resnet.mine", "--registry", str(tiny_registry))
    assert code == 0 and "type: file" in out and "tiny_resnet.pth" in out
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tiny_registry))
    assert code == 0 and "OK:" in out and "5 families" in out


def test_registry_validate_reports_a_bad_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.yaml").write_text("family: b\ncheckpoints:\n  - {id: test_resnet.x, source: {type: file, path: w.pth}, params_m: 1, gmacs: 1}\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tmp_path / "bad.yaml"))
    assert code == 2 and "bad.yaml: checkpoint 'test_resnet.x': field 'feature_dim': missing required field" in err


def test_help_has_examples(monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "run", "--help")
    assert code == 0 and "zoo-survey run --family resnet --ensemble 4" in out and "smallest" in out


def test_an_unknown_option_is_a_usage_error_not_a_traceback(monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "run", "--ensembel", "2")
    assert code == 2 and "No such option: --ensembel" in err and "Traceback" not in err + out


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys, tmp_path, tiny_registry, cache_env):
    import zoo_survey.survey.driver as driver

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "survey", interrupted)  # mid-run: extraction and probes, pipelined
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(tmp_path / "o"), *TINY_RUN)
    assert code == 130 and "interrupted: finished shards and result rows are kept; rerun the same command to resume" in err
