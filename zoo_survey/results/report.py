"""Report: reads the results store only, builds one :class:`~zoo_survey.document.Document`, writes it.

Per family, dataset and probe it sets the single baseline against the ensemble:
accuracies, the difference, each side's params and GMACs (multiply-accumulates). Where a probe's rows go is
the probe's own declaration (``presentation`` in :mod:`zoo_survey.probes.base`), never
its name:

- ``paired``: the single-vs-ensemble table, the budgets, the summary across architectures,
  and the plots (of the first such probe registered, the linear probe by default);
- ``over-seeds``: a section of means with t intervals over seeds and paired differences, and a curve plot;
- ``ranking``: a section ranking the models by score, with Kendall's tau against ``rank_against``.

The same document is rendered to Markdown, HTML, TSV and JSON; CSV is its every-row table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..document import Document, Section, Table, table_to_csv, to_html, to_json, to_markdown
from ..errors import ZooSurveyError, unknown
from ..files import atomic_write
from ..probes import PROBES
from ..probes.base import Presentation, Probe
from ..zoo.registry import within_budget
from .plots import write_plots
from .stats import PairedDifference, kendall_tau, paired_difference, paired_interval, pooled_difference, t_interval
from .store import ResultRow, SimilarityRow

CKA_ROWS_NOTE = "10,000 rows, a seeded subsample beyond"
FILE_FORMATS = ("md", "html", "csv", "json")  # written to <out>/report.<format>
PRINT_FORMATS = ("table", "tsv")  # printed to stdout
FORMATS = FILE_FORMATS + PRINT_FORMATS

INTRO = (
    "Single largest model against an ensemble of smaller ones: concatenated features (each member standardized "
    "and weighted equally; the difference column) and averaged outputs of per-member probes.",
    "Accuracies are test top-1 in percent; the difference is ensemble minus single, in points.",
)


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


# --------------------------------------------------------------------------- paired: single vs ensemble


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
        lines.append(ComparisonLine(fam, ds, probe, newest("baseline"), ens, members, newest("ensemble-avg")))
    return lines


def primary_probe(lines: Sequence[ComparisonLine]) -> str | None:
    """The paired probe the budgets and plots use: the first registered one with results (linear by default)."""
    present = {ln.probe for ln in lines}
    for p in PROBES:
        if p.name in present and p.presentation == "paired":
            return p.name
    return min(present) if present else None


def _pct(x: float | None) -> str:
    return "missing" if x is None else f"{100 * x:.1f}"


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def interval(d: PairedDifference | None) -> str:
    """``[-0.4, +2.2]`` in points, or ``n/a`` without paired predictions."""
    return "n/a" if d is None else f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def p_value(d: PairedDifference | None) -> str:
    if d is None:
        return "n/a"
    return f"{d.p_value:.2g}" if d.p_value >= 1e-4 else "<1e-4"


def verdict(d: PairedDifference | None) -> str:
    """``yes`` when the 95% interval excludes 0 (the only way a difference counts as significant)."""
    return "n/a" if d is None else ("yes" if d.significant else "no")


HEADLINE_HEADER = (
    "family", "dataset", "probe", "single", "single top-1", "ensemble", "ensemble top-1", "difference (points)",
    "95% CI", "McNemar p", "significant", "averaged top-1", "averaged − single [95% CI]", "best member top-1",
    "single params (M)", "ensemble params (M)", "single GMACs", "ensemble GMACs", "ensemble feature dim",
)


def headline_table(lines: Sequence[ComparisonLine]) -> Table:
    out = []
    for ln in lines:
        b, e, avg = ln.baseline, ln.ensemble, ln.averaged_paired
        best_member = max((m.top1 for m in ln.members if m.top1 is not None), default=None)
        out.append([
            ln.family, ln.dataset, ln.probe,
            b.comparison if b else "missing", _pct(b.top1 if b else None),
            " + ".join(e.members) if e else "missing", _pct(e.top1 if e else None),
            _delta(ln.delta), interval(ln.paired), p_value(ln.paired), verdict(ln.paired),
            _pct(ln.averaged.top1 if ln.averaged else None),
            "n/a" if avg is None else f"{100 * avg.delta:+.1f} {interval(avg)}", _pct(best_member),
            f"{b.params_m:.1f}" if b else "", f"{e.params_m:.1f}" if e else "",
            f"{b.gflops:.2f}" if b else "", f"{e.gflops:.2f}" if e else "",
            str(e.feature_dim) if e else "",
        ])
    return Table(HEADLINE_HEADER, out, title="single vs ensemble")


@dataclass(frozen=True)
class FamilySummary:
    """One family's answer on one paired probe: the mean gain over datasets with its interval, the datasets
    won, tied and lost by their intervals, and how alike the members are (mean linear CKA)."""

    family: str
    kind: str  # the family's pretraining kind (supervised, self-supervised, image-text, ...), as its YAML states it
    probe: str
    datasets: int
    delta: float
    low: float | None  # None when a dataset lacks paired predictions
    high: float | None
    wins: int
    ties: int
    losses: int
    member_cka: float | None  # mean over datasets of the mean CKA between ensemble members
    baseline_cka: float | None  # mean over datasets of the mean CKA between each member and the single


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


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


def family_summaries(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow] = ()) -> list[FamilySummary]:
    """Per family, for the primary paired probe: the across-datasets answer (see :func:`stats.pooled_difference`)."""
    primary = primary_probe(lines)
    groups: dict[str, list[ComparisonLine]] = {}
    for ln in lines:
        if ln.probe == primary and ln.delta is not None:
            groups.setdefault(ln.family, []).append(ln)
    out = []
    for fam, lns in groups.items():
        pairs = [ln.paired for ln in lns]
        low = high = None
        delta = float(sum(ln.delta for ln in lns if ln.delta is not None) / len(lns))
        if all(p is not None for p in pairs):
            outcomes = [(ln.baseline.correct, ln.ensemble.correct) for ln in lns if ln.baseline and ln.ensemble]
            delta, low, high = pooled_difference([(a, b) for a, b in outcomes if a is not None and b is not None])
        verdicts = [p.verdict for p in pairs if p is not None]
        ckas = [cka_of(ln, similarity) for ln in lns]
        kind = next((r.provenance.get("family_kind") for ln in lns for r in (ln.baseline, ln.ensemble) if r), None)
        out.append(FamilySummary(
            fam, kind or "unstated", primary or "", len(lns), delta, low, high, verdicts.count("win"), verdicts.count("tie"),
            verdicts.count("loss"), _mean([m for m, _ in ckas if m is not None]), _mean([b for _, b in ckas if b is not None]),
        ))
    return sorted(out, key=lambda f: (f.kind, f.family))  # grouped by pretraining kind


def _cka(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


SUMMARY_HEADER = ("pretraining", "family", "probe", "datasets", "mean difference (points)", "95% CI", "wins / ties / losses",
                  "mean CKA between members", "mean CKA members–single")


def summary_table(summaries: Sequence[FamilySummary]) -> Table:
    rows = []
    for f in summaries:
        ci = "n/a" if f.low is None or f.high is None else f"[{100 * f.low:+.1f}, {100 * f.high:+.1f}]"
        rows.append([f.kind, f.family, f.probe, str(f.datasets), f"{100 * f.delta:+.1f}", ci, f"{f.wins} / {f.ties} / {f.losses}",
                     _cka(f.member_cka), _cka(f.baseline_cka)])
    return Table(SUMMARY_HEADER, rows, title="across architectures, by pretraining kind")


DIVERSITY_HEADER = ("family", "dataset", "ensemble − single (points)", "95% CI", "mean CKA between members",
                    "1 − mean member CKA", "mean CKA members–single")


def diversity_points(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow]
                     ) -> list[tuple[str, float, float, float | None, float | None]]:
    """(family · dataset, 1 − mean member CKA, gain, interval) in points, for the diversity plot."""
    primary = primary_probe(lines)
    out = []
    for ln in lines:
        among = cka_of(ln, similarity)[0]
        if ln.probe == primary and ln.delta is not None and among is not None:
            p = ln.paired
            out.append((f"{ln.family} · {ln.dataset}", 1 - among, 100 * ln.delta,
                        None if p is None else 100 * p.low, None if p is None else 100 * p.high))
    return out


def diversity_table(lines: Sequence[ComparisonLine], similarity: Sequence[SimilarityRow]) -> Table:
    """Per (family, dataset) of the primary probe: the gain beside how different the members are."""
    primary = primary_probe(lines)
    rows = []
    for ln in lines:
        if ln.probe != primary or ln.delta is None:
            continue
        among, to_single = cka_of(ln, similarity)
        if among is None and to_single is None:
            continue
        rows.append([ln.family, ln.dataset, _delta(ln.delta), interval(ln.paired), _cka(among),
                     _cka(None if among is None else 1 - among), _cka(to_single)])
    return Table(DIVERSITY_HEADER, rows, title="member diversity")


def _budget_note(rows: Sequence[ResultRow]) -> str:
    sizes = sorted({p["input_size"] for r in rows for p in r.provenance.get("preprocessing", {}).values()})
    at = ", ".join(f"{s} px" for s in sizes) or "an unrecorded resolution"
    sources = {r.provenance.get("gflops", "registry, at native resolution") for r in rows}
    how = ("counted (multiply-accumulates per image) at the resolution features were extracted at"
           if sources == {"counted at the run's resolution"} else "from the registry at native resolution where not counted")
    return f"Features were extracted at {at}; GMACs are {how}; params are the registry's."


BUDGET_HEADER = ("family", "dataset", "params M (single / ensemble)", "GMACs (single / ensemble)",
                 "feature dim (single / ensemble)", "extraction s (single / ensemble)", "pretraining (single / ensemble)",
                 "what was matched")


def _pretraining(r: ResultRow) -> str:
    """Each member's pretraining data and epochs, and the summed pretraining compute when known."""
    parts = []
    for v in r.provenance.get("pretrain", {}).values():
        epochs = f", {v['epochs']:g} ep" if v.get("epochs") else ""
        steps = f", {v['steps']:,} steps" if v.get("steps") else ""
        parts.append(f"{v.get('data') or '?'}{epochs}{steps}")
    if not parts:
        return "not recorded"
    emacs = pretrain_emacs(r)
    return "; ".join(parts) + (f" ({emacs:.3g} EMAC)" if emacs is not None else "")


