"""Units of work are pure functions of their specs: the same unit run in a fresh workspace (as a remote
worker would) gives the same row, and a worker that sees other data under a dataset's name stops."""

from __future__ import annotations

import dataclasses

import pytest

from zoo_survey.errors import ZooSurveyFailure
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.survey.options import RunOptions
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import prepare_inputs, run_survey
from zoo_survey.survey.units import SPLITS, Workspace, extract_units, probe_units
from zoo_survey.zoo.registry import load_registry, registry_folders

OPTS = RunOptions(probes=("linear", "fewshot", "logme"), image_size=32, max_train=80, max_test=40, grid=(0.1, 1.0),
                  shots=(2,), seeds=2, offline=True, extract=ExtractOptions(workers=0))


@pytest.fixture()
def survey(tiny_registry, tmp_path):
    reg = load_registry(registry_folders([tiny_registry]))
    plan = plan_family(reg.family("tiny"), 2)
    report = run_survey([plan], [reg.dataset("digits")], FeatureCache(tmp_path / "cache"), tmp_path / "r.sqlite", OPTS)
    return reg, plan, report


def test_the_units_cover_every_row_once(survey):
    reg, plan, report = survey
    prepared, resolved = prepare_inputs(plan.checkpoints, [reg.dataset("digits")], OPTS)
    units = probe_units([plan], prepared, resolved, OPTS)
    # 5 comparisons x (linear + 2 few-shot seeds) + logme on the 4 that are not output-averaged + the 2 width-matched
    # controls' linear rows
    assert len(units) == 5 * 3 + 4 + 2 == len(report.rows) == len({u.row_key for u in units})
    assert {u.row_key for u in units} == {r.row_key for r in report.rows}
    assert len({u.group for u in units}) == 5 + 2  # one claim per comparison on the dataset (controls included)
    ext = extract_units(plan.checkpoints, prepared)
    assert [(u.checkpoint.id, u.split) for u in ext[:3]] == [(plan.checkpoints[0].id, s) for s in SPLITS]


def test_a_unit_in_a_fresh_workspace_gives_the_same_row(survey, tmp_path):
    reg, plan, report = survey
    prepared, resolved = prepare_inputs(plan.checkpoints, [reg.dataset("digits")], OPTS)
    units = {u.row_key: u for u in probe_units([plan], prepared, resolved, OPTS)}
    fresh = Workspace(FeatureCache(tmp_path / "cache"), OPTS)  # nothing prepared: as on a remote worker
    for row in report.rows:
        again = units[row.row_key].run(fresh)
        assert (again.top1, again.score, again.hparams, again.n_train) == (row.top1, row.score, row.hparams, row.n_train)
    assert fresh.source.forward_batches == 0  # every feature came from the cache


def test_a_worker_seeing_other_data_under_the_name_stops(survey, tmp_path):
    reg, plan, _ = survey
    prepared, resolved = prepare_inputs(plan.checkpoints, [reg.dataset("digits")], OPTS)
    unit = extract_units(plan.checkpoints, prepared)[0]
    ws = Workspace(FeatureCache(tmp_path / "cache"), OPTS)
    ws.prepared["digits"] = dataclasses.replace(prepared["digits"], fingerprint="0" * 16)  # this node's copy differs
    with pytest.raises(ZooSurveyFailure, match=r"dataset 'digits' here has fingerprint 0{16}, but the run planned"):
        unit.run(ws)
