"""Feature cache: content-keyed, sharded ``.npy`` files with a manifest, written atomically.

Layout (readable folders, hashed leaf)::

    <root>/CACHEDIR.TAG
    <root>/<family>/<checkpoint>/<dataset>/<split>/<digest>/
        shard-00000.feat.npy   float32 (rows, dim)
        shard-00000.meta.npy   int64 (rows, 3): sample index, label, valid (0: image failed to decode, skipped)
        shard-00000.json       rows and sha256 of both files: written last, so it marks a complete shard
        manifest.json          written last of all: marks a complete entry

Every file is written to ``<name>.<random>.incomplete`` beside the target and then
``os.replace``-d, so a reader never sees a torn file. A killed extraction resumes
from its last complete shard. A file lock stops two processes from computing the
same entry; correctness does not depend on it. Reads check every shard's size and
sha256 against the manifest; a corrupt shard is deleted, reported and recomputed.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import shards
from ..digests import canonical_digest, file_sha256
from ..errors import ZooSurveyFailure
from ..files import atomic_write
from ..shards import EntryInfo

FEATURE_FORMAT = 2
CACHE_ENV = "ZOO_SURVEY_CACHE"
DEFAULT_SHARD_ROWS = 4096
FILES = {"features": "feat.npy", "meta": "meta.npy"}  # the arrays of a shard and their file suffixes
PIXELS_DIR = ".pixels"  # the pixel cache's folder under the same root (zoo_survey.data.pixels)


def cache_root(cli_value: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``--cache-dir``, then ``$ZOO_SURVEY_CACHE``, then ``$XDG_CACHE_HOME/zoo-survey`` (``~/.cache``)."""
    env = os.environ if env is None else env
    if cli_value is not None:
        return Path(cli_value).expanduser()
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "zoo-survey"


HASHES_FILE = "file-hashes.sqlite"  # digests.remembered_hashes: local data files' sha256, by (path, size, times, inode)

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
    """A complete cache entry, read into memory: the rows whose image decoded."""

    features: np.ndarray  # float32 (n, d)
    indices: np.ndarray  # int64 (n,) sample positions in the dataset source
    labels: np.ndarray  # int64 (n,)
    manifest: dict[str, Any]

    @property
    def skipped(self) -> int:
        """Rows left out because their image could not be decoded (``--bad-images skip``)."""
        return int(self.manifest.get("skipped", 0))


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
        self.repaired: list[str] = []  # damaged entries found by get(), for the run's report

    def _ensure_root(self) -> None:
        shards.ensure_root(self.root, f"pass another 'cache_dir' or set {CACHE_ENV}")

    def check_writable(self) -> None:
        """Fail before any work when the cache root cannot take a file (read-only disk, permissions)."""
        self._ensure_root()
        atomic_write(self.root / ".write-test", lambda f: f.write(b"ok"))
        (self.root / ".write-test").unlink(missing_ok=True)

    def path(self, key: FeatureKey) -> Path:
        return self.root / key.relpath

    def get(self, key: FeatureKey) -> Features | None:
        """The entry if it is complete and intact, else None (a corrupt shard is removed, to be recomputed). Each
        shard's sha256 is checked once per (path, size, mtime) in a process (the many probe units reading one entry
        hash it once); ``scan(verify=True)`` (``cache verify``) re-reads every byte."""
        folder = self.path(key)
        manifest, problem, bad = shards.read_manifest(folder, FILES, FEATURE_FORMAT, hasher=file_sha256)
        if manifest is None:
            if problem:
                self.repaired.append(f"{folder.relative_to(self.root)}: {problem}; recomputing")
                shards.drop(folder, bad)
            return None
        feats = [np.load(folder / sh["features"], mmap_mode="r") for sh in manifest["shards"]]
        metas = [np.load(folder / sh["meta"], mmap_mode="r") for sh in manifest["shards"]]
        f = np.concatenate(feats) if feats else np.zeros((0, manifest["dim"]), np.float32)
        m = np.concatenate(metas) if metas else np.zeros((0, 3), np.int64)
        keep = m[:, 2] == 1
        return Features(np.ascontiguousarray(f[keep]), m[keep, 0].copy(), m[keep, 1].copy(), manifest)

    def lock(self, key: FeatureKey) -> AbstractContextManager[None]:
        """An advisory lock so two processes do not compute the same entry (it only saves work)."""
        self._ensure_root()
        return shards.entry_lock(self.root, key.digest)

    def writer(self, key: FeatureKey, total_rows: int, info: Mapping[str, Any] | None = None) -> EntryWriter:
        self._ensure_root()
        return EntryWriter(self.path(key), key, total_rows, self.shard_rows, dict(info or {}))

    def export_entry(self, key: FeatureKey) -> dict[str, bytes]:
        """A complete entry's files by name, manifest included, to carry it to another machine's cache
        (:meth:`import_entry`); ``{}`` when the entry is not complete and intact."""
        if self.get(key) is None:
            return {}
        folder = self.path(key)
        manifest = json.loads((folder / "manifest.json").read_text())
        names = [sh[k] for sh in manifest["shards"] for k in FILES]
        names += [f"shard-{i:05d}.json" for i in range(len(manifest["shards"]))] + ["manifest.json"]
        return {n: (folder / n).read_bytes() for n in names}

    def import_entry(self, key: FeatureKey, files: Mapping[str, bytes]) -> Features:
        """Write an entry :meth:`export_entry` gave elsewhere: shard files, then sidecars, the manifest last,
        each atomically; then read it back through :meth:`get`, so a damaged copy never counts as cached."""
        self._ensure_root()
        folder = self.path(key)
        order = sorted(files, key=lambda n: (n == "manifest.json", n.endswith(".json"), n))
        for name in order:
            if "/" in name or name.startswith("."):
                raise ValueError(f"not a cache entry file name: {name!r}")
            atomic_write(folder / name, functools.partial(_write_bytes, data=files[name]))
        out = self.get(key)
        if out is None:
            raise ZooSurveyFailure(f"the cache entry {folder} arrived damaged (a checksum does not match); rerun to extract it again")
        return out


