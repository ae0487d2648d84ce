"""Few-shot linear probe: k training examples per class, several seeds.

The k-shot set is sampled from the train split only (per class, seeded), and the test
split is scored once. The sampled indices depend only on the labels, k and the seed, so
every model and ensemble of a comparison sees exactly the same examples, and differences
between them are paired (the report gives paired intervals over seeds).

How C is chosen (``--fewshot-val``):

- ``shots`` (the default): with no labels beyond the k per class. C is chosen by
  stratified cross-validation within the shots (min(k, 5) folds, each holding out one
  or more examples of every class), then the probe is fitted on all the shots at that C.
  With one example per class there is nothing to hold out, so 1-shot uses a fixed,
  documented C (:data:`ONE_SHOT_C`).
- ``full``: the earlier protocol, C chosen on the full validation split (which never
  trains the probe). It uses more labels than "k-shot" says; its rows are labelled
  ``"k-shot+val"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from .base import (
    MemberFeatures,
    MemberFit,
    ProbeConfig,
    ProbeInputError,
    ProbeOutcome,
    Setting,
    _outcome,
    best_choice,
    check_fit,
    estimator_for,
    feature_arrays,
    features_key,
    fit_threads,
    probe_estimator,
    remembered,
    validate_labelled,
    with_validation,
)
from .combine import probe_inputs
from .linear import SWEEP_TOL_FACTOR, Job, LinearProbe, sweep_many
from .protocol import SELECTIONS

FEWSHOT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 12))  # every 4th value of the 45-value grid
# 1-shot has no example to hold out. Strong regularization: as C -> 0 the L2 logistic probe tends to the
# class-centroid classifier (its weights -> C X^T (Y - 1/K)), the natural rule for one example per class.
ONE_SHOT_C = 1e-3
MAX_FOLDS = 5


def sample_shots(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Positions of ``k`` examples per class (all of a class that has fewer), sorted; plus notes.

    >>> idx, notes = sample_shots(np.array([0, 0, 0, 1]), 2, seed=0)
    >>> len(idx), notes
    (3, ['class 1 has 1 example(s), fewer than k=2: used all of them'])
    """
    if k < 1:
        raise ProbeInputError(f"few-shot k must be at least 1, got {k}")
    rng = np.random.default_rng([seed, k])
    picked, notes = [], []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if len(pos) < k:
            notes.append(f"class {int(c)} has {len(pos)} example(s), fewer than k={k}: used all of them")
        picked.append(rng.choice(pos, size=min(k, len(pos)), replace=False))
    return np.sort(np.concatenate(picked)), notes


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per row: each class's rows shuffled (seeded) and dealt round-robin, so every fold holds
    out at least one example of every class that has ``n_folds`` or more.

    Not ``StratifiedKFold(shuffle=True)``: its folds come from another generator and another dealing
    rule, so the folds (and the chosen C of every stored few-shot row) would change.

    >>> stratified_folds(np.array([0, 0, 1, 1]), 2).tolist()
    [1, 0, 0, 1]
    """
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        pos = rng.permutation(np.flatnonzero(labels == c))
        folds[pos] = np.arange(len(pos)) % n_folds
    return folds


def shots_of(setting: Setting) -> int:
    """k of a few-shot setting label such as ``"5-shot"``."""
    return int(setting.label.split("-")[0])


class FewShotProbe(LinearProbe, declared="fewshot"):
    """The linear probe on k examples per class; C chosen within the shots (``select="shots"``) or on the
    validation split (``select="full"``); never refitted on validation data.

    Its parameters are the linear probe's, less ``refit`` (never: validation data never trains it), with
    few-shot defaults (``grid=FEWSHOT_GRID``, ``search="full"``).

    >>> FewShotProbe(select="shots").fit(X5, y5).hparams()["selection"]   # doctest: +SKIP
    '5-fold CV within the shots'
    """


    def __init__(
        self,
        select: str = "shots",
        grid: tuple[float, ...] | None = FEWSHOT_GRID,
        search: str = "full",
        max_iter: int = 1000,
        tol: float = 1e-4,
        device: str = "cpu",
        standardize: bool = True,
        sweep_tol: float | None = None,
        validation_fraction: float = 0.2,
        block_widths: tuple[int, ...] | None = None,
    ):
        self.select = select
        self.grid = grid
        self.search = search
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.standardize = standardize
        self.sweep_tol = sweep_tol
        self.validation_fraction = validation_fraction  # select="full" without X_val: carved from (X, y)
        self.block_widths = block_widths  # a concatenation's member widths (see LinearProbe)

    @classmethod
    def settings(cls, config: ProbeConfig) -> tuple[Setting, ...]:
        suffix = "" if config.fewshot_val == "shots" else "+val"  # rows of the full-val protocol say so
        return tuple(Setting(f"{k}-shot{suffix}", seed) for k in config.shots for seed in range(config.seeds))

    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool, block_widths: tuple[int, ...] | None = None) -> FewShotProbe:
        return cls(select=config.fewshot_val, grid=config.grid or FEWSHOT_GRID, device=config.device,
                   standardize=standardize, block_widths=block_widths)

    def fit(self, X, y, *, X_val=None, y_val=None) -> FewShotProbe:
        """``select="full"``: sweep C on (X_val, y_val). ``select="shots"``: ignore them; choose C within (X, y)."""
        self.fit_many([self], [(X, y, X_val, y_val)])
        return self

    @classmethod
    def fit_many(cls, estimators: Sequence[LinearProbe], data: Sequence[tuple[Any, Any, Any, Any]]) -> list[LinearProbe]:
        """Fit several few-shot estimators together: every cross-validation fold of every estimator in one
        batched sweep, then every kept fit in one batched solve."""
        with fit_threads():
            _fit_shots(list(estimators), list(data))
        return list(estimators)

    def hparams(self) -> dict[str, Any]:
        """The chosen C, how it was chosen, and the accuracy that chose it (validation, or cross-validation)."""
        out: dict[str, Any] = {"C": self.best_C_, "selection": self.selection_}
        if self.select == "full" or self.cv_:
            out["val_top1" if self.select == "full" else "cv_top1"] = self.val_scores_[self.best_C_]
            out["grid_evaluated"] = len(self.val_scores_)
        return out

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        """One setting's outcome. Every setting of ``config`` on these features is computed in one batch the
        first time one is asked for (and kept for the next): the same batch, so the same bits, whichever
        setting a runner asks for first, and whether it asks for the others here or on another worker."""
        settings = cls.settings(config)
        if setting not in settings:
            return cls._run_settings(data, [setting], config)[setting]
        arrays = feature_arrays(data)
        same = _MEMO.get("arrays") is not None and len(_MEMO["arrays"]) == len(arrays) and all(
            a is b for a, b in zip(_MEMO["arrays"], arrays, strict=True))  # the same objects: no need to hash them
        # The combination rule apart from the digest: a single model and a one-member ensemble share their arrays.
        key = (cls, config, data.combine, _MEMO["key"][3] if same else features_key(data))
        if _MEMO.get("key") != key:
            _MEMO.clear()
            _MEMO.update(key=key, outcomes=cls._run_settings(data, settings, config))
        _MEMO["arrays"] = arrays
        return _MEMO["outcomes"][setting]

    @classmethod
    def _run_settings(cls, data: MemberFeatures, settings: Sequence[Setting], config: ProbeConfig) -> dict[Setting, ProbeOutcome]:
        with fit_threads():
            return cls._run_batch(data, settings, config)

    @classmethod
    def _run_batch(cls, data: MemberFeatures, settings: Sequence[Setting], config: ProbeConfig) -> dict[Setting, ProbeOutcome]:
        """Every setting's outcome. A single model's fits are remembered (:func:`~.base.remembered`); an averaged
        ensemble averages its members' own single-model fits, reused when this process made them."""
        if data.combine == "concat":
            per = [cls._fit_batch(data, settings, config)]
        else:
            members = [data] if data.combine == "single" else [data.member(i) for i in range(len(data.blocks["train"]))]
            per = [remembered((cls, config, tuple(settings), features_key(m)), partial(cls._fit_batch, m, settings, config))
                   for m in members]
        out = {}
        for st in settings:
            fits = [p[st] for p in per]
            # Copies: the fits are remembered, and a row's hyper-parameters are its own.
            hp = {"members": [dict(f.hparams) for f in fits]} if data.combine == "average" else dict(fits[0].hparams)
            shots = fits[0].shots
            assert shots is not None
            o = _outcome(data.train_rows(shots), np.mean([f.proba for f in fits], axis=0), fits[-1].classes, hp,
                         [w for f in fits for w in f.warnings])
            out[st] = replace(o, warnings=o.warnings + fits[0].notes)
        return out

    @classmethod
    def _fit_batch(cls, data: MemberFeatures, settings: Sequence[Setting], config: ProbeConfig) -> dict[Setting, MemberFit]:
        """One model's (or a concatenation's) fits for every setting, in one batched solve."""
        plans, ests, fits = [], [], []
        # Raw inputs commute with picking train rows: side by side (and the test rows checked) once, not per setting.
        X_all: dict[str, np.ndarray] | None = None
        widths: tuple[int, ...] | None = None
        if not (data.combine == "concat" and len(data.blocks["train"]) > 1 and cls.concat_input != "raw"):
            X_all, widths = probe_inputs(data.blocks, cls.concat_input)  # else: weighted on each setting's shots, below
        test = None if X_all is None else validate_labelled(X_all["test"], data.labels["test"])[0]
        for st in settings:
            # Sample first: every column's statistics then come from the k-shot examples alone (each fold's, in CV).
            idx, notes = sample_shots(data.labels["train"], shots_of(st), st.seed or 0)
            y = {**data.labels, "train": data.labels["train"][idx]}
            if X_all is not None:
                fits.append((X_all["train"][idx], y["train"], X_all["val"], y["val"]))
                est, t = estimator_for(cls, config, data.combine, widths), test
            else:
                X, est = probe_estimator(cls, data.train_rows(idx), config)
                fits.append((X["train"], y["train"], X["val"], y["val"]))
                t = validate_labelled(X["test"], y["test"])[0]
            plans.append((st, idx, tuple(notes), est, t))
            ests.append(est)
        cls.fit_many(ests, fits)
        return {st: MemberFit(e.predict_proba(t), e.classes_, e.hparams(), tuple(e.warnings_), idx, notes)
                for st, idx, notes, e, t in plans}


