"""Features: get a checkpoint's features on a dataset split, from the cache or by extracting them.

This is where the extract engine meets the caches: it chooses the route (the pixel cache
and preprocessing on the device, or timm's PIL transform), builds the content key, takes
the lock, resumes from complete shards and writes the rest. An ensemble never comes here
with a model of its own: it reads its members' entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..data.datasets import PreparedDataset, Split
from ..data.pixels import BAD, STATE, DecodeSettings, PixelCache, Pixels, jpeg_header
from ..errors import ZooSurveyFailure, shown
from ..zoo.checkpoints import ResolvedCheckpoint, forward_feature_output, load_model
from ..zoo.flops import GmacsMemo, count_gmacs
from .cache import FeatureCache, FeatureKey, Features
from .extract import ExtractOptions, run_forward
from .preprocess import unsupported

LARGE_JPEG_PIXELS = 256 * 256  # auto: JPEG sources whose images average at least this many pixels decode on the GPU


@dataclass(frozen=True)
class Route:
    """How a checkpoint's images reach its forward: the device path from the pixel cache, or the exact PIL path."""

    path: str  # "tensor" or "pil"
    pixels: DecodeSettings | None = None  # the pixel cache's form (tensor path)
    decoder: str = ""  # who decodes the cache's JPEG rows: "nvjpeg" (CUDA) or "libjpeg" (torchvision on CPU)
    why_pil: str = ""  # why the exact path runs although the device path was asked for

    def key(self) -> dict[str, Any] | None:
        """The cache key's record of the path (None for the exact path, whose keys are as they always were)."""
        if self.path == "pil" or self.pixels is None:
            return None
        return {"path": "tensor", "pixels": self.pixels.key(), **({"decoder": self.decoder} if self.decoder else {})}


def jpeg_decoder(ds: PreparedDataset, split: str, options: ExtractOptions) -> str:
    """Who decodes the split's JPEGs on the device ("nvjpeg", "libjpeg"), or "" when the pixel cache holds them
    decoded. It looks at the first 16 images: ``auto`` picks nvjpeg on CUDA when most of them are JPEGs it
    decodes and they are large; ``device`` whenever most of them are such JPEGs; ``host`` never.

    The answer is part of the feature key, so it depends on the options and the data only, never on this
    machine (a Ray driver without a GPU keys its workers' entries alike): a batch nvjpeg refuses on some
    machine is decoded row by row there, on the device and then on the host (``extract._jpeg_images``)."""
    if options.jpeg == "host" or (options.jpeg == "auto" and not options.device.startswith("cuda")):
        return ""
    s = ds.splits[split]
    headers = [_header(s.images, int(i)) for i in s.indices[:16]]
    jpegs = [h for h in headers if h is not None]
    if len(jpegs) * 2 <= len(headers):
        return ""
    if options.jpeg == "auto" and np.mean([h * w for h, w, _, _ in jpegs]) < LARGE_JPEG_PIXELS:
        return ""
    return "nvjpeg" if options.device.startswith("cuda") else "libjpeg"


def _header(images, position: int) -> tuple[int, int, int, int] | None:
    try:
        data = images.encoded(position)
        return jpeg_header(data) if data is not None else None
    except Exception:  # noqa: BLE001 - an unreadable file: not a JPEG for the device (the pixel cache records why)
        return None


def route(ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, options: ExtractOptions, decoder: str | None = None) -> Route:
    """The route of ``ckpt`` on ``split``: the device path unless it was turned off or cannot reproduce the
    checkpoint's preprocessing (``decoder``, when known, saves looking at the source again)."""
    if options.pixel_route == "pil":
        return Route("pil")
    problem = unsupported(ckpt.preprocessing)
    if problem:
        return Route("pil", why_pil=problem)
    decoder = jpeg_decoder(ds, split, options) if decoder is None else decoder
    return Route("tensor", DecodeSettings("jpeg" if decoder else "raw"), decoder)


def feature_key(
    ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, options: ExtractOptions, via: Route | None = None
) -> FeatureKey:
    """The content key of ``ckpt``'s features on ``split`` of ``ds`` (see docs/architecture.md, "Feature cache"),
    made by ``via`` (default: :func:`route`)."""
    s = ds.splits[split]
    via = via or route(ckpt, ds, split, options)
    payload = {
        **ckpt.key(),
        "dtype": options.dtype,
        "layer": options.feature_output_for(ckpt.spec.feature_output),  # "layer": the key's old name, kept (cache keys)
        "dataset": ds.spec.id,
        "dataset_fingerprint": ds.fingerprint,
        "split": split,
        "rows": len(s),
        "indices": s.indices_digest(),
    }
    if via.key() is not None:
        payload["preprocess"] = via.key()
    return FeatureKey(ckpt.spec.family, ckpt.spec.id, ds.spec.id, split, payload)


