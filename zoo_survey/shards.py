"""Sharded entries on disk: the layout both caches share (feature matrices, decoded pixels).

An entry is a folder of shards, each a fixed range of rows. A shard is one or more ``.npy``
files and a JSON sidecar (rows, byte sizes, sha256s) written after them, so a sidecar marks
a complete shard; ``manifest.json``, written last of all, marks a complete entry. Every
file goes through :func:`files.atomic_write`. An interrupted writer leaves complete shards
behind and the next one writes only the pending ones (resume). A reader checks every
shard's size and sha256 against the manifest; a damaged shard is deleted with the
manifest, to be written again. A file lock per entry only saves duplicate work.

>>> w = ShardWriter(folder, total_rows=10, shard_rows=4, files={"x": "x.npy"})   # doctest: +SKIP
>>> for s in w.pending(): w.write_shard(s, {"x": data[w.shard_rows_range(s).start:...]})  # doctest: +SKIP
>>> w.finalize({"format": 1})                                                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from filelock import FileLock, Timeout

from .digests import sha256_of
from .files import WriteError, atomic_write

_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by zoo-survey.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
LOCKS = ".locks"


def ensure_root(root: Path, hint: str) -> None:
    """Create a cache root with its ``CACHEDIR.TAG``; ``hint`` says what to do when that fails."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tag = root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, lambda f: f.write(_TAG.encode()))
    except OSError as e:
        raise WriteError(f"cannot create the feature cache at {root}: {e.strerror or e}; {hint}", param="cache_dir") from e


def lock_path(root: Path, digest: str) -> Path:
    return root / LOCKS / (digest[:20] + ".lock")


