"""Feature cache: content-keyed, sharded ``.npy`` files with a manifest, written atomically.

Layout (readable folders, hashed leaf)::

    <root>/CACHEDIR.TAG
    <root>/<family>/<checkpoint>/<dataset>/<split>/<digest>/
        shard-00000.feat.npy   float32 (rows, dim)
        shard-00000.meta.npy   int64 (rows, 2): sample index, label
        shard-00000.json       rows and sha256 of both files: written last, so it marks a complete shard
        manifest.json          written last of all: marks a complete entry

Every file is written to ``<name>.<random>.incomplete`` beside the target and then
``os.replace``-d, so a reader never sees a torn file. A killed extraction resumes
from its last complete shard. A file lock stops two processes from computing the
same entry; correctness does not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ZooSurveyError

FEATURE_FORMAT = 1
CACHE_ENV = "ZOO_SURVEY_CACHE"
DEFAULT_SHARD_ROWS = 4096
_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by zoo-survey.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def cache_root(cli_value: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``--cache-dir``, then ``$ZOO_SURVEY_CACHE``, then ``$XDG_CACHE_HOME/zoo-survey`` (``~/.cache``)."""
    env = os.environ if env is None else env
    if cli_value is not None:
        return Path(cli_value).expanduser()
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "zoo-survey"


