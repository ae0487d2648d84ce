"""The report's analysis as data: pandas DataFrames of numbers, computed from the store's rows only.

Each ``*_frame`` function returns one table of the report as numbers (accuracies in percent,
differences and their 95% intervals in percentage points, p-values and CKA as plain floats,
missing values as NaN or None), never as formatted text; :mod:`zoo_survey.results.report`
renders these frames to Markdown, HTML, TSV, CSV and JSON. A verdict is one of
:data:`VERDICTS`, decided by the test whose p is shown, after its multiple-comparison adjustment:
McNemar's exact p with Benjamini–Hochberg q-values across every paired difference of the report
(per dataset), Holm across a family's datasets (wins / ties / losses), and Holm across the
families for each family's two-level bootstrap p (docs/statistics.md).

- :func:`answer_frame`: the answer per family, across datasets;
- :func:`comparison_frame`: single against ensemble per (family, dataset, probe);
- :func:`budget_frame`, :func:`diversity_frame`: each side's costs, and the members' CKA beside the gain;
- :func:`seeds_frame`: probes scored over seeds (few-shot), means with t intervals;
- :func:`ranking_frame`: a score-only probe (LogME) against ``rank_against``'s top-1;
- :func:`revisions_frame`, :func:`ran_on_frame`, :func:`every_row_frame`: provenance and every latest row
  (the last keeps the store's units: fractions, as ``report.csv`` does).

The comparisons carry the costly paired intervals, so each frame built from them has an
``*_of`` twin taking :func:`comparison_lines` that a caller computes once.

>>> answer_frame(rows).columns.tolist()                    # doctest: +SKIP
['pretraining', 'family', 'probe', 'datasets', 'mean_difference_pts', 'ci_low_pts', 'ci_high_pts', ...]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ..probes import PROBES
from ..probes.protocol import Presentation, ProbeInfo
from .stats import (
    ALPHA,
    PairedDifference,
    PooledDifference,
    bh,
    crossed_difference,
    equivalent,
    holm,
    kendall_tau,
    paired_difference,
    paired_interval,
    pooled_difference,
    t_interval,
)
from .stats import verdict as test_verdict
from .store import ResultRow, SimilarityRow

if TYPE_CHECKING:  # pandas loads with the first frame, so `zoo-survey --help` stays quick
    import pandas as pd

VERDICTS = ("ensemble better", "not significant", "equivalent", "single better")
# The width-matched controls (issue 19; survey/plan.py CONTROL_ROLES): column prefix -> the rows' role. Each is the
# concatenation projected to the single's feature width, paired against the single like the ensemble is.
CONTROLS = {"pca": "width-pca", "random": "width-random"}


FLOAT_SUFFIXES = ("_pct", "_pts", "_p", "cka", "diversity", "_m", "gmacs", "seconds", "emacs", "score", "tau")


def _frame(records: list[dict[str, Any]], columns: Sequence[str], ints: Sequence[str] = (),
           categories: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """A frame with exactly ``columns`` (also when empty): numbers (by name, :data:`FLOAT_SUFFIXES`) as floats with
    NaN for missing, ``ints`` as nullable integers, ``categories`` as categoricals (missing: NaN)."""
    import pandas as pd

    df = pd.DataFrame.from_records(records, columns=list(columns))
    for c in columns:
        if c.endswith(FLOAT_SUFFIXES):
            df[c] = df[c].astype(float)  # None -> NaN, also in a column with no number at all
    for c in ints:
        df[c] = df[c].astype("Int64")
    for c, cats in (categories or {}).items():
        df[c] = pd.Categorical(df[c], categories=list(cats))
    return df


def _pts(x: float | None) -> float:
    """A fraction in percent (points for a difference); NaN for missing."""
    return float("nan") if x is None else 100 * x


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _get(d: PairedDifference | PooledDifference | None, field: str) -> float | None:
    """``d.<field>`` (delta, low, high, p_value), or None without a paired difference."""
    return None if d is None else float(getattr(d, field))


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def verdict_of(d: PairedDifference | None, p: float | None = None, margin: float | None = None) -> str | None:
    """One of :data:`VERDICTS` by ``p`` (default: ``d``'s own McNemar p; pass the adjusted one), and ``equivalent``
    when not significant and the TOST at ``margin`` (a fraction; None: off) passes; None without paired predictions."""
    if d is None:
        return None
    v = test_verdict(d.delta, d.p_value if p is None else p)
    if v == "tie":
        return "equivalent" if margin is not None and equivalent(d, margin) else "not significant"
    return "ensemble better" if v == "win" else "single better"


def _adjusted(values: Sequence[float | None], adjust: Any) -> list[float | None]:
    """``adjust`` (:func:`stats.holm` / :func:`stats.bh`) over the values present; None stays None."""
    present = [v for v in values if v is not None]
    done = iter(adjust(present))
    return [None if v is None else next(done) for v in values]


# --------------------------------------------------------------------------- rows and comparisons


def latest_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """Keep the newest row per (family, comparison, dataset, probe, setting, seed): a rerun with new inputs supersedes."""
    best: dict[tuple, ResultRow] = {}
    for r in rows:
        k = (r.family, r.comparison, r.dataset, r.probe, r.setting, r.seed)
        if k not in best or r.created_at > best[k].created_at:
            best[k] = r
    return sorted(best.values(), key=lambda r: (r.family, r.dataset, r.probe, r.setting, r.seed or 0, r.role, r.comparison))


def presentation(row: ResultRow) -> Presentation | None:
    """How ``row`` is shown: its probe's declaration; for a probe no longer registered, read off the row."""
    probe = PROBES.find(row.probe)
    if probe is not None:
        return probe.presentation
    if row.top1 is None:
        return None  # a score with nothing to rank it against: in the every-row table only
    return "over-seeds" if row.setting else "paired"


def natural_key(text: str) -> tuple:
    """Sort "5-shot" before "10-shot": digit runs compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


@dataclass(frozen=True)
class ComparisonLine:
    """Baseline against ensemble on one (family, dataset, probe); ``None`` marks a missing side."""

    family: str
    dataset: str
    probe: str
    baseline: ResultRow | None
    ensemble: ResultRow | None  # concatenated features
    members: tuple[ResultRow, ...]
    averaged: ResultRow | None = None  # output averaging of per-member probes
    width_pca: ResultRow | None = None  # the concatenation projected to the single's width: PCA (train only)
    width_random: ResultRow | None = None  # ... a seeded Gaussian projection

    def control(self, how: str) -> ResultRow | None:
        """The width-matched control row ``how`` (a key of :data:`CONTROLS`), or None."""
        return {"pca": self.width_pca, "random": self.width_random}[how]

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.ensemble is None or self.baseline.top1 is None or self.ensemble.top1 is None:
            return None
        return self.ensemble.top1 - self.baseline.top1

    @cached_property
    def paired(self) -> PairedDifference | None:
        """Ensemble (concatenated) minus single, paired over the test images."""
        return pair(self.baseline, self.ensemble)

    @cached_property
    def averaged_paired(self) -> PairedDifference | None:
        """Ensemble (averaged outputs) minus single, paired over the test images."""
        return pair(self.baseline, self.averaged)

    @cached_property
    def controls_paired(self) -> dict[str, PairedDifference | None]:
        """Each width-matched control minus single, paired over the test images (the gain that survives matching)."""
        return {how: pair(self.baseline, self.control(how)) for how in CONTROLS}


def pair(single: ResultRow | None, other: ResultRow | None) -> PairedDifference | None:
    """``other`` minus ``single`` image by image; None unless both kept predictions on the same test images."""
    if single is None or other is None or single.test_key != other.test_key:
        return None
    a, b = single.correct, other.correct
    if a is None or b is None or len(a) != len(b):
        return None
    return paired_difference(a, b)


def comparison_lines(rows: Sequence[ResultRow]) -> list[ComparisonLine]:
    """One line per (family, dataset, probe) of the ``paired`` probes."""
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in latest_rows(rows):
        if presentation(r) == "paired" and not r.setting and r.top1 is not None:
            groups.setdefault((r.family, r.dataset, r.probe), []).append(r)
    lines = []
    for (fam, ds, probe), rs in sorted(groups.items()):
        def newest(role: str, rs: list[ResultRow] = rs) -> ResultRow | None:
            return max((r for r in rs if r.role == role), key=lambda r: r.created_at, default=None)

        ens = newest("ensemble")
        wanted = set(ens.members) if ens else set()
        members = tuple(r for r in rs if r.role == "member" and (not wanted or r.comparison in wanted))
        lines.append(ComparisonLine(fam, ds, probe, newest("baseline"), ens, members, newest("ensemble-avg"),
                                    newest(CONTROLS["pca"]), newest(CONTROLS["random"])))
    return lines


def primary_probe(lines: Sequence[ComparisonLine]) -> str | None:
    """The paired probe the answer, budgets and plots use: the first registered one with results (linear by default)."""
    present = {ln.probe for ln in lines}
    for p in PROBES:
        if p.name in present and p.presentation == "paired":
            return p.name
    return min(present) if present else None


def cka_of(line: ComparisonLine, similarity: Sequence[SimilarityRow]) -> tuple[float | None, float | None]:
    """Mean CKA between the ensemble's members, and between each member and the single, on this dataset."""
    if line.ensemble is None or line.baseline is None:
        return None, None
    members, single = set(line.ensemble.members), line.baseline.comparison
    among, to_single = [], []
    for s in similarity:
        if s.family != line.family or s.dataset != line.dataset or s.cka != s.cka:
            continue
        if s.a in members and s.b in members:
            among.append(s.cka)
        elif {s.a, s.b} & members and single in (s.a, s.b):
            to_single.append(s.cka)
    return _mean(among), _mean(to_single)


# --------------------------------------------------------------------------- paired: single vs ensemble

COMPARISON_COLUMNS = (
    "family", "dataset", "probe", "single", "ensemble", "ensemble_members", "averaged",
    "single_top1_pct", "ensemble_top1_pct", "averaged_top1_pct", "best_member_top1_pct",
    "difference_pts", "ci_low_pts", "ci_high_pts", "mcnemar_p", "mcnemar_q", "detectable_pts", "verdict",
    "averaged_difference_pts", "averaged_ci_low_pts", "averaged_ci_high_pts", "averaged_mcnemar_p", "averaged_mcnemar_q",
    "averaged_verdict",
    "single_params_m", "ensemble_params_m", "single_gmacs", "ensemble_gmacs", "single_feature_dim", "ensemble_feature_dim",
    *(f"{how}_{c}" for how in CONTROLS for c in ("top1_pct", "feature_dim", "difference_pts", "ci_low_pts", "ci_high_pts",
                                                  "mcnemar_p", "mcnemar_q", "verdict")),
)


def comparison_frame(rows: Sequence[ResultRow], margin: float | None = None) -> pd.DataFrame:
    """Single against ensemble, one row per (family, dataset, probe) of the paired probes (see :func:`comparison_of`)."""
    return comparison_of(comparison_lines(rows), margin)


def comparison_of(lines: Sequence[ComparisonLine], margin: float | None = None) -> pd.DataFrame:
    """Per line: each side's id and top-1 (percent), ensemble (concatenated) minus single in points with its paired
    95% interval (Newcombe), McNemar p, its Benjamini–Hochberg q across every paired difference of ``lines``
    (concatenated and averaged), the smallest difference the test images could detect (80% power) and the verdict
    (by q; ``equivalent`` within ``margin``, a fraction, by TOST), the same for averaged outputs, the best member,
    and each side's costs; then per width-matched control (``pca_*``, ``random_*``: the concatenation projected to the
    single's width) its top-1, width, and its difference to the single with interval, p, q (in the same BH family) and
    verdict. ``difference_pts`` is of the rows' top-1; the interval and p-value pair their predictions
    image by image (NaN without them). A missing side is None (its numbers NaN)."""
    ps = [_get(d, "p_value") for ln in lines for d in (ln.paired, ln.averaged_paired, *ln.controls_paired.values())]
    qs = iter(_adjusted(ps, bh))
    out = []
    for ln in lines:
        q, qa = next(qs), next(qs)
        controls: dict[str, Any] = {}
        for how, dc in ln.controls_paired.items():
            qc, r = next(qs), ln.control(how)
            controls.update({
                f"{how}_top1_pct": _pts(r.top1 if r else None), f"{how}_feature_dim": r.feature_dim if r else None,
                f"{how}_difference_pts": _pts(_get(dc, "delta")), f"{how}_ci_low_pts": _pts(_get(dc, "low")),
                f"{how}_ci_high_pts": _pts(_get(dc, "high")), f"{how}_mcnemar_p": _num(_get(dc, "p_value")),
                f"{how}_mcnemar_q": _num(qc), f"{how}_verdict": verdict_of(dc, qc, margin),
            })
        b, e, avg, d, da = ln.baseline, ln.ensemble, ln.averaged, ln.paired, ln.averaged_paired
        out.append({
            "family": ln.family, "dataset": ln.dataset, "probe": ln.probe,
            "single": b.comparison if b else None, "ensemble": e.comparison if e else None,
            "ensemble_members": tuple(e.members) if e else None, "averaged": avg.comparison if avg else None,
            "single_top1_pct": _pts(b.top1 if b else None), "ensemble_top1_pct": _pts(e.top1 if e else None),
            "averaged_top1_pct": _pts(avg.top1 if avg else None),
            "best_member_top1_pct": _pts(max((m.top1 for m in ln.members if m.top1 is not None), default=None)),
            "difference_pts": _pts(ln.delta), "ci_low_pts": _pts(_get(d, "low")), "ci_high_pts": _pts(_get(d, "high")),
            "mcnemar_p": _num(_get(d, "p_value")), "mcnemar_q": _num(q), "detectable_pts": _pts(_get(d, "detectable")),
            "verdict": verdict_of(d, q, margin),
            "averaged_difference_pts": _pts(_get(da, "delta")), "averaged_ci_low_pts": _pts(_get(da, "low")),
            "averaged_ci_high_pts": _pts(_get(da, "high")), "averaged_mcnemar_p": _num(_get(da, "p_value")),
            "averaged_mcnemar_q": _num(qa), "averaged_verdict": verdict_of(da, qa, margin),
            "single_params_m": b.params_m if b else None, "ensemble_params_m": e.params_m if e else None,
            "single_gmacs": b.gflops if b else None, "ensemble_gmacs": e.gflops if e else None,
            "single_feature_dim": b.feature_dim if b else None, "ensemble_feature_dim": e.feature_dim if e else None,
            **controls,
        })
    return _frame(out, COMPARISON_COLUMNS,
                  ints=("single_feature_dim", "ensemble_feature_dim", *(f"{how}_feature_dim" for how in CONTROLS)),
                  categories={"verdict": VERDICTS, "averaged_verdict": VERDICTS,
                              **{f"{how}_verdict": VERDICTS for how in CONTROLS}})


ANSWER_COLUMNS = ("pretraining", "family", "probe", "datasets", "mean_difference_pts", "ci_low_pts", "ci_high_pts",
                  "bootstrap_p", "p_holm", "detectable_pts", "verdict", "wins", "ties", "losses", "member_cka",
                  "member_single_cka",
                  *(f"{how}_{c}" for how in CONTROLS for c in ("difference_pts", "ci_low_pts", "ci_high_pts",
                                                                "bootstrap_p", "p_holm")))


def answer_frame(rows: Sequence[ResultRow], similarity: Sequence[SimilarityRow] = ()) -> pd.DataFrame:
    """The answer per family, one row each, grouped by pretraining kind (see :func:`answer_of`)."""
    return answer_of(comparison_lines(rows), similarity)


def answer_of(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow] = ()) -> pd.DataFrame:
    """Per family, on the primary paired probe: the ensemble's mean gain over the single across its datasets (points),
    with the 95% interval of :func:`stats.pooled_difference` (NaN when a dataset lacks paired predictions) and its
    the bootstrap's two-sided p, that p Holm-adjusted across the families (which decides the verdict) and the
    smallest mean difference it could detect (80% power); the datasets won, tied and lost by McNemar's p Holm-adjusted
    across the family's datasets; and the mean linear CKA between the members and between each member and the single
    (means over datasets; NaN without similarity rows). Then, per width-matched control (``pca_*``, ``random_*``), the
    same pooled gain of the control over the single with its interval and Holm-adjusted p (across the families): how
    much of the gain survives when the concatenation is held to the single's width (NaN where a dataset lacks it)."""
    primary = primary_probe(lines)
    groups: dict[str, list[ComparisonLine]] = {}
    for ln in lines:
        if ln.probe == primary and ln.delta is not None:
            groups.setdefault(ln.family, []).append(ln)
    out = []
    for fam, lns in groups.items():
        pairs = [ln.paired for ln in lns]
        low = high = p_boot = detect = None
        delta = float(sum(ln.delta for ln in lns if ln.delta is not None) / len(lns))
        if all(p is not None for p in pairs):
            outcomes = [(ln.baseline.correct, ln.ensemble.correct) for ln in lns if ln.baseline and ln.ensemble]
            pooled = pooled_difference([(a, b) for a, b in outcomes if a is not None and b is not None])
            delta, low, high, p_boot, detect = pooled.delta, pooled.low, pooled.high, pooled.p_value, pooled.detectable
        present = [p for p in pairs if p is not None]
        verdicts = [test_verdict(p.delta, q) for p, q in zip(present, holm([p.p_value for p in present]), strict=True)]
        ckas = [cka_of(ln, similarity) for ln in lns]
        kind = next((r.provenance.get("family_kind") for ln in lns for r in (ln.baseline, ln.ensemble) if r), None)
        member, single = _mean([m for m, _ in ckas if m is not None]), _mean([b for _, b in ckas if b is not None])
        controls: dict[str, Any] = {}
        for how in CONTROLS:
            got = [(ln.baseline.correct, c.correct) for ln in lns if ln.baseline and (c := ln.control(how))]
            both = [(a, b) for a, b in got if a is not None and b is not None]
            pc = pooled_difference(both) if both and len(both) == len(lns) else None
            controls.update({f"{how}_difference_pts": _pts(_get(pc, "delta")), f"{how}_ci_low_pts": _pts(_get(pc, "low")),
                             f"{how}_ci_high_pts": _pts(_get(pc, "high")), f"{how}_bootstrap_p": _num(_get(pc, "p_value"))})
        out.append({
            **controls,
            "pretraining": kind or "unstated", "family": fam, "probe": primary or "", "datasets": len(lns),
            "mean_difference_pts": _pts(delta), "ci_low_pts": _pts(low), "ci_high_pts": _pts(high),
            "bootstrap_p": _num(p_boot), "detectable_pts": _pts(detect),
            "wins": verdicts.count("win"), "ties": verdicts.count("tie"), "losses": verdicts.count("loss"),
            "member_cka": _num(member), "member_single_cka": _num(single),
        })
    boot_ps = [None if math.isnan(float(f["bootstrap_p"])) else float(f["bootstrap_p"]) for f in out]
    for how in CONTROLS:
        control_ps = [None if math.isnan(float(f[f"{how}_bootstrap_p"])) else float(f[f"{how}_bootstrap_p"]) for f in out]
        for f, q in zip(out, _adjusted(control_ps, holm), strict=True):
            f[f"{how}_p_holm"] = _num(q)
    for f, q in zip(out, _adjusted(boot_ps, holm), strict=True):
        f["p_holm"] = _num(q)
        f["verdict"] = None if q is None else "not significant" if not q < ALPHA else (
            "ensemble better" if float(f["mean_difference_pts"]) > 0 else "single better")
    out.sort(key=lambda f: (f["pretraining"], f["family"]))  # grouped by pretraining kind
    return _frame(out, ANSWER_COLUMNS, ints=("datasets", "wins", "ties", "losses"), categories={"verdict": VERDICTS})


