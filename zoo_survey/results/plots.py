"""Plots for the report, drawn from store rows only (matplotlib, Agg, no display needed).

- accuracy vs total GMACs (multiply-accumulates), singles and ensembles marked apart, Pareto front drawn, one panel per dataset,
  each point with the 95% Wilson interval of its accuracy;
- the ensemble-minus-single difference per family and dataset, as a heat map: each cell with its paired
  95% interval, bold and starred where the interval excludes 0;
- the ensemble's gain against its members' diversity (1 − mean CKA), with the gains' intervals;
- for each probe presented over seeds (few-shot): top-1 against the setting, with 95% interval bands.

The first two show the primary paired probe (the linear probe by default). Each plot is
written as PNG and SVG; :func:`write_plots` returns the PNG paths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from ..files import atomic_write
from ..probes import PROBES
from .stats import t_interval, wilson_interval
from .store import ResultRow

DPI = 110
PAD_INCHES = 0.1  # around the drawn content (savefig's bbox_inches="tight" default)


def _figure(figsize: tuple[float, float]):
    """A bare matplotlib Figure, drawn by Agg (PNG) and the SVG backend when saved. Not pyplot: pyplot imports a
    backend chooser and keeps every figure in a global registry to close (0.1 s of the report's first draw)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=DPI)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), by cost.

    >>> pareto_front([(1, 0.5), (2, 0.4), (3, 0.7)])
    [(1, 0.5), (3, 0.7)]
    """
    front, best = [], -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def _save(fig, out_dir: Path, name: str) -> Path:
    """Write ``fig`` as PNG and SVG, each cropped to what is drawn (titles, labels and legends included).

    The crop is measured once and used for both files: ``bbox_inches="tight"`` measures anew for every file, after a
    draw that renders nothing (together, half of drawing the plots). No artist here moves when drawn (the legends
    stay inside their axes), so the extents need no draw first. Measured with Agg's text metrics, the SVG's crop is a
    few points wider than the SVG backend's own measure would be."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bbox = fig.get_tightbbox().padded(PAD_INCHES)
    for ext in ("png", "svg"):
        atomic_write(out_dir / f"{name}.{ext}", functools.partial(fig.savefig, format=ext, dpi=DPI, bbox_inches=bbox))
    return out_dir / f"{name}.png"


def accuracy_vs_gmacs(rows: Sequence[ResultRow], probe: str, out_dir: Path) -> Path | None:
    full = [r for r in rows if r.probe == probe and not r.setting and r.top1 is not None]
    datasets = sorted({r.dataset for r in full})
    if not datasets:
        return None
    fig = _figure((4.2 * len(datasets), 3.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        pts = [(r.gflops, 100 * r.top1, r.role, _wilson(r)) for r in full if r.dataset == ds and r.top1 is not None]
        for role, marker, colour, label in (
            ("baseline", "s", "#1f77b4", "single (largest)"),
            ("member", "o", "#7f7f7f", "single (member)"),
            ("ensemble", "*", "#d62728", "ensemble (concatenated)"),
            ("ensemble-avg", "P", "#ff7f0e", "ensemble (averaged)"),
        ):
            sel = [(g, acc, ci) for g, acc, rl, ci in pts if rl == role]
            ax.scatter([g for g, _, _ in sel], [acc for _, acc, _ in sel], marker=marker,
                       s=90 if role.startswith("ensemble") else 45, color=colour, label=label, zorder=3)
            bars = [(g, acc, ci) for g, acc, ci in sel if ci is not None]
            if bars:
                ax.errorbar([g for g, _, _ in bars], [acc for _, acc, _ in bars], fmt="none", ecolor=colour, alpha=0.6,
                            yerr=[[acc - ci[0] for _, acc, ci in bars], [ci[1] - acc for _, acc, ci in bars]], zorder=2)
        front = pareto_front([(g, acc) for g, acc, _, _ in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="#2ca02c", lw=1.2, label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.12)
        ax.set_title(ds)
        ax.set_xlabel("total GMACs per image")
        ax.set_ylabel(f"{probe} probe top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against compute: singles and ensembles (bars: 95% Wilson intervals)", y=1.04)
    return _save(fig, out_dir, "accuracy_vs_gmacs")


def _wilson(r: ResultRow) -> tuple[float, float] | None:
    """The row's accuracy interval in percent, when its test predictions are stored."""
    correct = r.correct
    if correct is None or not len(correct):
        return None
    lo, hi = wilson_interval(int(correct.sum()), len(correct))
    return 100 * lo, 100 * hi


def heatmap_stars(lines, probe: str) -> dict[tuple[str, str], bool]:
    """Per (family, dataset) of ``probe``: is the ensemble-minus-single difference significant by the comparison
    table's rule (McNemar's p, Benjamini-Hochberg-adjusted across every paired difference of ``lines``, below 0.05),
    so the heat map's star never contradicts the table's verdict."""
    from .analysis import comparison_of
    from .stats import ALPHA

    frame = comparison_of(lines)
    return {(f, d): bool(q < ALPHA) for f, d, pr, q in zip(frame["family"], frame["dataset"], frame["probe"],
                                                          frame["mcnemar_q"], strict=True) if pr == probe}


def difference_heatmap(lines, probe: str, out_dir: Path) -> Path | None:
    """``lines``: report.ComparisonLine items (those of ``probe`` are drawn)."""
    cells = {(ln.family, ln.dataset): 100 * ln.delta for ln in lines if ln.probe == probe and ln.delta is not None}
    paired = {(ln.family, ln.dataset): ln.paired for ln in lines if ln.probe == probe and ln.delta is not None}
    stars = heatmap_stars(lines, probe)
    if not cells:
        return None
    fams = sorted({f for f, _ in cells})
    dss = sorted({d for _, d in cells})
    grid = [[cells.get((f, d), math.nan) for d in dss] for f in fams]
    lim = max(abs(v) for v in cells.values()) or 1.0
    fig = _figure((1.6 + 1.8 * len(dss), 1.2 + 0.8 * len(fams)))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(dss)), dss, rotation=30, ha="right")
    ax.set_yticks(range(len(fams)), fams)
    for i, f in enumerate(fams):
        for j, d in enumerate(dss):
            v, pd = grid[i][j], paired.get((f, d))
            if v != v:
                text, weight = "missing", "normal"
            elif pd is None:
                text, weight = f"{v:+.1f}", "normal"
            else:
                star = "*" if stars.get((f, d)) else ""
                text, weight = f"{v:+.1f}{star}\n[{100 * pd.low:+.1f}, {100 * pd.high:+.1f}]", "bold" if star else "normal"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight=weight)
    fig.colorbar(im, ax=ax, label="ensemble − single (points)")
    ax.set_title(f"{probe} probe: ensemble minus single (*: BH-adjusted McNemar q < 0.05)")
    return _save(fig, out_dir, "difference_heatmap")


def _setting_x(label: str) -> float | None:
    """The number a setting label starts with ("5-shot" -> 5), the curve's x."""
    head = label.split("-")[0]
    try:
        return float(head)
    except ValueError:
        return None


def seed_curves(rows: Sequence[ResultRow], probe: str, axis: str, out_dir: Path) -> Path | None:
    """Top-1 against the setting's number, mean ± 95% t interval over seeds, single and ensemble."""
    fs = [r for r in rows if r.probe == probe and r.top1 is not None and r.role in ("baseline", "ensemble")
          and _setting_x(r.setting) is not None]
    keys = sorted({(r.family, r.dataset) for r in fs})
    if not keys:
        return None
    fig = _figure((4.2 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, (fam, ds) in zip(axes[0], keys, strict=True):
        for role, colour in (("baseline", "#1f77b4"), ("ensemble", "#d62728")):
            by_x: dict[float, list[float]] = {}
            for r in fs:
                x = _setting_x(r.setting)
                if (r.family, r.dataset, r.role) == (fam, ds, role) and x is not None and r.top1 is not None:
                    by_x.setdefault(x, []).append(100 * r.top1)
            xs = sorted(by_x)
            stats = [t_interval(by_x[x]) for x in xs]
            means = [m for m, _ in stats]
            halves = [0.0 if h != h else h for _, h in stats]
            ax.plot(xs, means, "o-", color=colour, label="single (largest)" if role == "baseline" else "ensemble")
            ax.fill_between(xs, [m - h for m, h in zip(means, halves, strict=True)], [m + h for m, h in zip(means, halves, strict=True)],
                            color=colour, alpha=0.2)
        ax.set_xscale("log")
        ax.set_title(f"{fam} · {ds}")
        ax.set_xlabel(axis)
        ax.set_ylabel("top-1 (%), mean ± 95% CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, f"{probe}_curves")


def gain_vs_diversity(points: Sequence[tuple[str, float, float, float | None, float | None]], probe: str,
                      out_dir: Path) -> Path | None:
    """``points``: (label, 1 − mean member CKA, gain, interval low, high) per family and dataset, in points."""
    if not points:
        return None
    fig = _figure((5.6, 4.0))
    ax = fig.subplots()
    for label, x, y, lo, hi in points:
        err = None if lo is None or hi is None else [[y - lo], [hi - y]]
        ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color="#d62728")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(0, color="#7f7f7f", lw=1)
    ax.set_xlabel("member diversity: 1 − mean linear CKA between members")
    ax.set_ylabel(f"ensemble − single, {probe} probe (points)")
    ax.set_title("Does the gain grow with diversity?")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "gain_vs_diversity")


INPUTS_FILE = ".inputs.json"  # what the plots in a folder were drawn from: a rerun of the report on the same rows redraws none


def plot_inputs_digest(rows: Sequence[ResultRow], primary: str | None,
                       diversity: Sequence[tuple[str, float, float, float | None, float | None]]) -> str:
    """A digest of everything the plots are drawn from: every row's fields and predictions (the paired intervals come
    from them), the primary probe, the diversity points, and zoo-survey's version (a new version may draw otherwise)."""
    import hashlib
    import json

    from .. import __version__

    h = hashlib.sha256(json.dumps([__version__, primary, [list(map(str, d)) for d in diversity]]).encode())
    for r in sorted(rows, key=lambda r: r.row_key):
        h.update(json.dumps(r.fields(), sort_keys=True, default=str).encode())
        for a in (r.predictions, r.test_labels):
            h.update(b"-" if a is None else a.tobytes())
    return h.hexdigest()


def write_plots(rows: Sequence[ResultRow], lines, primary: str | None, out_dir: Path,
                diversity: Sequence[tuple[str, float, float, float | None, float | None]] = ()) -> list[Path]:
    """Every plot the rows allow; each as PNG and SVG in ``out_dir``. Returns the PNG paths.

    Drawing is most of ``zoo-survey report``'s time; when ``out_dir`` already holds every plot drawn from the same
    inputs (:func:`plot_inputs_digest`, recorded in ``.inputs.json`` after the last file is written), they are kept
    and nothing is drawn."""
    return start_plots(rows, lines, primary, out_dir, diversity)()


def start_plots(rows: Sequence[ResultRow], lines, primary: str | None, out_dir: Path,
                diversity: Sequence[tuple[str, float, float, float | None, float | None]] = ()) -> Callable[[], list[Path]]:
    """:func:`write_plots` begun: the plots are drawn in worker processes (:func:`plot_workers`) while the caller
    goes on (``write_report`` builds the report's tables meanwhile); the returned function waits for them and
    returns the PNG paths. With no worker to use, it draws them itself when called."""
    import json

    digest = plot_inputs_digest(rows, primary, diversity)
    record = out_dir / INPUTS_FILE
    try:
        old = json.loads(record.read_text())
        kept = [out_dir / n for n in old["plots"]]
        if old["digest"] == digest and all(p.is_file() and p.with_suffix(".svg").is_file() for p in kept):
            return lambda: kept
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record, or an unreadable one: draw
    wait = _run(_plot_jobs(rows, lines, primary, out_dir, diversity))

    def finish() -> list[Path]:
        made = [p for p in wait() if p is not None]
        if made:
            atomic_write(record, lambda f: f.write(json.dumps({"digest": digest, "plots": [p.name for p in made]}).encode()))
        return made

    return finish


Job = tuple[float, Callable[[], "Path | None"]]  # (a guess at its cost, in panels; draws one plot, returns its PNG)


def _plot_jobs(rows: Sequence[ResultRow], lines, primary: str | None, out_dir: Path,
               diversity: Sequence[tuple[str, float, float, float | None, float | None]]) -> list[Job]:
    jobs: list[Job] = []
    if primary is not None:
        jobs += [(len({r.dataset for r in rows}), functools.partial(accuracy_vs_gmacs, rows, primary, out_dir)),
                 (1, functools.partial(difference_heatmap, lines, primary, out_dir)),
                 (1, functools.partial(gain_vs_diversity, diversity, primary, out_dir))]
    present = {r.probe for r in rows}
    jobs += [(len({(r.family, r.dataset) for r in rows if r.probe == p.name}),
              functools.partial(seed_curves, rows, p.name, p.setting_axis, out_dir))
             for p in PROBES if p.presentation == "over-seeds" and p.name in present]
    return jobs


def plot_workers(jobs: int) -> int:
    """Worker processes to draw ``jobs`` plots in besides this one: one per usable CPU but this process's (at most
    one per plot but one), forked, so they start with everything this process has imported and read. None (every
    plot drawn here) on one CPU, where fork is not the usual way to start a process (Linux only), or while other
    threads run here (a forked child gets a copy of their locks, perhaps held)."""
    import sys
    import threading

    from ..threads import usable_cpus

    if jobs < 2 or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return 0
    return max(0, min(jobs, usable_cpus()) - 1)


# What this process has to do besides its share of the plots (the report's tables, about 0.5 s), in the jobs' unit
# (a panel: about 0.12 s for its PNG and SVG).
HERE_FIRST = 4.0


def _run(jobs: list[Job]) -> Callable[[], list[Path | None]]:
    """Start ``jobs`` in :func:`plot_workers` forked processes and this one, the costliest first, each process given
    about the same cost (this one counting :data:`HERE_FIRST` for the tables it builds meanwhile); returns a function
    that draws this process's share, waits for the workers and returns each job's result, in order. A job a worker
    did not report (it failed, or the worker died) is run again here: its error, if any, is raised from this
    process, as one clear line, like any other."""
    workers = plot_workers(len(jobs))
    if not workers:
        return lambda: [job() for _, job in jobs]
    import gc
    import multiprocessing
    import sys

    import matplotlib.figure  # noqa: F401 - imported once, here: the workers inherit it

    bins: list[list[int]] = [[] for _ in range(workers + 1)]  # bins[0]: this process's
    load = [HERE_FIRST] + [0.0] * workers
    for i in sorted(range(len(jobs)), key=lambda i: -jobs[i][0]):
        w = load.index(min(load))
        bins[w].append(i)
        load[w] += jobs[i][0]
    ctx = multiprocessing.get_context("fork")
    for stream in (sys.stdout, sys.stderr):  # a child would write out what is buffered here a second time
        stream.flush()
    started = []
    gc.freeze()  # the workers' garbage collector leaves what they inherit alone: no copy of every page it would touch
    try:
        for theirs in bins[1:]:
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=([(i, jobs[i][1]) for i in theirs], send), daemon=True)
            proc.start()
            send.close()
            started.append((proc, receive))
    finally:
        gc.unfreeze()

    def wait() -> list[Path | None]:
        done: dict[int, Path | None] = {i: jobs[i][1]() for i in bins[0]}
        for proc, receive in started:
            try:
                while True:
                    i, path = receive.recv()
                    done[i] = path
            except (EOFError, OSError):
                pass  # the worker is finished (or died): what it did not report is drawn below
            receive.close()
            proc.join()
        return [done[i] if i in done else jobs[i][1]() for i in range(len(jobs))]

    return wait


def _worker(jobs: list[tuple[int, Callable[[], Path | None]]], send) -> None:
    """In a forked worker: draw each job and report (index, PNG path); at the first error, stop silently (the parent
    draws what was not reported, and raises the error there)."""
    try:
        for i, job in jobs:
            send.send((i, job()))
    except BaseException:  # noqa: BLE001, S110 - the parent redraws this job and raises its error itself
        pass
    finally:
        send.close()