def pretrain_emacs(r: ResultRow) -> float | None:
    """The row's pretraining compute (1e18 MACs, summed over members) when every member states it."""
    values = [v.get("emacs") for v in r.provenance.get("pretrain", {}).values()]
    return float(sum(values)) if values and all(v is not None for v in values) else None


def _matched(b: ResultRow, e: ResultRow) -> str:
    """Which of the single's costs the ensemble stays within (what the strategy matched first), and by how much
    it exceeds the others."""
    costs: list[tuple[str, float, float]] = [("params", b.params_m, e.params_m), ("GMACs", b.gflops, e.gflops)]
    pb, pe = pretrain_emacs(b), pretrain_emacs(e)
    if pb is not None and pe is not None:
        costs.append(("pretraining compute", pb, pe))
    by = {"params": "params", "gmacs": "GMACs", "flops": "GMACs", "pretrain": "pretraining compute"}.get(e.provenance.get("budget_by") or "")
    costs.sort(key=lambda c: c[0] != by)  # the matched budget first
    within = [name for name, x, y in costs if within_budget(y, x)]
    over = [f"{name} {y / x:.2f}x" if x else f"{name} n/a" for name, x, y in costs if not within_budget(y, x)]
    text = "within the single's " + " and ".join(within) if within else ""
    text += ("; " if within and over else "") + ("over on " + ", ".join(over) if over else "")
    return f"budget by {by} (--budget-by): {text}" if by else text