DIVERSITY_COLUMNS = ("family", "dataset", "probe", "difference_pts", "ci_low_pts", "ci_high_pts", "member_cka",
                     "member_diversity", "member_single_cka")


def diversity_frame(rows: Sequence[ResultRow], similarity: Sequence[SimilarityRow] = ()) -> pd.DataFrame:
    """The gain beside how different the members are, per (family, dataset) (see :func:`diversity_of`)."""
    return diversity_of(comparison_lines(rows), similarity)


def diversity_of(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow]) -> pd.DataFrame:
    """Per (family, dataset) of the primary probe with any CKA: the gain and its interval (points), the mean CKA
    between members, ``member_diversity`` = 1 − that, and the mean CKA between each member and the single."""
    return _frame(diversity_records(lines, similarity), DIVERSITY_COLUMNS)


def diversity_records(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow]) -> list[dict[str, Any]]:
    """:func:`diversity_of`'s rows as dicts, numbers as floats (NaN: missing), without pandas: the report's plots
    start from them before pandas is imported."""
    primary = primary_probe(lines)
    out = []
    for ln in lines:
        if ln.probe != primary or ln.delta is None:
            continue
        among, to_single = cka_of(ln, similarity)
        if among is None and to_single is None:
            continue
        d = ln.paired
        out.append({
            "family": ln.family, "dataset": ln.dataset, "probe": ln.probe, "difference_pts": _pts(ln.delta),
            "ci_low_pts": _pts(_get(d, "low")), "ci_high_pts": _pts(_get(d, "high")),
            "member_cka": _num(among), "member_diversity": _num(None if among is None else 1 - among),
            "member_single_cka": _num(to_single),
        })
    return out


