"""Few-shot: same sampled indices for every model, k above a class's size is reported, paired intervals."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.probes.fewshot import sample_shots
from zoo_survey.results.stats import paired_interval, t_interval
from zoo_survey.survey.options import parse_list, resolve_options


def test_sampling_depends_only_on_labels_k_and_seed():
    y = np.repeat(np.arange(5), 20)
    a, _ = sample_shots(y, 3, seed=1)
    b, _ = sample_shots(y.copy(), 3, seed=1)
    c, _ = sample_shots(y, 3, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(y[a]).tolist() == [3] * 5


def test_k_above_a_class_size_uses_what_it_has_and_says_so():
    y = np.array([0] * 10 + [1] * 2)
    idx, notes = sample_shots(y, 5, seed=0)
    assert np.bincount(y[idx]).tolist() == [5, 2]
    assert notes == ["class 1 has 2 example(s), fewer than k=5: used all of them"]


@pytest.mark.parametrize("bad", ["0,5", "a,b", ""])
def test_bad_shots(bad):
    with pytest.raises(ZooSurveyError, match=r"'shots'") as e:
        resolve_options(device="cpu", shots=parse_list(bad, "shots", int))
    assert e.value.param == "shots"


def test_intervals_match_scipy():
    from scipy import stats

    a, b = [0.50, 0.55, 0.52, 0.58, 0.51], [0.60, 0.62, 0.59, 0.66, 0.61]
    m, h = t_interval(a)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=stats.sem(a))
    assert math.isclose(m - h, lo) and math.isclose(m + h, hi)
    d, hd = paired_interval(a, b)
    diff = np.subtract(b, a)
    lo, hi = stats.t.interval(0.95, 4, loc=diff.mean(), scale=stats.sem(diff))
    assert math.isclose(d - hd, lo) and math.isclose(d + hd, hi)
    assert hd < t_interval(b)[1] + t_interval(a)[1]  # pairing removes the shared seed noise
    assert math.isnan(t_interval([0.5])[1])


def test_fewshot_rows_share_indices_and_the_report_has_paired_intervals(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN,
                         "--probes", "fewshot", "--shots", "1,4", "--seeds", "3")
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        rows = con.execute("SELECT comparison, role, setting, seed, n_train, top1 FROM results").fetchall()
    assert len(rows) == 5 * 2 * 3  # comparisons (baseline, 2 members, concat, averaged) x shots x seeds
    assert {r[4] for r in rows if r[2] == "1-shot"} == {10} and {r[4] for r in rows if r[2] == "4-shot"} == {40}
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    md = (out_dir / "report.md").read_text()
    assert "## Few-shot" in md and "| tiny | digits | 1-shot | 3 |" in md and "±" in md
    # The report's paired difference is the mean of the per-seed differences in the store.
    base = {r[3]: r[5] for r in rows if r[1] == "baseline" and r[2] == "4-shot"}
    ens = {r[3]: r[5] for r in rows if r[1] == "ensemble" and r[2] == "4-shot"}
    d, h = paired_interval([base[s] for s in range(3)], [ens[s] for s in range(3)])
    line = next(line for line in md.splitlines() if line.startswith("| tiny | digits | 4-shot |"))
    assert line.split("|")[7].strip().startswith(f"{100 * d:+.1f}")


# --------------------------------------------------------------------------- honest few-shot: C chosen within the shots


def _shots(k=5, classes=4, d=12, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)) * 2
    y = np.repeat(np.arange(classes), k)
    return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def test_folds_hold_out_every_class_in_every_fold():
    from zoo_survey.probes.fewshot import stratified_folds

    y = np.repeat(np.arange(3), 5)
    folds = stratified_folds(y, 5, seed=0)
    assert all(sorted(y[folds == f].tolist()) == [0, 1, 2] for f in range(5))


def test_shots_selection_uses_no_label_beyond_the_shots():
    from zoo_survey.probes.fewshot import FewShotProbe

    X, y = _shots()
    rng = np.random.default_rng(1)
    Xv, yv = rng.normal(size=(40, 12)).astype(np.float32), rng.integers(0, 4, 40)
    a = FewShotProbe(select="shots").fit(X, y, X_val=Xv, y_val=yv)
    b = FewShotProbe(select="shots").fit(X, y, X_val=Xv * 0, y_val=np.roll(yv, 3))  # other validation data: no effect
    assert a.best_C_ == b.best_C_ and np.array_equal(a.coef_, b.coef_)
    assert a.hparams()["selection"] == "5-fold CV within the shots" and "cv_top1" in a.hparams()
    full = FewShotProbe(select="full").fit(X, y, X_val=Xv, y_val=yv)
    assert full.hparams()["selection"] == "on the full validation split" and "val_top1" in full.hparams()


def test_one_shot_uses_the_documented_fixed_c():
    from zoo_survey.probes.fewshot import ONE_SHOT_C, FewShotProbe

    X, y = _shots(k=1)
    p = FewShotProbe(select="shots").fit(X, y)
    assert p.best_C_ == ONE_SHOT_C and p.hparams()["selection"].startswith("fixed C=")


def test_the_full_val_protocol_is_labelled_in_every_row(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    run = [a if a != "linear" else "fewshot" for a in TINY_RUN]
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *run,
                         "--shots", "1,3", "--seeds", "1", "--fewshot-val", "full")
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        settings = {r[0] for r in con.execute("SELECT setting FROM results")}
        selections = {r[0] for r in con.execute("SELECT json_extract(hparams, '$.selection') FROM results WHERE combine != 'average'")}
    assert settings == {"1-shot+val", "3-shot+val"} and selections == {"on the full validation split"}
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    assert "| tiny | digits | 3-shot+val |" in (out_dir / "report.md").read_text()
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *run,
                         "--fewshot-val", "all")
    assert code == 2 and "unknown --fewshot-val value 'all'" in err
