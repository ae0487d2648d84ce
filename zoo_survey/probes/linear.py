"""Linear probe, Kornblith et al. (2019) protocol.

Multinomial L2 logistic regression on features standardized with train statistics.
The inverse regularization strength ``C`` is swept over a log grid (45 values from
1e-6 to 1e5) coarse-to-fine: every 4th value first, then the neighbours of the best.
``C`` is chosen on the validation split, the model is refitted on train+val, and it
is evaluated once on test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ZooSurveyError

DEFAULT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 45))


def validate_features(X: Any, y: Any | None = None, *, what: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Check a feature matrix (and labels): 2-D, finite, row counts agree. Returns float32 / int64 arrays."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ZooSurveyError(f"{what} must be a 2-D matrix (samples x dims), got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ZooSurveyError(f"{what} contain NaN or inf in {bad} of {len(X)} rows; re-extract them (zoo-survey cache verify)")
    if y is None:
        return X.astype(np.float32, copy=False), None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ZooSurveyError(f"{what} have {len(X)} rows but there are {len(y)} labels; they must match one to one")
    return X.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


@dataclass(frozen=True)
class ProbeResult:
    """Test metrics and the hyper-parameters the probe chose."""

    top1: float
    mean_per_class: float
    top5: float | None
    hparams: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


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


class LinearProbe:
    """Logistic-regression probe with a validation sweep of ``C`` and a refit on train+val.

    >>> probe = LinearProbe().fit(X_train, y_train, X_val, y_val)   # doctest: +SKIP
    >>> probe.best_C_, probe.score(X_test, y_test).top1              # doctest: +SKIP
    """

    def __init__(self, grid: tuple[float, ...] | None = None, search: str = "coarse-to-fine", max_iter: int = 1000, tol: float = 1e-4):
        self.grid = grid
        self.search = search
        self.max_iter = max_iter
        self.tol = tol

    # -- helpers
    def _grid(self) -> np.ndarray:
        grid = np.asarray(DEFAULT_GRID if self.grid is None else self.grid, dtype=float)
        if grid.ndim != 1 or len(grid) == 0:
            raise ZooSurveyError("the regularization grid must be a non-empty list of positive numbers")
        if (grid <= 0).any() or not np.isfinite(grid).all():
            raise ZooSurveyError(f"the regularization grid must hold positive finite values, got {grid[grid <= 0][:3].tolist()}")
        if self.search not in ("coarse-to-fine", "full"):
            raise ZooSurveyError(f"search must be 'coarse-to-fine' or 'full', got {self.search!r}")
        return np.sort(grid)

    def _model(self, C: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol, warm_start=True)

    @staticmethod
    def _standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std < 1e-6] = 1.0
        return mean, std

    def fit(self, X, y, X_val, y_val) -> LinearProbe:
        """Sweep ``C`` on (X_val, y_val), then refit on train+val with the best ``C``."""
        from sklearn.exceptions import ConvergenceWarning

        X, y = validate_features(X, y, what="train features")
        X_val, y_val = validate_features(X_val, y_val, what="validation features")
        if X_val.shape[1] != X.shape[1]:
            raise ZooSurveyError(f"validation features have {X_val.shape[1]} columns but train features {X.shape[1]}")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ZooSurveyError(f"train labels hold a single class ({classes.tolist()}); a probe needs at least 2")
        missing = np.setdiff1d(classes, np.unique(y_val))
        if len(missing):
            raise ZooSurveyError(
                f"classes {missing[:10].tolist()} are missing from the validation split; use a larger --max-train "
                "or a larger val_fraction so every class is validated"
            )
        grid = self._grid()
        mean, std = self._standardize(X)
        Xs, Xv = (X - mean) / std, (X_val - mean) / std
        notes: list[str] = []
        scores: dict[float, float] = {}

        def evaluate(cs):
            model = None
            for C in sorted(c for c in cs if c not in scores):  # small C first: warm starts along the path
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    if model is None:
                        model = self._model(C)
                    model.set_params(C=C)
                    model.fit(Xs, y)
                if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                    notes.append(f"C={C:.3g} did not converge in {self.max_iter} iterations")
                scores[C] = float((model.predict(Xv) == y_val).mean())

        if self.search == "full" or len(grid) <= 12:
            evaluate(grid)
        else:
            evaluate(grid[::4])
            best_i = int(np.flatnonzero(grid == max(scores, key=lambda c: (scores[c], -c)))[0])
            evaluate(grid[max(0, best_i - 3) : best_i + 4])
        # Ties go to the strongest regularization (smallest C).
        self.best_C_ = max(scores, key=lambda c: (scores[c], -c))
        self.val_scores_ = dict(sorted(scores.items()))
        X_all, y_all = np.concatenate([X, X_val]), np.concatenate([y, y_val])
        self.mean_, self.std_ = self._standardize(X_all)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.model_ = self._model(self.best_C_).fit((X_all - self.mean_) / self.std_, y_all)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            notes.append(f"refit at C={self.best_C_:.3g} did not converge in {self.max_iter} iterations")
        self.classes_ = self.model_.classes_
        self.n_features_in_ = X.shape[1]
        self.warnings_ = tuple(notes)
        return self

    def predict_proba(self, X) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise ZooSurveyError("this LinearProbe is not fitted yet; call fit() first")
        X, _ = validate_features(X, what="test features")
        if X.shape[1] != self.n_features_in_:
            raise ZooSurveyError(f"features have {X.shape[1]} columns, but the probe was fitted on {self.n_features_in_}")
        return self.model_.predict_proba((X - self.mean_) / self.std_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y) -> ProbeResult:
        """Test metrics, plus the chosen ``C`` and the validation accuracy at it."""
        X, y = validate_features(X, y, what="test features")
        m = classification_metrics(self.predict_proba(X), y, self.classes_)
        hp = {"C": self.best_C_, "val_top1": self.val_scores_[self.best_C_], "grid_evaluated": len(self.val_scores_)}
        return ProbeResult(m["top1"], m["mean_per_class"], m["top5"], hp, self.warnings_)