BUDGET_COLUMNS = (
    "family", "dataset", "probe", "single", "ensemble", "budget_by", "single_params_m", "ensemble_params_m",
    "single_gmacs", "ensemble_gmacs", "single_feature_dim", "ensemble_feature_dim", "single_extract_seconds",
    "ensemble_extract_seconds", "single_pretraining", "ensemble_pretraining", "single_pretrain_emacs",
    "ensemble_pretrain_emacs",
)


def budget_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """Each side's budget per (family, dataset) (see :func:`budget_of`)."""
    return budget_of(comparison_lines(rows))


def pretraining_of(r: ResultRow) -> str | None:
    """Each member's pretraining data and epochs or steps, e.g. ``in1k, 300 ep; in1k, 300 ep``; None when unrecorded."""
    parts = []
    for v in r.provenance.get("pretrain", {}).values():
        epochs = f", {v['epochs']:g} ep" if v.get("epochs") else ""
        steps = f", {v['steps']:,} steps" if v.get("steps") else ""
        parts.append(f"{v.get('data') or '?'}{epochs}{steps}")
    return "; ".join(parts) or None


def pretrain_emacs(r: ResultRow) -> float | None:
    """The row's pretraining compute (1e18 MACs, summed over members) when every member states it."""
    values = [v.get("emacs") for v in r.provenance.get("pretrain", {}).values()]
    return float(sum(values)) if values and all(v is not None for v in values) else None


