"""The report's analysis as data frames: numbers (not text), one row per family or line, equal to results/stats.py
on the same pairs; and the rendered report shows exactly the frames' numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from zoo_survey.document import to_markdown
from zoo_survey.probes import PROBES
from zoo_survey.results.analysis import (
    ANSWER_COLUMNS,
    COMPARISON_COLUMNS,
    VERDICTS,
    answer_frame,
    budget_frame,
    comparison_frame,
    diversity_frame,
    every_row_frame,
    ran_on_frame,
    ranking_frame,
    revisions_frame,
    seeds_frame,
)
from zoo_survey.results.report import build_report, every_row_table
from zoo_survey.results.stats import (
    holm,
    kendall_tau,
    paired_difference,
    paired_interval,
    pooled_difference,
    t_interval,
    verdict,
)
from zoo_survey.results.store import ResultRow, SimilarityRow

FAMILIES = {"alpha": "supervised", "beta": "self-supervised"}
DATASETS = ("cifar10", "digits")
ACCURACY = {("alpha", "digits"): 0.95, ("alpha", "cifar10"): 0.8, ("beta", "digits"): 0.72}  # the ensemble's; beta
# has no ensemble on cifar10 (a missing side)


def survey_rows() -> tuple[list[ResultRow], list[SimilarityRow]]:
    """Two families by two datasets: linear (single, concatenated and averaged ensemble, members), few-shot over
    seeds, LogME scores, CKA between models; one family ran on a Ray node."""
    rng = np.random.default_rng(7)
    rows: list[ResultRow] = []
    sims: list[SimilarityRow] = []
    for fam, kind in FAMILIES.items():
        single, m1, m2 = f"{fam}_l", f"{fam}_s1", f"{fam}_s2"
        for ds in DATASETS:
            labels = rng.integers(0, 5, 120)

            def row(comp, role, members, probe, acc, setting="", seed=None, score=None, labels=labels, ds=ds, fam=fam,
                    kind=kind):
                preds = None
                if acc is not None:
                    preds = np.where(rng.random(len(labels)) < acc, labels, (labels + 1) % 5)
                prov = {"family_kind": kind, "revisions": {m: f"rev-{m}" for m in members}, "dataset_fingerprint": ds,
                        "pretrain": {m: {"data": "in1k", "epochs": 300, "emacs": 1.5} for m in members},
                        "budget_by": "params"}
                if fam == "beta":
                    prov["ran_on"] = {"host": "node-a", "node": "0123456789abcdef"}
                top1 = None if preds is None else float((preds == labels).mean())
                rows.append(ResultRow(
                    row_key=f"k{len(rows)}", family=fam, comparison=comp, role=role, members=list(members),
                    combine="concat", dataset=ds, probe=probe, top1=top1, mean_per_class=top1, top5=None,
                    hparams={"C": 0.0178}, params_m=10.0 * len(members), gflops=0.43 * len(members),
                    feature_dim=256 * len(members), n_train=200, n_val=50, n_test=len(labels),
                    extract_seconds=1.2 * len(members), warnings=[], provenance=prov, score=score, setting=setting,
                    seed=seed, created_at=float(len(rows)), test_key=ds, predictions=preds,
                    test_labels=None if preds is None else labels))

            ens = f"{m1}+{m2}"
            row(single, "baseline", [single], "linear", 0.7)
            if (fam, ds) in ACCURACY:
                row(ens, "ensemble", [m1, m2], "linear", ACCURACY[fam, ds])
            row(ens + "-avg", "ensemble-avg", [m1, m2], "linear", 0.75)
            row(m1, "member", [m1], "linear", 0.6)
            row(m2, "member", [m2], "linear", 0.62)
            for setting, seeds in (("1-shot", 3), ("5-shot", 3), ("10-shot", 1)):
                for seed in range(seeds):
                    row(single, "baseline", [single], "fewshot", 0.3 + 0.05 * seed, setting, seed)
                    row(ens, "ensemble", [m1, m2], "fewshot", 0.35 + 0.04 * seed, setting, seed)
            for comp, role, mem, sc in ((single, "baseline", [single], -1.2), (m1, "member", [m1], -1.5),
                                        (m2, "member", [m2], -1.4)):
                row(comp, role, mem, "logme", None, score=sc)
            sims += [SimilarityRow(f"s{len(sims)}", fam, ds, m1, m2, 0.61 if fam == "alpha" else 0.85, 120, 1.0),
                     SimilarityRow(f"s{len(sims)}b", fam, ds, m1, single, 0.7, 120, 1.0)]
    return rows, sims


@pytest.fixture(scope="module")
def survey():
    return survey_rows()


def _row(rows, fam, ds, role, probe="linear"):
    (r,) = [r for r in rows if (r.family, r.dataset, r.role, r.probe, r.setting) == (fam, ds, role, probe, "")]
    return r


def test_frames_hold_numbers_with_the_expected_columns(survey):
    rows, sims = survey
    answer, comparison = answer_frame(rows, sims), comparison_frame(rows)
    assert tuple(answer.columns) == ANSWER_COLUMNS and tuple(comparison.columns) == COMPARISON_COLUMNS
    assert answer["family"].tolist() == ["beta", "alpha"]  # one row per family, grouped by pretraining kind
    assert len(comparison) == 4 and not comparison.duplicated(["family", "dataset", "probe"]).any()
    for frame, numeric in (
        (answer, ("mean_difference_pts", "ci_low_pts", "ci_high_pts", "member_cka", "member_single_cka")),
        (comparison, ("single_top1_pct", "ensemble_top1_pct", "difference_pts", "ci_low_pts", "ci_high_pts", "mcnemar_p",
                      "averaged_difference_pts", "single_params_m", "ensemble_gmacs")),
        (diversity_frame(rows, sims), ("difference_pts", "member_cka", "member_diversity")),
        (budget_frame(rows), ("single_params_m", "ensemble_gmacs", "ensemble_extract_seconds", "ensemble_pretrain_emacs")),
        (seeds_frame(rows), ("single_top1_pct", "single_half_width_pct", "difference_pts", "difference_half_width_pts")),
        (ranking_frame(rows, "logme"), ("score", "rank_against_top1_pct", "kendall_tau")),
        (every_row_frame(rows), ("top1", "score", "vs_single", "vs_single_ci_low", "mcnemar_p")),
    ):
        for c in numeric:
            assert frame[c].dtype == np.float64, (c, frame[c].dtype)
    for frame, ints in ((answer, ("datasets", "wins", "ties", "losses")), (comparison, ("ensemble_feature_dim",)),
                        (seeds_frame(rows), ("seeds",)), (revisions_frame(rows), ("rows",)), (every_row_frame(rows), ("seed",))):
        for c in ints:
            assert pd.api.types.is_integer_dtype(frame[c]), (c, frame[c].dtype)
    assert set(comparison["verdict"].cat.categories) == set(VERDICTS)
    missing = comparison[comparison["ensemble"].isna()].iloc[0]  # beta on cifar10: no ensemble row
    assert (missing["family"], missing["dataset"]) == ("beta", "cifar10")
    assert np.isnan(missing["ensemble_top1_pct"]) and np.isnan(missing["ci_low_pts"]) and pd.isna(missing["verdict"])
    assert pd.isna(missing["ensemble_feature_dim"]) and missing["single_top1_pct"] > 0
    assert len(every_row_frame(rows)) == len(rows) and len(ran_on_frame(rows)) == 1


def test_empty_frames_keep_their_columns():
    assert tuple(answer_frame([]).columns) == ANSWER_COLUMNS and answer_frame([]).empty
    assert tuple(comparison_frame([]).columns) == COMPARISON_COLUMNS


def test_comparison_equals_the_paired_statistics(survey):
    rows, _ = survey
    for c in comparison_frame(rows).to_dict("records"):
        b = _row(rows, c["family"], c["dataset"], "baseline")
        assert c["single"] == b.comparison and c["single_top1_pct"] == 100 * b.top1
        avg = _row(rows, c["family"], c["dataset"], "ensemble-avg")
        da = paired_difference(b.correct, avg.correct)
        assert (c["averaged_difference_pts"], c["averaged_ci_low_pts"], c["averaged_ci_high_pts"], c["averaged_mcnemar_p"]) \
            == (100 * da.delta, 100 * da.low, 100 * da.high, da.p_value)
        if pd.isna(c["ensemble"]):
            continue
        e = _row(rows, c["family"], c["dataset"], "ensemble")
        d = paired_difference(b.correct, e.correct)
        assert c["ensemble_members"] == tuple(e.members) and c["difference_pts"] == 100 * (e.top1 - b.top1)
        assert (c["ci_low_pts"], c["ci_high_pts"], c["mcnemar_p"]) == (100 * d.low, 100 * d.high, d.p_value)
        assert c["mcnemar_p"] == d.p_value and c["detectable_pts"] == 100 * d.detectable
    assert "ensemble better" in set(comparison_frame(rows)["verdict"])  # alpha on digits: 95% against 70%


def test_answer_equals_the_pooled_difference(survey):
    rows, sims = survey
    answer = answer_frame(rows, sims).set_index("family")
    pairs = [(_row(rows, "alpha", ds, "baseline").correct, _row(rows, "alpha", ds, "ensemble").correct) for ds in DATASETS]
    pooled = pooled_difference(pairs)
    alpha = answer.loc["alpha"]
    assert (alpha["mean_difference_pts"], alpha["ci_low_pts"], alpha["ci_high_pts"], alpha["bootstrap_p"]) \
        == (100 * pooled.delta, 100 * pooled.low, 100 * pooled.high, pooled.p_value)
    assert alpha["p_holm"] >= alpha["bootstrap_p"] and alpha["detectable_pts"] == 100 * pooled.detectable
    # wins / ties / losses: McNemar's p Holm-adjusted across the family's datasets
    ds = [paired_difference(a, b) for a, b in pairs]
    verdicts = [verdict(d.delta, q) for d, q in zip(ds, holm([d.p_value for d in ds]), strict=True)]
    assert (alpha["wins"], alpha["ties"], alpha["losses"]) == tuple(verdicts.count(v) for v in ("win", "tie", "loss"))
    assert (alpha["datasets"], alpha["pretraining"], alpha["probe"]) == (2, "supervised", "linear")
    assert alpha["member_cka"] == pytest.approx(0.61) and alpha["member_single_cka"] == pytest.approx(0.7)
    assert answer.loc["beta", "datasets"] == 1  # the dataset without an ensemble does not count


def test_seeds_and_ranking_equal_their_statistics(survey):
    rows, _ = survey
    seeds = seeds_frame(rows, "fewshot")
    assert seeds["setting"].tolist()[:3] == ["1-shot", "5-shot", "10-shot"]  # natural order
    s = seeds.iloc[1]
    side = {role: {r.seed: r.top1 for r in rows if (r.family, r.dataset, r.probe, r.setting, r.role)
                   == (s["family"], s["dataset"], "fewshot", s["setting"], role)} for role in ("baseline", "ensemble")}
    mean, half = t_interval(list(side["baseline"].values()))
    assert (s["single_top1_pct"], s["single_half_width_pct"]) == (100 * mean, 100 * half)
    dm, dh = paired_interval([side["baseline"][k] for k in range(3)], [side["ensemble"][k] for k in range(3)])
    assert (s["difference_pts"], s["difference_half_width_pts"], s["seeds"]) == (100 * dm, 100 * dh, 3)
    assert np.isnan(seeds[seeds["setting"] == "10-shot"]["single_half_width_pct"]).all()  # one seed: no interval
    ranking = ranking_frame(rows, "logme")
    group = ranking[(ranking["family"] == "alpha") & (ranking["dataset"] == "digits")]
    assert group["score"].tolist() == sorted(group["score"], reverse=True)
    top1 = {r.comparison: r.top1 for r in rows if (r.family, r.dataset, r.probe) == ("alpha", "digits", "linear")}
    tau = kendall_tau(group["score"].tolist(), [top1[m] for m in group["model"]])
    assert group["kendall_tau"].tolist() == [tau] * 3 and (group["models_compared"] == 3).all()


def _table(doc, title):
    (table,) = [t for s in doc.sections for t in s.tables if (t.title or s.title) == title]
    return [dict(zip(table.header, row, strict=True)) for row in table.rows]


def test_the_rendered_report_shows_the_frames_numbers(survey):
    rows, sims = survey
    doc = build_report(rows, similarity=sims)
    md = to_markdown(doc)
    shown = _table(doc, "single vs ensemble")
    for c, cells in zip(comparison_frame(rows).to_dict("records"), shown, strict=True):
        assert (cells["family"], cells["dataset"]) == (c["family"], c["dataset"])
        assert cells["single top-1"] == f"{c['single_top1_pct']:.1f}"
        if pd.isna(c["ensemble"]):
            assert cells["ensemble top-1"] == "missing" and cells["95% CI"] == "n/a"
            continue
        assert cells["difference (points)"] == f"{c['difference_pts']:+.1f}"
        assert cells["95% CI"] == f"[{c['ci_low_pts']:+.1f}, {c['ci_high_pts']:+.1f}]"
        assert cells["significant"] == (f"no (could detect ≥ {c['detectable_pts']:.1f})" if c["verdict"] == "not significant"
                                        else "yes")
        assert cells["BH q"] == (f"{c['mcnemar_q']:.2g}" if c["mcnemar_q"] >= 1e-4 else "<1e-4") and c["mcnemar_q"] >= c["mcnemar_p"]
        assert (c["verdict"] == "not significant") == (c["mcnemar_q"] >= 0.05)  # the adjusted p decides
        assert "| " + " | ".join(cells.values()) + " |" in md
    for f, cells in zip(answer_frame(rows, sims).to_dict("records"), _table(doc, "across architectures, by pretraining kind"),
                        strict=True):
        assert (cells["family"], cells["mean difference (points)"]) == (f["family"], f"{f['mean_difference_pts']:+.1f}")
        assert cells["wins / ties / losses"] == f"{f['wins']} / {f['ties']} / {f['losses']}"
        assert cells["mean CKA between members"] == f"{f['member_cka']:.3f}"
    seeds = seeds_frame(rows, "fewshot")
    fewshot = PROBES.get("fewshot").title or "fewshot"
    assert [c["single top-1"].split(" ±")[0] for c in _table(doc, fewshot)] == [f"{x:.1f}" for x in seeds["single_top1_pct"]]
    assert len(_table(doc, "budgets")) == len(budget_frame(rows)) == 3
    assert len(_table(doc, "member diversity")) == len(diversity_frame(rows, sims)) == 3
    raw = every_row_table(rows, raw=True)
    every = every_row_frame(rows)
    assert [r[raw.header.index("top1")] for r in raw.rows] == ["" if np.isnan(x) else f"{x:.6f}" for x in every["top1"]]


def test_the_report_command_does_not_import_pandas():
    code = ("import sys, zoo_survey, zoo_survey.cli, zoo_survey.results.report; "
            "assert 'pandas' not in sys.modules and 'zoo_survey.results.analysis' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_heat_maps_star_is_the_tables_adjusted_verdict():
    """A difference with McNemar p = 0.039 among others is not significant once BH-adjusted across the report: the heat
    map's star follows the adjusted q (the comparison table's verdict), not the raw p (it did before)."""
    import dataclasses

    from zoo_survey.results.analysis import comparison_lines
    from zoo_survey.results.plots import heatmap_stars

    rows, _ = survey_rows()
    base, ens = _row(rows, "alpha", "cifar10", "baseline"), _row(rows, "alpha", "cifar10", "ensemble")
    labels, preds = base.test_labels, base.predictions.copy()
    wrong, right = np.flatnonzero(preds != labels), np.flatnonzero(preds == labels)
    preds[wrong[:10]] = labels[wrong[:10]]  # 10 images only the ensemble gets right, 2 only the single: p = 0.0386
    preds[right[:2]] = (labels[right[:2]] + 1) % 5
    top1 = float((preds == labels).mean())
    rows = [dataclasses.replace(r, predictions=preds, top1=top1) if r is ens else r for r in rows]
    frame = comparison_frame(rows).set_index(["family", "dataset", "probe"])
    line = frame.loc[("alpha", "cifar10", "linear")]
    assert line["mcnemar_p"] == pytest.approx(0.0386, abs=1e-4) and line["mcnemar_q"] >= 0.05
    stars = heatmap_stars(comparison_lines(rows), "linear")
    assert stars[("alpha", "cifar10")] is False and line["verdict"] == "not significant"
    assert stars[("alpha", "digits")] is True  # p = 2.5e-7 survives the adjustment
