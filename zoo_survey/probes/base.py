"""The probe protocol: what every probe is, and the estimator base they share.

A probe is one class in one file (``linear.py``, ``neighbors.py``, ``fewshot.py``,
``logme.py``), registered under its ``name`` in :data:`zoo_survey.probes.PROBES`. It is
an estimator over feature matrices (``fit`` / ``predict_proba`` / ``score``, learned
state ending in ``_``, scikit-learn style), and its class declares what the survey and
the report need to know, so neither ever tests a probe's name:

- ``settings(config)``: the rows a comparison gets on a dataset (few-shot: k x seeds);
- ``run(data, setting, config)``: fit and score on a comparison's member blocks, for
  every combination rule (one model, concatenated features, averaged outputs);
- ``yields``: an ``"accuracy"`` (top-1 on test) or a ``"score"`` (no test, e.g. LogME);
- ``presentation``: how the report shows its rows (:data:`PRESENTATIONS`).

A new probe subclasses :class:`Probe`, sets ``name`` and ``summary``, implements
``fit`` and ``predict_proba``, and is registered with ``PROBES.register(MyProbe)``.

>>> class Centroid(Probe):                               # doctest: +SKIP
...     name, summary = "centroid", "nearest centroid"
...     def fit(self, X, y, X_val, y_val): ...
...     def predict_proba(self, X): ...
>>> PROBES.register(Centroid)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import ZooSurveyError
from .combine import weight_blocks

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


def validate_features(X: Any, y: Any | None = None, *, what: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Check a feature matrix (and labels): 2-D, finite, row counts agree. Returns float32 / int64 arrays."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ZooSurveyError(f"{what} must be a 2-D matrix (samples x dims), got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ZooSurveyError(f"{what} contain NaN or inf in {bad} of {len(X)} rows; re-extract them (delete their cache entry)")
    if y is None:
        return X.astype(np.float32, copy=False), None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ZooSurveyError(f"{what} have {len(X)} rows but there are {len(y)} labels; they must match one to one")
    return X.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def validate_labelled(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`validate_features` where labels are required."""
    X, y = validate_features(X, y, what="test features")
    assert y is not None
    return X, y


def classification_metrics(proba: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, float | None]:
    """top-1, mean per-class accuracy, and top-5 when there are more than 5 classes."""
    pred = classes[np.argmax(proba, axis=1)]
    correct = pred == y
    per_class = [correct[y == c].mean() for c in np.unique(y)]
    top5 = None
    if len(classes) > 5:
        top = classes[np.argsort(-proba, axis=1)[:, :5]]
        top5 = float((top == y[:, None]).any(axis=1).mean())
    return {"top1": float(correct.mean()), "mean_per_class": float(np.mean(per_class)), "top5": top5}


