"""The report's analysis as data: pandas DataFrames the report renders and a notebook reads.

A minimal version for the public API (``SurveyResult.answer()``); the ``frames`` lane's module replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import TYPE_CHECKING

from .report import FamilySummary, comparison_lines, family_summaries, latest_rows
from .store import ResultRow, SimilarityRow

if TYPE_CHECKING:
    import pandas as pd


def answer_frame(rows: Sequence[ResultRow], similarity: Sequence[SimilarityRow] = ()) -> pd.DataFrame:
    """One row per family: the mean ensemble-minus-single top-1 difference over datasets (a fraction: 0.011 is
    +1.1 points) with its 95% interval (``low``, ``high``), the datasets won, tied and lost, and the members' CKA
    (columns: :class:`~.report.FamilySummary`'s fields)."""
    import pandas as pd

    summaries = family_summaries(comparison_lines(latest_rows(rows)), similarity)
    return pd.DataFrame([asdict(s) for s in summaries], columns=[f.name for f in fields(FamilySummary)])
