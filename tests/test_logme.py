"""LogME: equals the reference algorithm (You et al. 2021) and lands in the store and report."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes.logme import logme


def _reference(f: np.ndarray, y: np.ndarray) -> float:
    """The published implementation (D <= N branch), transcribed: an eigendecomposition of F^T F."""
    f = f.astype(np.float64)
    fh, f = f, f.T
    D, N = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    out = []
    for c in np.unique(y):
        y_ = (y == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        tmp = vh @ (f @ y_)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + 1e-5)
            res = y_ - fh @ m
            beta_de = (res * res).sum()
            beta = (N - gamma) / (beta_de + 1e-5)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        ev = (D / 2.0 * np.log(alpha) + N / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
              - beta / 2.0 * (beta_de + 1e-5) - alpha / 2.0 * (alpha_de + 1e-5) - N / 2.0 * np.log(2 * np.pi))
        out.append(ev / N)
    return float(np.mean(out))


@pytest.mark.parametrize(("n", "d"), [(300, 20), (120, 60)])
def test_matches_the_reference(n, d):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 4, n)
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
    assert sorted(r[0] for r in rows) == ["linear"] * 5 + ["logme"] * 4  # no LogME of averaged outputs
    assert all(r[1] is None and r[2] is not None for r in rows if r[0] == "logme")
    zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    md = (out_dir / "report.md").read_text()
    assert "## Transferability (LogME)" in md and "(4 models)" in md
