"""Preprocessing on the device: timm's eval transform (resize, centre crop, normalize) on uint8 tensors.

The exact path runs timm's transform on PIL images in the loader (``Preprocessing.transform``).
This one takes the pixel cache's uint8 images to the device and does the same there, per
checkpoint, with its interpolation and crop:

- **resize**: the shorter side to ``floor(input_size / crop_pct)`` (``crop_mode: center``; both
  sides for ``squash``), sizes computed as torchvision's ``Resize(int)`` computes them, with
  ``F.interpolate(antialias=True)``, which uses PIL's filters (bicubic with a = -0.5, support
  widened when shrinking). Like PIL it resizes the width first and then the height, rounding
  and clamping to 0..255 after each pass; without that intermediate clamp a bicubic upscale of
  sharp 0/255 edges (digits at 8 px) differs from PIL by up to 30 grey levels, with it by at
  most two (a one-level rounding difference in the first pass, carried through the second;
  over 90% of pixels are equal). ``nearest`` picks the source pixels PIL picks (:func:`pil_nearest`), exactly.
- **centre crop** to ``input_size``: torchvision's offsets (``round((h - s) / 2)``) and zero
  padding when the image is smaller;
- **normalize** with the checkpoint's mean and std, grayscale expanded to RGB here.

Other interpolations (box, hamming, lanczos) and ``crop_mode: border`` keep the exact path
(:func:`unsupported` says why). Parity with the exact path is measured in
``tests/test_pixels.py`` and ``benchmarks/pixel_parity.py``.

On CUDA, JPEG bytes from the pixel cache's ``jpeg`` form are decoded by nvjpeg in batches
(:func:`decode_jpegs`), behind a capability check (:func:`device_decodes_jpeg`).
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..zoo.checkpoints import Preprocessing

MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}
CROP_MODES = ("center", "squash")


def unsupported(p: Preprocessing) -> str:
    """Why the device path cannot reproduce ``p`` (then the exact PIL path runs), or "" when it can."""
    if p.interpolation not in MODES:
        return f"interpolation {p.interpolation!r} (the device path does {', '.join(MODES)})"
    if p.crop_mode not in CROP_MODES:
        return f"crop_mode {p.crop_mode!r} (the device path does {', '.join(CROP_MODES)})"
    return ""


def resize_size(p: Preprocessing, h: int, w: int) -> tuple[int, int]:
    """(height, width) after timm's eval resize of an h x w image (torchvision ``Resize`` arithmetic).

    >>> resize_size(Preprocessing(224, "bicubic", 0.875, "center", (0,) * 3, (1,) * 3), 28, 28)
    (256, 256)
    """
    scale = math.floor(p.input_size / p.crop_pct)
    if p.crop_mode == "squash":
        return scale, scale
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scale, int(scale * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def crop_box(size: int, h: int, w: int) -> tuple[tuple[int, int, int, int], int, int]:
    """torchvision's ``center_crop`` of an h x w image to size x size: (zero padding left, top, right, bottom), top, left."""
    pad = (
        (size - w) // 2 if size > w else 0,
        (size - h) // 2 if size > h else 0,
        (size - w + 1) // 2 if size > w else 0,
        (size - h + 1) // 2 if size > h else 0,
    )
    h, w = h + pad[1] + pad[3], w + pad[0] + pad[2]
    return pad, int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


@functools.lru_cache(maxsize=256)
def pil_nearest(size: int, out: int) -> np.ndarray:
    """The source index of each of ``out`` pixels when PIL resizes ``size`` pixels with NEAREST: its affine
    scale path, which steps a double ``x += size / out`` from half a step and truncates (so exact halves
    round down, where ``floor((i + 0.5) * size / out)`` would not).

    >>> pil_nearest(2, 7).tolist()
    [0, 0, 0, 0, 1, 1, 1]
    """
    step, x = size / out, 0.0 + size / out * 0.5
    idx = np.empty(out, np.int64)
    for i in range(out):
        idx[i] = min(int(x), size - 1)
        x += step
    return idx


