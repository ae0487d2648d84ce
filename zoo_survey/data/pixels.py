"""Pixel cache: each dataset split decoded once, as uint8, and read by every checkpoint.

A survey runs many models over the same images. Decoding them again for every model (what
timm's loader and the peer harnesses do) leaves a GPU idle most of the time, so a split is
decoded once into this cache and every checkpoint reads it; resizing, cropping and
normalizing then run on the device, per checkpoint (``zoo_survey.features.preprocess``).

Forms (:class:`DecodeSettings`):

- ``raw``: decoded uint8 pixels, height x width x channels, one channel for grayscale sources
  (expanded to RGB on the device, as PIL's ``convert("RGB")`` would) and three otherwise. Images
  are kept at native size; only one whose shorter side exceeds ``max_short_side`` (768) is
  shrunk to it first (PIL, Lanczos). 768 is twice the largest resize any registry model asks
  for (384 px ViTs at crop_pct 1.0), so every model still shrinks from at least twice its
  size and its own antialiased resize decides what it sees. Fashion-MNIST, digits, CIFAR,
  EuroSAT, Food-101 (at most 512 px), Flowers-102 and DTD are all stored at native size.
- ``jpeg``: the source's own JPEG bytes, for the GPU's nvjpeg to decode per batch
  (``features/preprocess.py``); rows that are not a JPEG nvjpeg takes (PNG, CMYK, progressive)
  are decoded here into raw pixels, in the same entry.

The key: the dataset id and fingerprint, the split, its rows and indices digest, and the
decode settings. Layout, under the feature cache's root::

    .pixels/<dataset>/<split>/<digest[:20]>/
        shard-00000.pix.npy     uint8, flat: the shard's images one after another (or their JPEG bytes)
        shard-00000.index.npy   int64 (rows, 7): offset, bytes, height, width, channels, state, EXIF orientation
        shard-00000.json        sidecar: rows, sizes, sha256s, the message of each image that did not decode
        manifest.json           written last

Shards, sidecars, resume and checksums are :mod:`zoo_survey.shards`'.

>>> pixels = PixelCache(cache_root()).ensure(ds, "test")                 # doctest: +SKIP
>>> [(shape, len(pos)) for shape, pos, _ in pixels.images(np.arange(16))]  # doctest: +SKIP
[((28, 28, 1), 16)]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import shards
from ..digests import canonical_digest, file_sha256
from .datasets import ArrayImages, IdxImages, PreparedDataset, Split

PIXEL_FORMAT = 1
SHARD_ROWS = 1024
MAX_SHORT_SIDE = 768
PIXELS_DIR = ".pixels"
FILES = {"pixels": "pix.npy", "index": "index.npy"}
OFFSET, NBYTES, HEIGHT, WIDTH, CHANNELS, STATE, ORIENTATION = range(7)
BAD, RAW, JPEG = 0, 1, 2  # STATE: did not decode; decoded pixels; JPEG bytes for the device to decode
FORMS = ("raw", "jpeg")


@dataclass(frozen=True)
class DecodeSettings:
    """How a split's images are stored: part of the pixel key."""

    form: str = "raw"
    max_short_side: int = MAX_SHORT_SIDE

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"pixel form must be one of {FORMS}, got {self.form!r}")

    def key(self) -> dict[str, Any]:
        return {"form": self.form, "max_short_side": self.max_short_side, "mode": "L or RGB", "shrink": "PIL lanczos"}


@dataclass(frozen=True)
class PixelKey:
    """What makes two pixel entries the same: ``payload`` (hashed, once); dataset and split name the folders."""

    dataset: str
    split: str
    payload: dict[str, Any]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", canonical_digest({**self.payload, "format": PIXEL_FORMAT}))

    @property
    def relpath(self) -> Path:
        return Path(PIXELS_DIR, self.dataset, self.split, self.digest[:20])


