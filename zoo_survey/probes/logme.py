"""LogME (You et al. 2021): the log marginal evidence of a Bayesian linear model on the features.

No training: for each class, a one-vs-rest Bayesian ridge regression's evidence is
maximized over (alpha, beta) by fixed-point iteration, in closed form from one SVD of
the features, and the per-class evidences are averaged: the reference code's default
variant (thuml/LogME ``_fit_fixed_point``). A survey row scores every model on the
probes' standardization (:func:`.combine.standardized_blocks`): LogME is not invariant
to per-column scale, so raw single features against weighted ensemble blocks compared
two scales. Higher means the features
should transfer better; use it to rank checkpoints before paying for probes.
"""

from __future__ import annotations

import numpy as np

from .base import (
    MemberFeatures,
    Probe,
    ProbeConfig,
    ProbeInputError,
    ProbeOutcome,
    Setting,
    check_fit,
    score_outcome,
    validate_features,
)
from .combine import standardized_blocks


def logme(X, y, max_iter: int = 11, tol: float = 1e-3) -> float:
    """LogME score of features ``X`` (n x d) for labels ``y``: the reference's default algorithm, ``LogME._fit``
    = ``_fit_fixed_point`` of thuml/LogME (You et al., "Ranking and Tuning Pre-trained Models", 2021), via a thin
    SVD. Not the ICML 2021 variant (``_fit_icml``): that one's log-determinant sums over all d eigenvalues of
    X^T X, this one's over the min(n, d) nonzero ones, so the two differ whenever d > n (tests/test_controls.py
    checks this function against a numpy port of the reference's ``_fit_fixed_point``).

    >>> rng = np.random.default_rng(0); y = rng.integers(0, 3, 200)
    >>> logme(np.eye(3)[y] + 0.1 * rng.normal(size=(200, 3)), y) > logme(rng.normal(size=(200, 3)), y)
    True
    """
    X, y = validate_features(X, y, what="features")
    assert y is not None
    classes = np.unique(y)
    if len(classes) < 2:
        raise ProbeInputError(f"labels hold only one class ({classes.tolist()}); LogME needs at least 2")
    X = X.astype(np.float64)
    n, d = X.shape
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    keep = S > 1e-10  # the reference's rank cut (its truncated_svd)
    U, S = U[:, keep], S[keep]
    sigma = S**2  # the nonzero eigenvalues of X^T X
    evidences = []
    for c in classes:
        t = (y == c).astype(np.float64)
        x2 = (U.T @ t) ** 2  # t's squared coordinates in the column space of X
        res_x2 = float((t * t).sum() - x2.sum())  # the part of t outside it
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            lam = alpha / beta
            gamma = float((sigma / (sigma + lam)).sum())
            m2 = float((sigma * x2 / (lam + sigma) ** 2).sum())  # ||posterior mean||^2
            res2 = float((x2 / (1 + sigma / lam) ** 2).sum()) + res_x2  # ||t - X m||^2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - lam) / lam <= tol:
                break
        evidence = (
            d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * float(np.log(alpha + beta * sigma).sum())
            - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


class LogMEProbe(Probe, declared="logme"):
    """LogME as a probe: a score of train+val features, no test; the report ranks models by it.

    An estimator, not a classifier: it has no parameters and no ``predict``. ``fit(X, y, X_val=..., y_val=...)``
    stores the LogME of train+val in ``score_`` (what a survey row records); ``score(X, y)`` is the LogME of
    the given features and labels (higher: they should transfer better), which needs no fit.

    Output averaging has no single feature matrix to score, so only single models and
    concatenated ensembles get a LogME row.
    """


    def fit(self, X, y, *, X_val=None, y_val=None) -> LogMEProbe:
        X, y, X_val, y_val, classes = check_fit(X, y, X_val, y_val)
        self.score_ = logme(np.concatenate([X, X_val]), np.concatenate([y, y_val]))
        self.classes_, self.n_features_in_ = classes, X.shape[1]
        return self

    def score(self, X, y) -> float:
        """The LogME of features ``X`` for labels ``y`` (a fit is not needed)."""
        return logme(X, y)

    @classmethod
    def run(cls, data: MemberFeatures, setting: Setting, config: ProbeConfig) -> ProbeOutcome:
        # Like for like (issue 19): every model, single or concatenated, standardized as the probes see it, with the
        # statistics of the rows it scores (train+val, the linear probe's refit rule), each block scaled 1/sqrt(width).
        X = standardized_blocks([np.concatenate([tr, va]) for tr, va in zip(data.blocks["train"], data.blocks["val"],
                                                                               strict=True)])
        est = cls().fit(X, np.concatenate([data.labels["train"], data.labels["val"]]))
        return score_outcome(data, est.score_)
