"""Report: reads the results store only, and writes Markdown, CSV or HTML.

Per family, dataset and probe it sets the single baseline against the ensemble:
accuracies, the difference, and each side's params and GFLOPs.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ZooSurveyError
from .store import ResultRow

FORMATS = ("md", "csv", "html", "json")


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
        if self.baseline is None or self.ensemble is None:
            return None
        return self.ensemble.top1 - self.baseline.top1


def latest_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """Keep the newest row per (family, comparison, dataset, probe): a rerun with new inputs supersedes."""
    best: dict[tuple, ResultRow] = {}
    for r in rows:
        k = (r.family, r.comparison, r.dataset, r.probe, r.setting, r.seed)
        if k not in best or r.created_at > best[k].created_at:
            best[k] = r
    return sorted(best.values(), key=lambda r: (r.family, r.dataset, r.probe, r.setting, r.seed or 0, r.role, r.comparison))


def comparison_lines(rows: Sequence[ResultRow]) -> list[ComparisonLine]:
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in latest_rows(rows):
        if r.setting or r.top1 is None:
            continue  # few-shot rows: see fewshot_lines; score rows (logme): see logme_lines
        groups.setdefault((r.family, r.dataset, r.probe), []).append(r)
    lines = []
    for (fam, ds, probe), rs in sorted(groups.items()):
        base = max((r for r in rs if r.role == "baseline"), key=lambda r: r.created_at, default=None)
        ens = max((r for r in rs if r.role == "ensemble"), key=lambda r: r.created_at, default=None)
        avg = max((r for r in rs if r.role == "ensemble-avg"), key=lambda r: r.created_at, default=None)
        wanted = set(ens.members) if ens else set()
        members = tuple(r for r in rs if r.role == "member" and (not wanted or r.comparison in wanted))
        lines.append(ComparisonLine(fam, ds, probe, base, ens, members, avg))
    return lines


@dataclass(frozen=True)
class FewShotLine:
    """Baseline against ensemble at one k: means with 95% t intervals over seeds, and the paired difference."""

    family: str
    dataset: str
    setting: str
    seeds: int
    baseline: tuple[float, float] | None  # (mean, half-width)
    ensemble: tuple[float, float] | None
    delta: tuple[float, float] | None  # paired over the seeds both sides have


def fewshot_lines(rows: Sequence[ResultRow]) -> list[FewShotLine]:
    from .probes.fewshot import paired_interval, t_interval

    groups: dict[tuple[str, str, str], dict[str, dict[int, float]]] = {}
    for r in latest_rows(rows):
        if r.probe == "fewshot" and r.role in ("baseline", "ensemble"):
            groups.setdefault((r.family, r.dataset, r.setting), {}).setdefault(r.role, {})[r.seed] = r.top1
    out = []
    for (fam, ds, setting), sides in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2].split("-")[0]))):
        b, e = sides.get("baseline", {}), sides.get("ensemble", {})
        common = sorted(set(b) & set(e))
        out.append(FewShotLine(
            fam, ds, setting, len(common),
            t_interval(list(b.values())) if b else None,
            t_interval(list(e.values())) if e else None,
            paired_interval([b[s] for s in common], [e[s] for s in common]) if common else None,
        ))
    return out


def logme_lines(rows: Sequence[ResultRow]) -> list[list[str]]:
    """Per (family, dataset): each model's LogME, and Kendall's tau against its linear-probe top-1."""
    from scipy.stats import kendalltau

    latest = latest_rows(rows)
    scores: dict[tuple[str, str], dict[str, float]] = {}
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for r in latest:
        if r.probe == "logme" and r.score is not None:
            scores.setdefault((r.family, r.dataset), {})[r.comparison] = r.score
        elif r.probe == "linear" and not r.setting and r.top1 is not None:
            acc.setdefault((r.family, r.dataset), {})[r.comparison] = r.top1
    out = []
    for key, sc in sorted(scores.items()):
        both = sorted(set(sc) & set(acc.get(key, {})))
        tau = kendalltau([sc[c] for c in both], [acc[key][c] for c in both]).statistic if len(both) >= 2 else None
        ranked = ", ".join(f"{c} {v:.3f}" for c, v in sorted(sc.items(), key=lambda kv: -kv[1]))
        out.append([key[0], key[1], ranked, "n/a" if tau is None or tau != tau else f"{tau:+.2f} ({len(both)} models)"])
    return out


LOGME_HEADER = ("family", "dataset", "LogME, best first", "Kendall tau vs linear top-1")


def _ci(x: tuple[float, float] | None, signed: bool = False) -> str:
    if x is None:
        return "missing"
    mean, half = x
    body = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return body if half != half else f"{body} ± {100 * half:.1f}"  # nan half-width: a single seed


def fewshot_table(lines: Sequence[FewShotLine]) -> list[list[str]]:
    return [[ln.family, ln.dataset, ln.setting, str(ln.seeds), _ci(ln.baseline), _ci(ln.ensemble), _ci(ln.delta, signed=True)]
            for ln in lines]


FEWSHOT_HEADER = ("family", "dataset", "shots", "seeds", "single top-1", "ensemble top-1", "difference (paired, points)")


def _pct(x: float | None) -> str:
    return "missing" if x is None else f"{100 * x:.1f}"


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


HEADER = (
    "family", "dataset", "probe", "single", "single top-1", "ensemble", "ensemble top-1", "difference (points)",
    "averaged top-1", "best member top-1", "single params (M)", "ensemble params (M)", "single GFLOPs", "ensemble GFLOPs",
    "ensemble feature dim",
)


def table_rows(lines: Sequence[ComparisonLine]) -> list[list[str]]:
    out = []
    for ln in lines:
        b, e = ln.baseline, ln.ensemble
        best_member = max((m.top1 for m in ln.members), default=None)
        out.append([
            ln.family, ln.dataset, ln.probe,
            b.comparison if b else "missing", _pct(b.top1 if b else None),
            " + ".join(e.members) if e else "missing", _pct(e.top1 if e else None),
            _delta(ln.delta), _pct(ln.averaged.top1 if ln.averaged else None), _pct(best_member),
            f"{b.params_m:.1f}" if b else "", f"{e.params_m:.1f}" if e else "",
            f"{b.gflops:.2f}" if b else "", f"{e.gflops:.2f}" if e else "",
            str(e.feature_dim) if e else "",
        ])
    return out


def summary(lines: Sequence[ComparisonLine]) -> list[tuple[str, float, int, int]]:
    """Per family: mean difference (points), datasets the ensemble wins, datasets compared."""
    fams: dict[str, list[float]] = {}
    for ln in lines:
        if ln.delta is not None:
            fams.setdefault(ln.family, []).append(ln.delta)
    return [(f, 100 * sum(d) / len(d), sum(x > 0 for x in d), len(d)) for f, d in sorted(fams.items())]


def _budget_note(rows: Sequence[ResultRow]) -> str:
    sizes = sorted({p["input_size"] for r in rows for p in r.provenance.get("preprocessing", {}).values()})
    at = ", ".join(f"{s} px" for s in sizes) or "an unrecorded resolution"
    sources = {r.provenance.get("gflops", "registry, at native resolution") for r in rows}
    how = ("counted (multiply-accumulates per image) at the resolution features were extracted at"
           if sources == {"counted at the run's resolution"} else "from the registry at native resolution where not counted")
    return f"Features were extracted at {at}; GFLOPs are {how}; params are the registry's."


def budget_rows(lines: Sequence[ComparisonLine]) -> list[list[str]]:
    """Per (family, dataset): each side's budget, and the ensemble's as a multiple of the single's."""
    out = []
    for ln in lines:
        if ln.probe != "linear" or ln.baseline is None or ln.ensemble is None:
            continue
        b, e = ln.baseline, ln.ensemble

        def pre(r: ResultRow) -> str:
            info = r.provenance.get("pretrain", {})
            parts = [f"{v.get('data') or '?'}{', ' + str(v['epochs']) + ' ep' if v.get('epochs') else ''}" for v in info.values()]
            return "; ".join(parts) or "not recorded"

        def ratio(a: float | None, c: float | None) -> str:
            return "n/a" if not a or c is None else f"{c / a:.2f}x"

        matched = [name for name, x, y in (("params", b.params_m, e.params_m), ("GFLOPs", b.gflops, e.gflops)) if y <= x]
        over = [f"{name} {ratio(x, y)}" for name, x, y in (("params", b.params_m, e.params_m), ("GFLOPs", b.gflops, e.gflops)) if y > x]
        verdict = ("within the single's " + " and ".join(matched) if matched else "") + ("; " if matched and over else "") + (
            "over on " + ", ".join(over) if over else "")
        out.append([
            ln.family, ln.dataset, f"{b.params_m:.1f} / {e.params_m:.1f}", f"{b.gflops:.3g} / {e.gflops:.3g}",
            f"{b.feature_dim} / {e.feature_dim}",
            f"{b.extract_seconds or 0:.0f} / {e.extract_seconds or 0:.0f}", f"{pre(b)} / {pre(e)}", verdict,
        ])
    return out