def pixel_key(ds: PreparedDataset, split: str, settings: DecodeSettings) -> PixelKey:
    s = ds.splits[split]
    payload = {"dataset": ds.spec.id, "fingerprint": ds.fingerprint, "split": split, "rows": len(s),
               "indices": s.indices_digest(), "decode": settings.key()}
    return PixelKey(ds.spec.id, split, payload)


# --------------------------------------------------------------------------- decoding one image


def to_pixels(img, max_short_side: int = MAX_SHORT_SIDE) -> np.ndarray:
    """A PIL image as uint8 (H, W, C): grayscale ``L`` keeps one channel, every other mode becomes RGB
    (as the timm transform's ``convert("RGB")`` does); a shorter side above ``max_short_side`` is shrunk to it."""
    from PIL import Image

    if img.mode != "L":
        img = img.convert("RGB")
    w, h = img.size
    if min(w, h) > max_short_side:  # sizes as torchvision's Resize(int) computes them
        size = (max_short_side, int(max_short_side * h / w)) if w <= h else (int(max_short_side * w / h), max_short_side)
        img = img.resize(size, Image.Resampling.LANCZOS)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def decode_bytes(data: bytes, max_short_side: int = MAX_SHORT_SIDE) -> np.ndarray:
    """Encoded bytes -> pixels, the way ``datasets`` decodes an image column (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    img: Image.Image = Image.open(io.BytesIO(data))
    img.load()
    if img.getexif().get(Image.ExifTags.Base.Orientation) is not None:
        img = ImageOps.exif_transpose(img)
    return to_pixels(img, max_short_side)


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, channels, EXIF orientation) after orientation, for a JPEG nvjpeg decodes as PIL would
    (baseline, grayscale or YCbCr); None for anything else, which is decoded on the host instead."""
    from PIL import Image

    if data[:3] != b"\xff\xd8\xff":
        return None
    img = Image.open(io.BytesIO(data))  # reads the header only
    if img.format != "JPEG" or img.mode not in ("L", "RGB") or img.info.get("progressive") or img.info.get("progression"):
        return None
    orientation = int(img.getexif().get(Image.ExifTags.Base.Orientation) or 1)
    if not 1 <= orientation <= 8:
        return None
    w, h = img.size
    if orientation >= 5:  # transposed: width and height swap
        w, h = h, w
    return h, w, 1 if img.mode == "L" else 3, orientation


@dataclass(frozen=True)
class Decoded:
    """One row as stored: pixels or JPEG bytes, with its state and message."""

    data: np.ndarray  # uint8: (H, W, C) pixels, or 1-D JPEG bytes; empty for a bad row
    state: int
    shape: tuple[int, int, int] = (0, 0, 0)
    orientation: int = 1
    error: str = ""


def decode_row(images, position: int, settings: DecodeSettings) -> Decoded:
    """Decode (or, in the ``jpeg`` form, check and keep the bytes of) one image; any failure becomes a bad row."""
    try:
        if settings.form == "jpeg":
            data = images.encoded(position)
            header = jpeg_header(data) if data is not None else None
            if header is not None:
                h, w, c, orientation = header
                return Decoded(np.frombuffer(data, np.uint8), JPEG, (h, w, c), orientation)
            px = decode_bytes(data, settings.max_short_side) if data is not None else to_pixels(images.raw(position), settings.max_short_side)
        else:
            px = to_pixels(images.raw(position), settings.max_short_side)
    except Exception as e:  # noqa: BLE001 - any decoder error: recorded, and reported by the extraction (--bad-images)
        return Decoded(np.zeros(0, np.uint8), BAD, error=f"{type(e).__name__}: {e}")
    h, w, c = px.shape
    return Decoded(px, RAW, (h, w, c))


class _DecodeRows:
    """A map-style dataset for the build's DataLoader: (row, Decoded) per row (decoded in its workers)."""

    def __init__(self, split: Split, rows: np.ndarray, settings: DecodeSettings):
        self.images, self.positions, self.rows, self.settings = split.images, split.indices[rows], rows, settings

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Decoded]:
        return int(self.rows[i]), decode_row(self.images, int(self.positions[i]), self.settings)


