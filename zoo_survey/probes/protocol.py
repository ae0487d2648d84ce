"""The probe protocol's light half: declarations, options and data shapes, importable without scikit-learn.

The CLI (``--help``, option checks), the report and the store read what a probe *is* (its name,
summary, presentation, what it yields) from here; the estimator classes (:mod:`.base`, and the
probe modules) load only when a probe is fitted. :data:`DECLARED` holds the shipped probes'
declarations and where each class lives; each class takes its declarations from it
(``class LinearProbe(ClassifierProbe, declared="linear")``), so they are written once.
A plug-in probe declares them on its class (see :mod:`.base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

Combine = Literal["single", "concat", "average"]
Yields = Literal["accuracy", "score"]
Presentation = Literal["paired", "over-seeds", "ranking"]
PRESENTATIONS: dict[str, str] = {
    "paired": "one row per model and dataset, scored on the same test images: the single-vs-ensemble table",
    "over-seeds": "rows per setting and seed: means with t intervals over seeds, paired differences, curves",
    "ranking": "a score per model: the models ranked, with Kendall's tau against another probe's top-1",
}

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = 5


@dataclass(frozen=True)
class Setting:
    """One row of a probe on a comparison and dataset: ``label`` ("" for full data, "5-shot") and ``seed``."""

    label: str = ""
    seed: int | None = None


@dataclass(frozen=True)
class ProbeConfig:
    """The run's probe options: the regularization grid, few-shot k values and seeds, the device."""

    grid: tuple[float, ...] | None = None
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = DEFAULT_SEEDS
    device: str = "cpu"
    fewshot_val: str = "shots"  # few-shot: choose C within the shots, or "full" (on the validation split)


@dataclass(frozen=True)
class MemberFeatures:
    """A comparison's features on one dataset: per split, one matrix per member; labels per split.

    ``combine`` says how the members become one model: ``single`` (one member),
    ``concat`` (blocks side by side, each weighted equally) or ``average`` (one probe
    per member, class probabilities averaged).
    """

    blocks: Mapping[str, Sequence[np.ndarray]]
    labels: Mapping[str, np.ndarray]
    combine: Combine

    def train_rows(self, idx: np.ndarray) -> MemberFeatures:
        """The same data with only the train rows ``idx`` (few-shot sampling; val and test unchanged)."""
        blocks = {**self.blocks, "train": [b[idx] for b in self.blocks["train"]]}
        return replace(self, blocks=blocks, labels={**self.labels, "train": self.labels["train"][idx]})

    def member(self, i: int) -> MemberFeatures:
        """Member ``i``'s features alone, as its own single-model comparison sees them (output averaging)."""
        return MemberFeatures({s: [b[i]] for s, b in self.blocks.items()}, self.labels, "single")

    @property
    def width(self) -> int:
        return sum(b.shape[1] for b in self.blocks["train"])


@dataclass(frozen=True)
class ProbeResult:
    """Test metrics and the hyper-parameters one fitted estimator chose."""

    top1: float | None
    mean_per_class: float | None
    top5: float | None
    hparams: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe run gives a result row: metrics or a score, choices, warnings, sizes, and the
    predicted class of every test image (an accuracy probe; the report pairs models image by image)."""

    top1: float | None
    mean_per_class: float | None
    top5: float | None
    score: float | None
    hparams: dict[str, Any]
    warnings: tuple[str, ...]
    feature_dim: int
    n_train: int
    n_val: int
    n_test: int
    predictions: np.ndarray | None = field(default=None, compare=False, repr=False)


SELECTIONS = ("shots", "full")  # few-shot: choose C within the shots, or on the full validation split


@dataclass(frozen=True)
class ProbeInfo:
    """What the survey and the report need to know of a probe, without its class: the declarations every probe
    class carries as class attributes (see :class:`.base.Probe`), and for a shipped probe where its class lives."""

    name: str
    summary: str = ""
    yields: Yields = "accuracy"
    presentation: Presentation = "paired"
    title: str = ""  # the report section of "over-seeds" and "ranking" probes
    rank_against: str | None = None  # "ranking": the probe whose top-1 the scores are ranked against
    setting_axis: str = "setting"  # "over-seeds": what a setting label's leading number counts (plot axis)
    combines: tuple[str, ...] = ("single", "concat", "average")
    # How a concatenation's member blocks reach the probe: "weighted" (standardized with the train rows' statistics
    # and scaled by 1/sqrt(width) before the probe, :func:`.combine.weight_blocks`) or "raw" (side by side as they
    # are, with their widths: the probe standardizes every column on the rows it fits, as it does a single model's,
    # train for the sweep and train+val for the refit, then scales each block by 1/sqrt(width)).
    concat_input: str = "weighted"
    target: str = field(default="", compare=False)  # "module:Class", imported on the first fit

    def declarations(self) -> dict[str, Any]:
        """The class attributes a probe class carries."""
        return {k: v for k, v in asdict(self).items() if k != "target"}

    @classmethod
    def of(cls, probe: type) -> ProbeInfo:
        """The declarations of a probe class (a plug-in's, or a test's)."""
        return cls(**{f: getattr(probe, f) for f in cls.__dataclass_fields__ if f != "target"},
                   target=f"{probe.__module__}:{probe.__qualname__}")


DECLARED: dict[str, ProbeInfo] = {p.name: p for p in (
    ProbeInfo("linear", "L2 logistic regression, C swept on val, refit on train+val (Kornblith et al. 2019)",
              concat_input="raw", target="zoo_survey.probes.linear:LinearProbe"),
    ProbeInfo("knn", "weighted cosine kNN (DINO's eval), k chosen on val", target="zoo_survey.probes.neighbors:KNNProbe"),
    ProbeInfo("ncm", "nearest class mean, cosine", target="zoo_survey.probes.neighbors:NCMProbe"),
    ProbeInfo("fewshot", "the linear probe on k examples per class, over several seeds", presentation="over-seeds",
              title="Few-shot", setting_axis="examples per class (k)", concat_input="raw", target="zoo_survey.probes.fewshot:FewShotProbe"),
    ProbeInfo("logme", "LogME transferability score (no training), ranked against the linear probe", yields="score",
              presentation="ranking", title="Transferability (LogME)", rank_against="linear", combines=("single", "concat"),
              target="zoo_survey.probes.logme:LogMEProbe"),
)}


def declared_settings(name: str, config: ProbeConfig) -> tuple[Setting, ...]:
    """A shipped probe's settings (the rows one comparison gets on one dataset), as its class's ``settings`` gives
    them, without importing the class: a fully cached run decides every row is stored with no scikit-learn
    (tests/test_probe_protocol.py holds the two equal)."""
    if name == "fewshot":
        suffix = "" if config.fewshot_val == "shots" else "+val"  # rows of the full-val protocol say so
        return tuple(Setting(f"{k}-shot{suffix}", seed) for k in config.shots for seed in range(config.seeds))
    return (Setting(),)
