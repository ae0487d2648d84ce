"""LogME: equals the reference algorithm (You et al. 2021) and lands in the store and report."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes.logme import logme


def _reference(f: np.ndarray, y: np.ndarray) -> float:
    """The published implementation's default variant (``LogME._fit_fixed_point``), ported in test_controls."""
    from test_controls import _reference_fixed_point

    return _reference_fixed_point(f, y)


@pytest.mark.parametrize(("n", "d"), [(300, 20), (120, 60)])
def test_matches_the_reference(n, d):
    rng = np.random.default_rng(n)
    y = np.arange(n) % 4  # every class present: the reference scores classes 0..max(y)
    X = np.eye(4)[y] @ rng.normal(size=(4, d)) + rng.normal(size=(n, d))
    assert logme(X, y) == pytest.approx(_reference(X, y), rel=1e-6)


def test_informative_features_score_higher():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    good = np.eye(5)[y] @ rng.normal(size=(5, 32)) * 3 + rng.normal(size=(400, 32))
    assert logme(good, y) > logme(rng.normal(size=(400, 32)), y)


def test_single_class():
    with pytest.raises(ZooSurveyError, match=r"only one class"):
        logme(np.ones((5, 2)), np.zeros(5, int))


def test_logme_rows_and_report(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN,
                         "--probes", "linear,logme")
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        rows = con.execute("SELECT probe, top1, score FROM results").fetchall()
    # no LogME of averaged outputs nor of the width-matched controls (linear rows: 5 models + 2 controls)
    assert sorted(r[0] for r in rows) == ["linear"] * 7 + ["logme"] * 4
    assert all(r[1] is None and r[2] is not None for r in rows if r[0] == "logme")
    zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    md = (out_dir / "report.md").read_text()
    assert "## Transferability (LogME)" in md and "(4 models)" in md
