"""Documents: tables and sections built once, rendered to Markdown, HTML, TSV, CSV or JSON.

The report and the command line's listings (``registry list``, ``cache ls``) build a
:class:`Document` (or a :class:`Table`) and hand it to a renderer, so every format shows
the same content and no format has a hand-built copy of another.

>>> doc = Document("t", sections=(Section("s", tables=(Table(("a", "b"), (("1", "2"),)),)),))
>>> print(to_tsv(doc))
# s
a	b
1	2
<BLANKLINE>
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Table:
    """A header and rows of cells (text for the eye; ``csv`` may carry raw values)."""

    header: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    title: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Path, ...] = ()  # PNG files: linked from Markdown, embedded in HTML


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[str, ...] = ()
    sections: tuple[Section, ...] = field(default=())


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, base: Path | None = None) -> str:
    """Markdown; figure links are relative to ``base`` (the folder the file is written to)."""
    out = [f"# {doc.title}", "", *doc.intro, ""] if doc.intro else [f"# {doc.title}", ""]
    for sec in doc.sections:
        if sec.title:
            out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        for t in sec.tables:
            out += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
            out += ["| " + " | ".join(_md_escape(_cell(c)) for c in row) + " |" for row in t.rows]
            out.append("")
        for fig in sec.figures:
            link = os.path.relpath(fig, base) if base is not None else str(fig)
            out.append(f"![{fig.stem}]({Path(link).as_posix()}) ")
        if sec.figures:
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;text-align:left}th{background:#f3f3f3;cursor:pointer}"
    "img{max-width:100%}figure{margin:1em 0}"
)

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


def _html_table(t: Table) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    tb = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in t.rows)
    return f"<table class='sortable'><thead><tr>{th}</tr></thead><tbody>{tb}</tbody></table>"


def to_html(doc: Document) -> str:
    """One self-contained page: figures embedded as base64 PNG, tables sortable by a click, no network."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"] + [f"<p>{html.escape(p)}</p>" for p in doc.intro]
    for sec in doc.sections:
        if sec.title:
            body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
        body += [_html_table(t) for t in sec.tables]
        body += [
            f"<figure><img alt='{html.escape(f.stem)}' src='data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}'>"
            f"<figcaption>{html.escape(f.stem.replace('_', ' '))}</figcaption></figure>"
            for f in sec.figures
        ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>"
        f"<style>{_STYLE}</style></head><body>" + "".join(body) + f"<script>{_SORT_JS}</script></body></html>\n"
    )


def table_to_tsv(t: Table) -> str:
    """Tab-separated rows under the header; tabs and newlines inside cells become spaces."""
    def clean(c: Any) -> str:
        return _cell(c).replace("\t", " ").replace("\n", " ")

    return "\n".join("\t".join(clean(c) for c in row) for row in [t.header, *t.rows]) + "\n"


def to_tsv(doc: Document) -> str:
    """Every table of the document, each under a ``# title`` line, separated by a blank line."""
    parts = []
    for sec in doc.sections:
        for t in sec.tables:
            parts.append(f"# {t.title or sec.title}\n" + table_to_tsv(t))
    return "\n".join(parts)


def table_to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(t.header)
    w.writerows([[_cell(c) for c in row] for row in t.rows])
    return buf.getvalue()


def table_records(t: Table) -> list[dict[str, Any]]:
    """The table as a list of ``{column: cell}`` records."""
    return [dict(zip(t.header, row, strict=True)) for row in t.rows]


def to_json(doc: Document, **extra: Any) -> str:
    """The document (sections with tables as records), plus any ``extra`` top-level fields."""
    payload = {
        "title": doc.title,
        "intro": list(doc.intro),
        "sections": [
            {"title": s.title, "paragraphs": list(s.paragraphs), "tables": [table_records(t) for t in s.tables],
             "figures": [f.name for f in s.figures]}
            for s in doc.sections
        ],
        **extra,
    }
    return json.dumps(payload, indent=1, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