def scan(cache: FeatureCache, verify: bool = False) -> list[EntryInfo]:
    """Every feature entry under the cache root; ``verify`` re-checks each shard's sha256 (slow, thorough)."""
    out = []
    for leaf in shards.leaves(cache.root):
        parts = leaf.relative_to(cache.root).parts
        if parts[0] == PIXELS_DIR:
            continue
        family, checkpoint, dataset, split = (list(parts[:4]) + ["?"] * 4)[:4]
        st = shards.leaf_state(leaf, FILES, verify)
        m = st.manifest or {}
        rows, dim = (m.get("rows"), m.get("dim")) if st.status != "partial" else (None, None)
        out.append(EntryInfo(leaf, family, checkpoint, dataset, split, st.status, rows, dim, st.bytes, st.detail))
    return out


def gc_plan(cache: FeatureCache, verify: bool = True) -> list[tuple[Path, str, int]]:
    """What ``cache gc`` would delete: (path, reason, bytes). Partial entries are kept for resume
    unless nothing is writing them (their lock is free)."""
    states = [(e.path, shards.LeafState(e.status, None, e.detail, e.bytes)) for e in scan(cache, verify=verify)]
    return shards.temp_files(cache.root) + shards.gc_candidates(cache.root, states)


gc_execute = shards.delete


def _write_bytes(f: BinaryIO, data: bytes) -> None:
    f.write(data)


class EntryWriter(shards.ShardWriter):
    """Writes one feature entry shard by shard; complete shards found on disk are kept (resume)."""

    def __init__(self, folder: Path, key: FeatureKey, total_rows: int, shard_rows: int, info: dict[str, Any]):
        super().__init__(folder, total_rows, shard_rows, FILES)
        self.key, self.info = key, info

    def write(
        self, shard: int, features: np.ndarray, indices: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Write one shard; ``seconds``: the extraction time it took (the manifest's ``extract_seconds`` sums them,
        so a resumed entry counts its earlier sessions too)."""
        rows = len(self.shard_rows_range(shard))
        if features.shape[0] != rows or len(indices) != rows or len(labels) != rows:
            raise ValueError(f"shard {shard} needs {rows} rows, got {features.shape[0]}")
        feats = np.ascontiguousarray(features, dtype=np.float32)
        valid = np.ones(rows, np.int64) if valid is None else np.asarray(valid, np.int64)
        meta = np.stack([np.asarray(indices, np.int64), np.asarray(labels, np.int64), valid], axis=1)
        self.write_shard(shard, {"features": feats, "meta": meta}, dim=int(feats.shape[1]), skipped=int(rows - valid.sum()),
                         seconds=round(seconds, 3))

    def finalize(self, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the manifest (which makes the entry visible); every shard must be complete."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"cannot finalize {self.folder}: shards {missing} are incomplete")
        sides = [self.sidecar(s) for s in range(self.n_shards)]
        dims = {s["dim"] for s in sides}
        if len(dims) != 1:
            raise RuntimeError(f"{self.folder}: shards disagree on the feature dimension: {sorted(dims)}")
        return super().finalize({
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
            "skipped": sum(s.get("skipped", 0) for s in sides),
            "extract_seconds": round(sum(s.get("seconds", 0.0) for s in sides), 3),
            **self.info,
            **(manifest or {}),
        })