def budget_table(lines: Sequence[ComparisonLine]) -> Table:
    """Per (family, dataset), for the primary probe: each side's budget, and what was matched."""
    primary = primary_probe(lines)
    out = []
    for ln in lines:
        if ln.probe != primary or ln.baseline is None or ln.ensemble is None:
            continue
        b, e = ln.baseline, ln.ensemble
        out.append([
            ln.family, ln.dataset, f"{b.params_m:.1f} / {e.params_m:.1f}", f"{b.gflops:.3g} / {e.gflops:.3g}",
            f"{b.feature_dim} / {e.feature_dim}", f"{b.extract_seconds or 0:.0f} / {e.extract_seconds or 0:.0f}",
            f"{_pretraining(b)} / {_pretraining(e)}", _matched(b, e),
        ])
    return Table(BUDGET_HEADER, out, title="budgets")


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


def seed_lines(rows: Sequence[ResultRow], probe: str) -> list[SeedLine]:
    groups: dict[tuple[str, str, str], dict[str, dict[int, float]]] = {}
    for r in latest_rows(rows):
        if r.probe == probe and r.role in ("baseline", "ensemble") and r.top1 is not None and r.seed is not None:
            groups.setdefault((r.family, r.dataset, r.setting), {}).setdefault(r.role, {})[r.seed] = r.top1
    out = []
    for (fam, ds, setting), sides in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], natural_key(kv[0][2]))):
        b, e = sides.get("baseline", {}), sides.get("ensemble", {})
        common = sorted(set(b) & set(e))
        out.append(SeedLine(
            fam, ds, probe, setting, len(common),
            t_interval(list(b.values())) if b else None,
            t_interval(list(e.values())) if e else None,
            paired_interval([b[s] for s in common], [e[s] for s in common]) if common else None,
        ))
    return out


