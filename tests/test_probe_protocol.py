"""The probe protocol: a probe defined and registered here, in the test, runs in `zoo-survey run` and shows in
`zoo-survey report` without a line of the survey or the report knowing its name."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes import PROBES, ClassifierProbe, Probe, ProbeInfo, ProbeRegistry
from zoo_survey.probes.base import MemberFeatures, ProbeConfig, ProbeOutcome, Setting, check_fit, score_outcome
from zoo_survey.probes.protocol import DECLARED


class Centroid(ClassifierProbe):
    """Nearest class centroid in raw feature space: a toy with one hyper-parameter-free fit."""

    name: ClassVar[str] = "centroid"
    summary: ClassVar[str] = "nearest centroid (a test's toy)"

    def fit(self, X, y, *, X_val=None, y_val=None):
        X, y, _, _, classes = check_fit(X, y, X_val, y_val)
        self.classes_, self.n_features_in_ = classes, X.shape[1]
        self.means_ = np.stack([X[y == c].mean(0) for c in classes])
        return self

    def predict_proba(self, X):
        X = self._test_features(X)
        d = ((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)

    def hparams(self):
        return {"centroids": len(self.classes_)}


class Width(Probe):
    """A score probe: the feature width, ranked against the linear probe, over two seeds of one setting."""

    name: ClassVar[str] = "width"
    summary: ClassVar[str] = "feature width (a test's toy score)"
    yields = "score"
    presentation = "ranking"
    title: ClassVar[str] = "Toy width ranking"
    rank_against: ClassVar[str | None] = "linear"
    combines: ClassVar[tuple[str, ...]] = ("single", "concat")

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        return score_outcome(data, float(data.width))


@pytest.fixture()
def toys():
    with PROBES.registered(Centroid), PROBES.registered(Width):
        yield
    assert "centroid" not in PROBES.names()  # the registration ended with the block


def test_a_probe_registered_in_a_test_runs_and_reports(toys, tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    run = [a if a != "linear" else "linear,centroid,width" for a in TINY_RUN]
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *run)
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        rows = con.execute("SELECT probe, role, top1, score FROM results ORDER BY probe, role").fetchall()
    centroid = [r for r in rows if r[0] == "centroid"]
    width = [r for r in rows if r[0] == "width"]
    # a paired accuracy probe: the width-matched controls get its rows too
    assert sorted(r[1] for r in centroid) == ["baseline", "ensemble", "ensemble-avg", "member", "member", "width-pca",
                                              "width-random"]
    assert all(0 <= r[2] <= 1 and r[3] is None for r in centroid)
    # a score probe that does not combine by averaging gets no ensemble-avg row; its score is the width
    assert sorted(r[1] for r in width) == ["baseline", "ensemble", "member", "member"]
    assert {r[3] for r in width if r[1] == "ensemble"} == {128.0} and all(r[2] is None for r in width)
    assert "centroid" in out  # the run's summary table has the new probe's line

    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    assert code == 0, err
    md = (out_dir / "report.md").read_text()
    assert any(line.startswith("| tiny | digits | centroid |") for line in md.splitlines())  # the headline table
    assert "## Toy width ranking" in md and "width score, best first" in md and "Kendall tau vs linear top-1" in md


def test_a_store_keeps_its_rows_readable_when_the_probe_is_gone(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    run = [a if a != "linear" else "linear,centroid" for a in TINY_RUN]
    with PROBES.registered(Centroid):
        code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *run)
    assert code == 0, err
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir))  # the plug-in is not loaded now
    assert code == 0, err
    assert any(line.startswith("| tiny | digits | centroid |") for line in (out_dir / "report.md").read_text().splitlines())


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (type("Nameless", (Probe,), {}), r"probe class Nameless has no name"),
        (type("Dup", (Probe,), {"name": "linear"}), r"a probe named 'linear' is already registered"),
        (type("Odd", (Probe,), {"name": "odd", "presentation": "pie"}), r"presentation 'pie' is not one of"),
        (type("Rank", (Probe,), {"name": "rank", "presentation": "ranking"}), r"names the probe it ranks against"),
        (int, r"is not a Probe subclass"),
    ],
)
def test_bad_registrations_are_refused(probe, message):
    reg = ProbeRegistry(list(PROBES))
    with pytest.raises(ZooSurveyError, match=message):
        reg.register(probe)


def test_an_unknown_probe_suggests_close_names():
    with pytest.raises(ZooSurveyError, match=r"unknown probe 'fewshoot'; did you mean 'fewshot'"):
        PROBES.get("fewshoot")


def test_every_shipped_probe_declares_what_the_survey_and_report_need():
    for info in PROBES:
        p = PROBES.get(info.name)
        assert ProbeInfo.of(p) == info  # the class carries exactly the declarations the registry holds
        assert p.name and p.summary and p.presentation in ("paired", "over-seeds", "ranking")
        assert p.settings(ProbeConfig()), p.name
        if p.presentation == "ranking":
            assert p.rank_against in PROBES.names()


def test_the_declarations_load_without_scikit_learn():
    # the CLI's option checks and the report read PROBES; only a fit imports the estimator classes
    code = ("import sys; from zoo_survey.probes import PROBES; "
            "infos = [(p.name, p.presentation, p.summary) for p in PROBES]; PROBES.info('logme').rank_against; "
            "assert 'sklearn' not in sys.modules, 'sklearn'; "
            "assert PROBES.get('linear').__name__ == 'LinearProbe' and 'sklearn' in sys.modules; print(len(infos))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


@pytest.mark.parametrize("config", [ProbeConfig(), ProbeConfig(shots=(2, 7), seeds=3, fewshot_val="full"),
                                    ProbeConfig(shots=(1,), seeds=1, grid=(0.1, 1.0))])
def test_declared_settings_are_the_classes(config):
    """A run builds its row keys from the declared settings (no scikit-learn): they must be the classes' own."""
    from zoo_survey.probes.protocol import declared_settings

    for name in DECLARED:
        assert declared_settings(name, config) == PROBES.get(name).settings(config), name
        assert PROBES.settings(name, config) == PROBES.get(name).settings(config), name


def test_a_registered_class_travels_with_its_units_and_a_shipped_probe_by_name(toys):
    """Units carry a registered probe's class (a Ray worker has no such registration); a shipped probe whose class
    is not imported is looked up by name where the unit runs."""
    from dataclasses import replace

    from zoo_survey.probes.registry import ProbeRegistry
    from zoo_survey.survey.units import ProbeUnit

    assert PROBES.loaded("centroid") is Centroid
    fresh = ProbeRegistry(DECLARED.values())
    assert fresh.loaded("linear") is None and fresh.get("linear") is fresh.loaded("linear")
    unit = ProbeUnit("f", "s", None, None, None, "fp", "centroid", Setting(), None, "key", "group",  # type: ignore[arg-type]
                     probe_class=Centroid)
    assert unit.probe is Centroid and replace(unit, probe_class=None).probe is Centroid  # by name: registered here
    assert replace(unit, probe_name="linear", probe_class=None).probe is PROBES.get("linear")
