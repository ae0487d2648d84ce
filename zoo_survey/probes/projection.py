"""Width-matched controls (issue 19): a concatenation projected to the baseline's feature width.

A concatenation of K members has K times a member's width, so "the ensemble is better" could mean "more dimensions"
rather than "richer features". The control rows answer that: the concatenation, weighted exactly as the probes see it
(:func:`.combine.weight_blocks`: each block standardized with train statistics and scaled by 1/sqrt(width)), is
projected to the baseline's width and probed like any model, on the same test images.

- ``pca``: the top principal components of the weighted train rows (fitted on train only; centred with the train
  mean; no whitening: each component keeps its variance, as the concatenation's directions do). With fewer train rows
  than the width, there are only as many components as the train rows' rank.
- ``random``: a seeded Gaussian projection, entries N(0, 1/width) (Johnson–Lindenstrauss: squared norms are kept in
  expectation), fitted on nothing.

The projected matrix goes to the probe as one pre-weighted block (``combine="concat"``): the probe does not
re-standardize its columns, which would whiten the components. Runs inside the probe's :func:`.numerics.fit_threads`
(the SVD is a BLAS call), so the rows are the same on 1 or 2 threads.

>>> rng = np.random.default_rng(0); X = rng.normal(size=(50, 6)); blocks = {s: [X, X] for s in ("train", "val", "test")}
>>> {s: m.shape for s, m in project_blocks(blocks, 4, "pca").items()}
{'train': (50, 4), 'val': (50, 4), 'test': (50, 4)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ZooSurveyError
from .combine import weight_blocks

PROJECTIONS = ("pca", "random")
RANDOM_SEED = 0  # the Gaussian projection's seed (part of the control rows' key)


def project_blocks(blocks: Mapping[str, Sequence[np.ndarray]], width: int, method: str,
                   seed: int = RANDOM_SEED) -> dict[str, np.ndarray]:
    """The weighted concatenation of ``blocks`` (split -> one matrix per member) projected to ``width`` columns by
    ``method`` (:data:`PROJECTIONS`), fitted on the ``train`` rows only; float32, one matrix per split."""
    if method not in PROJECTIONS:
        raise ZooSurveyError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if width < 1:
        raise ZooSurveyError(f"a projection needs a width of at least 1, got {width}")
    Z = weight_blocks(blocks) if len(blocks["train"]) > 1 else {s: b[0] for s, b in blocks.items()}
    if method == "random":  # float32 throughout: nothing is fitted, and the product is the cost
        R = gaussian_projection(Z["train"].shape[1], width, seed)
        return {s: np.asarray(m, dtype=np.float32) @ R for s, m in Z.items()}
    P, mean = pca_components(np.asarray(Z["train"], dtype=np.float64), width)
    return {s: ((np.asarray(m, dtype=np.float64) - mean) @ P).astype(np.float32) for s, m in Z.items()}


def pca_components(X: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``width`` principal directions of ``X`` (d x k, orthonormal columns, k = min(width, rank)) and its
    mean, from the eigenvectors of the smaller of the Gram and covariance matrices (a third of a full SVD's time at
    1,600 x 2,560). Signs fixed (each direction's largest entry positive), so the projection is the same on every
    machine that computes the same decomposition."""
    mean = X.mean(axis=0)
    Xc = X - mean
    n, d = Xc.shape
    if n < d:  # X X^T = U S^2 U^T, and V = X^T U / S
        ev, U = np.linalg.eigh(Xc @ Xc.T)
    else:
        ev, V = np.linalg.eigh(Xc.T @ Xc)
    order = np.argsort(ev)[::-1]
    ev = ev[order]
    rank = int((ev > ev[0] * 1e-12).sum()) if len(ev) and ev[0] > 0 else 0
    k = max(1, min(width, rank))
    if n < d:
        V = (Xc.T @ U[:, order[:k]]) / np.sqrt(np.maximum(ev[:k], 1e-300))
    else:
        V = V[:, order[:k]]
    signs = np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(k)])
    signs[signs == 0] = 1.0
    return V * signs, mean


def gaussian_projection(d: int, width: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """A d x ``width`` matrix of N(0, 1/width) entries from ``seed``: ``x @ R`` keeps ``||x||^2`` in expectation."""
    return np.random.default_rng([seed, d, width]).normal(0.0, 1.0 / np.sqrt(width), size=(d, width)).astype(np.float32)