def _ci(x: tuple[float, float] | None, signed: bool = False) -> str:
    if x is None:
        return "missing"
    mean, half = x
    body = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return body if half != half else f"{body} ± {100 * half:.1f}"  # nan half-width: a single seed


SEEDS_HEADER = ("family", "dataset", "setting", "seeds", "single top-1", "ensemble top-1", "difference (paired, points)")


def seeds_table(lines: Sequence[SeedLine]) -> Table:
    return Table(SEEDS_HEADER, [[ln.family, ln.dataset, ln.setting, str(ln.seeds), _ci(ln.baseline), _ci(ln.ensemble),
                                 _ci(ln.delta, signed=True)] for ln in lines])


# --------------------------------------------------------------------------- ranking: scores against a probe's top-1


def ranking_table(rows: Sequence[ResultRow], probe: type[Probe]) -> Table:
    """Per (family, dataset): each model's score, best first, and Kendall's tau against ``rank_against``'s top-1."""
    scores: dict[tuple[str, str], dict[str, float]] = {}
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for r in latest_rows(rows):
        if r.probe == probe.name and r.score is not None:
            scores.setdefault((r.family, r.dataset), {})[r.comparison] = r.score
        elif r.probe == probe.rank_against and not r.setting and r.top1 is not None:
            acc.setdefault((r.family, r.dataset), {})[r.comparison] = r.top1
    out = []
    for key, sc in sorted(scores.items()):
        both = sorted(set(sc) & set(acc.get(key, {})))
        tau = kendall_tau([sc[c] for c in both], [acc[key][c] for c in both])
        ranked = ", ".join(f"{c} {v:.3f}" for c, v in sorted(sc.items(), key=lambda kv: -kv[1]))
        out.append([key[0], key[1], ranked, "n/a" if tau is None else f"{tau:+.2f} ({len(both)} models)"])
    header = ("family", "dataset", f"{probe.name} score, best first", f"Kendall tau vs {probe.rank_against} top-1")
    return Table(header, out)


