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
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from filelock import FileLock, Timeout

from ..digests import canonical_digest, sha256_of
from ..errors import ZooSurveyFailure
from ..files import WriteError, atomic_write

FEATURE_FORMAT = 2
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


def _shard_intact(folder: Path, shard: dict[str, Any]) -> bool:
    """Both files of a shard exist with the recorded size and sha256."""
    for k in ("features", "meta"):
        p = folder / shard[k]
        try:
            if p.stat().st_size != shard[k + "_bytes"] or sha256_of(p) != shard[k + "_sha256"]:
                return False
        except FileNotFoundError:
            return False
    return True


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
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                atomic_write(tag, lambda f: f.write(_TAG.encode()))
        except OSError as e:
            raise WriteError(
                f"cannot create the feature cache at {self.root}: {e.strerror or e}; pass --cache-dir or set {CACHE_ENV}"
            ) from e

    def check_writable(self) -> None:
        """Fail before any work when the cache root cannot take a file (read-only disk, permissions)."""
        self._ensure_root()
        atomic_write(self.root / ".write-test", lambda f: f.write(b"ok"))
        (self.root / ".write-test").unlink(missing_ok=True)

    def path(self, key: FeatureKey) -> Path:
        return self.root / key.relpath

    def get(self, key: FeatureKey) -> Features | None:
        """The entry if it is complete and intact, else None (a corrupt shard is removed, to be recomputed)."""
        folder = self.path(key)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._drop(folder, [], "its manifest is not valid JSON")
            return None
        bad = [i for i, shard in enumerate(manifest.get("shards", [])) if not _shard_intact(folder, shard)]
        if bad or manifest.get("format") != FEATURE_FORMAT:
            self._drop(folder, bad, f"shard(s) {bad} are missing or fail their checksum" if bad else "it has an old format")
            return None
        feats = [np.load(folder / sh["features"], mmap_mode="r") for sh in manifest["shards"]]
        metas = [np.load(folder / sh["meta"], mmap_mode="r") for sh in manifest["shards"]]
        f = np.concatenate(feats) if feats else np.zeros((0, manifest["dim"]), np.float32)
        m = np.concatenate(metas) if metas else np.zeros((0, 3), np.int64)
        keep = m[:, 2] == 1
        return Features(np.ascontiguousarray(f[keep]), m[keep, 0].copy(), m[keep, 1].copy(), manifest)

    def _drop(self, folder: Path, shards: list[int], why: str) -> None:
        """Forget a damaged entry's manifest and bad shards; complete shards stay for the resume."""
        self.repaired.append(f"{folder.relative_to(self.root)}: {why}; recomputing")
        for i in shards:
            for p in folder.glob(f"shard-{i:05d}.*"):
                p.unlink(missing_ok=True)
        (folder / "manifest.json").unlink(missing_ok=True)

    @contextmanager
    def lock(self, key: FeatureKey) -> Iterator[None]:
        """An advisory lock so two processes do not compute the same entry (it only saves work)."""
        self._ensure_root()
        lock_path = self.root / ".locks" / (key.digest[:20] + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            yield

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
        names = [n for sh in manifest["shards"] for n in (sh["features"], sh["meta"])]
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


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as ``cache ls`` / ``cache verify`` report it."""

    path: Path
    family: str
    checkpoint: str
    dataset: str
    split: str
    status: str  # complete | partial | corrupt
    rows: int | None
    dim: int | None
    bytes: int
    detail: str = ""


def scan(cache: FeatureCache, verify: bool = False) -> list[EntryInfo]:
    """Every entry under the cache root; ``verify`` re-checks each shard's sha256 (slow, thorough)."""
    root = cache.root
    if not root.is_dir():
        return []
    leaves = sorted({p.parent for p in root.rglob("manifest.json")} | {p.parent for p in root.rglob("shard-*.json")})
    return [_entry_info(root, leaf, verify) for leaf in leaves]


def _entry_info(root: Path, leaf: Path, verify: bool) -> EntryInfo:
    family, checkpoint, dataset, split = (list(leaf.relative_to(root).parts[:4]) + ["?"] * 4)[:4]
    size = sum(p.stat().st_size for p in leaf.iterdir() if p.is_file())

    def entry(status: str, rows: int | None, dim: int | None, detail: str = "") -> EntryInfo:
        return EntryInfo(leaf, family, checkpoint, dataset, split, status, rows, dim, size, detail)

    try:
        manifest = json.loads((leaf / "manifest.json").read_text())
    except FileNotFoundError:
        return entry("partial", None, None, f"{len(list(leaf.glob('shard-*.json')))} shard(s) written, no manifest")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return entry("corrupt", None, None, "manifest is not valid JSON")
    bad = [sh["features"] for sh in manifest.get("shards", []) if not _shard_intact(leaf, sh)] if verify else []
    if bad:
        return entry("corrupt", manifest.get("rows"), manifest.get("dim"), f"checksum or size mismatch: {', '.join(bad)}")
    return entry("complete", manifest.get("rows"), manifest.get("dim"))


def gc_plan(cache: FeatureCache, verify: bool = True) -> list[tuple[Path, str, int]]:
    """What ``cache gc`` would delete: (path, reason, bytes). Partial entries are kept for resume
    unless nothing is writing them (their lock is free)."""
    plan: list[tuple[Path, str, int]] = []
    if not cache.root.is_dir():
        return plan
    for tmp in cache.root.rglob("*.incomplete"):
        plan.append((tmp, "temporary file of an interrupted write", tmp.stat().st_size))
    for e in scan(cache, verify=verify):
        if e.status == "corrupt":
            plan.append((e.path, f"corrupt entry ({e.detail})", e.bytes))
        elif e.status == "partial":
            digest = e.path.name
            lock = cache.root / ".locks" / (digest + ".lock")
            try:
                with FileLock(str(lock), timeout=0):
                    plan.append((e.path, f"partial entry not being written ({e.detail})", e.bytes))
            except Timeout:
                continue  # a process is extracting it right now
    return plan


def gc_execute(plan: list[tuple[Path, str, int]]) -> int:
    """Delete what ``gc_plan`` listed; returns bytes freed."""
    freed = 0
    for path, _, size in plan:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        freed += size
    return freed


def _write_bytes(f: BinaryIO, data: bytes) -> None:
    f.write(data)


def _save_npy(f: BinaryIO, array: np.ndarray) -> None:
    np.save(f, array, allow_pickle=False)


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

    def write(
        self, shard: int, features: np.ndarray, indices: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        rows = len(self.shard_rows_range(shard))
        if features.shape[0] != rows or len(indices) != rows or len(labels) != rows:
            raise ValueError(f"shard {shard} needs {rows} rows, got {features.shape[0]}")
        feats = np.ascontiguousarray(features, dtype=np.float32)
        valid = np.ones(rows, np.int64) if valid is None else np.asarray(valid, np.int64)
        meta = np.stack([np.asarray(indices, np.int64), np.asarray(labels, np.int64), valid], axis=1)
        names = {"features": f"shard-{shard:05d}.feat.npy", "meta": f"shard-{shard:05d}.meta.npy"}
        side: dict[str, Any] = {"rows": rows, "dim": int(feats.shape[1]), "skipped": int(rows - valid.sum()), **names}
        for k, arr in (("features", feats), ("meta", meta)):
            target = self.folder / names[k]
            atomic_write(target, functools.partial(_save_npy, array=arr))
            side[k + "_bytes"] = target.stat().st_size
            side[k + "_sha256"] = sha256_of(target)
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
            "skipped": sum(s.get("skipped", 0) for s in shards),
            "shards": shards,
            **self.info,
        }
        atomic_write(self.folder / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        return manifest
