"""The sequential probe engine as it was before issue 20 (one C at a time, one few-shot fit after another, one
averaged member after another): the reference that benchmarks/probe_battery.py times and compares the batched
engine against. Not a code path of the product: nothing in zoo_survey imports it.

Copied from zoo_survey/probes/linear.py, fewshot.py and base.py (ClassifierProbe._run) at commit 97abae8.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from zoo_survey.probes.base import (
    ClassifierProbe,
    MemberFeatures,
    ProbeConfig,
    ProbeInputError,
    ProbeOutcome,
    Setting,
    _classifier,
    _outcome,
    best_choice,
    check_fit,
    fit_threads,
    probe_estimator,
    validate_labelled,
    with_validation,
)
from zoo_survey.probes.fewshot import sample_shots, shots_of, stratified_folds
from zoo_survey.probes.linear import SWEEP_TOL_FACTOR
from zoo_survey.probes.protocol import SELECTIONS

DEFAULT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 45))


class RefLinearProbe(ClassifierProbe, declared="linear"):
    """The linear probe of commit 97abae8: coarse-to-fine, one warm-started C at a time."""

    @classmethod
    def _run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        b, y = data.blocks, data.labels
        if data.combine == "average":  # output averaging: one probe per member, probabilities averaged
            probas, hps, notes, classes = [], [], [], None
            for i in range(len(b["train"])):
                est = _classifier(cls.build(config, standardize=True)).fit(b["train"][i], y["train"],
                                                                           X_val=b["val"][i], y_val=y["val"])
                probas.append(est.predict_proba(b["test"][i]))
                hps.append(est.hparams())
                notes += list(est.warnings_)
                classes = est.classes_
            assert classes is not None
            return _outcome(data, np.mean(probas, axis=0), classes, {"members": hps}, notes)
        X, est = probe_estimator(cls, data, config)  # the product's protocol: concatenations standardized by the probe
        est = _classifier(est).fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
        return _outcome(data, est.predict_proba(validate_labelled(X["test"], y["test"])[0]), est.classes_,
                        est.hparams(), list(est.warnings_))



    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool, block_widths: tuple[int, ...] | None = None) -> RefLinearProbe:
        return cls(grid=config.grid, device=config.device, standardize=standardize, block_widths=block_widths)

    def __init__(
        self,
        grid: tuple[float, ...] | None = None,
        search: str = "coarse-to-fine",
        max_iter: int = 1000,
        tol: float = 1e-4,
        device: str = "cpu",
        refit: bool = True,
        standardize: bool = True,
        sweep_tol: float | None = None,
        validation_fraction: float = 0.2,
        block_widths: tuple[int, ...] | None = None,
    ):
        self.grid = grid
        self.search = search
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.refit = refit  # False: keep the train-only fit at the best C (few-shot: val never trains)
        self.standardize = standardize  # False: the caller scaled the columns (ensembles weight member blocks)
        self.sweep_tol = sweep_tol  # the sweep only ranks C by val accuracy: default 10 x tol; the refit uses tol
        self.validation_fraction = validation_fraction  # carved from (X, y) when fit gets no X_val
        self.block_widths = block_widths  # a concatenation's member widths: blocks scaled by 1/sqrt(width)

    # -- helpers
    def _grid(self) -> np.ndarray:
        grid = np.asarray(DEFAULT_GRID if self.grid is None else self.grid, dtype=float)
        if grid.ndim != 1 or len(grid) == 0:
            raise ProbeInputError("the regularization grid must be a non-empty list of positive numbers")
        if (grid <= 0).any() or not np.isfinite(grid).all():
            raise ProbeInputError(f"the regularization grid must hold positive finite values, got {grid[grid <= 0][:3].tolist()}")
        if self.search not in ("coarse-to-fine", "full"):
            raise ProbeInputError(f"search must be 'coarse-to-fine' or 'full', got {self.search!r}")
        return np.sort(grid)

    def _restandardize(self, old: _Solver, solution, mean, std, new: _Solver):
        """The sweep's solution re-expressed for the refit's standardization: the same logits on every
        input, so the refit starts where the sweep ended instead of at zero (the objective is the refit's own)."""
        import torch

        W = torch.as_tensor(old.to_features(solution[0]))  # (d, k) in the train-standardized space
        scale = torch.as_tensor(self.std_ / std, dtype=W.dtype)
        W_new = W * scale[:, None]
        b_new = solution[1].cpu() + torch.as_tensor((self.mean_ - mean) / std, dtype=W.dtype) @ W
        if new.V is not None:
            W_new = new.V.cpu().T @ W_new  # into the refit's row space (exact when the start lies in it)
        return W_new, b_new

    def _standardize(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.standardize:
            return np.zeros(X.shape[1], X.dtype), np.ones(X.shape[1], X.dtype)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std < 1e-6] = 1.0
        if self.block_widths is not None:
            std = std * np.repeat(np.sqrt(np.asarray(self.block_widths, dtype=std.dtype)), self.block_widths)
        return mean, std

    def fit(self, X, y, *, X_val=None, y_val=None) -> RefLinearProbe:
        """Sweep ``C`` on (X_val, y_val), then refit on train+val with the best ``C`` (``refit=True``)."""
        with fit_threads():
            return self._fit(*with_validation(X, y, X_val, y_val, self.validation_fraction), self._grid(), self.refit)

    def _fit(self, X, y, X_val, y_val, classes, grid: np.ndarray, refit: bool) -> RefLinearProbe:
        """The sweep and refit on checked data (:func:`~.base.check_fit`'s arrays)."""
        missing = np.setdiff1d(classes, np.unique(y_val))
        if len(missing) and refit:
            raise ProbeInputError(
                f"classes {missing[:10].tolist()} are missing from the validation split; use more train data (max_train) "
                "or a larger val_fraction so every class is validated"
            )
        unseen = np.setdiff1d(np.unique(y_val), classes)
        if len(unseen):
            raise ProbeInputError(f"validation labels {unseen[:10].tolist()} never occur in train; the probe cannot predict them")
        if self.max_iter < 1:
            raise ProbeInputError(f"max_iter must be at least 1, got {self.max_iter}")
        notes: list[str] = []
        y_idx = np.searchsorted(classes, y)
        mean, std = self._standardize(X)
        sweep_tol = SWEEP_TOL_FACTOR * self.tol if self.sweep_tol is None else self.sweep_tol
        # Without a refit the sweep's fit is the model: solve it to tol then.
        solver = _Solver((X - mean) / std, y_idx, len(classes), self.max_iter, sweep_tol if refit else self.tol, self.device)
        Xv = solver.project((X_val - mean) / std)
        yv_idx = np.searchsorted(classes, y_val)
        correct: dict[float, int] = {}  # validation images right at each C: the choice compares counts (best_choice)
        solutions: dict[float, tuple] = {}
        iterations: dict[float, int] = {}

        def evaluate(cs) -> None:
            for C in sorted(c for c in cs if c not in correct):  # small C first: warm starts along the path
                start = solutions[max((c for c in solutions if c < C), default=min(solutions, default=C))] if solutions else None
                W, b, n_iter = solver.fit(C, start)
                if n_iter >= self.max_iter:
                    notes.append(f"C={C:.3g} did not converge in {self.max_iter} iterations")
                solutions[C], iterations[C] = (W, b), n_iter
                correct[C] = int((solver.predict(Xv, W, b) == yv_idx).sum())

        if self.search == "full" or len(grid) <= 12:
            evaluate(grid)
        else:
            evaluate(grid[::4])
            best_i = int(np.flatnonzero(grid == best_choice(correct))[0])
            evaluate(grid[max(0, best_i - 3) : best_i + 4])
        self.best_C_ = best_choice(correct)  # most validation images right; ties: the strongest regularization
        self.val_correct_ = dict(sorted(correct.items()))
        self.val_scores_ = {c: n / max(len(yv_idx), 1) for c, n in self.val_correct_.items()}
        if refit:
            X_all, y_all = np.concatenate([X, X_val]), np.concatenate([y_idx, yv_idx])
            self.mean_, self.std_ = self._standardize(X_all)
            # One warm-started fit: cheaper in the original columns than after another decomposition.
            final = _Solver((X_all - self.mean_) / self.std_, y_all, len(classes), self.max_iter, self.tol, self.device,
                            reduce=False)
            W, b, n_iter = final.fit(self.best_C_, self._restandardize(solver, solutions[self.best_C_], mean, std, final))
            if n_iter >= self.max_iter:
                notes.append(f"refit at C={self.best_C_:.3g} did not converge in {self.max_iter} iterations")
        else:
            self.mean_, self.std_ = mean, std
            final, (W, b), n_iter = solver, solutions[self.best_C_], iterations[self.best_C_]
        # Back to feature space: scores are x @ coef_.T + intercept_ (scikit-learn's layout).
        self.coef_ = final.to_features(W).T.astype(np.float32)
        self.intercept_ = b.cpu().numpy().astype(np.float32)
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.n_iter_ = n_iter  # L-BFGS iterations of the kept fit (0 when its warm start already met tol)
        self.warnings_ = tuple(notes)
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._test_features(X)
        with fit_threads():  # a GEMM split by thread could round differently
            logits = ((X - self.mean_) / self.std_) @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def hparams(self) -> dict[str, Any]:
        """The chosen ``C``, the validation accuracy at it, and how many grid values were fitted."""
        return {"C": self.best_C_, "val_top1": self.val_scores_[self.best_C_], "grid_evaluated": len(self.val_scores_)}


def _tensor(a: np.ndarray, device):
    """A float32 copy in torch's own memory (64-byte aligned, as MKL's reproducible paths want), not a view of
    numpy's buffer, whose alignment depends on how the caller allocated it."""
    import torch

    return torch.tensor(np.asarray(a, dtype=np.float32), device=device)


class _Solver:
    """Multinomial L2 logistic regression on one standardized matrix, for many ``C``.

    Minimizes mean cross-entropy + ||W||^2 / (2 C n) with an unpenalized intercept,
    which has scikit-learn's minimizer; stops when max |gradient| <= tol, as its lbfgs does.
    With fewer rows than columns it works on ``Z = X V`` (V: the row space of X), which
    is exact because the optimal W lies in that space; ``to_features`` maps back. Only
    the sweep, with its many fits, pays for that decomposition.
    """

    HISTORY = 20  # L-BFGS memory

    def __init__(self, Xs: np.ndarray, y: np.ndarray, n_classes: int, max_iter: int, tol: float, device: str,
                 reduce: bool = True):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        X = _tensor(Xs, self.device)
        n, d = X.shape
        self.V = None
        if reduce and d > n:
            # Row space of X from the eigenvectors of the Gram matrix X X^T = U S^2 U^T (float64:
            # 3x faster than an SVD of X at 1,600 x 3,840): X = U S V^T with V = X^T U / S,
            # so X W = (U S)(V^T W).
            X64 = X.double()
            ev, U = torch.linalg.eigh(X64 @ X64.T)
            keep = ev > ev.max() * 1e-12
            S = ev[keep].sqrt()
            U = U[:, keep]
            self.V = ((X64.T @ U) / S).float().contiguous()
            X = (U * S).float().contiguous()
        self.Z = X
        self.y = torch.as_tensor(y, device=self.device)
        self.k, self.n = n_classes, n
        self.max_iter, self.tol = max_iter, tol

    def project(self, Xs: np.ndarray):
        X = _tensor(Xs, self.device)
        return X if self.V is None else X @ self.V

    def fit(self, C: float, start):
        torch = self.torch
        d = self.Z.shape[1]
        if start is None:
            W = torch.zeros(d, self.k, device=self.device)
            b = torch.zeros(self.k, device=self.device)
        else:
            W, b = (torch.as_tensor(a, device=self.device).clone() for a in start)
        W.requires_grad_(True)
        b.requires_grad_(True)
        lam = 1.0 / (C * self.n)
        opt = torch.optim.LBFGS(
            [W, b], lr=1, max_iter=self.max_iter, tolerance_grad=self.tol, tolerance_change=1e-12,
            history_size=self.HISTORY, line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad(set_to_none=False)
            loss = torch.nn.functional.cross_entropy(torch.addmm(b, self.Z, W), self.y) + 0.5 * lam * W.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return W.detach(), b.detach(), int(opt.state[W].get("n_iter", 0))

    def predict(self, Z, W, b) -> np.ndarray:
        return (self.torch.addmm(b, Z, W)).argmax(1).cpu().numpy()

    def to_features(self, W) -> np.ndarray:
        W = W if self.V is None else self.V @ W
        return W.cpu().numpy()


FEWSHOT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 12))  # every 4th value of the 45-value grid
# 1-shot has no example to hold out. Strong regularization: as C -> 0 the L2 logistic probe tends to the
# class-centroid classifier (its weights -> C X^T (Y - 1/K)), the natural rule for one example per class.
ONE_SHOT_C = 1e-3
MAX_FOLDS = 5



