"""Training data: a registry dataset's train split decoded once into uint8 pixels, held on the device, and
batches that are a pure function of (seed, step).

Decoding uses the very transform extraction uses (:meth:`Preprocessing.transform`, resize
to the training resolution, no crop), so a trained model is surveyed on exactly the pixels
it was trained on, less augmentation. Small datasets (Fashion-MNIST: 24,000 x 3 x 32 x 32
bytes = 74 MB) stay resident on the device; normalization and augmentation run there, on
whole batches. The pixel cache (:class:`zoo_survey.data.pixels.PixelCache`, docs/architecture.md "Pixel cache")
is where a larger dataset's decoded pixels would come from instead of :func:`decode`; the batches would not change.

Resume is exact because nothing depends on history: step ``s`` of seed ``q`` reads the
images at positions ``s*B .. s*B+B-1`` of a stream of per-epoch permutations seeded by
``(q, epoch)``, and its crops and flips come from a generator seeded by ``(q, s)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.datasets import PreparedDataset, Split, stratified_take
from ..errors import ZooSurveyError, ZooSurveyFailure, shown
from ..zoo.checkpoints import Preprocessing

AUGMENTS = ("crop-flip", "crop", "none")
EVAL_SEED = 0
MAX_RESIDENT_BYTES = 16 * 2**30  # beyond this a split does not belong in memory: stream it (the pixel cache)


def mix(*values: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing): nearby (seed, step) pairs give unrelated streams."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def decode(split: Split, preprocessing: Preprocessing, rows: np.ndarray | None = None) -> np.ndarray:
    """The split's images (or ``rows`` of them) as uint8 (N, 3, S, S), through the extraction transform."""
    rows = np.arange(len(split)) if rows is None else rows
    size = preprocessing.input_size
    nbytes = len(rows) * 3 * size * size
    if nbytes > MAX_RESIDENT_BYTES:
        raise ZooSurveyError(
            f"split {split.name!r} at {size} px is {nbytes / 2**30:.1f} GiB of pixels, more than the trainer holds in "
            f"memory ({MAX_RESIDENT_BYTES / 2**30:.0f} GiB); subsample it with 'max_train', or train at scale with a "
            "streaming loader (docs/timecat.md)", param="max_train"
        )
    transform = preprocessing.transform(normalize=False)
    out = np.empty((len(rows), 3, size, size), dtype=np.uint8)
    for j, i in enumerate(rows):
        try:
            out[j] = np.asarray(transform(split.image(int(i))))
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise ZooSurveyFailure(
                f"split {split.name!r}: the image at index {int(split.indices[int(i)])} cannot be decoded ({e}); "
                "fix or remove it (pretraining reads every training image)"
            ) from e
    return out


@dataclass(frozen=True)
class TrainingData:
    """A dataset's decoded train split (what the optimizer sees) and an evaluation subset of its test split
    (the pretraining task's head accuracy), on the host; :class:`Batches` moves them to a device."""

    dataset: PreparedDataset
    preprocessing: Preprocessing  # size and interpolation of the decode; mean and std are each model's own
    train: np.ndarray  # uint8 (N, 3, S, S)
    train_labels: np.ndarray  # int64 (N,)
    eval: np.ndarray
    eval_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.dataset.spec.num_classes

    def identity(self) -> dict[str, Any]:
        """What a trained model depends on in the data: the dataset, its content, the rows, the decode."""
        train = self.dataset.splits["train"]
        return {
            "dataset": self.dataset.spec.id,
            "fingerprint": self.dataset.fingerprint,
            "train_rows": len(train),
            "train_indices": train.indices_digest(),
            "image_size": self.preprocessing.input_size,
            "interpolation": self.preprocessing.interpolation,
        }


def load_training_data(ds: PreparedDataset, image_size: int, interpolation: str = "bilinear",
                       eval_max: int | None = 2000) -> TrainingData:
    """Decode ``ds``'s train split and a stratified, seeded ``eval_max`` of its test split at ``image_size``.

    >>> data = load_training_data(prepare(reg.dataset("fashion-mnist-a")), 32)   # doctest: +SKIP
    >>> data.train.shape                                                          # doctest: +SKIP
    (24000, 3, 32, 32)
    """
    if image_size < 8:
        raise ZooSurveyError(f"'image_size' must be at least 8 pixels to train at, got {image_size}", param="image_size")
    pre = Preprocessing(image_size, interpolation, 1.0, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    train, test = ds.splits["train"], ds.splits["test"]
    rows = np.arange(len(test))
    if eval_max is not None and len(test) > eval_max:
        rows, _ = stratified_take(test.labels, eval_max, EVAL_SEED)
    return TrainingData(ds, pre, decode(train, pre), np.asarray(train.labels, dtype=np.int64),
                        decode(test, pre, rows), np.asarray(test.labels[rows], dtype=np.int64))


class Batches:
    """Training batches on ``device``: ``batch(step)`` gives the same uint8 images and labels whenever it is asked."""

    def __init__(self, data: TrainingData, batch_size: int, seed: int, augment: str, device: str):
        import torch

        if augment not in AUGMENTS:
            raise ZooSurveyError(f"'augment' must be one of {', '.join(AUGMENTS)}, got {shown(augment)}", param="augment")
        self.images = torch.from_numpy(data.train).to(device)
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.n, self.batch_size, self.seed, self.augment, self.device = len(data.train), batch_size, seed, augment, device
        self._perms: dict[int, Any] = {}

    def _perm(self, epoch: int):
        import torch

        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(mix(self.seed, epoch, 1))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def positions(self, step: int):
        """Row numbers of the training split that step ``step`` reads (it may span two epochs)."""
        import torch

        pos = step * self.batch_size + torch.arange(self.batch_size)
        epochs, within = pos // self.n, pos % self.n
        out = torch.empty(self.batch_size, dtype=torch.int64)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self._perm(int(e))[within[sel]]
        return out

    def batch(self, step: int):
        """(uint8 images (B, 3, S, S), int64 labels) of step ``step``, augmented, on the device."""
        import torch
        import torch.nn.functional as F

        idx = self.positions(step).to(self.device)
        x, y = self.images[idx], self.labels[idx]
        if self.augment == "none":
            return x, y
        b, c, h, w = x.shape
        pad = max(1, h // 8)
        g = torch.Generator().manual_seed(mix(self.seed, step, 2))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        rows = oy[:, None] + torch.arange(h)
        cols = ox[:, None] + torch.arange(w)
        if self.augment == "crop-flip":
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        x = F.pad(x, (pad, pad, pad, pad))
        bi = torch.arange(b)[:, None, None, None]
        ci = torch.arange(c)[None, :, None, None]
        x = x[bi.to(self.device), ci.to(self.device), rows[:, None, :, None].to(self.device), cols[:, None, None, :].to(self.device)]
        return x, y