BUDGET_HEADER = ("family", "dataset", "params M (single / ensemble)", "GFLOPs (single / ensemble)",
                 "feature dim (single / ensemble)", "extraction s (single / ensemble)", "pretraining (single / ensemble)",
                 "what was matched")


def chosen_hparams(r: ResultRow) -> str:
    """The probe's chosen hyper-parameters, e.g. ``C=0.0178`` or ``k=20``."""
    shown = {k: v for k, v in r.hparams.items() if k in ("C", "k")}
    return ", ".join(f"{k}={v:.3g}" for k, v in shown.items())


REVISION_HEADER = ("kind", "id", "revision", "rows")


def revision_rows(rows: Sequence[ResultRow]) -> list[list[str]]:
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
    return [[k, i, rev, str(n)] for (k, i, rev), n in sorted(seen.items())]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(rows: Sequence[ResultRow], plots: Sequence[Path] = ()) -> str:
    lines = comparison_lines(rows)
    out = ["# zoo-survey report", "", "Single largest model against an ensemble of smaller ones: concatenated features "
           "(each member standardized and weighted equally; the difference column) and averaged outputs of per-member probes.",
           "Accuracies are test top-1 in percent; the difference is ensemble minus single, in points.",
           _budget_note(rows), ""]
    out += _md_table(HEADER, table_rows(lines))
    budgets = budget_rows(lines)
    if budgets:
        out += ["", "## Budgets", "", "Extraction seconds are measured, summed over the members' cache entries of that dataset.", ""]
        out += _md_table(BUDGET_HEADER, budgets)
    fs = fewshot_lines(rows)
    if fs:
        out += ["", "## Few-shot", "", "Mean over seeds ± the 95% t interval; the difference is paired over seeds (same examples on both sides).", ""]
        out += _md_table(FEWSHOT_HEADER, fewshot_table(fs))
    lm = logme_lines(rows)
    if lm:
        out += ["", "## Transferability (LogME)", "", "LogME ranks models without training; tau says how well it ordered them here.", ""]
        out += _md_table(LOGME_HEADER, lm)
    out += ["", "## Across architectures", "", "| family | mean difference (points) | ensemble wins | datasets |", "|---|---|---|---|"]
    out += [f"| {f} | {d:+.1f} | {w} | {n} |" for f, d, w, n in summary(lines)]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name}) " for p in plots]
    out += ["", "## Revisions", "", "The resolved commit (hub) or content digest of every input the results used.", ""]
    out += _md_table(REVISION_HEADER, revision_rows(rows))
    out += ["", "## Every row", "", "| family | dataset | probe | setting | model | role | top-1 | mean per-class | chosen | params (M) | GFLOPs | feature dim | train/val/test | warnings |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in latest_rows(rows):
        setting = f"{r.setting} seed {r.seed}" if r.setting else ""
        out.append(
            f"| {r.family} | {r.dataset} | {r.probe} | {setting} | {r.comparison} | {r.role} | {_pct(r.top1) if r.top1 is not None else f'score {r.score:.3f}'} | {_pct(r.mean_per_class)} | "
            f"{chosen_hparams(r)} | {r.params_m:.1f} | {r.gflops:.2f} | {r.feature_dim} | "
            f"{r.n_train}/{r.n_val}/{r.n_test} | {'; '.join(r.warnings) or ''} |"
        )
    return "\n".join(out) + "\n"


CSV_FIELDS = (
    "family", "dataset", "probe", "setting", "seed", "comparison", "role", "members", "top1", "mean_per_class", "top5", "score", "chosen",
    "params_m", "gflops", "feature_dim", "n_train", "n_val", "n_test", "extract_seconds", "warnings", "revisions",
)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def render_csv(rows: Sequence[ResultRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for r in latest_rows(rows):
        w.writerow([
            r.family, r.dataset, r.probe, r.setting, "" if r.seed is None else r.seed, r.comparison, r.role,
            "+".join(r.members), _num(r.top1), _num(r.mean_per_class), _num(r.top5), _num(r.score), chosen_hparams(r),
            r.params_m, r.gflops, r.feature_dim, r.n_train, r.n_val, r.n_test, r.extract_seconds,
            "; ".join(r.warnings), "; ".join(f"{k}={v}" for k, v in r.provenance.get("revisions", {}).items()),
        ])
    return buf.getvalue()


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var key = function (tr) { var t = tr.children[i].textContent.trim(), n = parseFloat(t); return isNaN(n) ? t : n; };
    Array.prototype.slice.call(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b); if (x === y) return 0;
      return ((typeof x === typeof y) ? x < y : typeof x === 'number') === asc ? -1 : 1;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def render_html(rows: Sequence[ResultRow], plots: Sequence[Path] = ()) -> str:
    """One self-contained file: plots embedded as base64 PNG, tables sortable by a click (no network)."""
    import base64

    lines = comparison_lines(rows)

    def table(header, body) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        tb = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
        return f"<table class='sortable'><thead><tr>{th}</tr></thead><tbody>{tb}</tbody></table>"

    images = "".join(
        f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(p.stem.replace('_', ' '))}</figcaption></figure>"
        for p in plots
    )
    every = [[r.family, r.dataset, r.probe, f"{r.setting} seed {r.seed}" if r.setting else "", r.comparison, r.role,
              _pct(r.top1) if r.top1 is not None else f"score {r.score:.3f}", _pct(r.mean_per_class), chosen_hparams(r),
              f"{r.params_m:.1f}", f"{r.gflops:.2f}", r.feature_dim, f"{r.n_train}/{r.n_val}/{r.n_test}"]
             for r in latest_rows(rows)]

    summ = [[f, f"{d:+.1f}", w, n] for f, d, w, n in summary(lines)]
    budgets, fs, lm = budget_rows(lines), fewshot_table(fewshot_lines(rows)), logme_lines(rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>zoo-survey report</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;text-align:left}th{background:#f3f3f3;cursor:pointer}"
        "img{max-width:100%}figure{margin:1em 0}"
        "</style></head><body><h1>zoo-survey report</h1>"
        "<p>Single largest model against an ensemble of smaller ones: concatenated features (each member standardized "
        "and weighted equally; the difference column) and averaged outputs of per-member probes. "
        "Accuracies are test top-1 in percent; the difference is ensemble minus single, in points. "
        f"{html.escape(_budget_note(rows))}</p>"
        + table(HEADER, table_rows(lines))
        + ("<h2>Budgets</h2>" + table(BUDGET_HEADER, budgets) if budgets else "")
        + ("<h2>Few-shot</h2><p>Mean over seeds ± the 95% t interval; the difference is paired over seeds.</p>"
           + table(FEWSHOT_HEADER, fs) if fs else "")
        + ("<h2>Transferability (LogME)</h2>" + table(LOGME_HEADER, lm) if lm else "")
        + "<h2>Across architectures</h2>"
        + table(("family", "mean difference (points)", "ensemble wins", "datasets"), summ)
        + ("<h2>Plots</h2>" + images if images else "")
        + "<h2>Revisions</h2><p>The resolved commit (hub) or content digest of every input the results used.</p>"
        + table(REVISION_HEADER, revision_rows(rows))
        + "<h2>Every row</h2>"
        + table(("family", "dataset", "probe", "setting", "model", "role", "top-1", "mean per-class", "chosen",
                 "params (M)", "GFLOPs", "feature dim", "train/val/test"), every)
        + f"<script>{_SORT_JS}</script></body></html>\n"
    )


def render_json(rows: Sequence[ResultRow]) -> str:
    """Every latest row, every field."""
    import json
    from dataclasses import asdict

    return json.dumps([asdict(r) for r in latest_rows(rows)], indent=1, sort_keys=True) + "\n"


def write_report(rows: Sequence[ResultRow], out_dir: Path, fmt: str = "md") -> list[Path]:
    """Write ``report.<fmt>`` into ``out_dir`` atomically (plus ``plots/`` for md and html); return the paths."""
    from .cache import atomic_write

    if fmt not in FORMATS:
        from .errors import unknown

        raise unknown("report format", fmt, FORMATS)
    if not rows:
        raise ZooSurveyError("the results store has no rows yet; run `zoo-survey run` first")
    plots: list[Path] = []
    if fmt in ("md", "html"):
        from .plots import write_plots

        plots = write_plots(latest_rows(rows), comparison_lines(rows), Path(out_dir) / "plots")
    render = {"md": render_markdown, "html": render_html}.get(fmt)
    text = render(rows, plots) if render else {"csv": render_csv, "json": render_json}[fmt](rows)
    path = Path(out_dir) / f"report.{fmt}"
    atomic_write(path, lambda f: f.write(text.encode()))
    return [path, *plots]
