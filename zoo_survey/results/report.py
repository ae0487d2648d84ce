"""Report: reads the results store only, builds one :class:`~zoo_survey.document.Document`, writes it.

Per family, dataset and probe it sets the single baseline against the ensemble:
accuracies, the difference, each side's params and GMACs (multiply-accumulates). Where a probe's rows go is
the probe's own declaration (``presentation`` in :mod:`zoo_survey.probes.base`), never
its name:

- ``paired``: the single-vs-ensemble table, the budgets, the summary across architectures,
  and the plots (of the first such probe registered, the linear probe by default);
- ``over-seeds``: a section of means with t intervals over seeds and paired differences, and a curve plot;
- ``ranking``: a section ranking the models by score, with Kendall's tau against ``rank_against``.

The numbers come from :mod:`zoo_survey.results.analysis` as data frames; this module only renders them
(numbers to text, frames to :class:`~zoo_survey.document.Table`). The same document is rendered to
Markdown, HTML, TSV and JSON; CSV is its every-row table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..document import Document, Section, Table, table_to_csv, to_html, to_json, to_markdown
from ..errors import ZooSurveyError, unknown
from ..files import atomic_write
from ..probes import PROBES
from ..probes.protocol import ProbeInfo
from ..zoo.flops import within_budget
from .analysis import (
    ComparisonLine,
    answer_of,
    budget_of,
    comparison_lines,
    comparison_of,
    diversity_of,
    diversity_records,
    every_row_frame,
    latest_rows,
    mixed_numerics_frame,
    primary_probe,
    ran_on_frame,
    ranking_frame,
    revisions_frame,
    seeds_frame,
)
from .plots import start_plots
from .store import ResultRow, SimilarityRow

if TYPE_CHECKING:
    import pandas as pd

CKA_ROWS_NOTE = "10,000 rows, a seeded subsample beyond"
FILE_FORMATS = ("md", "html", "csv", "json")  # written to <out>/report.<format>
PRINT_FORMATS = ("table", "tsv")  # printed to stdout
FORMATS = FILE_FORMATS + PRINT_FORMATS

INTRO = (
    "Single largest model against an ensemble of smaller ones: concatenated features (each member standardized "
    "and weighted equally; the difference column) and averaged outputs of per-member probes.",
    "Accuracies are test top-1 in percent; the difference is ensemble minus single, in points.",
)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts of Python values, with every missing value (NaN, pandas' NA) as None."""
    import pandas as pd

    def missing(x: Any) -> bool:
        return x is None or x is pd.NA or (isinstance(x, float) and x != x)

    return [{k: None if missing(v) else v for k, v in rec.items()} for rec in df.astype(object).to_dict("records")]


def _pct(x: float | None) -> str:
    """A percentage (already ×100) to one decimal; ``missing`` for none."""
    return "missing" if x is None else f"{x:.1f}"


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def _interval(low: float | None, high: float | None) -> str:
    """``[-0.4, +2.2]`` in points, or ``n/a`` without paired predictions."""
    return "n/a" if low is None or high is None else f"[{low:+.1f}, {high:+.1f}]"