def budget_of(lines: Sequence[ComparisonLine]) -> pd.DataFrame:
    """Per (family, dataset) of the primary probe with both sides: what the strategy matched first (``budget_by``:
    params, flops or pretrain; None when unstated), and each side's params (M), GMACs, feature dim, measured
    extraction seconds (summed over the members' cache entries), pretraining data, and pretraining compute (EMACs)."""
    primary = primary_probe(lines)
    out = []
    for ln in lines:
        if ln.probe != primary or ln.baseline is None or ln.ensemble is None:
            continue
        rec: dict[str, Any] = {"family": ln.family, "dataset": ln.dataset, "probe": ln.probe,
                               "single": ln.baseline.comparison, "ensemble": ln.ensemble.comparison,
                               "budget_by": ln.ensemble.provenance.get("budget_by") or None}
        for side, r in (("single", ln.baseline), ("ensemble", ln.ensemble)):
            rec.update({f"{side}_params_m": r.params_m, f"{side}_gmacs": r.gflops, f"{side}_feature_dim": r.feature_dim,
                        f"{side}_extract_seconds": r.extract_seconds, f"{side}_pretraining": pretraining_of(r),
                        f"{side}_pretrain_emacs": pretrain_emacs(r)})
        out.append(rec)
    return _frame(out, BUDGET_COLUMNS, ints=("single_feature_dim", "ensemble_feature_dim"))


