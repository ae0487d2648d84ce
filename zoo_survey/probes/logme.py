"""LogME (You et al. 2021): the log marginal evidence of a Bayesian linear model on the features.

No training: for each class, a one-vs-rest Bayesian ridge regression's evidence is
maximized over (alpha, beta) by fixed-point iteration, in closed form from one SVD of
the features, and the per-class evidences are averaged. Higher means the features
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
from .combine import weight_blocks


def logme(X, y, max_iter: int = 11, tol: float = 0.01) -> float:
    """LogME score of features ``X`` (n x d) for labels ``y``; the reference algorithm, via a thin SVD.

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
    s = S**2  # eigenvalues of X^T X; the other d - r are zero
    r = len(s)
    evidences = []
    for c in classes:
        t = (y == c).astype(np.float64)
        proj = U.T @ t  # t's coordinates in the column space of X
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        for _ in range(max_iter):
            gamma = float((s / (s + lam)).sum())
            z = beta * S * proj / (alpha + beta * s)  # the posterior mean in the right-singular basis
            alpha_de = float((z * z).sum())
            alpha = gamma / (alpha_de + 1e-5)
            res = t - U @ (S * z)
            beta_de = float((res * res).sum())
            beta = (n - gamma) / (beta_de + 1e-5)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < tol:
                break
            lam = new_lam
        log_det = float(np.log(alpha + beta * s).sum()) + (d - r) * np.log(alpha)
        evidence = (
            d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * log_det
            - beta / 2.0 * (beta_de + 1e-5) - alpha / 2.0 * (alpha_de + 1e-5) - n / 2.0 * np.log(2 * np.pi)
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
        X = weight_blocks(data.blocks)
        est = cls().fit(X["train"], data.labels["train"], X_val=X["val"], y_val=data.labels["val"])
        return score_outcome(data, est.score_)
