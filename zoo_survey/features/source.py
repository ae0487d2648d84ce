"""Features: get a checkpoint's features on a dataset split, from the cache or by extracting them.

This is where the extract engine meets the cache: it builds the content key, takes
the lock, resumes from complete shards and writes the rest. An ensemble never comes
here with a model of its own: it reads its members' entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..data.datasets import PreparedDataset
from ..errors import ZooSurveyFailure
from ..zoo.checkpoints import ResolvedCheckpoint, load_model, pooled
from ..zoo.flops import count_gmacs
from .cache import FeatureCache, FeatureKey, Features
from .extract import ExtractOptions, run_forward


def feature_key(ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, options: ExtractOptions) -> FeatureKey:
    """The content key of ``ckpt``'s features on ``split`` of ``ds`` (see DESIGN: cache key)."""
    s = ds.splits[split]
    payload = {
        **ckpt.key(),
        **options.key(ckpt.spec.features),
        "dataset": ds.spec.id,
        "dataset_fingerprint": ds.fingerprint,
        "split": split,
        "rows": len(s),
        "indices": s.indices_digest(),
    }
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
    _gflops_seen: dict = field(default_factory=dict)

    def _check(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, s, batch) -> None:
        if batch.errors and self.options.bad_images == "fail":
            first = int(s.indices[batch.rows[~batch.ok][0]])
            raise ZooSurveyFailure(
                f"dataset {ds.spec.id!r} split {split!r}: the image at index {first} cannot be decoded "
                f"({batch.errors[0]}); fix or remove it, or pass --bad-images skip to leave such images out"
            )
        if self.options.layer_for(ckpt.spec.features) == ckpt.spec.features and batch.features.shape[1] != ckpt.spec.feature_dim:
            raise ZooSurveyFailure(
                f"{ckpt.spec.defined_in}: checkpoint {ckpt.spec.id!r}: field 'feature_dim' is "
                f"{ckpt.spec.feature_dim} but the model gives {batch.features.shape[1]}-dimensional features; fix the entry"
            )
        if not np.isfinite(batch.features[batch.ok]).all():
            raise ZooSurveyFailure(
                f"checkpoint {ckpt.spec.id!r} produced NaN or inf features on {ds.spec.id}/{split}; "
                "its weights or --dtype may be unsuitable (try --dtype float32)"
            )

    def get(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str) -> Features:
        key = feature_key(ckpt, ds, split, self.options)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self.cache.lock(key):
            hit = self.cache.get(key)  # another process may have finished it while we waited
            if hit is not None:
                return hit
            return self._extract(ckpt, ds, split, key)

    def _forward(self, ckpt: ResolvedCheckpoint, model, split, rows):
        """The engine's batches; a model that cannot run at this resolution is a clear failure."""
        batches = run_forward(model, split, rows, ckpt.preprocessing, self.options, ckpt.spec.features)
        while True:
            try:
                item = next(batches)
            except StopIteration:
                return
            except (RuntimeError, AssertionError, ValueError) as e:
                raise ZooSurveyFailure(
                    f"checkpoint {ckpt.spec.id!r}: the forward pass failed at {ckpt.preprocessing.input_size} px "
                    f"on {self.options.device}: {str(e).splitlines()[0]}; try another --image-size or --batch-size"
                ) from e
            yield item

    def _gflops(self, ckpt: ResolvedCheckpoint, model) -> float:
        """GMACs of the forward this extraction runs, at its resolution, counted once per checkpoint and size."""
        layer = self.options.layer_for(ckpt.spec.features)
        key = (ckpt.spec.id, ckpt.preprocessing.input_size, layer)
        if key not in self._gflops_seen:
            model = model.to(self.options.device)
            self._gflops_seen[key] = count_gmacs(lambda x: pooled(model, x, layer),
                                                 ckpt.preprocessing.input_size, self.options.device)
        return self._gflops_seen[key]

    def _model_for(self, ckpt: ResolvedCheckpoint):
        if self._model is None or self._model[0] != ckpt.spec.id:
            self._model = None  # free the previous model first
            model = load_model(ckpt)
            if self.options.compile:
                import torch

                model = torch.compile(model)
            self._model = (ckpt.spec.id, model)
        return self._model[1]

    def _extract(self, ckpt: ResolvedCheckpoint, ds: PreparedDataset, split: str, key: FeatureKey) -> Features:
        s = ds.splits[split]
        writer = self.cache.writer(key, total_rows=len(s), info={"zoo_survey": __version__})
        pending = writer.pending()
        label = f"{ckpt.spec.id} · {ds.spec.id}/{split}"
        done = len(s) - sum(len(writer.shard_rows_range(p)) for p in pending)
        if self.on_progress:
            self.on_progress(label, done, len(s))
        start = time.perf_counter()
        if pending:
            model = self._model_for(ckpt)
            writer.info["gflops"] = round(self._gflops(ckpt, model), 4)
            rows = np.concatenate([np.arange(r.start, r.stop) for r in map(writer.shard_rows_range, pending)])
            buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            shard_iter = iter(pending)
            first = next(shard_iter)
            shard: int | None = first
            need = len(writer.shard_rows_range(first))
            for batch in self._forward(ckpt, model, s, rows):
                self.forward_batches += 1
                self._check(ckpt, ds, split, s, batch)
                buf.append((batch.rows, batch.features, batch.ok))
                # Flush every shard the buffer now covers (a batch may span two shards).
                while shard is not None and sum(len(b[0]) for b in buf) >= need:
                    r_all, f_all, ok_all = (np.concatenate(parts) for parts in zip(*buf, strict=True))
                    r_sh = r_all[:need]
                    writer.write(shard, f_all[:need], s.indices[r_sh], s.labels[r_sh], ok_all[:need])
                    buf = [(r_all[need:], f_all[need:], ok_all[need:])]
                    done += need
                    if self.on_progress:
                        self.on_progress(label, done, len(s))
                    shard = next(shard_iter, None)
                    need = 0 if shard is None else len(writer.shard_rows_range(shard))
        seconds = time.perf_counter() - start
        writer.info["extract_seconds"] = round(seconds, 3)
        writer.finalize()
        out = self.cache.get(key)
        if out is not None and out.skipped:
            self.notes.append(f"{label}: {out.skipped} image(s) could not be decoded and were skipped (--bad-images skip)")
        if out is None:  # pragma: no cover - finalize just wrote it
            raise ZooSurveyFailure(f"feature cache entry {self.cache.path(key)} vanished after writing")
        return out