def _as_list(batch: list) -> list:
    return batch


def _pack(decoded: Sequence[Decoded]) -> tuple[np.ndarray, np.ndarray]:
    """A shard's rows as one flat uint8 buffer and its (rows, 7) index."""
    index = np.zeros((len(decoded), 7), np.int64)
    offset = 0
    for i, d in enumerate(decoded):
        index[i] = (offset, d.data.size, *d.shape, d.state, d.orientation)
        offset += d.data.size
    flat = np.concatenate([d.data.reshape(-1) for d in decoded]) if offset else np.zeros(0, np.uint8)
    return flat, index


def _pack_array(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fast path for sources that are already a uint8 array (N, H, W[, 3]): no PIL at all."""
    a = array[..., None] if array.ndim == 3 else array
    n, h, w, c = a.shape
    size = h * w * c
    index = np.zeros((n, 7), np.int64)
    index[:, OFFSET] = np.arange(n) * size
    index[:, NBYTES], index[:, HEIGHT], index[:, WIDTH], index[:, CHANNELS] = size, h, w, c
    index[:, STATE], index[:, ORIENTATION] = RAW, 1
    return np.ascontiguousarray(a, dtype=np.uint8).reshape(-1), index


def _shard_fields(index: np.ndarray, rows: range, errors: dict[int, str]) -> dict[str, Any]:
    raw = index[index[:, STATE] == RAW][:, HEIGHT:STATE]
    shapes = {tuple(int(v) for v in r) for r in raw}
    uniform = len(shapes) == 1 and not (index[:, STATE] == JPEG).any()
    return {
        "shape": list(shapes.pop()) if uniform else None,
        "bad": int((index[:, STATE] == BAD).sum()),
        "jpeg": int((index[:, STATE] == JPEG).sum()),
        "errors": {str(r): msg for r, msg in errors.items() if r in rows},
    }


# --------------------------------------------------------------------------- reading


class Pixels:
    """A complete pixel entry, memory-mapped: the split's images by row.

    >>> for shape, positions, pieces in pixels.images(np.arange(256)): ...   # doctest: +SKIP
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.form = manifest["key"]["decode"]["form"]
        self.shard_rows = int(manifest["shard_rows"])
        self.data = [np.load(folder / sh["pixels"], mmap_mode="r") for sh in manifest["shards"]]
        self.index = np.concatenate([np.load(folder / sh["index"]) for sh in manifest["shards"]])
        self.errors = {int(r): msg for sh in manifest["shards"] for r, msg in sh.get("errors", {}).items()}
        shape = manifest.get("shape")
        self.shape: tuple[int, int, int] | None = (int(shape[0]), int(shape[1]), int(shape[2])) if shape else None  # all alike

    def __len__(self) -> int:
        return len(self.index)

    def state(self, rows: np.ndarray) -> np.ndarray:
        return self.index[rows, STATE]

    def _view(self, row: int, count: int = 1) -> np.ndarray:
        """``count`` consecutive rows of one shard, alike in shape, as (count, H, W, C) (no copy)."""
        r = self.index[row]
        start = int(r[OFFSET])
        return self.data[row // self.shard_rows][start : start + count * int(r[NBYTES])].reshape(count, *(int(v) for v in r[HEIGHT:STATE]))

    def images(self, rows: np.ndarray) -> list[tuple[tuple[int, int, int], np.ndarray, list[np.ndarray]]]:
        """The decoded (``RAW``) images among ``rows``, grouped by shape: (shape, positions in ``rows``, pieces),
        where the pieces are memory-mapped views whose concatenation is the group's (n, H, W, C) batch."""
        rows = np.asarray(rows, np.int64)
        raw = np.flatnonzero(self.index[rows, STATE] == RAW)
        if not len(raw):
            return []
        if self.shape is not None and rows[-1] - rows[0] == len(rows) - 1:
            # Consecutive rows, one shape: bad rows take no bytes, so each shard's part is one slice.
            pieces, chosen = [], rows[raw]
            for shard in np.unique(chosen // self.shard_rows):
                part = chosen[chosen // self.shard_rows == shard]
                pieces.append(self._view(int(part[0]), len(part)))
            return [(self.shape, raw, pieces)]
        groups: dict[tuple[int, int, int], tuple[list[int], list[np.ndarray]]] = {}
        for pos in raw:
            row = int(rows[pos])
            h, w, c = (int(v) for v in self.index[row, HEIGHT:STATE])
            positions, pieces = groups.setdefault((h, w, c), ([], []))
            positions.append(int(pos))
            pieces.append(self._view(row))
        return [(shape, np.asarray(p, np.int64), pieces) for shape, (p, pieces) in groups.items()]

    def jpegs(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        """The ``JPEG`` rows among ``rows``: (positions in ``rows``, their bytes, (H, W, C) after orientation,
        EXIF orientations)."""
        rows = np.asarray(rows, np.int64)
        pos = np.flatnonzero(self.index[rows, STATE] == JPEG)
        data = []
        for p in pos:
            r = self.index[rows[p]]
            data.append(self.data[int(rows[p]) // self.shard_rows][int(r[OFFSET]) : int(r[OFFSET] + r[NBYTES])])
        return pos, data, self.index[rows[pos], HEIGHT:STATE], self.index[rows[pos], ORIENTATION]

    def error(self, row: int) -> str:
        return self.errors.get(int(row), "the image did not decode")


# --------------------------------------------------------------------------- the cache


class PixelCache:
    """Pixel entries under a cache root (the feature cache's), built once per split and shared.

    ``decoded`` counts the images this object decoded, so a caller can show that a second
    checkpoint on the same split decoded none.
    """

    def __init__(self, root: Path, shard_rows: int = SHARD_ROWS):
        self.root = Path(root)
        self.shard_rows = int(shard_rows)
        self.decoded = 0
        self.repaired: list[str] = []
        self._open: dict[str, Pixels] = {}

    def path(self, key: PixelKey) -> Path:
        return self.root / key.relpath

    def get(self, key: PixelKey) -> Pixels | None:
        """The entry if complete and intact (every shard's sha256 checked once per process), else None; a damaged
        shard is removed, to be decoded again."""
        folder = self.path(key)
        if key.digest in self._open and (folder / "manifest.json").is_file():
            return self._open[key.digest]
        manifest, problem, bad = shards.read_manifest(folder, FILES, PIXEL_FORMAT, hasher=file_sha256)
        if manifest is None:
            if problem:
                self.repaired.append(f"{folder.relative_to(self.root)}: {problem}; decoding it again")
                shards.drop(folder, bad)
            return None
        self._open[key.digest] = Pixels(folder, manifest)
        return self._open[key.digest]

    def ensure(
        self,
        ds: PreparedDataset,
        split: str,
        settings: DecodeSettings | None = None,
        workers: int = 0,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> Pixels:
        """The split's pixels, decoding what is missing (under a lock, so two processes do not both decode it)."""
        settings = settings or DecodeSettings()
        key = pixel_key(ds, split, settings)
        hit = self.get(key)
        if hit is not None:
            return hit
        shards.ensure_root(self.root, "pass another 'cache_dir' or set ZOO_SURVEY_CACHE")
        with shards.entry_lock(self.root, key.digest):
            hit = self.get(key)
            if hit is not None:
                return hit
            return self._build(key, ds.splits[split], settings, workers, on_progress)

    def _build(self, key: PixelKey, split: Split, settings: DecodeSettings, workers: int,
               on_progress: Callable[[str, int, int], None] | None) -> Pixels:
        writer = shards.ShardWriter(self.path(key), len(split), self.shard_rows, FILES)
        pending = writer.pending()
        label = f"pixels · {key.dataset}/{key.split}"
        done = len(split) - sum(len(writer.shard_rows_range(p)) for p in pending)
        if on_progress:
            on_progress(label, done, len(split))
        for shard, flat, index, errors in self._decode(split, writer, pending, settings, workers):
            rows = writer.shard_rows_range(shard)
            writer.write_shard(shard, {"pixels": flat, "index": index}, **_shard_fields(index, rows, errors))
            self.decoded += len(rows)
            done += len(rows)
            if on_progress:
                on_progress(label, done, len(split))
        sides = [writer.sidecar(s) for s in range(writer.n_shards)]
        shapes = {tuple(s["shape"]) if s["shape"] else () for s in sides}
        manifest = writer.finalize({
            "format": PIXEL_FORMAT, "digest": key.digest, "key": key.payload, "dataset": key.dataset, "split": key.split,
            "rows": len(split), "shape": list(shapes.pop()) if len(shapes) == 1 and () not in shapes else None,
            "bad": sum(s["bad"] for s in sides), "jpeg": sum(s["jpeg"] for s in sides),
            "bytes": sum(s["pixels_bytes"] for s in sides),
        })
        pixels = Pixels(writer.folder, manifest)
        self._open[key.digest] = pixels
        return pixels

    def _decode(self, split: Split, writer: shards.ShardWriter, pending: list[int], settings: DecodeSettings,
                workers: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[int, str]]]:
        """(shard, flat pixels, index, errors) for each pending shard, in order."""
        images = split.images
        if settings.form == "raw" and isinstance(images, (ArrayImages, IdxImages)) and min(images.array.shape[1:3]) <= settings.max_short_side:
            for s in pending:
                r = writer.shard_rows_range(s)
                yield (s, *_pack_array(images.array[split.indices[r.start : r.stop]]), {})
            return
        from torch.utils.data import DataLoader

        rows = np.concatenate([np.arange(r.start, r.stop) for r in map(writer.shard_rows_range, pending)])
        rows_dataset: Any = _DecodeRows(split, rows, settings)  # map-style, without torch's base class (torch stays lazy)
        loader = DataLoader(rows_dataset, batch_size=32, num_workers=workers, collate_fn=_as_list, shuffle=False)
        buffer: list[tuple[int, Decoded]] = []
        todo = iter(pending)
        shard: int | None = next(todo, None)
        for batch in loader:
            buffer += batch
            while shard is not None and len(buffer) >= len(writer.shard_rows_range(shard)):
                n = len(writer.shard_rows_range(shard))
                part, buffer = buffer[:n], buffer[n:]
                flat, index = _pack([d for _, d in part])
                yield shard, flat, index, {row: d.error for row, d in part if d.state == BAD}
                shard = next(todo, None)


# --------------------------------------------------------------------------- ls, verify, gc


def scan(root: Path, verify: bool = False) -> list[shards.EntryInfo]:
    """Every pixel entry under the cache root ``root``."""
    out = []
    for leaf in shards.leaves(Path(root) / PIXELS_DIR):
        dataset, split = (list(leaf.relative_to(Path(root) / PIXELS_DIR).parts[:2]) + ["?"] * 2)[:2]
        st = shards.leaf_state(leaf, FILES, verify)
        m = st.manifest or {}
        shape = m.get("shape")
        form = m.get("key", {}).get("decode", {}).get("form", "?")
        what = f"uint8 {'x'.join(map(str, shape))}" if shape else f"{form}, mixed sizes"
        detail = st.detail or (what if st.status == "complete" else "")
        out.append(shards.EntryInfo(leaf, "", "", dataset, split, st.status, m.get("rows") if m else None, None,
                                    st.bytes, detail, kind="pixels"))
    return out


def gc_plan(root: Path, verify: bool = True) -> list[tuple[Path, str, int]]:
    """Corrupt pixel entries, and partial ones nothing is writing (temp files are the feature cache's plan)."""
    entries = scan(root, verify)
    return shards.gc_candidates(Path(root), [(e.path, shards.LeafState(e.status, None, e.detail, e.bytes)) for e in entries])