@contextmanager
def entry_lock(root: Path, digest: str) -> Iterator[None]:
    """An advisory lock so two processes do not write the same entry (it only saves work)."""
    path = lock_path(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def _save_npy(f: BinaryIO, array: np.ndarray) -> None:
    np.save(f, array, allow_pickle=False)


def shard_intact(folder: Path, shard: Mapping[str, Any], kinds: Iterable[str], hasher: Callable[[Path], str] = sha256_of) -> bool:
    """Every file of a shard exists with the recorded size and sha256 (``hasher``: a memoised one may stand in)."""
    for k in kinds:
        p = folder / shard[k]
        try:
            if p.stat().st_size != shard[k + "_bytes"] or hasher(p) != shard[k + "_sha256"]:
                return False
        except FileNotFoundError:
            return False
    return True


def shape_problem(record: Any, kinds: Iterable[str], shards_key: str | None = "shards") -> str:
    """What is wrong with the shape of a manifest (``shards_key="shards"``) or of one shard sidecar (``None``) read
    back from disk, or "" when it has every field an entry's readers index, with the right types. A file that parses
    but is damaged (a list, a flipped key, a size that is text) is then treated as missing, never as a crash."""
    if not isinstance(record, dict):
        return f"it holds a {type(record).__name__}, not an object"
    sides = record.get(shards_key) if shards_key else [record]
    if not isinstance(sides, list) or not all(isinstance(sh, dict) for sh in sides):
        return f"its {shards_key!r} is not a list of shard records"
    for sh in sides:
        for k in kinds:
            if not (isinstance(sh.get(k), str) and "/" not in sh[k] and isinstance(sh.get(k + "_bytes"), int)
                    and isinstance(sh.get(k + "_sha256"), str)):
                return f"a shard record lacks a valid {k!r}, {k + '_bytes'!r} or {k + '_sha256'!r}"
        if not isinstance(sh.get("rows", 0), int):
            return "a shard record's 'rows' is not a whole number"
    return ""


def read_manifest(
    folder: Path, kinds: Iterable[str], fmt: int, hasher: Callable[[Path], str] = sha256_of
) -> tuple[dict[str, Any] | None, str, list[int]]:
    """(manifest, problem, bad shards): the manifest when the entry is complete and intact; otherwise
    None, and a problem ("" when there is simply no manifest yet) and the shards that fail their checksum."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        return None, "", []
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, "its manifest is not valid JSON", []
    kinds = tuple(kinds)
    problem = shape_problem(manifest, kinds)
    if problem:
        return None, f"its manifest is damaged ({problem})", []
    bad = [i for i, shard in enumerate(manifest.get("shards", [])) if not shard_intact(folder, shard, kinds, hasher)]
    if bad:
        return None, f"shard(s) {bad} are missing or fail their checksum", bad
    if manifest.get("format") != fmt:
        return None, "it has an old format", []
    return manifest, "", []


def drop(folder: Path, shards: Iterable[int]) -> None:
    """Forget a damaged entry's manifest and bad shards; complete shards stay for the resume."""
    for i in shards:
        for p in folder.glob(f"shard-{i:05d}.*"):
            p.unlink(missing_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)


class ShardWriter:
    """Writes one entry shard by shard; complete shards found on disk are kept (resume).

    ``files`` names each array of a shard and its file suffix: ``{"features": "feat.npy"}``
    writes ``shard-00000.feat.npy``, recorded in the sidecar as ``features``, ``features_bytes``
    and ``features_sha256``.
    """

    def __init__(self, folder: Path, total_rows: int, shard_rows: int, files: Mapping[str, str]):
        self.folder, self.total_rows, self.shard_rows, self.files = folder, total_rows, shard_rows, dict(files)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_shards = max(1, -(-total_rows // shard_rows))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def shard_rows_range(self, shard: int) -> range:
        return range(shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.total_rows))

    def _sidecar(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.json"

    def sidecar(self, shard: int) -> dict[str, Any]:
        return json.loads(self._sidecar(shard).read_text())

    def shard_complete(self, shard: int) -> bool:
        """A shard counts when its sidecar exists and its files have the recorded sizes."""
        try:
            side = self.sidecar(shard)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        if shape_problem(side, self.files, None):
            return False  # a damaged sidecar: the shard is written again
        return all(
            (self.folder / side[k]).is_file() and (self.folder / side[k]).stat().st_size == side[k + "_bytes"]
            for k in self.files
        ) and side["rows"] == len(self.shard_rows_range(shard))

    def pending(self) -> list[int]:
        return [s for s in range(self.n_shards) if not self.shard_complete(s)]

    def write_shard(self, shard: int, arrays: Mapping[str, np.ndarray], **fields: Any) -> None:
        """Write a shard's arrays, then its sidecar (``fields`` added to it)."""
        side: dict[str, Any] = {"rows": len(self.shard_rows_range(shard)), **fields}
        for k, suffix in self.files.items():
            target = self.folder / f"shard-{shard:05d}.{suffix}"
            atomic_write(target, functools.partial(_save_npy, array=arrays[k]))
            side[k] = target.name
            side[k + "_bytes"] = target.stat().st_size
            side[k + "_sha256"] = sha256_of(target)
        atomic_write(self._sidecar(shard), lambda f: f.write(json.dumps(side, indent=1).encode()))

    def finalize(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Write the manifest (which makes the entry visible): ``manifest`` plus every shard's sidecar."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"cannot finalize {self.folder}: shards {missing} are incomplete")
        out = {**manifest, "shard_rows": self.shard_rows, "shards": [self.sidecar(s) for s in range(self.n_shards)]}
        atomic_write(self.folder / "manifest.json", lambda f: f.write(json.dumps(out, indent=1).encode()))
        return out


# --------------------------------------------------------------------------- scans: ls, verify, gc


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as ``cache ls`` / ``cache verify`` report it: feature matrices, or a split's pixels."""

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
    kind: str = "features"  # or "pixels"


@dataclass(frozen=True)
class LeafState:
    """What a scan found in one entry folder."""

    status: str  # complete | partial | corrupt
    manifest: dict[str, Any] | None
    detail: str
    bytes: int


def leaves(root: Path) -> list[Path]:
    """Entry folders below ``root``: those with a manifest or at least one shard sidecar."""
    if not root.is_dir():
        return []
    return sorted({p.parent for p in root.rglob("manifest.json")} | {p.parent for p in root.rglob("shard-*.json")})


def leaf_state(leaf: Path, kinds: Iterable[str], verify: bool) -> LeafState:
    """An entry's status; ``verify`` re-checks each shard's sha256 (slow, thorough)."""
    size = sum(p.stat().st_size for p in leaf.iterdir() if p.is_file())
    try:
        manifest = json.loads((leaf / "manifest.json").read_text())
    except FileNotFoundError:
        return LeafState("partial", None, f"{len(list(leaf.glob('shard-*.json')))} shard(s) written, no manifest", size)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return LeafState("corrupt", None, "manifest is not valid JSON", size)
    kinds = tuple(kinds)
    problem = shape_problem(manifest, kinds)
    if problem:
        return LeafState("corrupt", None, f"manifest is damaged ({problem})", size)
    bad = [sh[kinds[0]] for sh in manifest.get("shards", []) if not shard_intact(leaf, sh, kinds)] if verify else []
    if bad:
        return LeafState("corrupt", manifest, f"checksum or size mismatch: {', '.join(bad)}", size)
    return LeafState("complete", manifest, "", size)


def gc_candidates(root: Path, states: Iterable[tuple[Path, LeafState]]) -> list[tuple[Path, str, int]]:
    """What a clean-up would delete: (path, reason, bytes). Partial entries are kept for resume
    unless nothing is writing them (their lock is free)."""
    plan: list[tuple[Path, str, int]] = []
    for path, st in states:
        if st.status == "corrupt":
            plan.append((path, f"corrupt entry ({st.detail})", st.bytes))
        elif st.status == "partial":
            try:
                with FileLock(str(root / LOCKS / (path.name + ".lock")), timeout=0):
                    plan.append((path, f"partial entry not being written ({st.detail})", st.bytes))
            except Timeout:
                continue  # a process is writing it right now
    return plan


def temp_files(root: Path) -> list[tuple[Path, str, int]]:
    """Temp files of interrupted writes below ``root``."""
    if not root.is_dir():
        return []
    return [(tmp, "temporary file of an interrupted write", tmp.stat().st_size) for tmp in root.rglob("*.incomplete")]


def delete(plan: Iterable[tuple[Path, str, int]], root: Path | None = None) -> int:
    """Delete what a plan lists; returns bytes freed. With the cache ``root``, an entry folder is deleted while
    holding its lock (taken without waiting): one a run started writing since the plan was made is left alone."""
    freed = 0
    for path, _, size in plan:
        if path.is_dir():
            if root is None:
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    with FileLock(str(lock_path(root, path.name)), timeout=0):
                        shutil.rmtree(path, ignore_errors=True)
                except Timeout:
                    continue  # a run took it after the plan: it is being written, not abandoned
        else:
            path.unlink(missing_ok=True)
        freed += size
    return freed
