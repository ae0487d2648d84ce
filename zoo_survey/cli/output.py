"""Output that pipes: tables print whole, as a rich table on a terminal and as TSV when piped.

``--format table|tsv|json`` chooses explicitly. A rich table folds long cells instead of
cutting them with an ellipsis, and when stdout is not a terminal it is drawn at its
natural width, so ``zoo-survey registry list | grep convnext`` finds every entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from ..document import Table, table_records, table_to_tsv
from ..errors import unknown
from .app import console, err_console

if TYPE_CHECKING:
    from ..results.store import ResultRow
    from ..survey.runner import NodeTally

LIST_FORMATS = ("table", "tsv", "json")


def resolve_format(fmt: str | None, console: Console) -> str:
    """An explicit ``--format``, else ``table`` on a terminal and ``tsv`` when piped."""
    if fmt is None:
        return "table" if console.is_terminal else "tsv"
    if fmt not in LIST_FORMATS:
        raise unknown("output format", fmt, LIST_FORMATS)
    return fmt


def emit(tables: Sequence[Table], console: Console, fmt: str | None = None, titled: bool = False) -> None:
    """Print ``tables`` in ``fmt`` (see :func:`resolve_format`) to ``console``'s stream.

    TSV puts a ``# title`` line above each table when there are several, or when ``titled``
    (output that mixes a table with other lines, such as ``run``'s).
    """
    fmt = resolve_format(fmt, console)
    if fmt == "json":
        payload = {t.title or str(i): table_records(t) for i, t in enumerate(tables)}
        console.file.write(json.dumps(payload if len(tables) > 1 else next(iter(payload.values())), indent=1) + "\n")
    elif fmt == "tsv":
        for i, t in enumerate(tables):
            if len(tables) > 1 or titled:
                console.file.write(("\n" if i else "") + f"# {t.title}\n")
            console.file.write(table_to_tsv(t))
    else:
        out = console if console.is_terminal else Console(file=console.file, width=100_000, color_system=None)
        for t in tables:
            out.print(_rich(t))


def _rich(t: Table) -> RichTable:
    table = RichTable(title=t.title or None)
    for col in t.header:
        table.add_column(col, overflow="fold")
    for row in t.rows:
        table.add_row(*(Text("" if c is None else str(c)) for c in row))
    return table


def human(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def say(text: str, fmt: str) -> None:
    """Totals and advice: on stdout beside a table, on stderr when stdout carries TSV or JSON for a program."""
    (console if fmt == "table" else err_console).print(text, soft_wrap=True)


def where_table(where: Mapping[str, NodeTally]) -> Table:
    """What ran on which node of a Ray cluster."""
    from ..survey.ray_runner import node_label

    return Table(("node", "host", "extraction units", "probe units", "retried", "failed"),
                 [[node_label(n, t.host), t.host, str(t.extract), str(t.probe), str(t.retried), str(t.failed)]
                  for n, t in sorted(where.items(), key=lambda kv: (kv[1].host, kv[0]))], title="where it ran")


def print_summary(rows: list[ResultRow], fmt: str | None = None, where: Mapping[str, NodeTally] | None = None) -> None:
    """The single-vs-ensemble table of ``rows`` (and on a Ray cluster, what ran where): whole, on a terminal or piped."""
    from ..results.report import comparison_lines, headline_table  # here: `cache ls` and `registry list` need neither

    table = headline_table(comparison_lines(rows))
    cols = ("family", "dataset", "probe", "single top-1", "ensemble top-1", "difference (points)", "95% CI", "McNemar p",
            "averaged top-1")
    idx = [table.header.index(c) for c in cols]
    emit([Table(cols, [[row[i] for i in idx] for row in table.rows],
                title="single vs ensemble (test top-1, %): concatenated features, and averaged outputs; "
                "paired 95% intervals over the test images")]
         + ([where_table(where)] if where else []), console, fmt, titled=True)
