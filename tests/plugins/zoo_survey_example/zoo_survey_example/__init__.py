"""Example plug-ins: :class:`CentroidProbe` (``--probes centroid``) and :class:`SyntheticSource`
(``source: {type: synthetic, seed: 0}`` in a datasets YAML file)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from zoo_survey.data.datasets import ArrayImages
from zoo_survey.digests import arrays_digest
from zoo_survey.probes import ClassifierProbe
from zoo_survey.probes.base import check_fit
from zoo_survey.sources import DatasetSource


class CentroidProbe(ClassifierProbe):
    """Nearest class centroid by Euclidean distance on the raw features (train+val means)."""

    name: ClassVar[str] = "centroid"
    summary: ClassVar[str] = "nearest class centroid, Euclidean (example plug-in)"

    def fit(self, X, y, *, X_val=None, y_val=None) -> CentroidProbe:
        X, y, X_val, y_val, classes = check_fit(X, y, X_val, y_val)
        Xa, ya = np.concatenate([X, X_val]), np.concatenate([y, y_val])
        self.classes_ = classes
        self.centroids_ = np.stack([Xa[ya == c].mean(0) for c in classes])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._test_features(X)
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)


class SyntheticSource(DatasetSource):
    """Small deterministic RGB images: each class a colour and stripe pattern, plus seeded noise."""

    type: Literal["synthetic"]
    seed: int = 0
    classes: int = Field(default=4, ge=2, le=8)
    per_class: int = Field(default=30, ge=2)
    size: int = Field(default=16, ge=4)

    def load(self, spec, offline=False):
        rng = np.random.default_rng(self.seed)
        n = self.classes * self.per_class
        labels = np.repeat(np.arange(self.classes, dtype=np.int64), self.per_class)
        base = np.zeros((self.classes, self.size, self.size, 3), np.float64)
        for c in range(self.classes):
            base[c, ..., c % 3] = 200.0
            base[c, :: c + 2, :, (c + 1) % 3] = 255.0
        images = np.clip(base[labels] + rng.normal(0, 25, (n, self.size, self.size, 3)), 0, 255).astype(np.uint8)
        test = np.arange(n) % 3 == 0
        splits = {"train": (ArrayImages(images[~test]), labels[~test]), "test": (ArrayImages(images[test]), labels[test])}
        fp = arrays_digest(images, labels)
        return splits, fp, tuple(f"class-{c}" for c in range(self.classes)), f"data:{fp}"