# --------------------------------------------------------------------------- over-seeds: settings x seeds


@dataclass(frozen=True)
class SeedLine:
    """Baseline against ensemble at one setting: means with 95% t intervals over seeds, and the paired difference."""

    family: str
    dataset: str
    probe: str
    setting: str
    seeds: int
    baseline: tuple[float, float] | None  # (mean, half-width)
    ensemble: tuple[float, float] | None
    delta: tuple[float, float] | None  # paired over the seeds both sides have
    # the paired difference (delta, low, high) with a two-way bootstrap over seeds and test images
    # (:func:`stats.crossed_difference`); None without every common seed's predictions on the same test images
    crossed: tuple[float, float, float] | None = None


def seed_lines(rows: Sequence[ResultRow], probe: str) -> list[SeedLine]:
    groups: dict[tuple[str, str, str], dict[str, dict[int, ResultRow]]] = {}
    for r in latest_rows(rows):
        if r.probe == probe and r.role in ("baseline", "ensemble") and r.top1 is not None and r.seed is not None:
            groups.setdefault((r.family, r.dataset, r.setting), {}).setdefault(r.role, {})[r.seed] = r
    out = []
    for (fam, ds, setting), sides in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], natural_key(kv[0][2]))):
        br, er = sides.get("baseline", {}), sides.get("ensemble", {})
        b = {k: float(r.top1) for k, r in br.items() if r.top1 is not None}
        e = {k: float(r.top1) for k, r in er.items() if r.top1 is not None}
        common = sorted(set(b) & set(e))
        out.append(SeedLine(
            fam, ds, probe, setting, len(common),
            t_interval(list(b.values())) if b else None,
            t_interval(list(e.values())) if e else None,
            paired_interval([b[s] for s in common], [e[s] for s in common]) if common else None,
            _crossed([br[s] for s in common], [er[s] for s in common]),
        ))
    return out


