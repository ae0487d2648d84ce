"""Statistics of results: confidence intervals for accuracies and paired differences (scipy).

Every single-vs-ensemble difference is paired (both sides scored on the same test
images, and for few-shot on the same draws), so differences get paired intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ZooSurveyError


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval; half-width is nan for one value.

    >>> m, h = t_interval([0.5, 0.6, 0.7]); round(m, 2), round(h, 3)
    (0.6, 0.248)
    """
    from scipy import stats  # lazy: scipy.stats takes a while to import, and --help should not wait

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean difference ``b - a`` over paired seeds, and the half-width of its t interval."""
    if len(a) != len(b):
        raise ZooSurveyError(f"a paired interval needs the same seeds on both sides; got {len(a)} and {len(b)}")
    return t_interval(np.asarray(b, float) - np.asarray(a, float), level)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau between two rankings of the same items; None below two items or when undefined."""
    from scipy import stats

    if len(x) < 2:
        return None
    tau = float(stats.kendalltau(x, y).statistic)
    return None if math.isnan(tau) else tau
