"""Extraction engine: the only code that runs a network forward.

Two ways in. The device path (default) reads uint8 images from the pixel cache
(``data/pixels.py``), stages each batch in one pinned buffer, copies it on a side stream and
resizes, crops and normalizes it on the device (``features/preprocess.py``). The exact path
runs timm's PIL transform in DataLoader workers and normalizes on the device. Either way
the forward runs under ``torch.inference_mode`` in ``channels_last`` (which doubles
convnet throughput on CPU), with bf16/fp16 autocast on CUDA. On CUDA, a thread prepares
the next batches while the device computes, and a batch's features are copied out
without waiting: the host waits for them one batch later, which is the only wait per
batch. Features are each checkpoint's feature output
(:func:`~zoo_survey.zoo.checkpoints.forward_feature_output`): timm's pre-logits unless its entry names another.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ZooSurveyError, shown
from ..threads import usable_cpus
from ..zoo.checkpoints import forward_feature_output
from ..zoo.registry import FEATURE_OUTPUTS
from .preprocess import DeviceTransform, decode_jpegs

if TYPE_CHECKING:  # data.pixels (with the dataset sources) costs 0.1 s: commands that extract nothing skip it
    from ..data.pixels import Pixels

# --feature-output: each entry's own (its `feature_output:`, pre_logits unless it says otherwise), or one for every entry.
FEATURE_OUTPUT_CHOICES: tuple[str, ...] = ("entry", *FEATURE_OUTPUTS)
PIXEL_ROUTES = ("tensor", "pil")  # --preprocess: how pixels reach the model (not the registry's `preprocess:` block)
JPEG = ("auto", "device", "host")


@dataclass(frozen=True)
class ExtractOptions:
    """How to run the forward. ``dtype``, ``feature_output`` and ``pixel_route`` change the features, so they are part
    of the cache key."""

    device: str = "cpu"  # resolved: "cpu" or "cuda[:N]"
    batch_size: int = 16
    workers: int = 2
    dtype: str = "float32"  # compute dtype: float32, or bfloat16/float16 autocast on CUDA
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (worth it on CUDA for large runs)
    bad_images: str = "fail"  # an image that cannot be decoded: "fail" (stop, naming it) or "skip" (count it)
    feature_output: str = "entry"  # entry: each checkpoint's own `feature_output:`; else one of FEATURE_OUTPUTS for all

    pixel_route: str = "tensor"  # --preprocess; tensor: pixel cache + preprocessing on the device; pil: timm's PIL transform
    jpeg: str = "auto"  # JPEG sources: auto (nvjpeg on CUDA for large JPEGs), device (always decode on the device), host

    def feature_output_for(self, entry_output: str) -> str:
        """The feature output a checkpoint whose entry says ``entry_output`` gives in this run."""
        return entry_output if self.feature_output == "entry" else self.feature_output

    def key(self, entry_output: str | None = None) -> dict[str, str]:
        """What changes the features (part of the cache key); ``entry_output``: the checkpoint's own feature output."""
        output = self.feature_output if entry_output is None else self.feature_output_for(entry_output)
        # The exact path's key is as before the device path existed. The feature output's key field stays "layer"
        # (its name before feature_output), and the pixel route's stays "preprocess", so that existing caches and the
        # rows' keys stay valid.
        return {"dtype": self.dtype, "layer": output, **({"preprocess": "tensor"} if self.pixel_route == "tensor" else {})}

    def __post_init__(self) -> None:
        if self.feature_output not in FEATURE_OUTPUT_CHOICES:
            raise ZooSurveyError(f"'feature_output' must be one of {', '.join(FEATURE_OUTPUT_CHOICES)}, "
                                 f"got {shown(self.feature_output)}", param="feature_output")
        if self.pixel_route not in PIXEL_ROUTES:
            raise ZooSurveyError(f"'pixel_route' must be one of {', '.join(PIXEL_ROUTES)}, got {shown(self.pixel_route)}",
                                 param="pixel_route")
        if self.jpeg not in JPEG:
            raise ZooSurveyError(f"jpeg must be one of {', '.join(JPEG)}, got {self.jpeg!r}")
        if self.bad_images not in ("fail", "skip"):
            raise ZooSurveyError(f"'bad_images' must be 'fail' or 'skip', got {shown(self.bad_images)}", param="bad_images")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ZooSurveyError(f"'dtype' must be float32, bfloat16 or float16, got {shown(self.dtype)}", param="dtype")
        if self.dtype != "float32" and not self.device.startswith("cuda"):
            raise ZooSurveyError(f"dtype={self.dtype!r} needs a CUDA device; on CPU use float32", param="dtype")