@dataclass
class FeatureSource:
    """Reads features through the cache, extracting what is missing; counts forward batches.

    One model is held at a time, so looping checkpoints outside datasets loads each once.
    """

    cache: FeatureCache
    options: ExtractOptions
    on_progress: Callable[[str, int, int], None] | None = None  # (label, done, total)
    forward_batches: int = 0
    notes: list[str] = field(default_factory=list)
    _model: tuple[str, object] | None = None
    _gmacs_seen: dict = field(default_factory=dict)
    # (dataset fingerprint, split, indices digest) -> jpeg_decoder(): looked up once per process, or given (a Ray
    # probe task has no images to look at; its driver hands over what it found)
    decoders: dict[tuple[str, str, str], str] = field(default_factory=dict)
    pixels: PixelCache = field(init=False)

    def __post_init__(self) -> None:
        self.pixels = PixelCache(self.cache.root)
        self.gmacs = GmacsMemo(self.cache.root / "gmacs.json")

    def decoder(self, ds: PreparedDataset, split: str) -> str:
        """:func:`jpeg_decoder`, looking at a split's source once per process (see ``decoders``)."""
        memo = (ds.fingerprint, split, ds.splits[split].indices_digest())
        if memo not in self.decoders:
            self.decoders[memo] = jpeg_decoder(ds, split, self.options)
        return self.decoders[memo]

    def route(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str) -> Route:
        """:func:`route`, with the split's decoder from :meth:`decoder`."""
        if self.options.pixel_route == "tensor" and not unsupported(ckpt.preprocessing):
            return route(ckpt, ds, split, self.options, self.decoder(ds, split))
        return route(ckpt, ds, split, self.options)

    def key(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str) -> FeatureKey:
        """The cache key :meth:`get` reads and writes."""
        return feature_key(ckpt, ds, split, self.options, self.route(ckpt, ds, split))

    def _bad_image(self, ds: PreparedDataset, split: str, s: Split, row: int, message: str) -> ZooSurveyFailure:
        return ZooSurveyFailure(
            f"dataset {ds.spec.id!r} split {split!r}: the image at index {int(s.indices[row])} cannot be decoded "
            f"({message}); fix or remove it, or pass bad_images='skip' to leave such images out", param="bad_images"
        )

    def _check(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, s, batch) -> None:
        if batch.errors and self.options.bad_images == "fail":
            raise self._bad_image(ds, split, s, int(batch.rows[~batch.ok][0]), batch.errors[0])
        if self.options.feature_output_for(ckpt.spec.feature_output) == ckpt.spec.feature_output and batch.features.shape[1] != ckpt.spec.feature_dim:
            raise ZooSurveyFailure(
                f"{ckpt.spec.defined_in}: checkpoint {ckpt.spec.id!r}: field 'feature_dim' is "
                f"{ckpt.spec.feature_dim} but the model gives {batch.features.shape[1]}-dimensional features; fix the entry"
            )
        if not np.isfinite(batch.features[batch.ok]).all():
            raise ZooSurveyFailure(
                f"checkpoint {ckpt.spec.id!r} produced NaN or inf features on {ds.spec.id}/{split}; "
                "its weights or 'dtype' may be unsuitable (try dtype='float32')", param="dtype"
            )

    def get(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str) -> Features:
        via = self.route(ckpt, ds, split)
        key = feature_key(ckpt, ds, split, self.options, via)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self.cache.lock(key):
            hit = self.cache.get(key)  # another process may have finished it while we waited
            if hit is not None:
                return hit
            return self._extract(ckpt, ds, split, key, via)

    def _pixels(self, ds: PreparedDataset, split: str, via: Route) -> Pixels | None:
        """The split's pixel cache for the device path (decoded now if this is the first model to need it)."""
        if via.pixels is None:
            return None
        pixels = self.pixels.ensure(ds, split, via.pixels, workers=self.options.workers, on_progress=self.on_progress)
        self.notes += [n for n in self.pixels.repaired if n not in self.notes]
        bad = np.flatnonzero(pixels.index[:, STATE] == BAD)
        if len(bad) and self.options.bad_images == "fail":  # before any forward pass
            raise self._bad_image(ds, split, ds.splits[split], int(bad[0]), pixels.error(int(bad[0])))
        return pixels

    def _forward(self, ckpt: ResolvedCheckpoint, model, split, rows, pixels: Pixels | None):
        """The engine's batches; a model that cannot run at this resolution is a clear failure."""
        batches = run_forward(model, split, rows, ckpt.preprocessing, self.options, ckpt.spec.feature_output, pixels)
        while True:
            try:
                item = next(batches)
            except StopIteration:
                return
            except (RuntimeError, AssertionError, ValueError) as e:
                raise ZooSurveyFailure(
                    f"checkpoint {ckpt.spec.id!r}: the forward pass failed at {ckpt.preprocessing.input_size} px "
                    f"on {self.options.device}: {shown(str(e).splitlines()[0])}; try another 'image_size' or 'batch_size'",
                    param=("image_size", "batch_size"),
                ) from e
            yield item

    def _gmacs(self, ckpt: ResolvedCheckpoint) -> float:
        """GMACs of the forward this extraction runs, at its resolution: counted once per (architecture, model
        arguments, resolution, feature output) and remembered in the cache root, so later runs do not count again."""
        output = self.options.feature_output_for(ckpt.spec.feature_output)
        key = {"arch": ckpt.spec.arch, "model_args": ckpt.model_args, "input_size": ckpt.preprocessing.input_size,
               "layer": output}  # "layer": the feature output's old name, kept so remembered counts stay valid
        memo = repr(sorted(key.items()))
        if memo not in self._gmacs_seen:
            def count() -> float:
                m = self._model_for(ckpt).to(self.options.device)  # loaded only when nothing remembers the count
                return count_gmacs(lambda x: forward_feature_output(m, x, output), ckpt.preprocessing.input_size,
                                   self.options.device)
            self._gmacs_seen[memo] = self.gmacs.get(key, count)
        return self._gmacs_seen[memo]

    def _model_for(self, ckpt: ResolvedCheckpoint):
        if self._model is None or self._model[0] != ckpt.spec.id:
            self._model = None  # free the previous model first
            self._model = (ckpt.spec.id, load_model(ckpt))  # --compile: run_forward compiles what it runs
        return self._model[1]

    def _extract(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, key: FeatureKey, via: Route) -> Features:
        s = ds.splits[split]
        writer = self.cache.writer(key, total_rows=len(s), info={"zoo_survey": __version__})
        pending = writer.pending()
        label = f"{ckpt.spec.id} · {ds.spec.id}/{split}"
        done = len(s) - sum(len(writer.shard_rows_range(p)) for p in pending)
        if self.on_progress:
            self.on_progress(label, done, len(s))
        pixels = self._pixels(ds, split, via) if pending else None  # decoding, once per split: not this model's time
        # also when only the manifest is rewritten; the manifest's field keeps its old name "gflops" (it holds GMACs)
        # so that existing cache entries stay readable
        writer.info["gflops"] = round(self._gmacs(ckpt), 4)
        last = time.perf_counter()
        if pending:
            if via.why_pil:
                self.notes.append(f"{label}: the exact PIL path ran, since the device path cannot reproduce {via.why_pil}")
            model = self._model_for(ckpt)
            rows = np.concatenate([np.arange(r.start, r.stop) for r in map(writer.shard_rows_range, pending)])
            buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            shard_iter = iter(pending)
            first = next(shard_iter)
            shard: int | None = first
            need = len(writer.shard_rows_range(first))
            for batch in self._forward(ckpt, model, s, rows, pixels):
                self.forward_batches += 1
                self._check(ckpt, ds, split, s, batch)
                buf.append((batch.rows, batch.features, batch.ok))
                # Flush every shard the buffer now covers (a batch may span two shards).
                while shard is not None and sum(len(b[0]) for b in buf) >= need:
                    r_all, f_all, ok_all = (np.concatenate(parts) for parts in zip(*buf, strict=True))
                    r_sh = r_all[:need]
                    now = time.perf_counter()
                    writer.write(shard, f_all[:need], s.indices[r_sh], s.labels[r_sh], ok_all[:need], seconds=now - last)
                    last = now
                    buf = [(r_all[need:], f_all[need:], ok_all[need:])]
                    done += need
                    if self.on_progress:
                        self.on_progress(label, done, len(s))
                    shard = next(shard_iter, None)
                    need = 0 if shard is None else len(writer.shard_rows_range(shard))
        writer.finalize()
        out = self.cache.get(key)
        if out is not None and out.skipped:
            self.notes.append(f"{label}: {out.skipped} image(s) could not be decoded and were skipped (--bad-images skip)")
        if out is None:  # pragma: no cover - finalize just wrote it
            raise ZooSurveyFailure(f"feature cache entry {self.cache.path(key)} vanished after writing")
        return out