def _crossed(single: Sequence[ResultRow], ensemble: Sequence[ResultRow]) -> tuple[float, float, float] | None:
    """Seeds x images: the two-way bootstrap of :func:`stats.crossed_difference`, when every seed of both sides kept
    its predictions on the same test images."""
    a, b = [r.correct for r in single], [r.correct for r in ensemble]
    if not a or len({r.test_key for r in (*single, *ensemble)}) != 1:
        return None
    got = [x for x in (*a, *b) if x is not None]
    if len(got) != len(a) + len(b) or len({len(x) for x in got}) != 1:
        return None
    return crossed_difference(np.stack(got[:len(a)]), np.stack(got[len(a):]))


SEEDS_COLUMNS = ("family", "dataset", "probe", "setting", "seeds", "single_top1_pct", "single_half_width_pct",
                 "ensemble_top1_pct", "ensemble_half_width_pct", "difference_pts", "difference_half_width_pts",
                 "difference_ci_low_pts", "difference_ci_high_pts")


def seeds_frame(rows: Sequence[ResultRow], probe: str | None = None) -> pd.DataFrame:
    """Per (family, dataset, setting) of ``probe`` (default: every probe presented over seeds, in registry order):
    the seeds both sides have, each side's mean top-1 over its seeds (percent) with the half-width of its 95% t
    interval, and the difference paired over the common seeds (points) with the half-width of its t interval over
    seeds (shot sampling only) and ``difference_ci_*``: its 95% interval from a two-way bootstrap over seeds and test
    images (:func:`stats.crossed_difference`; NaN without stored predictions). A half-width is NaN for one seed; a mean
    is NaN for a missing side."""
    if probe is None:
        present = {r.probe for r in rows}
        probes = [p.name for p in PROBES if p.presentation == "over-seeds" and p.name in present]
    else:
        probes = [probe]
    out = []
    for name in probes:
        for ln in seed_lines(rows, name):
            rec: dict[str, Any] = {"family": ln.family, "dataset": ln.dataset, "probe": ln.probe, "setting": ln.setting,
                                   "seeds": ln.seeds}
            for col, ci in (("single_top1_pct", ln.baseline), ("ensemble_top1_pct", ln.ensemble),
                            ("difference_pts", ln.delta)):
                half = col.replace("top1", "half_width") if "top1" in col else "difference_half_width_pts"
                rec[col], rec[half] = (_pts(None), _pts(None)) if ci is None else (_pts(ci[0]), _pts(ci[1]))
            rec["difference_ci_low_pts"] = _pts(ln.crossed[1] if ln.crossed else None)
            rec["difference_ci_high_pts"] = _pts(ln.crossed[2] if ln.crossed else None)
            out.append(rec)
    return _frame(out, SEEDS_COLUMNS, ints=("seeds",))


