"""Few-shot linear probe: k training examples per class, several seeds.

The k-shot set is sampled from the train split only (per class, seeded); C is chosen on
the full validation split, which never enters training (no refit on train+val), and the
test split is scored once. The sampled indices depend only on the labels, k and the
seed, so every model and ensemble of a comparison sees exactly the same examples, and
differences between them are paired (the report gives paired intervals over seeds).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from ..errors import ZooSurveyError
from .base import MemberFeatures, Presentation, ProbeConfig, ProbeOutcome, Setting
from .linear import LinearProbe

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


def shots_of(setting: Setting) -> int:
    """k of a few-shot setting label such as ``"5-shot"``."""
    return int(setting.label.split("-")[0])


class FewShotProbe(LinearProbe):
    """The linear probe on k examples per class: every C of the grid fitted, chosen on val, no refit."""

    name: ClassVar[str] = "fewshot"
    summary: ClassVar[str] = "the linear probe on k examples per class, over several seeds"
    presentation: ClassVar[Presentation] = "over-seeds"
    title: ClassVar[str] = "Few-shot"
    setting_axis: ClassVar[str] = "examples per class (k)"

    @classmethod
    def settings(cls, config: ProbeConfig) -> tuple[Setting, ...]:
        return tuple(Setting(f"{k}-shot", seed) for k in config.shots for seed in range(config.seeds))

    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool) -> FewShotProbe:
        return cls(grid=config.grid or FEWSHOT_GRID, search="full", refit=False, device=config.device,
                   standardize=standardize)

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        # Sample first: ensemble block weights then come from the k-shot examples alone.
        idx, notes = sample_shots(data.labels["train"], shots_of(setting), setting.seed or 0)
        out = super().run(data.train_rows(idx), setting, config)
        return replace(out, warnings=out.warnings + tuple(notes))