# The last comparison's few-shot outcomes, every setting (one per process: the rows of one comparison and dataset
# come one after another). Keyed by the features' content, so features shipped anew to a worker still hit.
_MEMO: dict[str, Any] = {}


def _fit_shots(ests: list[FewShotProbe], data: list[tuple[Any, Any, Any, Any]]) -> None:
    """:meth:`FewShotProbe.fit_many`: the estimators' cross-validation sweeps in one batch, then their kept fits."""
    for e in ests:
        if e.select not in SELECTIONS:
            raise ProbeInputError(f"select must be one of {', '.join(SELECTIONS)}, got {e.select!r}")
    jobs: list[Job] = []
    finals: list[Job] = []
    cv: list[tuple[FewShotProbe, np.ndarray, np.ndarray, np.ndarray, list[Job]]] = []
    checked: dict[tuple[int, int], tuple[int, ...]] = {}
    for e, (X, y, X_val, y_val) in zip(ests, data, strict=True):
        if e.select == "full":
            finals.append(Job(e, with_validation(X, y, X_val, y_val, e.validation_fraction), e._grid(), False))
            e.selection_, e.cv_ = "on the full validation split", False
            continue
        # The validation arguments are checked (bad input is named whatever the selection), once per array: a
        # comparison's settings all pass the same split.
        if X_val is not None and checked.get((id(X_val), id(y_val))) == np.shape(X)[1:]:
            X, y, _, _, classes = check_fit(X, y)
        else:
            X, y, _, _, classes = check_fit(X, y, X_val, y_val)
            checked[(id(X_val), id(y_val))] = X.shape[1:]
        per_class = int(np.bincount(np.searchsorted(classes, y)).min())
        folds: list[Job] = []
        if per_class >= 2:
            n_folds = min(per_class, MAX_FOLDS)
            fold_of = stratified_folds(y, n_folds)
            grid = e._grid()
            for f in range(n_folds):
                held = fold_of == f
                # A fold's fit only ranks C (like the linear probe's sweep): it stops at 10 x tol; the kept fit uses tol.
                fold = LinearProbe(grid=tuple(grid), search="full", refit=False, device=e.device, max_iter=e.max_iter,
                                   tol=SWEEP_TOL_FACTOR * e.tol, standardize=e.standardize, block_widths=e.block_widths)
                # Rows of checked arrays: no second check (every class is in both parts: n_folds <= per_class).
                folds.append(Job(fold, (X[~held], y[~held], X[held], y[held], classes), grid, False, checked=True,
                                 model=False))
            e.selection_ = f"{n_folds}-fold CV within the shots"
        else:
            e.selection_ = f"fixed C={ONE_SHOT_C:g} (one example per class: nothing to hold out)"
        jobs += folds
        cv.append((e, X, y, classes, folds))
    sweep_many(jobs)
    chosen = []
    for e, X, y, classes, folds in cv:
        correct: dict[float, int] = {}  # held-out shots right at each C, summed over the folds
        for job in folds:
            for c, n in job.est.val_correct_.items():
                correct[c] = correct.get(c, 0) + n
        C = best_choice(correct) if correct else ONE_SHOT_C  # counts of whole shots; ties: the strongest regularization
        # The validation arguments only score the single C here; the fit uses the shots alone.
        finals.append(Job(e, (X, y, X, y, classes), np.array([C]), False))
        e.cv_ = bool(correct)
        chosen.append((e, y, correct))
    sweep_many(finals)
    for e, y, correct in chosen:
        if correct:  # every shot is held out once: the CV accuracy is right shots / all shots
            e.val_correct_ = dict(sorted(correct.items()))
            e.val_scores_ = {c: n / len(y) for c, n in e.val_correct_.items()}