# --------------------------------------------------------------------------- provenance and every row


REVISION_HEADER = ("kind", "id", "revision", "rows")


def revision_table(rows: Sequence[ResultRow]) -> Table:
    """Every checkpoint's and dataset's resolved revision (hub commit or content digest) in the store's rows.

    Two revisions of one id (the upstream changed between runs) are listed separately, with
    how many rows each produced: results of different revisions are never merged silently.
    """
    seen: dict[tuple[str, str, str], int] = {}
    for r in latest_rows(rows):
        for cid, rev in r.provenance.get("revisions", {}).items():
            seen[("checkpoint", cid, rev)] = seen.get(("checkpoint", cid, rev), 0) + 1
        rev = r.provenance.get("dataset_revision") or f"data:{r.provenance.get('dataset_fingerprint', '?')}"
        seen[("dataset", r.dataset, rev)] = seen.get(("dataset", r.dataset, rev), 0) + 1
    return Table(REVISION_HEADER, [[k, i, rev, str(n)] for (k, i, rev), n in sorted(seen.items())], title="revisions")


def ran_on_table(rows: Sequence[ResultRow]) -> Table:
    """Rows probed on a Ray cluster, by node (``provenance["ran_on"]``); empty for a run on one machine."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in latest_rows(rows):
        where = r.provenance.get("ran_on")
        if where:
            seen.setdefault((where["host"], where["node"]), []).append(r.probe)
    return Table(("node", "host", "probes", "rows"),
                 [[f"{host}:{node[:6]}", host, ", ".join(sorted(set(p))), str(len(p))] for (host, node), p in sorted(seen.items())],
                 title="where it ran")


def chosen_hparams(r: ResultRow) -> str:
    """The probe's chosen hyper-parameters, e.g. ``C=0.0178`` or ``k=20``."""
    shown = {k: v for k, v in r.hparams.items() if k in ("C", "k")}
    return ", ".join(f"{k}={v:.3g}" for k, v in shown.items())


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


@dataclass(frozen=True)
class Column:
    """One column of the every-row table: its CSV name and raw value, and its label and text (Markdown, HTML)."""

    name: str
    raw: Callable[[ResultRow], Any]
    text: Callable[[ResultRow], str] | None = None
    label: str = ""


def _result(r: ResultRow) -> str:
    return _pct(r.top1) if r.top1 is not None else (f"score {r.score:.3f}" if r.score is not None else "")


def _revisions(r: ResultRow, width: int | None = None) -> str:
    return "; ".join(f"{k}={str(v)[:width]}" for k, v in r.provenance.get("revisions", {}).items())


