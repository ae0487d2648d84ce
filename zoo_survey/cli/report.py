"""``zoo-survey report``: a thin command over :mod:`zoo_survey.results.report`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..document import to_tsv
from ..errors import unknown
from ..results.report import FILE_FORMATS, FORMATS, build_report, write_report
from ..results.store import STORE_NAME, ResultStore
from .app import app, console
from .options import DEFAULT_OUT, OutOpt
from .output import emit, print_summary


@app.command()
def report(
    out: OutOpt = DEFAULT_OUT,
    format: Annotated[str, typer.Option(
        "--format", help="md (with plots/), html (one self-contained file), csv or json: written to <out>/report.<format>; "
        "table or tsv: every table of the report printed to stdout, nothing written.")] = "md",
    equivalence_margin: Annotated[float | None, typer.Option(
        "--equivalence-margin", min=0.0, help="Points: a difference that is not significant and whose 90% interval lies "
        "within ±this is reported as equivalent (TOST). Off by default.")] = None,
) -> None:
    """Write the single-vs-ensemble report from the results store (it reads nothing else).

    Example: zoo-survey report --out zoo-survey-out --format html --equivalence-margin 1
    """
    margin = None if equivalence_margin is None else equivalence_margin / 100
    if format not in FORMATS:
        raise unknown("report format", format, FORMATS)
    store = ResultStore(out / STORE_NAME, create=False)
    rows, similarity = store.rows(), store.similarity()
    if format not in FILE_FORMATS:
        doc = build_report(rows, similarity=similarity, margin=margin)
        if format == "tsv":
            console.file.write(to_tsv(doc))
        else:
            emit([t for s in doc.sections for t in s.tables], console, "table")
        return
    paths = write_report(rows, out, format, similarity, margin)
    print_summary(rows)
    console.print("Written: " + ", ".join(str(p) for p in paths), soft_wrap=True)
