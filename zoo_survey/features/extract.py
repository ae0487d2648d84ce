"""Extraction engine: the only code that runs a network forward.

Decoding and resizing run in DataLoader workers; the forward runs under
``torch.inference_mode`` in ``channels_last`` (which doubles convnet throughput on
CPU), with pinned host memory, non-blocking copies and bf16 autocast on CUDA.
Features are the pooled pre-logit features, ``forward_head(pre_logits=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ZooSurveyError

LAYERS = ("pre_logits", "avg", "max")


def pooled(model, x, layer: str):
    """Features of a batch: timm's pooled pre-logits, or avg / max pooling over positions of forward_features."""
    if layer == "pre_logits":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    f = model.forward_features(x)
    dims = (2, 3) if f.ndim == 4 else (1,)  # NCHW maps, or (batch, tokens, dim) sequences
    return f.mean(dims) if layer == "avg" else f.amax(dims)


@dataclass(frozen=True)
class ExtractOptions:
    """How to run the forward. ``dtype`` and ``pooling`` change the features, so they are part of the cache key."""

    device: str = "cpu"  # resolved: "cpu" or "cuda[:N]"
    batch_size: int = 16
    workers: int = 2
    dtype: str = "float32"  # compute dtype: float32, or bfloat16/float16 autocast on CUDA
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (worth it on CUDA for large runs)
    bad_images: str = "fail"  # an image that cannot be decoded: "fail" (stop, naming it) or "skip" (count it)
    layer: str = "pre_logits"  # pre_logits (forward_head(pre_logits=True)), or avg / max pooling of forward_features

    def key(self) -> dict[str, str]:
        return {"dtype": self.dtype, "layer": self.layer}

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ZooSurveyError(f"--features must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        if self.bad_images not in ("fail", "skip"):
            raise ZooSurveyError(f"--bad-images must be 'fail' or 'skip', got {self.bad_images!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ZooSurveyError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.dtype != "float32" and not self.device.startswith("cuda"):
            raise ZooSurveyError(f"--dtype {self.dtype} needs a CUDA device; on CPU use float32")


def resolve_device(name: str, cuda: bool | None = None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.

    ``cuda`` says whether the machines that run the forward have a GPU; ``None``: this one
    (a run on a Ray cluster asks the cluster instead).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if cuda else "cpu"
    if name.startswith("cuda") and not cuda:
        raise ZooSurveyError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ZooSurveyError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return name


def default_batch_size(device: str = "cpu") -> int:
    """Images per forward: small on CPU, where large batches fall out of cache (efficientnet-lite0 at 224 px
    on 2 cores, forward only: 49.6 / 37.0 / 38.2 / 31.5 / 31.6 img/s at batch 4 / 8 / 16 / 32 / 64, from
    ``benchmarks/extract_throughput.py --sweep-batch``), large on CUDA."""
    return 256 if device.startswith("cuda") else 16


def default_workers(device: str = "cpu") -> int:
    """DataLoader workers: on CUDA, decode in parallel; on a small CPU, decode inline.

    On a CPU the forward already uses every core, and a worker process steals one from it:
    on 2 cores, inline decoding (~0.5 ms an image) costs ~2% of a 224 px forward, while one
    worker cost 20% (measured by benchmarks/extract_throughput.py).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


@dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # positions in the split
    features: np.ndarray  # float32 (len(rows), dim); zeros where ok is False
    ok: np.ndarray  # bool: the image decoded
    errors: tuple[str, ...]  # one message per row that did not decode


class _Rows:
    """A torch Dataset over chosen rows of a split: returns (image tensor, row, error message or "")."""

    def __init__(self, split, rows: Sequence[int], transform, size: int):
        self.split, self.rows, self.transform, self.size = split, np.asarray(rows), transform, size  # uint8 out

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        import torch

        row = int(self.rows[i])
        try:
            return self.transform(self.split.image(row)), row, ""
        except Exception as e:  # noqa: BLE001 - any decoder error: reported by the caller
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), row, f"{type(e).__name__}: {e}"


def make_loader(split, rows: Sequence[int], preprocessing, options: ExtractOptions):
    """The engine's DataLoader: batches of (uint8 crops, rows, decode errors), in row order."""
    from torch.utils.data import DataLoader

    # A map-style dataset (len, getitem); it does not subclass torch's Dataset, which would load torch on import.
    rows_dataset: Any = _Rows(split, rows, preprocessing.transform(normalize=False), preprocessing.input_size)
    return DataLoader(
        rows_dataset,
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=options.workers,
        pin_memory=options.device.startswith("cuda"),
        persistent_workers=False,
    )


def run_forward(
    model,
    split,
    rows: Sequence[int],
    preprocessing,
    options: ExtractOptions,
) -> Iterator[Batch]:
    """Yield feature batches for ``rows`` of ``split``, in order.

    On out-of-memory the batch is split in halves and retried, and later batches keep
    the smaller size (automatic batch-size backoff).

    Images are resized and cropped to uint8 in the loader, then normalized a batch at a time
    on the device (``preprocessing``'s mean and std), which costs less than per image.

    >>> for b in run_forward(model, ds.splits["test"], range(100), ckpt.preprocessing, ExtractOptions()):  # doctest: +SKIP
    ...     print(b.rows.shape, b.features.shape)
    """
    import torch

    device = torch.device(options.device)
    cuda = device.type == "cuda"
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(split, rows, preprocessing, options)
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(options.dtype)
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1) * 255
    chunk = options.batch_size
    with torch.inference_mode():
        for images, batch_rows, errors in loader:
            images = images.to(device, non_blocking=cuda).float()
            if options.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            images.sub_(mean).div_(std)
            outs, start = [], 0
            while start < len(images):
                try:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        x = images[start : start + chunk]
                        f = pooled(model, x, options.layer)
                    outs.append(f.flatten(1).float().cpu())
                    start += len(x)
                except torch.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)
                    if cuda:
                        torch.cuda.empty_cache()
            errs = tuple(errors)
            yield Batch(batch_rows.numpy(), torch.cat(outs).numpy(), np.array([e == "" for e in errs]), tuple(e for e in errs if e))