class RefFewShotProbe(RefLinearProbe, declared="fewshot"):
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
        self.block_widths = block_widths

    @classmethod
    def settings(cls, config: ProbeConfig) -> tuple[Setting, ...]:
        suffix = "" if config.fewshot_val == "shots" else "+val"  # rows of the full-val protocol say so
        return tuple(Setting(f"{k}-shot{suffix}", seed) for k in config.shots for seed in range(config.seeds))

    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool, block_widths: tuple[int, ...] | None = None) -> RefFewShotProbe:
        return cls(select=config.fewshot_val, grid=config.grid or FEWSHOT_GRID, device=config.device,
                   standardize=standardize, block_widths=block_widths)

    def fit(self, X, y, *, X_val=None, y_val=None) -> RefFewShotProbe:
        """``select="full"``: sweep C on (X_val, y_val). ``select="shots"``: ignore them; choose C within (X, y)."""
        with fit_threads():
            return self._fit_shots(X, y, X_val, y_val)

    def _fit_shots(self, X, y, X_val, y_val) -> RefFewShotProbe:
        if self.select not in SELECTIONS:
            raise ProbeInputError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.select == "full":
            self._fit(*with_validation(X, y, X_val, y_val, self.validation_fraction), self._grid(), refit=False)
            self.selection_, self.cv_ = "on the full validation split", False
            return self
        X, y, _, _, classes = check_fit(X, y, X_val, y_val)
        per_class = int(np.bincount(np.searchsorted(classes, y)).min())
        if per_class < 2:
            C, correct = ONE_SHOT_C, {}
            self.selection_ = f"fixed C={ONE_SHOT_C:g} (one example per class: nothing to hold out)"
        else:
            n_folds = min(per_class, MAX_FOLDS)
            folds = stratified_folds(y, n_folds)
            grid = self._grid()
            correct = dict.fromkeys(grid.tolist(), 0)  # held-out shots right at each C, summed over the folds
            for f in range(n_folds):
                held = folds == f
                # A fold's fit only ranks C (like the linear probe's sweep): it stops at 10 x tol; the kept fit uses tol.
                cv = RefLinearProbe(grid=tuple(grid), search="full", refit=False, device=self.device, max_iter=self.max_iter,
                                 tol=SWEEP_TOL_FACTOR * self.tol, standardize=self.standardize, block_widths=self.block_widths)._fit(
                    *check_fit(X[~held], y[~held], X[held], y[held]), grid, refit=False)
                for c, n in cv.val_correct_.items():
                    correct[c] += n
            C = best_choice(correct)  # counts of whole shots; ties go to the strongest regularization
            self.selection_ = f"{n_folds}-fold CV within the shots"
        # The validation arguments only score the single C here; the fit uses the shots alone.
        self._fit(X, y, X, y, classes, np.array([C]), refit=False)
        self.cv_ = bool(correct)
        if correct:  # every shot is held out once: the CV accuracy is right shots / all shots
            self.val_correct_ = dict(sorted(correct.items()))
            self.val_scores_ = {c: n / len(y) for c, n in self.val_correct_.items()}
        return self

    def hparams(self) -> dict[str, Any]:
        """The chosen C, how it was chosen, and the accuracy that chose it (validation, or cross-validation)."""
        out: dict[str, Any] = {"C": self.best_C_, "selection": self.selection_}
        if self.select == "full" or self.cv_:
            out["val_top1" if self.select == "full" else "cv_top1"] = self.val_scores_[self.best_C_]
            out["grid_evaluated"] = len(self.val_scores_)
        return out

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        # Sample first: ensemble block weights then come from the k-shot examples alone.
        idx, notes = sample_shots(data.labels["train"], shots_of(setting), setting.seed or 0)
        out = super().run(data.train_rows(idx), setting, config)
        return replace(out, warnings=out.warnings + tuple(notes))