class DeviceTransform:
    """One checkpoint's eval preprocessing on a device: uint8 NCHW batches in, normalized float batches out.

    >>> t = DeviceTransform(ckpt.preprocessing, "cuda")           # doctest: +SKIP
    >>> x = t.resize_crop(images_u8_nchw)                          # doctest: +SKIP
    >>> x = t.normalize(x)                                         # (n, 3, s, s), channels_last
    """

    def __init__(self, p: Preprocessing, device: Any, channels_last: bool = True):
        import torch

        self.p, self.channels_last = p, channels_last
        self.mode = MODES.get(p.interpolation, "")
        self._indices: dict[tuple, Any] = {}
        self.mean = torch.tensor(p.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(p.std, device=device).view(1, 3, 1, 1) * 255

    def resize_crop(self, x):
        """uint8 (n, c, h, w), c = 1 or 3 -> float (n, c, s, s): resized, rounded to whole grey levels, cropped."""
        import torch
        import torch.nn.functional as F

        if unsupported(self.p):
            raise ValueError(f"the device path cannot reproduce {unsupported(self.p)}")
        h, w = x.shape[-2:]
        rh, rw = resize_size(self.p, h, w)
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)  # one copy (x may be a channels-last view)
        if self.mode == "nearest":
            if (rh, rw) != (h, w):
                x = x.index_select(2, self._nearest(h, rh, x.device)).index_select(3, self._nearest(w, rw, x.device))
        else:  # PIL's order: width, then height, each pass rounded and clamped to uint8 (bicubic overshoots)
            if rw != w:
                x = F.interpolate(x, size=(h, rw), mode=self.mode, antialias=True, align_corners=False)
                x = x.add_(0.5).floor_().clamp_(0, 255)  # PIL rounds halves up
            if rh != h:
                x = F.interpolate(x, size=(rh, rw), mode=self.mode, antialias=True, align_corners=False)
                x = x.add_(0.5).floor_().clamp_(0, 255)  # PIL rounds halves up
        s = self.p.input_size
        pad, top, left = crop_box(s, rh, rw)
        if any(pad):
            x = F.pad(x, (pad[0], pad[2], pad[1], pad[3]), value=0.0)  # F.pad: left, right, top, bottom
        return x[:, :, top : top + s, left : left + s]

    def _nearest(self, size: int, out: int, device):
        """:func:`pil_nearest` as an index tensor on ``device``, made once per size."""
        import torch

        key = (size, out, str(device))
        if key not in self._indices:
            self._indices[key] = torch.from_numpy(pil_nearest(size, out)).to(device)
        return self._indices[key]

    def normalize(self, x):
        """(n, c, s, s) in 0..255, c = 1 or 3, any dtype -> normalized float (n, 3, s, s), channels_last when asked
        (one new tensor: grayscale is expanded by broadcasting)."""
        import torch

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty((len(x), 3, *x.shape[2:]), device=x.device, memory_format=fmt)
        torch.sub(x, self.mean, out=out)
        return out.div_(self.std)


# --------------------------------------------------------------------------- JPEG on the device

_EXIF = {  # orientation -> what PIL's ImageOps.exif_transpose does, on (c, h, w) tensors
    2: lambda t: t.flip(-1),
    3: lambda t: t.flip(-1, -2),
    4: lambda t: t.flip(-2),
    5: lambda t: t.transpose(-1, -2),
    6: lambda t: t.rot90(-1, (-2, -1)),
    7: lambda t: t.transpose(-1, -2).flip(-1, -2),
    8: lambda t: t.rot90(1, (-2, -1)),
}


def orient(t, orientation: int):
    """A decoded (c, h, w) image turned upright by its EXIF orientation (1..8), as ``datasets`` decodes it."""
    f = _EXIF.get(int(orientation))
    return f(t) if f else t


def _torchvision_decode(data: list, device: Any) -> list:
    """torchvision's ``decode_jpeg`` on a list of CPU uint8 tensors, to RGB on ``device``."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


@functools.lru_cache(maxsize=8)
def device_decodes_jpeg(device: str) -> bool:
    """Whether torchvision's batched nvjpeg decode works on ``device`` (a CUDA device; checked once, on a tiny JPEG)."""
    if not device.startswith("cuda"):
        return False
    try:
        import torch
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 60)).save(buf, format="JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        out = _torchvision_decode([data, data], device)
        torch.cuda.synchronize(device)
        return len(out) == 2 and tuple(out[0].shape) == (3, 16, 16)
    except Exception:  # noqa: BLE001 - no nvjpeg, an old torchvision, a driver problem: the host decodes instead
        return False


def decode_jpegs(data: Sequence[np.ndarray], orientations: Sequence[int] | np.ndarray, device: Any) -> list:
    """JPEG bytes -> upright uint8 (3, h, w) tensors on ``device``: one batched nvjpeg call on CUDA,
    torchvision's libjpeg on CPU. Raises when any image fails (the caller then decodes one by one)."""
    import torch

    out = _torchvision_decode([torch.from_numpy(np.array(d, dtype=np.uint8)) for d in data], device)
    return [orient(t, o) for t, o in zip(out, orientations, strict=True)]