ROW_COLUMNS = (
    Column("family", lambda r: r.family),
    Column("dataset", lambda r: r.dataset),
    Column("probe", lambda r: r.probe),
    Column("setting", lambda r: r.setting),
    Column("seed", lambda r: "" if r.seed is None else r.seed),
    Column("comparison", lambda r: r.comparison, label="model"),
    Column("role", lambda r: r.role),
    Column("members", lambda r: "+".join(r.members), lambda r: str(len(r.members))),
    Column("lineages", lambda r: "; ".join(f"{m}={r.provenance.get('lineage', {}).get(m, '?')}" for m in r.members),
           lambda r: ", ".join(r.provenance.get("lineage", {}).get(m, "?") for m in r.members), "lineage"),
    Column("top1", lambda r: _num(r.top1), _result, "top-1"),
    Column("mean_per_class", lambda r: _num(r.mean_per_class), lambda r: _pct(r.mean_per_class), "mean per-class"),
    Column("top5", lambda r: _num(r.top5), lambda r: "" if r.top5 is None else _pct(r.top5), "top-5"),
    Column("score", lambda r: _num(r.score), lambda r: "" if r.score is None else f"{r.score:.3f}"),
    Column("chosen", chosen_hparams),
    Column("params_m", lambda r: r.params_m, lambda r: f"{r.params_m:.1f}", "params (M)"),
    Column("gmacs", lambda r: r.gflops, lambda r: f"{r.gflops:.2f}", "GMACs"),  # the store keeps the name gflops
    Column("feature_dim", lambda r: r.feature_dim, label="feature dim"),
    Column("n_train", lambda r: r.n_train, label="train"),
    Column("n_val", lambda r: r.n_val, label="val"),
    Column("n_test", lambda r: r.n_test, label="test"),
    Column("extract_seconds", lambda r: r.extract_seconds, lambda r: f"{r.extract_seconds or 0:.1f}", "extraction s"),
    Column("warnings", lambda r: "; ".join(r.warnings)),
    Column("revisions", _revisions, lambda r: _revisions(r, 19)),
)


def _num_or_blank(x: float | None) -> Any:
    return "" if x is None else round(x, 6)


# Each row against the single on the same test images (same family, dataset, probe, setting, seed).
PAIRED_COLUMNS = (
    ("vs_single", "vs single (points)", lambda d: d.delta, lambda d: f"{100 * d.delta:+.1f}"),
    ("vs_single_ci_low", "95% CI", lambda d: d.low, interval),
    ("vs_single_ci_high", "", lambda d: d.high, None),
    ("mcnemar_p", "McNemar p", lambda d: d.p_value, p_value),
)


def every_row_table(rows: Sequence[ResultRow], raw: bool = False) -> Table:
    """Every latest row: CSV names and raw values, or labels and text for Markdown and HTML; one column list.
    Rows other than the single's also carry their paired difference to it (interval and McNemar p)."""
    latest = latest_rows(rows)
    singles = {(r.family, r.dataset, r.probe, r.setting, r.seed): r for r in latest if r.role == "baseline"}
    paired_cols = [c for c in PAIRED_COLUMNS if raw or c[3] is not None]
    cells = []
    for r in latest:
        d = None if r.role == "baseline" else pair(singles.get((r.family, r.dataset, r.probe, r.setting, r.seed)), r)
        row = [c.raw(r) if raw or c.text is None else c.text(r) for c in ROW_COLUMNS]
        for _, _, value, text in paired_cols:
            row.append("" if d is None else (_num_or_blank(value(d)) if raw or text is None else text(d)))
        cells.append(row)
    header = tuple(c.name if raw else (c.label or c.name) for c in ROW_COLUMNS)
    header += tuple(name if raw else label for name, label, _, _ in paired_cols)
    return Table(header, cells, title="every row")


# --------------------------------------------------------------------------- the document


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


SUMMARY_TEXT = (
    "The answer per family: the ensemble's mean gain over the single across datasets ({probe} probe), with a 95% "
    "interval from a two-level bootstrap (datasets drawn with replacement, then each drawn dataset's test images, "
    "paired); the datasets the ensemble wins, ties and loses by each dataset's own 95% interval; and how alike the "
    "members are (mean linear CKA, debiased, on test features; 1 = the same representation up to rotation and scale)."
)
HEADLINE_TEXT = (
    "Each difference is paired over the same test images: its 95% interval is a paired bootstrap (percentile, 9,999 "
    "resamples, seeded) and its p-value McNemar's exact test on the images one side gets right and the other wrong. "
    "A difference is significant only when its interval excludes 0."
)