def _p_value(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _significant(verdict: str | None, detectable: float | None = None, margin: float | None = None) -> str:
    """``yes`` when the verdict's (adjusted) p is below 0.05; otherwise what the test could have seen: ``no (could
    detect ≥ 1.2)`` in points, or ``equivalent (±1.0)`` when the TOST at the margin (points) passed."""
    if verdict is None:
        return "n/a"
    if verdict == "equivalent":
        return f"equivalent (±{margin:g})" if margin is not None else "equivalent"
    if verdict == "not significant":
        return "no" if detectable is None else f"no (could detect ≥ {detectable:.1f})"
    return "yes"


def _fixed(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _cka(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# --------------------------------------------------------------------------- paired: single vs ensemble


HEADLINE_HEADER = (
    "family", "dataset", "probe", "single", "single top-1", "ensemble", "ensemble top-1", "difference (points)",
    "95% CI", "McNemar p", "BH q", "significant", "averaged top-1", "averaged − single [95% CI]", "best member top-1",
    "single params (M)", "ensemble params (M)", "single GMACs", "ensemble GMACs", "ensemble feature dim",
    "width-matched PCA − single [95% CI] (q)", "width-matched random − single [95% CI] (q)",
)


def _control(c: dict[str, Any], how: str) -> str:
    """A width-matched control's difference to the single with its interval, BH q and width: ``+1.2 [-0.3, +2.6]
    (q 0.09; 1280 dims)``; ``n/a`` without the control's rows."""
    d = c[f"{how}_difference_pts"]
    if d is None:
        return "n/a"
    return (f"{d:+.1f} {_interval(c[f'{how}_ci_low_pts'], c[f'{how}_ci_high_pts'])} "
            f"(q {_p_value(c[f'{how}_mcnemar_q'])}; {c[f'{how}_feature_dim']} dims)")


def comparison_table(frame: pd.DataFrame, margin: float | None = None) -> Table:
    """:func:`analysis.comparison_frame` as the single-vs-ensemble table (``margin``: the equivalence margin, a fraction)."""
    shown = None if margin is None else 100 * margin
    out = []
    for c in _records(frame):
        avg = c["averaged_difference_pts"]
        out.append([
            c["family"], c["dataset"], c["probe"], c["single"] or "missing", _pct(c["single_top1_pct"]),
            " + ".join(c["ensemble_members"]) if c["ensemble_members"] is not None else "missing",
            _pct(c["ensemble_top1_pct"]), _delta(c["difference_pts"]), _interval(c["ci_low_pts"], c["ci_high_pts"]),
            _p_value(c["mcnemar_p"]), _p_value(c["mcnemar_q"]), _significant(c["verdict"], c["detectable_pts"], shown),
            _pct(c["averaged_top1_pct"]),
            "n/a" if avg is None else f"{avg:+.1f} {_interval(c['averaged_ci_low_pts'], c['averaged_ci_high_pts'])}",
            _pct(c["best_member_top1_pct"]), _fixed(c["single_params_m"], 1), _fixed(c["ensemble_params_m"], 1),
            _fixed(c["single_gmacs"], 2), _fixed(c["ensemble_gmacs"], 2),
            "" if c["ensemble_feature_dim"] is None else str(c["ensemble_feature_dim"]),
            _control(c, "pca"), _control(c, "random"),
        ])
    return Table(HEADLINE_HEADER, out, title="single vs ensemble")


def headline_table(lines: Sequence[ComparisonLine]) -> Table:
    """The single-vs-ensemble table of ``lines`` (:func:`analysis.comparison_lines`)."""
    return comparison_table(comparison_of(lines))


SUMMARY_HEADER = ("pretraining", "family", "probe", "datasets", "mean difference (points)", "95% CI", "p (Holm)",
                  "significant", "wins / ties / losses", "width-matched PCA: gain [95% CI] (p Holm)",
                  "width-matched random: gain [95% CI] (p Holm)", "mean CKA between members", "mean CKA members–single")


def _surviving(f: dict[str, Any], how: str) -> str:
    """The pooled gain of a width-matched control over the single: ``+0.4 [-1.0, +1.9] (p 0.6)``."""
    d = f[f"{how}_difference_pts"]
    if d is None:
        return "n/a"
    return f"{d:+.1f} {_interval(f[f'{how}_ci_low_pts'], f[f'{how}_ci_high_pts'])} (p {_p_value(f[f'{how}_p_holm'])})"


def summary_table(frame: pd.DataFrame) -> Table:
    """:func:`analysis.answer_frame` as the answer per family."""
    rows = []
    for f in _records(frame):
        rows.append([f["pretraining"], f["family"], f["probe"], str(f["datasets"]), f"{f['mean_difference_pts']:+.1f}",
                     _interval(f["ci_low_pts"], f["ci_high_pts"]), _p_value(f["p_holm"]),
                     _significant(f["verdict"], f["detectable_pts"]), f"{f['wins']} / {f['ties']} / {f['losses']}",
                     _surviving(f, "pca"), _surviving(f, "random"), _cka(f["member_cka"]), _cka(f["member_single_cka"])])
    return Table(SUMMARY_HEADER, rows, title="across architectures, by pretraining kind")


DIVERSITY_HEADER = ("family", "dataset", "ensemble − single (points)", "95% CI", "mean CKA between members",
                    "1 − mean member CKA", "mean CKA members–single")


def diversity_points(frame: pd.DataFrame | Sequence[dict[str, Any]]) -> list[tuple[str, float, float, float | None, float | None]]:
    """(family · dataset, 1 − mean member CKA, gain, interval) in points, for the diversity plot, from
    :func:`analysis.diversity_frame` or its records (:func:`analysis.diversity_records`, no pandas)."""
    records: list[dict[str, Any]] = [{k: None if isinstance(v, float) and v != v else v for k, v in d.items()}
                                     for d in frame] if isinstance(frame, list | tuple) else _records(frame)
    return [(f"{d['family']} · {d['dataset']}", d["member_diversity"], d["difference_pts"], d["ci_low_pts"], d["ci_high_pts"])
            for d in records if d["member_cka"] is not None]


def diversity_table(frame: pd.DataFrame) -> Table:
    """:func:`analysis.diversity_frame`: per (family, dataset), the gain beside how different the members are."""
    rows = [[d["family"], d["dataset"], _delta(d["difference_pts"]), _interval(d["ci_low_pts"], d["ci_high_pts"]),
             _cka(d["member_cka"]), _cka(d["member_diversity"]), _cka(d["member_single_cka"])] for d in _records(frame)]
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
BUDGET_BY = {"params": "params", "gmacs": "GMACs", "flops": "GMACs", "pretrain": "pretraining compute"}  # budget_by (flops: its old name)


def _pretraining(text: str | None, emacs: float | None) -> str:
    """Each member's pretraining data and epochs, and the summed pretraining compute when known."""
    if text is None:
        return "not recorded"
    return text + (f" ({emacs:.3g} EMAC)" if emacs is not None else "")


def _matched(b: dict[str, Any]) -> str:
    """Which of the single's costs the ensemble stays within (what the strategy matched first), and by how much
    it exceeds the others; ``b`` is a record of :func:`analysis.budget_frame`."""
    costs: list[tuple[str, float, float]] = [("params", b["single_params_m"], b["ensemble_params_m"]),
                                             ("GMACs", b["single_gmacs"], b["ensemble_gmacs"])]
    pb, pe = b["single_pretrain_emacs"], b["ensemble_pretrain_emacs"]
    if pb is not None and pe is not None:
        costs.append(("pretraining compute", pb, pe))
    by = BUDGET_BY.get(b["budget_by"] or "")
    costs.sort(key=lambda c: c[0] != by)  # the matched budget first
    within = [name for name, x, y in costs if within_budget(y, x)]
    over = [f"{name} {y / x:.2f}x" if x else f"{name} n/a" for name, x, y in costs if not within_budget(y, x)]
    text = "within the single's " + " and ".join(within) if within else ""
    text += ("; " if within and over else "") + ("over on " + ", ".join(over) if over else "")
    return f"budget by {by} (--budget-by): {text}" if by else text


def budget_table(frame: pd.DataFrame) -> Table:
    """:func:`analysis.budget_frame`: per (family, dataset), each side's budget, and what was matched."""
    out = []
    for b in _records(frame):
        out.append([
            b["family"], b["dataset"], f"{b['single_params_m']:.1f} / {b['ensemble_params_m']:.1f}",
            f"{b['single_gmacs']:.3g} / {b['ensemble_gmacs']:.3g}", f"{b['single_feature_dim']} / {b['ensemble_feature_dim']}",
            f"{b['single_extract_seconds'] or 0:.0f} / {b['ensemble_extract_seconds'] or 0:.0f}",
            f"{_pretraining(b['single_pretraining'], b['single_pretrain_emacs'])} / "
            f"{_pretraining(b['ensemble_pretraining'], b['ensemble_pretrain_emacs'])}", _matched(b),
        ])
    return Table(BUDGET_HEADER, out, title="budgets")


# --------------------------------------------------------------------------- over-seeds: settings x seeds


def _ci(mean: float | None, half: float | None, signed: bool = False) -> str:
    if mean is None:
        return "missing"
    body = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return body if half is None else f"{body} ± {half:.1f}"  # no half-width: a single seed


SEEDS_HEADER = ("family", "dataset", "setting", "seeds", "single top-1", "ensemble top-1",
                "difference (paired, points)", "95% CI (seeds and images)")


def seeds_table(frame: pd.DataFrame) -> Table:
    """:func:`analysis.seeds_frame` of one probe: means ± the 95% t interval over seeds, and the difference's
    interval over seeds and test images."""
    return Table(SEEDS_HEADER, [[s["family"], s["dataset"], s["setting"], str(s["seeds"]),
                                 _ci(s["single_top1_pct"], s["single_half_width_pct"]),
                                 _ci(s["ensemble_top1_pct"], s["ensemble_half_width_pct"]),
                                 _ci(s["difference_pts"], s["difference_half_width_pts"], signed=True),
                                 _interval(s["difference_ci_low_pts"], s["difference_ci_high_pts"])]
                                for s in _records(frame)])


# --------------------------------------------------------------------------- ranking: scores against a probe's top-1


def ranking_table(rows: Sequence[ResultRow], probe: ProbeInfo | str) -> Table:
    """Per (family, dataset): each model's score, best first, and Kendall's tau against ``rank_against``'s top-1
    (:func:`analysis.ranking_frame`)."""
    probe = PROBES.info(probe) if isinstance(probe, str) else probe
    out = []
    for (fam, ds), group in ranking_frame(rows, probe).groupby(["family", "dataset"], sort=False):
        recs = _records(group)
        ranked = ", ".join(f"{r['model']} {r['score']:.3f}" for r in recs)
        tau, n = recs[0]["kendall_tau"], recs[0]["models_compared"]
        out.append([fam, ds, ranked, "n/a" if tau is None else f"{tau:+.2f} ({n} models)"])
    header = ("family", "dataset", f"{probe.name} score, best first", f"Kendall tau vs {probe.rank_against} top-1")
    return Table(header, out)


# --------------------------------------------------------------------------- provenance and every row


REVISION_HEADER = ("kind", "id", "revision", "rows")


def revision_table(rows: Sequence[ResultRow]) -> Table:
    """:func:`analysis.revisions_frame`: every checkpoint's and dataset's resolved revision, and its rows."""
    return Table(REVISION_HEADER, [[r["kind"], r["id"], r["revision"], str(r["rows"])] for r in _records(revisions_frame(rows))],
                 title="revisions")


def ran_on_table(rows: Sequence[ResultRow]) -> Table:
    """:func:`analysis.ran_on_frame`: rows probed on a Ray cluster, by node; empty for a run on one machine."""
    return Table(("node", "host", "probes", "rows"),
                 [[f"{r['host']}:{r['node'][:6]}", r["host"], ", ".join(r["probes"]), str(r["rows"])]
                  for r in _records(ran_on_frame(rows))], title="where it ran")


def mixed_numerics_table(rows: Sequence[ResultRow]) -> Table:
    """:func:`analysis.mixed_numerics_frame`: comparisons whose rows were computed under different numerics."""
    return Table(("family", "dataset", "probe", "setting", "seed", "numerics", "rows"),
                 [[r["family"], r["dataset"], r["probe"], r["setting"] or "", "" if r["seed"] is None else str(r["seed"]),
                   r["numerics"], ", ".join(r["comparisons"])] for r in _records(mixed_numerics_frame(rows))],
                 title="mixed numerics")


def chosen_hparams(hparams: dict[str, Any]) -> str:
    """The probe's chosen hyper-parameters, e.g. ``C=0.0178`` or ``k=20``."""
    shown = {k: v for k, v in hparams.items() if k in ("C", "k")}
    return ", ".join(f"{k}={v:.3g}" for k, v in shown.items())


def _raw(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


@dataclass(frozen=True)
class Column:
    """One column of the every-row table: its CSV name and raw value, and its label and text (Markdown, HTML),
    each from a record of :func:`analysis.every_row_frame`."""

    name: str
    raw: Callable[[dict[str, Any]], Any]
    text: Callable[[dict[str, Any]], str] | None = None
    label: str = ""


def _result(r: dict[str, Any]) -> str:
    return _pct(_points(r["top1"])) if r["top1"] is not None else (f"score {r['score']:.3f}" if r["score"] is not None else "")


def _points(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _revisions(r: dict[str, Any], width: int | None = None) -> str:
    return "; ".join(f"{k}={str(v)[:width]}" for k, v in r["revisions"].items())


ROW_COLUMNS = (
    Column("family", lambda r: r["family"]),
    Column("dataset", lambda r: r["dataset"]),
    Column("probe", lambda r: r["probe"]),
    Column("setting", lambda r: r["setting"]),
    Column("seed", lambda r: "" if r["seed"] is None else r["seed"]),
    Column("comparison", lambda r: r["comparison"], label="model"),
    Column("role", lambda r: r["role"]),
    Column("members", lambda r: "+".join(r["members"]), lambda r: str(len(r["members"]))),
    Column("lineages", lambda r: "; ".join(f"{m}={lin}" for m, lin in zip(r["members"], r["lineage"], strict=True)),
           lambda r: ", ".join(r["lineage"]), "lineage"),
    Column("top1", lambda r: _raw(r["top1"]), _result, "top-1"),
    Column("mean_per_class", lambda r: _raw(r["mean_per_class"]), lambda r: _pct(_points(r["mean_per_class"])),
           "mean per-class"),
    Column("top5", lambda r: _raw(r["top5"]), lambda r: "" if r["top5"] is None else _pct(_points(r["top5"])), "top-5"),
    Column("score", lambda r: _raw(r["score"]), lambda r: "" if r["score"] is None else f"{r['score']:.3f}"),
    Column("chosen", lambda r: chosen_hparams(r["hparams"])),
    Column("params_m", lambda r: r["params_m"], lambda r: f"{r['params_m']:.1f}", "params (M)"),
    Column("gmacs", lambda r: r["gmacs"], lambda r: f"{r['gmacs']:.2f}", "GMACs"),  # the store keeps the name gflops
    Column("feature_dim", lambda r: r["feature_dim"], label="feature dim"),
    Column("n_train", lambda r: r["n_train"], label="train"),
    Column("n_val", lambda r: r["n_val"], label="val"),
    Column("n_test", lambda r: r["n_test"], label="test"),
    Column("extract_seconds", lambda r: r["extract_seconds"], lambda r: f"{r['extract_seconds'] or 0:.1f}", "extraction s"),
    Column("warnings", lambda r: "; ".join(r["warnings"])),
    Column("revisions", _revisions, lambda r: _revisions(r, 19)),
)


def _num_or_blank(x: float | None) -> Any:
    return "" if x is None else round(x, 6)


# Each row against the single on the same test images (same family, dataset, probe, setting, seed).
PAIRED_COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], str] | None], ...] = (
    ("vs_single", "vs single (points)", lambda r: f"{100 * r['vs_single']:+.1f}"),
    ("vs_single_ci_low", "95% CI", lambda r: _interval(_points(r["vs_single_ci_low"]), _points(r["vs_single_ci_high"]))),
    ("vs_single_ci_high", "", None),
    ("mcnemar_p", "McNemar p", lambda r: _p_value(r["mcnemar_p"])),
)


def every_row_table(rows: Sequence[ResultRow], raw: bool = False) -> Table:
    """Every latest row (:func:`analysis.every_row_frame`): CSV names and raw values, or labels and text for Markdown
    and HTML; one column list. Rows other than the single's also carry their paired difference to it (interval and
    McNemar p)."""
    paired_cols = [c for c in PAIRED_COLUMNS if raw or c[2] is not None]
    cells = []
    for r in _records(every_row_frame(rows)):
        row = [c.raw(r) if raw or c.text is None else c.text(r) for c in ROW_COLUMNS]
        for name, _, text in paired_cols:
            row.append("" if r["vs_single"] is None else (_num_or_blank(r[name]) if raw or text is None else text(r)))
        cells.append(row)
    header = tuple(c.name if raw else (c.label or c.name) for c in ROW_COLUMNS)
    header += tuple(name if raw else label for name, label, _ in paired_cols)
    return Table(header, cells, title="every row")


# --------------------------------------------------------------------------- the document


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


SUMMARY_TEXT = (
    "The answer per family: the ensemble's mean gain over the single across datasets ({probe} probe), with a 95% "
    "interval from a two-level bootstrap (datasets drawn with replacement, then each drawn dataset's test images, "
    "paired, an independent resample for each draw) and its p, Holm-adjusted across the families, which decides "
    "'significant' (when not, the smallest mean gain it could detect at 80% power, in points); the datasets the "
    "ensemble wins, ties and loses by McNemar's p Holm-adjusted across the family's datasets; and how alike the "
    "members are (mean linear CKA, debiased, on test features standardized as the probe sees them; 1 = the same "
    "representation up to rotation and scale). Width-matched: the same pooled gain when the concatenation is first "
    "projected to the single's feature width (PCA fitted on train, components not whitened; or a seeded Gaussian "
    "projection) and probed like any model, on the same test images; what remains of the gain there is not just "
    "more dimensions. See docs/statistics.md."
)
HEADLINE_TEXT = (
    "Each difference is paired over the same test images: its 95% interval is Newcombe's (1998, method 10) for paired "
    "proportions and its p-value McNemar's exact test on the images one side gets right and the other wrong. BH q is "
    "that p adjusted by Benjamini–Hochberg across every difference in this table (concatenated, averaged and the "
    "width-matched controls); a "
    "difference is significant when q < 0.05. When it is not, the table says the smallest difference these test "
    "images could detect (80% power, points). See docs/statistics.md."
)


def build_report(rows: Sequence[ResultRow], plots: Sequence[Path] | Callable[[], Sequence[Path]] = (),
                 similarity: Sequence[SimilarityRow] = (), lines: Sequence[ComparisonLine] | None = None,
                 margin: float | None = None) -> Document:
    """The whole report as one document (every format renders this); ``lines``: :func:`comparison_lines` of
    ``rows`` when the caller has them (their paired intervals are the costly part); ``margin``: the equivalence
    margin (a fraction; None: no equivalence test); ``plots``: the PNG files, or a function that returns them,
    called when the tables before them are built (``write_report`` passes the plots being drawn meanwhile)."""
    if not rows:
        raise ZooSurveyError("the results store has no rows yet; run `zoo-survey run` first")
    lines = comparison_lines(rows) if lines is None else lines
    sections = [Section("Across architectures", (SUMMARY_TEXT.format(probe=primary_probe(lines) or "paired"),),
                        (summary_table(answer_of(lines, similarity)),))]
    sections.append(Section("Single vs ensemble", (HEADLINE_TEXT,), (comparison_table(comparison_of(lines, margin), margin),)))
    budgets = budget_table(budget_of(lines))
    if budgets.rows:
        sections.append(Section("Budgets", ("Extraction seconds are measured, summed over the members' cache entries "
                                             "of that dataset.",), (budgets,)))
    diversity = diversity_table(diversity_of(lines, similarity))
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
                f"{_sentence(probe.summary)} Mean over seeds ± the 95% t interval over seeds, which covers which "
                "shots were drawn only; the difference is paired over seeds (same examples on both sides), and its 95% CI "
                "covers the shots and the test images both (a two-way bootstrap: seeds and images drawn with "
                "replacement, one image draw for every seed; docs/statistics.md).",), (seeds_table(seeds_frame(rows, probe.name)),)))
        elif probe.presentation == "ranking":
            sections.append(Section(probe.title or probe.name, (
                f"{_sentence(probe.summary)} Kendall's tau says how well the score ordered the models here.",),
                (ranking_table(rows, probe),)))
    plots = plots() if callable(plots) else plots
    if plots:
        sections.append(Section("Plots", figures=tuple(plots)))
    sections.append(Section("Revisions", ("The resolved commit (hub) or content digest of every input the results used.",),
                            (revision_table(rows),)))
    ran_on = ran_on_table(rows)
    if ran_on.rows:
        sections.append(Section("Where it ran", ("Rows probed on each node of the Ray cluster.",), (ran_on,)))
    mixed = mixed_numerics_table(rows)
    if mixed.rows:
        sections.append(Section("Mixed numerics", (
            "These comparisons set side by side rows computed under different numerics (device, dtype, torch, fit "
            "threads, CPU ISA, or the extraction's device and dtype). On one CPU build zoo-survey's rows do not depend "
            "on the thread count or runner (docs/probes.md); across these settings they can differ in the last "
            "digits, and a close difference may be one. Rerun them under one setting to compare them exactly.",),
            (mixed,)))
    sections.append(Section("Every row", tables=(every_row_table(rows),)))
    return Document("zoo-survey report", INTRO + (_budget_note(rows),), tuple(sections))


def write_report(rows: Sequence[ResultRow], out_dir: Path, fmt: str = "md",
                 similarity: Sequence[SimilarityRow] = (), margin: float | None = None) -> list[Path]:
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
        drawn: Callable[[], list[Path]] = lambda: []  # noqa: E731
        if fmt in ("md", "html"):  # drawn in worker processes while the tables are built here
            drawn = start_plots(latest_rows(rows), lines, primary_probe(lines), out_dir / "plots",
                                diversity_points(diversity_records(lines, similarity)))

        def wait_for_plots() -> list[Path]:
            plots.extend(drawn())
            return plots

        doc = build_report(rows, wait_for_plots, similarity, lines, margin)
        if fmt == "md":
            text = to_markdown(doc, base=out_dir)
        elif fmt == "html":
            text = to_html(doc)
        else:
            text = to_json(doc, rows=[r.fields() for r in latest_rows(rows)], similarity=[s.__dict__ for s in similarity])
    path = out_dir / f"report.{fmt}"
    atomic_write(path, lambda f: f.write(text.encode()))
    return [path, *plots]
