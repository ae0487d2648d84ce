"""Few-shot linear probe: k training examples per class, several seeds, paired confidence intervals.

The k-shot set is sampled from the train split only (per class, seeded); C is chosen on
the full validation split, which never enters training (no refit on train+val), and the
test split is scored once. The sampled indices depend only on the labels, k and the
seed, so every model and ensemble of a comparison sees exactly the same examples, and
differences between them are paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ZooSurveyError

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = 5
FEWSHOT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 12))  # every 4th value of the 45-value grid


def sample_shots(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Positions of ``k`` examples per class (all of a class that has fewer), sorted; plus notes.

    >>> idx, notes = sample_shots(np.array([0, 0, 0, 1]), 2, seed=0)
    >>> len(idx), notes
    (3, ['class 1 has 1 example(s), fewer than k=2: used all of them'])
    """
    if k < 1:
        raise ZooSurveyError(f"few-shot k must be at least 1, got {k}")
    rng = np.random.default_rng([seed, k])
    picked, notes = [], []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if len(pos) < k:
            notes.append(f"class {int(c)} has {len(pos)} example(s), fewer than k={k}: used all of them")
        picked.append(rng.choice(pos, size=min(k, len(pos)), replace=False))
    return np.sort(np.concatenate(picked)), notes


def parse_shots(text: str) -> tuple[int, ...]:
    try:
        shots = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError as e:
        raise ZooSurveyError(f"--shots must be comma-separated integers like 1,5,10; got {text!r}") from e
    if not shots or shots[0] < 1:
        raise ZooSurveyError(f"--shots values must be at least 1 (examples per class); got {text!r}")
    return shots


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval; half-width is nan for one value.

    >>> m, h = t_interval([0.5, 0.6, 0.7]); round(m, 2), round(h, 3)
    (0.6, 0.248)
    """
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    half = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean difference ``b - a`` over paired seeds, and the half-width of its t interval."""
    if len(a) != len(b):
        raise ZooSurveyError(f"a paired interval needs the same seeds on both sides; got {len(a)} and {len(b)}")
    return t_interval(np.asarray(b, float) - np.asarray(a, float), level)