# --------------------------------------------------------------------------- ranking: scores against a probe's top-1

RANKING_COLUMNS = ("family", "dataset", "probe", "model", "score", "rank_against", "rank_against_top1_pct",
                   "kendall_tau", "models_compared")


def ranking_frame(rows: Sequence[ResultRow], probe: str | ProbeInfo) -> pd.DataFrame:
    """One row per (family, dataset, model) scored by the ``ranking`` probe ``probe``, best score first within each
    (family, dataset): the score, the model's top-1 on ``rank_against`` (percent, NaN without one), and per
    (family, dataset), Kendall's tau between the two over the ``models_compared`` models that have both (NaN below two)."""
    p = PROBES.info(probe) if isinstance(probe, str) else probe
    scores: dict[tuple[str, str], dict[str, float]] = {}
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for r in latest_rows(rows):
        if r.probe == p.name and r.score is not None:
            scores.setdefault((r.family, r.dataset), {})[r.comparison] = r.score
        elif r.probe == p.rank_against and not r.setting and r.top1 is not None:
            acc.setdefault((r.family, r.dataset), {})[r.comparison] = r.top1
    out = []
    for key, sc in sorted(scores.items()):
        top1 = acc.get(key, {})
        both = sorted(set(sc) & set(top1))
        tau = kendall_tau([sc[c] for c in both], [top1[c] for c in both])
        for c, v in sorted(sc.items(), key=lambda kv: -kv[1]):
            out.append({"family": key[0], "dataset": key[1], "probe": p.name, "model": c, "score": v,
                        "rank_against": p.rank_against, "rank_against_top1_pct": _pts(top1.get(c)),
                        "kendall_tau": _num(tau), "models_compared": len(both)})
    return _frame(out, RANKING_COLUMNS, ints=("models_compared",))


# --------------------------------------------------------------------------- provenance and every row


def revisions_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """Every checkpoint's and dataset's resolved revision (hub commit or content digest) in the latest rows, with how
    many rows each produced (columns kind, id, revision, rows). Two revisions of one id (the upstream changed between
    runs) are two rows: results of different revisions are never merged silently."""
    seen: dict[tuple[str, str, str], int] = {}
    for r in latest_rows(rows):
        for cid, rev in r.provenance.get("revisions", {}).items():
            seen[("checkpoint", cid, rev)] = seen.get(("checkpoint", cid, rev), 0) + 1
        rev = r.provenance.get("dataset_revision") or f"data:{r.provenance.get('dataset_fingerprint', '?')}"
        seen[("dataset", r.dataset, rev)] = seen.get(("dataset", r.dataset, rev), 0) + 1
    return _frame([{"kind": k, "id": i, "revision": rev, "rows": n} for (k, i, rev), n in sorted(seen.items())],
                  ("kind", "id", "revision", "rows"), ints=("rows",))