def build_report(rows: Sequence[ResultRow], plots: Sequence[Path] = (), similarity: Sequence[SimilarityRow] = (),
                 lines: Sequence[ComparisonLine] | None = None) -> Document:
    """The whole report as one document (every format renders this); ``lines``: :func:`comparison_lines` of
    ``rows`` when the caller has them (their paired intervals are the costly part)."""
    if not rows:
        raise ZooSurveyError("the results store has no rows yet; run `zoo-survey run` first")
    lines = comparison_lines(rows) if lines is None else lines
    summaries = family_summaries(lines, similarity)
    sections = [Section("Across architectures", (SUMMARY_TEXT.format(probe=primary_probe(lines) or "paired"),),
                        (summary_table(summaries),))]
    sections.append(Section("Single vs ensemble", (HEADLINE_TEXT,), (headline_table(lines),)))
    budgets = budget_table(lines)
    if budgets.rows:
        sections.append(Section("Budgets", ("Extraction seconds are measured, summed over the members' cache entries "
                                             "of that dataset.",), (budgets,)))
    diversity = diversity_table(lines, similarity)
    if diversity.rows:
        sections.append(Section("Why: member diversity", (
            "Supervised pretraining keeps the features its task needed; independently trained members may keep "
            "different ones. Linear CKA (debiased, Kornblith et al. 2019; Nguyen et al. 2021) on each dataset's "
            f"test features (at most {CKA_ROWS_NOTE}) measures how alike two models' representations are: the lower "
            "the members' mutual CKA, the more the ensemble can add.",), (diversity,)))
    present = {r.probe for r in rows}
    for probe in PROBES:
        if probe.name not in present:
            continue
        if probe.presentation == "over-seeds":
            sections.append(Section(probe.title or probe.name, (
                f"{_sentence(probe.summary)} Mean over seeds ± the 95% t interval; the difference is paired over seeds "
                "(same examples on both sides).",), (seeds_table(seed_lines(rows, probe.name)),)))
        elif probe.presentation == "ranking":
            sections.append(Section(probe.title or probe.name, (
                f"{_sentence(probe.summary)} Kendall's tau says how well the score ordered the models here.",),
                (ranking_table(rows, probe),)))
    if plots:
        sections.append(Section("Plots", figures=tuple(plots)))
    sections.append(Section("Revisions", ("The resolved commit (hub) or content digest of every input the results used.",),
                            (revision_table(rows),)))
    ran_on = ran_on_table(rows)
    if ran_on.rows:
        sections.append(Section("Where it ran", ("Rows probed on each node of the Ray cluster.",), (ran_on,)))
    sections.append(Section("Every row", tables=(every_row_table(rows),)))
    return Document("zoo-survey report", INTRO + (_budget_note(rows),), tuple(sections))


def write_report(rows: Sequence[ResultRow], out_dir: Path, fmt: str = "md",
                 similarity: Sequence[SimilarityRow] = ()) -> list[Path]:
    """Write ``report.<fmt>`` into ``out_dir`` atomically (plus ``plots/`` for md and html); return the paths."""
    if fmt not in FILE_FORMATS:
        raise unknown("report format", fmt, FORMATS)
    if not rows:
        raise ZooSurveyError("the results store has no rows yet; run `zoo-survey run` first")
    out_dir = Path(out_dir)
    plots: list[Path] = []
    if fmt == "csv":  # every row, nothing else: no document to build
        text = table_to_csv(every_row_table(rows, raw=True))
    else:
        lines = comparison_lines(rows)
        if fmt in ("md", "html"):
            plots = write_plots(latest_rows(rows), lines, primary_probe(lines), out_dir / "plots",
                                diversity_points(lines, similarity))
        doc = build_report(rows, plots, similarity, lines)
        if fmt == "md":
            text = to_markdown(doc, base=out_dir)
        elif fmt == "html":
            text = to_html(doc)
        else:
            text = to_json(doc, rows=[r.fields() for r in latest_rows(rows)], similarity=[s.__dict__ for s in similarity])
    path = out_dir / f"report.{fmt}"
    atomic_write(path, lambda f: f.write(text.encode()))
    return [path, *plots]
