"""Typed errors: bad input is a ValueError, a failure a RuntimeError (not cached: an OSError too); library messages
name parameters and the CLI alone says them as flags."""

from __future__ import annotations

import pytest
from test_cli import zoo

from zoo_survey.cli.app import flag, flag_message
from zoo_survey.errors import NotCachedError, ZooSurveyError, ZooSurveyException, ZooSurveyFailure, gather
from zoo_survey.survey.plan import plan_family
from zoo_survey.zoo.registry import load_registry


def test_the_hierarchy_and_exit_codes():
    bad, failed, missing = ZooSurveyError("x", param="ensemble"), ZooSurveyFailure("y"), NotCachedError("z")
    assert isinstance(bad, ValueError) and not isinstance(bad, RuntimeError) and bad.exit_code == 2
    assert isinstance(failed, RuntimeError) and not isinstance(failed, ValueError) and failed.exit_code == 1
    assert isinstance(missing, OSError) and isinstance(missing, ZooSurveyFailure) and str(missing) == "z: not in the local cache"
    assert all(isinstance(e, ZooSurveyException) for e in (bad, failed, missing))
    assert (bad.param, bad.params, failed.param) == ("ensemble", ("ensemble",), None)
    both = gather([bad, failed])
    assert type(both) is ZooSurveyError and both.params == ("ensemble",) and "2 problems" in str(both)
    assert type(gather([failed, ZooSurveyFailure("w")])) is ZooSurveyFailure


def test_a_library_error_names_the_parameter_not_a_flag():
    with pytest.raises(ValueError, match=r"^'ensemble' must be at least 1") as e:
        plan_family(load_registry().family("efficientnet-lite"), k=0)
    assert e.value.param == "ensemble" and "--" not in str(e.value)


@pytest.mark.parametrize(("message", "params", "said"), [
    ("'ensemble' must be at least 1 (the number of ensemble members)", "ensemble",
     "--ensemble must be at least 1 (the number of ensemble members)"),
    ("ensemble=3 but 'members' names 2", ("ensemble", "members"), "--ensemble 3 but --members names 2"),
    ("pass bad_images='skip' to leave them out", "bad_images", "pass --bad-images skip to leave them out"),
    ("or pass allow_same_lineage=True", "allow_same_lineage", "or pass --allow-same-lineage"),
    ("'pixel_route' must be one of tensor, pil, got 'x'", "pixel_route", "--preprocess must be one of tensor, pil, got 'x'"),
    ("unknown family 'seeds'", (), "unknown family 'seeds'"),  # only the parameters the error names are mapped
])
def test_the_cli_says_parameters_as_flags(message, params, said):
    assert flag_message(ZooSurveyError(message, param=params)) == said
    assert flag("max_train") == "--max-train" and flag("cats") == "--cat"


def test_the_cli_error_line_names_the_flag(monkeypatch, capsys, tmp_path):
    code, out, err = zoo(monkeypatch, capsys, "run", "--ensemble", "0", "-d", "digits", "--out", str(tmp_path))
    assert code == 2 and "error: --ensemble must be at least 1 (the number of ensemble members), got 0" in err, err
    code, out, err = zoo(monkeypatch, capsys, "run", "--max-train", "1", "--probes", "", "--out", str(tmp_path))
    assert code == 2 and "error: --probes is empty" in err, err