def ran_on_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """Rows probed on a Ray cluster, per node (``provenance["ran_on"]``): host, node id, the probes run there (sorted
    tuple) and how many rows; empty for a run on one machine."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in latest_rows(rows):
        where = r.provenance.get("ran_on")
        if where:
            seen.setdefault((where["host"], where["node"]), []).append(r.probe)
    return _frame([{"host": host, "node": node, "probes": tuple(sorted(set(p))), "rows": len(p)}
                   for (host, node), p in sorted(seen.items())], ("host", "node", "probes", "rows"), ints=("rows",))


def numerics_of(r: ResultRow) -> str:
    """What could move a row's numbers on the same inputs, as one label: the probe's device, dtype, torch, fit threads
    and CPU ISA (``provenance["numerics"]``, issue 22) and the extraction's device and dtype; "unrecorded" parts for
    rows stored before zoo-survey recorded them."""
    n = r.provenance.get("numerics") or {}
    x = r.provenance.get("extract") or {}
    threads = n.get("fit_threads")
    return (f"probe {n.get('device', '?')} {n.get('dtype', '?')}, torch {n.get('torch', 'unrecorded')}, "
            f"{'?' if threads is None else threads} fit thread(s), {n.get('cpu_capability', '?')}; "
            f"extract {n.get('extract_device', '?')} {x.get('dtype', '?')}")


def mixed_numerics_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """Comparisons (family, dataset, probe, setting, seed: the rows the report sets side by side) whose latest rows
    were computed under different numerics (:func:`numerics_of`), one row per comparison and label with the models
    under it; empty when every comparison is uniform."""
    groups: dict[tuple, dict[str, list[str]]] = {}
    for r in latest_rows(rows):
        key = (r.family, r.dataset, r.probe, r.setting, -1 if r.seed is None else r.seed)
        groups.setdefault(key, {}).setdefault(numerics_of(r), []).append(r.comparison)
    out = [{"family": f, "dataset": d, "probe": p, "setting": st, "seed": None if sd == -1 else sd, "numerics": label,
            "comparisons": tuple(sorted(comps))}
           for (f, d, p, st, sd), by in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))) if len(by) > 1
           for label, comps in sorted(by.items())]
    return _frame(out, ("family", "dataset", "probe", "setting", "seed", "numerics", "comparisons"), ints=("seed",))


EVERY_ROW_COLUMNS = (
    "family", "dataset", "probe", "setting", "seed", "comparison", "role", "members", "lineage", "top1",
    "mean_per_class", "top5", "score", "hparams", "params_m", "gmacs", "feature_dim", "n_train", "n_val", "n_test",
    "extract_seconds", "warnings", "revisions", "vs_single", "vs_single_ci_low", "vs_single_ci_high", "mcnemar_p",
)


def every_row_frame(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """Every latest row in the store's units (accuracies and differences as fractions, as ``report.csv`` has them):
    its keys and scores, ``lineage`` per member ("?" when unrecorded), hyper-parameters and revisions as dicts, and,
    for every row but the single's, its paired difference to the single on the same test images (same family,
    dataset, probe, setting and seed) with the 95% interval and McNemar p (NaN without paired predictions)."""
    latest = latest_rows(rows)
    singles = {(r.family, r.dataset, r.probe, r.setting, r.seed): r for r in latest if r.role == "baseline"}
    out = []
    for r in latest:
        d = None if r.role == "baseline" else pair(singles.get((r.family, r.dataset, r.probe, r.setting, r.seed)), r)
        lineage = r.provenance.get("lineage", {})
        out.append({
            "family": r.family, "dataset": r.dataset, "probe": r.probe, "setting": r.setting, "seed": r.seed,
            "comparison": r.comparison, "role": r.role, "members": tuple(r.members),
            "lineage": tuple(lineage.get(m, "?") for m in r.members), "top1": r.top1, "mean_per_class": r.mean_per_class,
            "top5": r.top5, "score": r.score, "hparams": dict(r.hparams), "params_m": r.params_m, "gmacs": r.gflops,
            "feature_dim": r.feature_dim, "n_train": r.n_train, "n_val": r.n_val, "n_test": r.n_test,
            "extract_seconds": r.extract_seconds, "warnings": tuple(r.warnings),
            "revisions": dict(r.provenance.get("revisions", {})),
            "vs_single": _get(d, "delta"), "vs_single_ci_low": _get(d, "low"), "vs_single_ci_high": _get(d, "high"),
            "mcnemar_p": _get(d, "p_value"),
        })
    df = _frame(out, EVERY_ROW_COLUMNS, ints=("seed", "feature_dim", "n_train", "n_val", "n_test"))
    for c in ("top1", "mean_per_class", "top5", "score", "params_m", "gmacs", "extract_seconds", "vs_single",
              "vs_single_ci_low", "vs_single_ci_high", "mcnemar_p"):
        df[c] = df[c].astype(float)  # None -> NaN, also in a column with no number at all
    return df