def resolve_device(name: str, cuda: bool | None = None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.

    ``cuda`` says whether the machines that run the forward have a GPU; ``None``: this one
    (a run on a Ray cluster asks the cluster instead).
    """
    if name == "cpu":
        return name  # no GPU question to ask (and no torch to import for it)
    if cuda is None:
        cuda = _gpu_driver_present() and _torch_sees_cuda()
    if name == "auto":
        return "cuda" if cuda else "cpu"
    if name.startswith("cuda") and not cuda:
        raise ZooSurveyError(f"device={name!r}: no CUDA GPU is visible to torch; use device='cpu' or 'auto'", param="device")
    if name != "cpu" and not name.startswith("cuda"):
        raise ZooSurveyError(f"'device' {shown(name)}: expected auto, cpu, cuda or cuda:N", param="device")
    return name


# Where a GPU kernel driver that torch.cuda can use shows itself: NVIDIA's, WSL2's GPU paravirtualization, Jetson's
# integrated GPU, and ROCm's (which torch.cuda also drives). Without any of them torch cannot see a GPU, so ``auto`` is
# ``cpu`` without importing torch (about a second of a cached rerun's wall); with one, torch is asked.
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/nvhost-ctrl-gpu",
                     "/dev/kfd")


def _gpu_driver_present() -> bool:
    return any(os.path.exists(p) for p in _GPU_DRIVER_PATHS)


def _torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


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
    cores = usable_cpus()  # affinity and cgroup quota, not the machine's cores
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


@dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # positions in the split
    features: np.ndarray  # float32 (len(rows), dim); zeros where ok is False
    ok: np.ndarray  # bool: the image decoded
    errors: tuple[str, ...]  # one message per row that did not decode


@dataclass
class _Staged:
    """One batch on the host, ready for the device: every usable image back to back in one uint8 buffer."""

    rows: np.ndarray  # positions in the split
    errors: list[str]  # per row: "" when the image is usable
    flat: Any  # uint8 tensor (pinned on CUDA)
    groups: list[tuple[np.ndarray, int, tuple[int, ...]]]  # (positions in the batch, offset in flat, (n, h, w, c))
    jpegs: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None  # (positions, bytes, EXIF orientations)
    final: bool = False  # the exact path: one group of finished (n, 3, s, s) crops


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


def pixel_batches(pixels: Pixels, rows: Sequence[int], batch_size: int, pin: bool = False) -> Iterator[_Staged]:
    """The device path's host side: read each batch of rows from the pixel cache into one (pinned) buffer.

    No decoding and no resizing: a memory-mapped read, grouped by image size, and a copy.
    """
    import torch

    from ..data.pixels import BAD

    order = np.asarray(rows, np.int64)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        state = pixels.state(chunk)
        errors = [pixels.error(int(r)) if s == BAD else "" for r, s in zip(chunk, state, strict=True)]
        found = pixels.images(chunk)
        total = sum(p.size for _, _, pieces in found for p in pieces)
        flat = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
        out, offset = flat.numpy(), 0
        groups: list[tuple[np.ndarray, int, tuple[int, ...]]] = []
        for shape, positions, pieces in found:
            size = len(positions) * math.prod(shape)
            np.concatenate([p.reshape(-1) for p in pieces], out=out[offset : offset + size])
            groups.append((positions, offset, (len(positions), *shape)))
            offset += size
        jpeg_pos, data, _, orientation = pixels.jpegs(chunk)
        yield _Staged(chunk, errors, flat, groups, (jpeg_pos, data, orientation) if len(jpeg_pos) else None)


def _pil_batches(split, rows: Sequence[int], preprocessing, options: ExtractOptions) -> Iterator[_Staged]:
    """The exact path: timm's PIL transform in the loader, uint8 crops out."""
    for images, batch_rows, errors in make_loader(split, rows, preprocessing, options):
        n = len(images)
        yield _Staged(batch_rows.numpy(), list(errors), images, [(np.arange(n), 0, tuple(images.shape))], final=True)


def _prefetch(batches: Iterator[_Staged], depth: int = 3) -> Iterator[_Staged]:
    """Run ``batches`` in a thread, ``depth`` batches ahead, so the host prepares while the device computes."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        """Hand ``item`` over, unless the consumer stopped (it may never take another: never block on it)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)

    thread = threading.Thread(target=fill, name="zoo-survey-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _jpeg_images(staged: _Staged, device) -> list[tuple[np.ndarray, Any]]:
    """Decode the batch's JPEG rows on the device (one batched call), as [(positions, uint8 (n, c, h, w))]
    grouped by size. When the batched call fails (it returns nothing if any image fails), each image is
    decoded alone: on the device, else on the host with PIL, and one that fails there too becomes a bad row
    with PIL's message."""
    import torch

    assert staged.jpegs is not None
    positions, data, orientation = staged.jpegs
    try:
        images = decode_jpegs(data, orientation, device)
    except Exception:  # noqa: BLE001 - nvjpeg refuses some files; decoded one by one below
        images = []
        for p, d, o in zip(positions, data, orientation, strict=True):
            try:
                images.append(decode_jpegs([d], [o], device)[0])
                continue
            except Exception:  # noqa: BLE001 - then the host's decoder, which names what is wrong
                pass
            try:
                from ..data.pixels import decode_bytes

                images.append(torch.from_numpy(np.array(decode_bytes(bytes(d), max_short_side=1 << 30))).permute(2, 0, 1).to(device))
            except Exception as e:  # noqa: BLE001 - any decoder error: a bad row, reported by the caller
                staged.errors[int(p)] = f"{type(e).__name__}: {e}"
                images.append(None)
    groups: dict[tuple[int, ...], tuple[list[int], list[Any]]] = {}
    for p, img in zip(positions, images, strict=True):
        if img is not None:
            pos, imgs = groups.setdefault(tuple(img.shape), ([], []))
            pos.append(int(p))
            imgs.append(img)
    return [(np.asarray(pos), torch.stack(imgs)) for pos, imgs in groups.values()]


def _device_groups(staged: _Staged, device, copy_stream) -> list[tuple[np.ndarray, Any, bool]]:
    """The batch's usable images on the device, by size: [(positions in the batch, uint8 (n, c, h, w), finished)],
    finished when they are already resized and cropped (the exact path). On CUDA the host buffer is copied on
    ``copy_stream``, which the compute stream then waits for."""
    import torch

    flat = staged.flat
    if copy_stream is not None:
        with torch.cuda.stream(copy_stream):
            flat = flat.to(device, non_blocking=True)
        current = torch.cuda.current_stream(device)
        current.wait_stream(copy_stream)
        flat.record_stream(current)
    else:
        flat = flat.to(device)
    groups = []
    for positions, offset, shape in staged.groups:
        x = flat[offset : offset + math.prod(shape)].view(shape)
        groups.append((positions, x if staged.final else x.permute(0, 3, 1, 2), staged.final))
    if staged.jpegs is not None:
        groups += [(positions, x, False) for positions, x in _jpeg_images(staged, device)]
    return groups


def run_forward(
    model,
    split,
    rows: Sequence[int],
    preprocessing,
    options: ExtractOptions,
    entry_output: str = "pre_logits",
    pixels: Pixels | None = None,
) -> Iterator[Batch]:
    """Yield feature batches for ``rows`` of ``split``, in order; ``entry_output``: the checkpoint entry's own
    feature output, which ``options.feature_output`` keeps (``entry``) or overrides.

    With ``pixels`` (the split's pixel cache) images are preprocessed on the device; without,
    timm's PIL transform runs in the loader (the exact path). On out-of-memory (in the
    preprocessing or the forward) the chunk is halved and retried, and later batches keep the
    smaller size (automatic batch-size backoff).

    >>> for b in run_forward(model, ds.splits["test"], range(100), ckpt.preprocessing, ExtractOptions()):  # doctest: +SKIP
    ...     print(b.rows.shape, b.features.shape)
    """
    import torch

    device = torch.device(options.device)
    cuda = device.type == "cuda"
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = DeviceTransform(preprocessing, device, options.channels_last)
    if pixels is not None:
        staged_batches = pixel_batches(pixels, rows, options.batch_size, pin=cuda)
    else:
        staged_batches = _pil_batches(split, rows, preprocessing, options)
    if cuda:
        staged_batches = _prefetch(staged_batches)
    copy_stream = torch.cuda.Stream(device) if cuda else None
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(options.dtype)
    s = preprocessing.input_size
    chunk = options.batch_size
    output = options.feature_output_for(entry_output)

    def forward(x):
        return forward_feature_output(model, x, output)

    if options.compile:  # what runs is forward_feature_output(), not model.forward: compile that (a compiled module's
        forward = torch.compile(forward)  # forward_features would still run eagerly)
    waiting: tuple | None = None  # the previous batch, its features still on their way to the host
    with torch.inference_mode():
        for staged in staged_batches:
            groups = _device_groups(staged, device, copy_stream)
            if not groups:  # nothing usable in this batch: one blank image keeps the feature width known
                groups = [(np.zeros(0, np.int64), torch.zeros(1, 3, s, s, dtype=torch.uint8, device=device), True)]
            outs = []
            for _, images, finished in groups:
                start = 0
                while start < len(images):
                    try:
                        part = images[start : start + chunk]
                        n = len(part)
                        if n < chunk:  # every forward has the batch's shape: see _pad_to
                            part = _pad_to(part, chunk)
                        x = transform.normalize(part if finished else transform.resize_crop(part))
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                            outs.append(forward(x).flatten(1).float()[:n])
                        start += len(part)
                    except torch.OutOfMemoryError:
                        if chunk == 1:
                            raise
                        chunk = max(1, chunk // 2)
                        if cuda:
                            torch.cuda.empty_cache()
            f = outs[0] if len(outs) == 1 else torch.cat(outs)
            order = np.concatenate([positions for positions, _, _ in groups])
            done = None
            if cuda:
                host = torch.empty(f.shape, dtype=f.dtype, pin_memory=True)
                host.copy_(f, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                f = host
            if waiting is not None:
                yield _finish(*waiting)
            waiting = (staged, order, f, done)
        if waiting is not None:
            yield _finish(*waiting)


def _pad_to(images, size: int):
    """``images`` with copies of its last image appended up to ``size`` rows (their features are dropped).

    A short batch (a split's last, or a group of another size) would otherwise run with another
    shape, and oneDNN picks its convolution kernels by shape and thread count: on 2 cores the
    features of a short batch differed in the last bits between 1 and 2 threads, those of full
    batches did not. Padding makes an image's features independent of the thread count
    (issue 22; ``tests/test_determinism.py``) for at most ``size - 1`` extra images a group.
    """
    import torch

    return torch.cat([images, images[-1:].expand(size - len(images), *images.shape[1:])])


def _finish(staged: _Staged, order: np.ndarray, features, done) -> Batch:
    """A batch's features in row order, once their copy to the host is complete."""
    if done is not None:
        done.synchronize()
    f = features.numpy()
    ok = np.array([e == "" for e in staged.errors], dtype=bool)
    out = np.zeros((len(staged.rows), f.shape[1]), np.float32)
    out[order] = f[: len(order)]
    out[~ok] = 0.0
    return Batch(staged.rows, out, ok, tuple(e for e in staged.errors if e))