def canonical_digest(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class FeatureKey:
    """What makes two feature matrices the same; ``payload`` is hashed, the rest names folders."""

    family: str
    checkpoint: str
    dataset: str
    split: str
    payload: Mapping[str, Any]

    @property
    def digest(self) -> str:
        return canonical_digest({**self.payload, "format": FEATURE_FORMAT})

    @property
    def relpath(self) -> Path:
        parts = [_SAFE.sub("_", p) for p in (self.family, self.checkpoint, self.dataset, self.split)]
        return Path(*parts) / self.digest[:20]


@dataclass(frozen=True)
class Features:
    """A complete cache entry, read into memory."""

    features: np.ndarray  # float32 (n, d)
    indices: np.ndarray  # int64 (n,) sample positions in the dataset source
    labels: np.ndarray  # int64 (n,)
    manifest: dict[str, Any]


def atomic_write(target: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``target``, then ``os.replace`` it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".incomplete", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """A folder of feature entries. Safe for concurrent readers and writers.

    >>> cache = FeatureCache(tmp_path)                          # doctest: +SKIP
    >>> with cache.writer(key, total_rows=n) as w:              # doctest: +SKIP
    ...     for shard in w.pending(): w.write(shard, feats, idx, labels)
    >>> cache.get(key).features.shape                           # doctest: +SKIP
    """

    def __init__(self, root: Path, shard_rows: int = DEFAULT_SHARD_ROWS):
        self.root = Path(root)
        self.shard_rows = int(shard_rows)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                atomic_write(tag, lambda f: f.write(_TAG.encode()))
        except OSError as e:
            raise ZooSurveyError(
                f"cannot create the feature cache at {self.root}: {e.strerror or e}; pass --cache-dir or set {CACHE_ENV}"
            ) from e

    def path(self, key: FeatureKey) -> Path:
        return self.root / key.relpath

    def has(self, key: FeatureKey) -> bool:
        return (self.path(key) / "manifest.json").is_file()

    def get(self, key: FeatureKey) -> Features | None:
        """The entry if it is complete, else None. Shards are memory-mapped, then stacked."""
        folder = self.path(key)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        feats, metas = [], []
        for shard in manifest["shards"]:
            try:
                feats.append(np.load(folder / shard["features"], mmap_mode="r"))
                metas.append(np.load(folder / shard["meta"], mmap_mode="r"))
            except (FileNotFoundError, ValueError):
                return None  # a deleted or damaged shard: the entry is recomputed
        f = np.concatenate(feats) if feats else np.zeros((0, manifest["dim"]), np.float32)
        m = np.concatenate(metas) if metas else np.zeros((0, 2), np.int64)
        if f.shape != (manifest["rows"], manifest["dim"]) or len(m) != manifest["rows"]:
            return None
        return Features(np.ascontiguousarray(f), np.ascontiguousarray(m[:, 0]), np.ascontiguousarray(m[:, 1]), manifest)

    @contextmanager
    def lock(self, key: FeatureKey) -> Iterator[None]:
        """An advisory lock so two processes do not compute the same entry (it only saves work)."""
        from filelock import FileLock

        self._ensure_root()
        lock_path = self.root / ".locks" / (key.digest[:20] + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            yield

    def writer(self, key: FeatureKey, total_rows: int, info: Mapping[str, Any] | None = None) -> EntryWriter:
        self._ensure_root()
        return EntryWriter(self.path(key), key, total_rows, self.shard_rows, dict(info or {}))


class EntryWriter:
    """Writes one entry shard by shard; complete shards found on disk are kept (resume)."""

    def __init__(self, folder: Path, key: FeatureKey, total_rows: int, shard_rows: int, info: dict[str, Any]):
        self.folder, self.key, self.total_rows, self.shard_rows, self.info = folder, key, total_rows, shard_rows, info
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_shards = max(1, -(-total_rows // shard_rows))

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def shard_rows_range(self, shard: int) -> range:
        return range(shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.total_rows))

    def _sidecar(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.json"

    def shard_complete(self, shard: int) -> bool:
        """A shard counts when its sidecar exists and both files have the recorded sizes."""
        try:
            side = json.loads(self._sidecar(shard).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return all(
            (self.folder / side[k]).is_file() and (self.folder / side[k]).stat().st_size == side[k + "_bytes"]
            for k in ("features", "meta")
        ) and side["rows"] == len(self.shard_rows_range(shard))

    def pending(self) -> list[int]:
        return [s for s in range(self.n_shards) if not self.shard_complete(s)]

    def write(self, shard: int, features: np.ndarray, indices: np.ndarray, labels: np.ndarray) -> None:
        rows = len(self.shard_rows_range(shard))
        if features.shape[0] != rows or len(indices) != rows or len(labels) != rows:
            raise ValueError(f"shard {shard} needs {rows} rows, got {features.shape[0]}")
        feats = np.ascontiguousarray(features, dtype=np.float32)
        meta = np.stack([np.asarray(indices, np.int64), np.asarray(labels, np.int64)], axis=1)
        names = {"features": f"shard-{shard:05d}.feat.npy", "meta": f"shard-{shard:05d}.meta.npy"}
        side: dict[str, Any] = {"rows": rows, "dim": int(feats.shape[1]), **names}
        for k, arr in (("features", feats), ("meta", meta)):
            target = self.folder / names[k]
            atomic_write(target, lambda f, a=arr: np.save(f, a, allow_pickle=False))
            side[k + "_bytes"] = target.stat().st_size
            side[k + "_sha256"] = _sha256(target)
        atomic_write(self._sidecar(shard), lambda f: f.write(json.dumps(side, indent=1).encode()))

    def finalize(self) -> dict[str, Any]:
        """Write the manifest (which makes the entry visible); every shard must be complete."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"cannot finalize {self.folder}: shards {missing} are incomplete")
        shards = [json.loads(self._sidecar(s).read_text()) for s in range(self.n_shards)]
        dims = {s["dim"] for s in shards}
        if len(dims) != 1:
            raise RuntimeError(f"{self.folder}: shards disagree on the feature dimension: {sorted(dims)}")
        manifest = {
            "format": FEATURE_FORMAT,
            "digest": self.key.digest,
            "key": dict(self.key.payload),
            "family": self.key.family,
            "checkpoint": self.key.checkpoint,
            "dataset": self.key.dataset,
            "split": self.key.split,
            "rows": self.total_rows,
            "dim": dims.pop(),
            "dtype": "float32",
            "shard_rows": self.shard_rows,
            "shards": shards,
            **self.info,
        }
        atomic_write(self.folder / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        return manifest