class Probe:
    """Base of every probe: the estimator API and the protocol's declarations with their defaults.

    Subclasses set ``n_features_in_`` and ``classes_`` in ``fit`` and implement ``predict_proba``;
    ``hparams()`` returns what ``fit`` chose (shown in the report).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    yields: ClassVar[Yields] = "accuracy"
    presentation: ClassVar[Presentation] = "paired"
    title: ClassVar[str] = ""  # the report section of "over-seeds" and "ranking" probes
    rank_against: ClassVar[str | None] = None  # "ranking": the probe whose top-1 the scores are ranked against
    setting_axis: ClassVar[str] = "setting"  # "over-seeds": what a setting label's leading number counts (plot axis)
    combines: ClassVar[tuple[str, ...]] = ("single", "concat", "average")

    n_features_in_: int
    classes_: np.ndarray
    warnings_: tuple[str, ...] = ()

    # -- the protocol (class level: what the survey and the report ask)

    @classmethod
    def settings(cls, config: ProbeConfig) -> tuple[Setting, ...]:
        """The rows one comparison gets on one dataset; full-data probes have one."""
        return (Setting(),)

    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool) -> Probe:
        """A fresh estimator for the run's options; ``standardize=False`` for pre-weighted ensemble blocks."""
        return cls()

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        """Fit on train (choosing hyper-parameters on val) and score once on test, by ``data.combine``."""
        b, y = data.blocks, data.labels
        if data.combine == "average":  # output averaging: one probe per member, probabilities averaged
            probas, hps, notes, classes = [], [], [], None
            for i in range(len(b["train"])):
                est = cls.build(config, standardize=True).fit(b["train"][i], y["train"], b["val"][i], y["val"])
                probas.append(est.predict_proba(b["test"][i]))
                hps.append(est.hparams())
                notes += list(est.warnings_)
                classes = est.classes_
            assert classes is not None
            return _outcome(data, np.mean(probas, axis=0), classes, {"members": hps}, notes)
        X = weight_blocks(b)
        est = cls.build(config, standardize=data.combine == "single").fit(X["train"], y["train"], X["val"], y["val"])
        return _outcome(data, est.predict_proba(validate_labelled(X["test"], y["test"])[0]), est.classes_,
                        est.hparams(), list(est.warnings_))

    # -- the estimator API

    def fit(self, X, y, X_val, y_val) -> Probe:
        raise NotImplementedError

    def predict_proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        return {}

    def _test_features(self, X) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise ZooSurveyError(f"this {type(self).__name__} is not fitted yet; call fit() first")
        X, _ = validate_features(X, what="test features")
        if X.shape[1] != self.n_features_in_:
            raise ZooSurveyError(f"features have {X.shape[1]} columns, but the probe was fitted on {self.n_features_in_}")
        return X

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises the not-fitted error before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y) -> ProbeResult:
        """Test metrics and the chosen hyper-parameters."""
        X, y = validate_labelled(X, y)
        m = classification_metrics(self.predict_proba(X), y, self.classes_)
        return ProbeResult(m["top1"], m["mean_per_class"], m["top5"], self.hparams(), tuple(self.warnings_))


def check_fit(X, y, X_val, y_val) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a fit's train and validation data; returns them as arrays plus the train classes."""
    X, y = validate_features(X, y, what="train features")
    X_val, y_val = validate_features(X_val, y_val, what="validation features")
    assert y is not None and y_val is not None
    if X_val.shape[1] != X.shape[1]:
        raise ZooSurveyError(
            f"validation features have {X_val.shape[1]} columns but train features {X.shape[1]}; "
            "they must come from the same model"
        )
    classes = np.unique(y)
    if len(classes) < 2:
        raise ZooSurveyError(f"train labels hold a single class ({classes.tolist()}); a probe needs at least 2")
    return X, y, X_val, y_val, classes


def _outcome(data: MemberFeatures, proba: np.ndarray | None, classes: np.ndarray | None, hparams: dict[str, Any],
             warnings: Sequence[str], score: float | None = None) -> ProbeOutcome:
    """A row's outcome from the test class probabilities (accuracy probes) or a ``score``."""
    m: Mapping[str, float | None] = {}
    predictions = None
    if proba is not None and classes is not None:
        m = classification_metrics(proba, data.labels["test"], classes)
        predictions = classes[np.argmax(proba, axis=1)]
    return ProbeOutcome(
        top1=m.get("top1"), mean_per_class=m.get("mean_per_class"), top5=m.get("top5"), score=score,
        hparams=hparams, warnings=tuple(warnings), feature_dim=data.width,
        n_train=len(data.labels["train"]), n_val=len(data.labels["val"]), n_test=len(data.labels["test"]),
        predictions=predictions,
    )


def score_outcome(data: MemberFeatures, score: float, hparams: dict[str, Any] | None = None) -> ProbeOutcome:
    """The outcome of a score probe (``yields = "score"``): no test metrics, no predictions."""
    return _outcome(data, None, None, hparams or {}, (), score=score)
