"""Non-parametric probes on L2-normalized features: kNN (DINO-style weighted votes) and NCM.

Both follow the probe protocol of :class:`~zoo_survey.probes.base.ClassifierProbe`:
``fit(X, y, X_val=..., y_val=...)`` chooses hyper-parameters on the validation split and then
uses train+val as the final memory; ``score(X_test, y_test)`` evaluates once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ClassifierProbe, ProbeConfig, ProbeInputError, best_choice, check_fit, fit_threads, with_validation

DEFAULT_KS = (10, 20, 100, 200)


def _normalize(X: np.ndarray) -> np.ndarray:
    # Not sklearn.preprocessing.normalize: its row norms (einsum) differ from these in the last float32 bit
    # (up to 1.2e-7), so the kNN/NCM probabilities, and possibly stored rows, would change.
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class KNNProbe(ClassifierProbe, declared="knn"):
    """Cosine-similarity kNN with temperature-weighted votes (Wu et al. 2018, as in DINO's eval).

    Each of the ``k`` nearest training samples votes ``exp(sim / T)`` for its class. ``k``
    is chosen on the validation split among ``ks``. Similarities are computed in blocks of
    ``batch_size`` queries, so memory stays bounded (block x bank) for 100k x 100k. Without
    ``X_val``, ``fit`` carves a stratified ``validation_fraction`` of (X, y) to choose ``k``.

    >>> KNNProbe().fit(X_tr, y_tr, X_val=X_val, y_val=y_val).hparams()["k"]   # doctest: +SKIP
    20
    """


    @classmethod
    def build(cls, config: ProbeConfig, standardize: bool) -> KNNProbe:
        return cls(device=config.device)

    def __init__(self, ks: tuple[int, ...] = DEFAULT_KS, temperature: float = 0.07, batch_size: int = 1024, device: str = "cpu",
                 validation_fraction: float = 0.2):
        self.ks = ks
        self.temperature = temperature
        self.batch_size = batch_size
        self.device = device
        self.validation_fraction = validation_fraction

    def _proba(self, Q: np.ndarray, bank: np.ndarray, bank_y: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
        import torch

        dev = torch.device(self.device)
        B = torch.tensor(bank, device=dev)  # torch's own (aligned) memory: see linear._tensor
        labels = torch.as_tensor(np.searchsorted(self.classes_, bank_y), device=dev)
        kmax = min(max(ks), len(bank))
        out = {k: np.zeros((len(Q), len(self.classes_)), np.float32) for k in ks}
        for start in range(0, len(Q), self.batch_size):
            q = torch.as_tensor(Q[start : start + self.batch_size], device=dev)
            sims, idx = (q @ B.T).topk(kmax, dim=1)
            w = (sims / self.temperature).exp()
            votes_all = labels[idx]
            for k in ks:
                kk = min(k, kmax)
                votes = torch.zeros(len(q), len(self.classes_), device=dev)
                votes.scatter_add_(1, votes_all[:, :kk], w[:, :kk])
                out[k][start : start + len(q)] = (votes / votes.sum(1, keepdim=True)).cpu().numpy()
        return out

    def fit(self, X, y, *, X_val=None, y_val=None) -> KNNProbe:
        X, y, X_val, y_val, classes = with_validation(X, y, X_val, y_val, self.validation_fraction)
        ks = sorted(set(int(k) for k in self.ks))
        if not ks or ks[0] < 1:
            raise ProbeInputError(f"kNN needs k >= 1, got {list(self.ks)}")
        if not self.temperature > 0:
            raise ProbeInputError(f"kNN temperature must be positive, got {self.temperature}")
        self.classes_ = classes
        Xn, Xv = _normalize(X), _normalize(X_val)
        with fit_threads():
            probas = self._proba(Xv, Xn, y, ks)
        # Whole validation images right at each k; ties go to the smaller k (best_choice).
        self.val_correct_ = {k: int((classes[p.argmax(1)] == y_val).sum()) for k, p in probas.items()}
        self.val_scores_ = {k: n / max(len(y_val), 1) for k, n in self.val_correct_.items()}
        self.best_k_ = best_choice(self.val_correct_)
        self.bank_ = np.concatenate([Xn, Xv])
        self.bank_y_ = np.concatenate([y, y_val])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._test_features(X)
        with fit_threads():
            return self._proba(_normalize(X), self.bank_, self.bank_y_, [self.best_k_])[self.best_k_]

    def hparams(self) -> dict[str, Any]:
        return {"k": self.best_k_, "temperature": self.temperature, "val_top1": self.val_scores_[self.best_k_]}


class NCMProbe(ClassifierProbe, declared="ncm"):
    """Nearest class mean on L2-normalized features; class means of train+val (``X_val`` is optional), cosine similarity.

    >>> NCMProbe().fit(X_tr, y_tr, X_val=X_val, y_val=y_val).score(X_te, y_te)   # doctest: +SKIP
    """


    def fit(self, X, y, *, X_val=None, y_val=None) -> NCMProbe:
        X, y, X_val, y_val, classes = check_fit(X, y, X_val, y_val)
        Xa, ya = _normalize(np.concatenate([X, X_val])), np.concatenate([y, y_val])
        self.classes_ = classes
        self.means_ = _normalize(np.stack([Xa[ya == c].mean(0) for c in classes]))
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._test_features(X)
        sims = _normalize(X) @ self.means_.T
        e = np.exp((sims - sims.max(1, keepdims=True)) / 0.07)  # a softmax over cosine, for top-5 ordering
        return e / e.sum(1, keepdims=True)
