"""Linear probe, Kornblith et al. (2019) protocol.

Multinomial L2 logistic regression on features standardized with train statistics.
The inverse regularization strength ``C`` is swept over a log grid (45 values from
1e-6 to 1e5) coarse-to-fine: every 4th value first, then the neighbours of the best.
``C`` is chosen on the validation split, the model is refitted on train+val, and it
is evaluated once on test.

The solver is the batched engine (:mod:`.batched`): full-batch L-BFGS in torch (float32, CPU or
CUDA), one per problem, with scikit-learn's objective and stopping rule (mean log-loss +
||W||^2 / (2 C n); max |gradient| <= tol). The coarse values go along the path from strong to
weak regularization, each warm-started from the previous; the fine neighbours are one batch,
and so are the folds of few-shot and the estimators of :meth:`LinearProbe.fit_many` (:func:`sweep_many`).
The sweep, which only ranks C by validation accuracy, stops at 10 x tol; the refit that is
tested starts from the sweep's solution and stops at tol. When there are far fewer samples than
dimensions (concatenated ensembles, few-shot) it solves in the data's row space, which is exact
for L2-regularized models: the optimal weights are a combination of the training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import ClassifierProbe, ProbeConfig, ProbeInputError, best_choice, fit_threads, with_validation
from .batched import Group, Path, solve_paths

DEFAULT_GRID = tuple(float(c) for c in np.logspace(-6, 5, 45))
# The sweep's fits only rank C by validation accuracy: they stop at this many times the refit's tol.
SWEEP_TOL_FACTOR = 10.0


class LinearProbe(ClassifierProbe, declared="linear"):
    """Logistic-regression probe with a validation sweep of ``C`` and a refit on train+val.

    ``fit(X, y, X_val=..., y_val=...)`` chooses C on the validation split; without one it carves
    a stratified ``validation_fraction`` of (X, y).

    >>> probe = LinearProbe().fit(X_train, y_train, X_val=X_val, y_val=y_val)   # doctest: +SKIP
    >>> probe.best_C_, probe.score(X_test, y_test)                              # doctest: +SKIP
    """


    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool, block_widths: tuple[int, ...] | None = None) -> LinearProbe:
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
        # A concatenation's member widths, in column order: after standardizing, each block's columns are scaled by
        # 1/sqrt(width), so every member has the same total variance; the refit re-standardizes on train+val, as for
        # a single model (issue 19: the same statistics rule for both).
        self.block_widths = block_widths

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

    def _standardize(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The probe's input is ``(X - mean) / std``: each column standardized on the rows it is fitted on, and with
        ``block_widths`` each block's columns also divided by sqrt(width) (folded into ``std``)."""
        if not self.standardize:
            return np.zeros(X.shape[1], X.dtype), np.ones(X.shape[1], X.dtype)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std < 1e-6] = 1.0
        if self.block_widths is not None:
            std = std * np.repeat(np.sqrt(np.asarray(self.block_widths, dtype=std.dtype)), self.block_widths)
        return mean, std

    def _check_blocks(self, n_features: int) -> None:
        if self.block_widths is not None and (sum(self.block_widths) != n_features or min(self.block_widths, default=0) < 1):
            raise ProbeInputError(f"block_widths {list(self.block_widths)} must be positive and add up to the "
                                  f"{n_features} feature columns")

    def fit(self, X, y, *, X_val=None, y_val=None) -> LinearProbe:
        """Sweep ``C`` on (X_val, y_val), then refit on train+val with the best ``C`` (``refit=True``)."""
        with fit_threads():
            return self._fit(*with_validation(X, y, X_val, y_val, self.validation_fraction), self._grid(), self.refit)

    @classmethod
    def fit_many(cls, estimators: Sequence[LinearProbe], data: Sequence[tuple[Any, Any, Any, Any]]) -> list[LinearProbe]:
        """Fit several estimators, each on its own ``(X, y, X_val, y_val)``, in one batched solve: what each
        ``fit`` would give, up to float32 rounding."""
        with fit_threads():
            sweep_many([Job(e, with_validation(*d, e.validation_fraction), e._grid(), e.refit)
                        for e, d in zip(estimators, data, strict=True)])
        return list(estimators)

    def _fit(self, X, y, X_val, y_val, classes, grid: np.ndarray, refit: bool) -> LinearProbe:
        """The sweep and refit on checked data (:func:`~.base.check_fit`'s arrays)."""
        sweep_many([Job(self, (X, y, X_val, y_val, classes), grid, refit)])
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


