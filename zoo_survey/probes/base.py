"""The probe protocol: what every probe is, and the estimator base they share.

A probe is one class in one file (``linear.py``, ``neighbors.py``, ``fewshot.py``,
``logme.py``), registered under its ``name`` in :data:`zoo_survey.probes.PROBES`. It is a
scikit-learn estimator over feature matrices (:class:`sklearn.base.BaseEstimator`:
``__init__`` only stores parameters, so ``get_params``, ``set_params`` and ``clone`` work;
learned state ends in ``_``), and its class declares what the survey and the report need
to know, so neither ever tests a probe's name:

- ``settings(config)``: the rows a comparison gets on a dataset (few-shot: k x seeds);
- ``run(data, setting, config)``: fit and score on a comparison's member blocks, for
  every combination rule (one model, concatenated features, averaged outputs);
- ``yields``: an ``"accuracy"`` (top-1 on test) or a ``"score"`` (no test, e.g. LogME);
- ``presentation``: how the report shows its rows (:data:`PRESENTATIONS`).

``fit(X, y, *, X_val=None, y_val=None)`` takes the validation split as keyword
arguments, as scikit-learn's ``HistGradientBoostingClassifier.fit`` does (1.7+): a probe
chooses its hyper-parameters on it. Without it, a probe that needs one carves a stratified
``validation_fraction`` of ``(X, y)`` (``random_state=0``).

A classifier subclasses :class:`ClassifierProbe` (``predict``, ``predict_proba``, and
``score(X, y)``: the accuracy, a float), sets ``name`` and ``summary``, implements ``fit``
and ``predict_proba``, and is registered with ``PROBES.register(MyProbe)``. A score probe
(``yields = "score"``, such as LogME) subclasses :class:`Probe` and implements ``run``.

>>> class Centroid(ClassifierProbe):                     # doctest: +SKIP
...     name, summary = "centroid", "nearest centroid"
...     def fit(self, X, y, *, X_val=None, y_val=None): ...
...     def predict_proba(self, X): ...
>>> PROBES.register(Centroid)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ..digests import arrays_digest
from ..errors import ZooSurveyError
from .combine import probe_inputs
from .numerics import FIT_THREADS, fit_threads, numerics  # noqa: F401 - re-exported
from .protocol import (  # noqa: F401 - the light declarations, re-exported where probes have always found them
    DECLARED,
    DEFAULT_SEEDS,
    DEFAULT_SHOTS,
    PRESENTATIONS,
    Combine,
    MemberFeatures,
    Presentation,
    ProbeConfig,
    ProbeInfo,
    ProbeOutcome,
    ProbeResult,
    Setting,
    Yields,
)


def best_choice(correct: Mapping[Any, int]) -> Any:
    """The hyper-parameter value with the most correct validation images; ties go to the smallest value (the
    strongest regularization for C, the smoothest vote for k). Counts, not float means: equal accuracies are
    equal whatever order they were summed in.

    >>> best_choice({0.1: 40, 1.0: 41, 10.0: 41})
    1.0
    """
    return max(correct, key=lambda v: (correct[v], -v))


class ProbeInputError(ZooSurveyError, ValueError):
    """Bad features or labels given to a probe; a ``ValueError``, as scikit-learn's estimator checks expect."""


class ProbeNotFittedError(ZooSurveyError, NotFittedError):
    """``predict`` or ``predict_proba`` before ``fit``; scikit-learn's ``NotFittedError``."""


