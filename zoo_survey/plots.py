"""Plots for the report, drawn from store rows only (matplotlib, Agg, no display needed).

- accuracy vs total GFLOPs, singles and ensembles marked apart, Pareto front drawn, one panel per dataset;
- the ensemble-minus-single difference per family and dataset, as a heat map;
- few-shot curves (top-1 vs k) with 95% interval bands.

Each is written as PNG and SVG; :func:`write_plots` returns the PNG paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .store import ResultRow


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    from .cache import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        atomic_write(out_dir / f"{name}.{ext}", lambda f, e=ext: fig.savefig(f, format=e, dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return out_dir / f"{name}.png"


def accuracy_vs_flops(rows: Sequence[ResultRow], out_dir: Path) -> Path | None:
    full = [r for r in rows if r.probe == "linear" and not r.setting and r.top1 is not None]
    datasets = sorted({r.dataset for r in full})
    if not datasets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        pts = [r for r in full if r.dataset == ds]
        for role, marker, colour, label in (
            ("baseline", "s", "#1f77b4", "single (largest)"),
            ("member", "o", "#7f7f7f", "single (member)"),
            ("ensemble", "*", "#d62728", "ensemble (concatenated)"),
            ("ensemble-avg", "P", "#ff7f0e", "ensemble (averaged)"),
        ):
            sel = [r for r in pts if r.role == role]
            ax.scatter([r.gflops for r in sel], [100 * r.top1 for r in sel], marker=marker, s=90 if role.startswith("ensemble") else 45,
                       color=colour, label=label, zorder=3)
        front = pareto_front([(r.gflops, 100 * r.top1) for r in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="#2ca02c", lw=1.2, label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.12)
        ax.set_title(ds)
        ax.set_xlabel("total GFLOPs per image")
        ax.set_ylabel("linear-probe top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against compute: singles and ensembles", y=1.04)
    return _save(fig, out_dir, "accuracy_vs_gflops")


def difference_heatmap(lines, out_dir: Path) -> Path | None:
    """``lines``: report.ComparisonLine items (linear probe rows are used)."""
    cells = {(ln.family, ln.dataset): 100 * ln.delta for ln in lines if ln.probe == "linear" and ln.delta is not None}
    if not cells:
        return None
    fams = sorted({f for f, _ in cells})
    dss = sorted({d for _, d in cells})
    grid = [[cells.get((f, d), math.nan) for d in dss] for f in fams]
    lim = max(abs(v) for v in cells.values()) or 1.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(dss), 1.2 + 0.6 * len(fams)))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(dss)), dss, rotation=30, ha="right")
    ax.set_yticks(range(len(fams)), fams)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "missing" if v != v else f"{v:+.1f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="ensemble − single (points)")
    ax.set_title("Linear probe: ensemble minus single")
    return _save(fig, out_dir, "difference_heatmap")


def fewshot_curves(rows: Sequence[ResultRow], out_dir: Path) -> Path | None:
    from .probes.fewshot import t_interval

    fs = [r for r in rows if r.probe == "fewshot" and r.top1 is not None and r.role in ("baseline", "ensemble")]
    keys = sorted({(r.family, r.dataset) for r in fs})
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, (fam, ds) in zip(axes[0], keys):
        for role, colour in (("baseline", "#1f77b4"), ("ensemble", "#d62728")):
            by_k: dict[int, list[float]] = {}
            for r in fs:
                if (r.family, r.dataset, r.role) == (fam, ds, role):
                    by_k.setdefault(int(r.setting.split("-")[0]), []).append(100 * r.top1)
            ks = sorted(by_k)
            stats = [t_interval(by_k[k]) for k in ks]
            means = [m for m, _ in stats]
            halves = [0.0 if h != h else h for _, h in stats]
            ax.plot(ks, means, "o-", color=colour, label="single (largest)" if role == "baseline" else "ensemble")
            ax.fill_between(ks, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)], color=colour, alpha=0.2)
        ax.set_xscale("log")
        ax.set_title(f"{fam} · {ds}")
        ax.set_xlabel("examples per class (k)")
        ax.set_ylabel("top-1 (%), mean ± 95% CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "fewshot_curves")


def write_plots(rows: Sequence[ResultRow], lines, out_dir: Path) -> list[Path]:
    """Every plot the rows allow; each as PNG and SVG in ``out_dir``. Returns the PNG paths."""
    made = [accuracy_vs_flops(rows, out_dir), difference_heatmap(lines, out_dir), fewshot_curves(rows, out_dir)]
    return [p for p in made if p is not None]