# How the coarse values of one sweep are solved: "batch" (every coarse C at once, cold, one L-BFGS each) or
# "path" (one after another, warm-started from the previous C). Sweeps of several problems (few-shot folds,
# fit_many) always batch across problems; see docs/probes.md for the measurements behind the choice.
COARSE = "path"
MANY = "path"


@dataclass
class Job:
    """One estimator's sweep: the estimator (its parameters; its fitted state is written here), its checked
    data (:func:`~.base.check_fit`'s arrays), its grid and whether it refits on train+val."""

    est: LinearProbe
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    grid: np.ndarray
    refit: bool
    checked: bool = False  # its classes already checked against its validation rows (few-shot's folds)
    model: bool = True  # False: only its validation counts are wanted (a fold), not coef_ and intercept_
    # filled by sweep_many
    group: Any = None
    Xv: Any = None
    yv: Any = None
    mean: Any = None
    std: Any = None
    correct: dict[float, int] = field(default_factory=dict)
    solutions: dict[float, tuple[Any, Any]] = field(default_factory=dict)
    iterations: dict[float, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sweep_many(jobs: Sequence[Job]) -> None:
    """Every job's sweep (coarse, then fine) and refit, each stage one batched solve over all jobs."""
    import torch

    groups: list[Group] = []
    for job in jobs:
        est, (X, y, X_val, y_val, classes) = job.est, job.data
        none = np.empty(0, dtype=classes.dtype)
        missing = none if job.checked else np.setdiff1d(classes, np.unique(y_val))
        if len(missing) and job.refit:
            raise ProbeInputError(
                f"classes {missing[:10].tolist()} are missing from the validation split; use more train data (max_train) "
                "or a larger val_fraction so every class is validated"
            )
        unseen = none if job.checked else np.setdiff1d(np.unique(y_val), classes)
        if len(unseen):
            raise ProbeInputError(f"validation labels {unseen[:10].tolist()} never occur in train; the probe cannot predict them")
        if est.max_iter < 1:
            raise ProbeInputError(f"max_iter must be at least 1, got {est.max_iter}")
        est._check_blocks(X.shape[1])
        job.mean, job.std = est._standardize(X)
        job.group = Group.build((X - job.mean) / job.std, np.searchsorted(classes, y), len(classes), est.device)
        groups.append(job.group)
        job.Xv = job.group.project((X_val - job.mean) / job.std)
        job.yv = torch.as_tensor(np.searchsorted(classes, y_val), device=job.group.Z.device)

    def sweep_tol(job: Job) -> float:
        est = job.est
        # Without a refit the sweep's fit is the model: solve it to tol then.
        return (SWEEP_TOL_FACTOR * est.tol if est.sweep_tol is None else est.sweep_tol) if job.refit else est.tol

    def evaluate(paths: list[tuple[int, Path]]) -> None:
        for (i, path), sols in zip(paths, solve_paths(groups, [p for _, p in paths]), strict=True):
            job = jobs[i]
            for C, (W, b, n_iter) in zip(path.Cs, sols, strict=True):
                if n_iter >= job.est.max_iter:
                    job.notes.append(f"C={C:.3g} did not converge in {job.est.max_iter} iterations")
                job.solutions[C], job.iterations[C] = (W, b), n_iter
                job.correct[C] = int((torch.addmm(b, job.Xv, W).argmax(1) == job.yv).sum())

    def coarse(job: Job) -> np.ndarray:
        return job.grid if job.est.search == "full" or len(job.grid) <= 12 else job.grid[::4]

    first: list[tuple[int, Path]] = []
    for i, job in enumerate(jobs):
        cs = [float(c) for c in coarse(job)]
        if COARSE == "batch" and (len(jobs) == 1 or MANY == "batch"):
            first += [(i, Path(i, [c], sweep_tol(job), job.est.max_iter)) for c in cs]
        else:
            first.append((i, Path(i, cs, sweep_tol(job), job.est.max_iter)))  # small C first: warm starts along the path
    evaluate(first)
    fine: list[tuple[int, Path]] = []
    for i, job in enumerate(jobs):
        if len(coarse(job)) == len(job.grid):
            continue
        best_i = int(np.flatnonzero(job.grid == best_choice(job.correct))[0])
        # The best coarse C's neighbours, small first, each warm-started from the nearest smaller C solved (or the
        # smallest, when none is): a run of neighbours with no coarse C between them is one path, as the sequential
        # sweep goes along it (below the best C, and from it upwards).
        chain: list[float] = []
        start: tuple[Any, Any] | None = None
        for C in sorted(float(c) for c in job.grid[max(0, best_i - 3) : best_i + 4] if c not in job.correct):
            if chain and not any(chain[-1] < c < C for c in job.solutions):
                chain.append(C)
                continue
            if chain:
                fine.append((i, Path(i, chain, sweep_tol(job), job.est.max_iter, start)))
            below = [c for c in job.solutions if c < C]
            start = job.solutions[max(below) if below else min(job.solutions)]
            chain = [C]
        if chain:
            fine.append((i, Path(i, chain, sweep_tol(job), job.est.max_iter, start)))
    evaluate(fine)
    for job in jobs:
        job.est.best_C_ = best_choice(job.correct)  # most validation images right; ties: the strongest regularization
        job.est.val_correct_ = dict(sorted(job.correct.items()))
        job.est.val_scores_ = {c: n / max(len(job.yv), 1) for c, n in job.est.val_correct_.items()}
        if job.refit and len(job.correct) > 1 and len(set(job.correct.values())) == 1:
            job.notes.append(undecided(job.correct, len(job.yv)))
    # Refits on train+val, one batch: each starts from its sweep's solution in the refit's standardization.
    refits = [(i, job) for i, job in enumerate(jobs) if job.refit]
    finals: dict[int, tuple[Group, tuple[Any, Any, int]]] = {}
    if refits:
        rgroups: list[Group] = []
        rpaths: list[Path] = []
        for _, job in refits:
            X, y, X_val, y_val, classes = job.data
            X_all = np.concatenate([X, X_val])
            y_all = np.concatenate([np.searchsorted(classes, y), np.searchsorted(classes, y_val)])
            job.est.mean_, job.est.std_ = job.est._standardize(X_all)
            # Cheaper in the original columns than after another decomposition.
            g = Group.build((X_all - job.est.mean_) / job.est.std_, y_all, len(classes), job.est.device, reduce=False)
            start = _restandardize(job, job.solutions[job.est.best_C_], g)
            rpaths.append(Path(len(rgroups), [job.est.best_C_], job.est.tol, job.est.max_iter, start))
            rgroups.append(g)
        for (i, job), path, (sol,) in zip(refits, rpaths, solve_paths(rgroups, rpaths), strict=True):
            finals[i] = (rgroups[path.group], sol)
            if sol[2] >= job.est.max_iter:
                job.notes.append(f"refit at C={job.est.best_C_:.3g} did not converge in {job.est.max_iter} iterations")
    for i, job in enumerate(jobs):
        est, classes = job.est, job.data[4]
        if not job.model:
            continue
        if i in finals:
            final, (W, b, n_iter) = finals[i]
        else:
            est.mean_, est.std_ = job.mean, job.std
            final, (W, b), n_iter = job.group, job.solutions[est.best_C_], job.iterations[est.best_C_]
        # Back to feature space: scores are x @ coef_.T + intercept_ (scikit-learn's layout).
        est.coef_ = final.to_features(W).T.astype(np.float32)
        est.intercept_ = b.cpu().numpy().astype(np.float32)
        est.classes_ = classes
        est.n_features_in_ = job.data[0].shape[1]
        est.n_iter_ = n_iter  # L-BFGS iterations of the kept fit (0 when its warm start already met tol)
        est.warnings_ = tuple(job.notes)


def undecided(correct: dict[float, int], n_val: int) -> str:
    """The note of a sweep whose validation split could not choose, every C having got the same images right (lfw-subset's
    30 validation images at the CPU limits): the row's C is then the grid's smallest (the default grid's 1e-6 is near the
    nearest-class-mean limit), by the tie rule, not a choice."""
    return (f"every C got the same {next(iter(correct.values()))} of {n_val} validation images right, so C is the grid's "
            f"smallest ({min(correct):.3g}) by the tie rule; a larger validation split (max_train, val_fraction) would let "
            "the sweep choose")


def _restandardize(job: Job, solution: tuple[Any, Any], new: Group) -> tuple[Any, Any]:
    """The sweep's solution re-expressed for the refit's standardization: the same logits on every input, so the
    refit starts where the sweep ended instead of at zero (the objective is the refit's own)."""
    import torch

    est = job.est
    W = torch.as_tensor(job.group.to_features(solution[0]))  # (d, k) in the train-standardized space
    W_new = W * torch.as_tensor(job.std / est.std_, dtype=W.dtype)[:, None]
    b_new = solution[1].cpu() + torch.as_tensor((est.mean_ - job.mean) / job.std, dtype=W.dtype) @ W
    return new.from_features(W_new.to(new.Z.device)), b_new  # into the refit's basis (exact when the start lies in it)