def validate_features(X: Any, y: Any | None = None, *, what: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Check a feature matrix (and labels): 2-D, finite, row counts agree, class labels. Returns float32 arrays,
    and integer labels as int64 (other labels, such as strings, as they are)."""
    if issparse(X):
        raise ProbeInputError(f"{what} are a sparse matrix; probes take dense arrays (X.toarray())")
    X = np.asarray(X)
    if X.ndim != 2:
        hint = ". Reshape your data: X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one sample" if X.ndim == 1 else ""
        raise ProbeInputError(f"{what} must be a 2-D matrix (samples x dims), got shape {X.shape}{hint}")
    if X.shape[0] == 0:
        raise ProbeInputError(f"{what} have no rows (shape={X.shape}); a probe needs at least one")
    if X.shape[1] == 0:
        raise ProbeInputError(f"{what} have 0 feature(s) (shape={X.shape}) while a minimum of 1 is required; a probe needs at least one column")
    if not np.issubdtype(X.dtype, np.number):
        try:
            X = X.astype(np.float32)
        except (TypeError, ValueError):
            raise ProbeInputError(f"{what} must be numbers, got dtype {X.dtype}") from None
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ProbeInputError(f"{what} contain NaN or inf in {bad} of {len(X)} rows; re-extract them (delete their cache entry)")
    if y is None:
        return X.astype(np.float32, copy=False), None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)  # a column of labels: used as 1-D, with scikit-learn's DataConversionWarning
    if y.ndim != 1:
        raise ProbeInputError(f"{what}: labels must be 1-D, one per row, got shape {y.shape}")
    if len(y) != len(X):
        raise ProbeInputError(f"{what} have {len(X)} rows but there are {len(y)} labels; they must match one to one")
    try:
        check_classification_targets(y)
    except ValueError as e:
        raise ProbeInputError(f"{what}: {e}; a probe needs class labels") from None
    return X.astype(np.float32, copy=False), y.astype(np.int64, copy=False) if np.issubdtype(y.dtype, np.integer) else y


def validate_labelled(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`validate_features` where labels are required."""
    X, y = validate_features(X, y, what="test features")
    assert y is not None
    return X, y


def classification_metrics(proba: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, float | None]:
    """top-1, mean per-class accuracy (over the classes present in ``y``), and top-5 when there are more than 5 classes."""
    pred = classes[np.argmax(proba, axis=1)]
    hit = pred == y
    # scikit-learn's balanced_accuracy_score, in the same order of operations (each class's recall, then their mean over
    # the classes present in y; a predicted class absent from y counts for nothing), at a tenth of its cost a row.
    present, of = np.unique(y, return_inverse=True)
    per_class = float(np.mean(np.bincount(of, weights=hit, minlength=len(present)) / np.bincount(of, minlength=len(present))))
    top5 = None
    if len(classes) > 5:
        # Not sklearn's top_k_accuracy_score: it breaks ties (kNN's many zero votes) toward the higher class index,
        # this toward the lower, so the survey's top-5 would change.
        top = classes[np.argsort(-proba, axis=1)[:, :5]]
        top5 = float((top == y[:, None]).any(axis=1).mean())
    return {"top1": float(np.mean(hit)), "mean_per_class": per_class, "top5": top5}


class Probe(BaseEstimator):
    """Base of every probe: a scikit-learn estimator, and the protocol's declarations with their defaults.

    ``__init__`` only stores parameters. ``fit(X, y, *, X_val=None, y_val=None)`` sets
    ``n_features_in_`` and the learned state; ``hparams()`` returns what ``fit`` chose (shown in
    the report). The default :meth:`run` is the accuracy path of :class:`ClassifierProbe`; a
    score probe implements ``run`` itself.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    yields: ClassVar[Yields] = "accuracy"
    presentation: ClassVar[Presentation] = "paired"
    title: ClassVar[str] = ""  # the report section of "over-seeds" and "ranking" probes
    rank_against: ClassVar[str | None] = None  # "ranking": the probe whose top-1 the scores are ranked against
    setting_axis: ClassVar[str] = "setting"  # "over-seeds": what a setting label's leading number counts (plot axis)
    combines: ClassVar[tuple[str, ...]] = ("single", "concat", "average")
    concat_input: ClassVar[str] = "weighted"  # "raw": the probe standardizes a concatenation itself (ProbeInfo)

    n_features_in_: int
    warnings_: tuple[str, ...] = ()

    def __init_subclass__(cls, declared: str | None = None, **kwargs: Any) -> None:
        """``class LinearProbe(ClassifierProbe, declared="linear")``: the class takes its declarations (name, summary,
        presentation, ...) from :data:`protocol.DECLARED`, which the report and the CLI read without importing it."""
        super().__init_subclass__(**kwargs)
        if declared is not None:
            for k, v in DECLARED[declared].declarations().items():
                setattr(cls, k, v)

    # -- the protocol (class level: what the survey and the report ask)

    @classmethod
    def settings(cls, config: ProbeConfig) -> tuple[Setting, ...]:
        """The rows one comparison gets on one dataset; full-data probes have one."""
        return (Setting(),)

    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool) -> Probe:
        """A fresh estimator for the run's options; ``standardize=False`` for pre-weighted ensemble blocks. A probe
        declared with ``concat_input="raw"`` also takes ``block_widths`` (a concatenation's member widths)."""
        return cls()

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        """Fit on train (choosing hyper-parameters on val) and score once on test, by ``data.combine``."""
        raise NotImplementedError(f"{cls.__name__} neither subclasses ClassifierProbe nor implements run()")

    # -- the estimator API

    def fit(self, X, y, *, X_val=None, y_val=None) -> Probe:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        return {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise ProbeNotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    def _test_features(self, X) -> np.ndarray:
        self._check_fitted()
        X, _ = validate_features(X, what="test features")
        if X.shape[1] != self.n_features_in_:
            raise ProbeInputError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                                  "features as input (features of another model or layer?)")
        return X


class ClassifierProbe(ClassifierMixin, Probe):
    """A probe that classifies: ``predict_proba`` (rows sum to 1, columns in ``classes_`` order), ``predict``,
    ``score(X, y)`` (accuracy, from :class:`~sklearn.base.ClassifierMixin`), and ``evaluate(X, y)`` (all test metrics).
    """

    classes_: np.ndarray

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        """Fit on train (choosing hyper-parameters on val) and score once on test, by ``data.combine``;
        with :data:`FIT_THREADS` threads."""
        with fit_threads():
            return cls._run(data, setting, config)

    @classmethod
    def _run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        y = data.labels
        if data.combine == "average":  # output averaging: each member's own single-model fit, probabilities averaged
            fits = [cls._single_fit(data.member(i), config) for i in range(len(data.blocks["train"]))]
            return _outcome(data, np.mean([f.proba for f in fits], axis=0), fits[-1].classes,
                            {"members": [dict(f.hparams) for f in fits]}, [w for f in fits for w in f.warnings])
        if data.combine == "single":
            f = cls._single_fit(data, config)
            return _outcome(data, f.proba, f.classes, dict(f.hparams), list(f.warnings))  # a copy: the fit is remembered
        X, est = probe_estimator(cls, data, config)
        est = _classifier(est).fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
        return _outcome(data, est.predict_proba(validate_labelled(X["test"], y["test"])[0]), est.classes_,
                        est.hparams(), list(est.warnings_))

    @classmethod
    def _single_fit(cls, data: MemberFeatures, config: ProbeConfig) -> MemberFit:
        """One model's fit (a single comparison's row, or an averaged ensemble's member), remembered by content: an
        averaged ensemble reuses its members' rows' fits when this process made them, and computes the very same
        ones otherwise (so the same bits either way)."""
        def fit() -> MemberFit:
            b, y = data.blocks, data.labels
            est = _classifier(cls.build(config, standardize=True)).fit(b["train"][0], y["train"], X_val=b["val"][0],
                                                                         y_val=y["val"])
            return MemberFit(est.predict_proba(validate_labelled(b["test"][0], y["test"])[0]), est.classes_,
                             est.hparams(), tuple(est.warnings_))
        return remembered((cls, config, "full", features_key(data)), fit)

    def fit(self, X, y, *, X_val=None, y_val=None) -> ClassifierProbe:
        raise NotImplementedError

    @classmethod
    def fit_many(cls, estimators: Sequence[ClassifierProbe], data: Sequence[tuple[Any, Any, Any, Any]]) -> list[ClassifierProbe]:
        """Fit each estimator on its ``(X, y, X_val, y_val)``; here one after another. A probe that can solve
        several fits together (the linear probes: one batched solve) overrides it."""
        return [est.fit(X, y, X_val=X_val, y_val=y_val) for est, (X, y, X_val, y_val) in zip(estimators, data, strict=True)]

    def predict_proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises the not-fitted error before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    def evaluate(self, X, y) -> ProbeResult:
        """Test metrics (top-1, mean per-class, top-5) and the chosen hyper-parameters."""
        X, y = validate_labelled(X, y)
        m = classification_metrics(self.predict_proba(X), y, self.classes_)
        return ProbeResult(m["top1"], m["mean_per_class"], m["top5"], self.hparams(), tuple(self.warnings_))


@dataclass(frozen=True)
class MemberFit:
    """What a row keeps of one model's fitted probe: test class probabilities (columns in ``classes`` order), the
    chosen hyper-parameters and warnings; few-shot adds the shots' positions and the sampling notes."""

    proba: np.ndarray
    classes: np.ndarray
    hparams: dict[str, Any]
    warnings: tuple[str, ...]
    shots: np.ndarray | None = None
    notes: tuple[str, ...] = ()


# Recent single-model fits, by probe class, options and feature content (see ClassifierProbe._single_fit). A few
# suffice: a survey probes a comparison's members just before the ensembles made of them.
_FITS: OrderedDict[tuple, Any] = OrderedDict()
FITS_KEPT = 8


def remembered(key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, or what it gave for ``key`` lately in this process."""
    if key in _FITS:
        _FITS.move_to_end(key)
        return _FITS[key]
    value = compute()
    _FITS[key] = value
    while len(_FITS) > FITS_KEPT:
        _FITS.popitem(last=False)
    return value


def feature_arrays(data: MemberFeatures) -> list[np.ndarray]:
    """A comparison's feature blocks and labels, every split, in a fixed order."""
    return [a for s in sorted(data.blocks) for a in data.blocks[s]] + [data.labels[s] for s in sorted(data.labels)]


def features_key(data: MemberFeatures) -> str:
    """A digest of a comparison's features and labels (shapes, dtypes and bytes) and its combination rule."""
    arrays = feature_arrays(data)
    shapes = ";".join(f"{a.dtype}{a.shape}" for a in arrays)
    return f"{data.combine}:{shapes}:{arrays_digest(*arrays, length=32)}"


def probe_estimator(cls: type[Probe], data: MemberFeatures, config: ProbeConfig) -> tuple[dict[str, np.ndarray], Probe]:
    """One matrix per split for a single model or a concatenation (:func:`.combine.probe_inputs`), and a fresh
    estimator for it: a single model's columns standardized by the probe; a concatenation's either weighted
    beforehand or, for a probe that takes them raw, standardized by the probe and weighted by ``block_widths``; a
    one-block concatenation (a width-matched control's projection) is pre-weighted and not standardized again."""
    X, widths = probe_inputs(data.blocks, cls.concat_input)
    return X, estimator_for(cls, config, data.combine, widths)


def estimator_for(cls: type[Probe], config: ProbeConfig, combine: str, widths: tuple[int, ...] | None) -> Probe:
    """:func:`probe_estimator`'s estimator, for inputs :func:`.combine.probe_inputs` gave ``widths``."""
    if widths is not None:
        return cls.build(config, standardize=True, block_widths=widths)  # type: ignore[call-arg]
    return cls.build(config, standardize=combine == "single")


def _classifier(est: Probe) -> ClassifierProbe:
    assert isinstance(est, ClassifierProbe), f"{type(est).__name__}.build() must return a ClassifierProbe"
    return est


def check_fit(X, y, X_val=None, y_val=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a fit's train and validation data; returns them as arrays plus the train classes.

    Without validation data, ``X_val`` and ``y_val`` come back empty (0 rows); see :func:`with_validation`.
    """
    if y is None:
        raise ProbeInputError("fit requires y to be passed, but the target y is None")
    X, y = validate_features(X, y, what="train features")
    assert y is not None
    classes = np.unique(y)
    if len(classes) < 2:
        raise ProbeInputError(f"train labels hold only one class ({classes.tolist()}); a probe needs at least 2")
    if (X_val is None) != (y_val is None):
        raise ProbeInputError("pass X_val and y_val together (the validation features and their labels), or neither")
    if X_val is None:
        return X, y, X[:0], y[:0], classes
    X_val, y_val = validate_features(X_val, y_val, what="validation features")
    assert y_val is not None
    if X_val.shape[1] != X.shape[1]:
        raise ProbeInputError(
            f"validation features have {X_val.shape[1]} columns but train features {X.shape[1]}; "
            "they must come from the same model"
        )
    return X, y, X_val, y_val, classes


def with_validation(X, y, X_val, y_val, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`check_fit`, and without ``X_val`` a stratified ``fraction`` of (X, y) carved as validation data
    (``train_test_split(stratify=y, random_state=0)``), for probes that choose hyper-parameters on it."""
    X, y, X_val, y_val, classes = check_fit(X, y, X_val, y_val)
    if len(y_val):
        return X, y, X_val, y_val, classes
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise ProbeInputError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
    try:
        X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, stratify=y, random_state=0)
    except ValueError as e:
        raise ProbeInputError(f"cannot carve a stratified validation split from {len(y)} rows ({e}); "
                              "pass X_val and y_val") from None
    return check_fit(X, y, X_val, y_val)


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
