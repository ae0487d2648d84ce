"""Digests: the one place that hashes. Cache keys, row keys, weight revisions and data fingerprints.

- :func:`canonical_digest`: sha256 of the canonical JSON of a payload (sorted keys, no whitespace).
- :func:`file_sha256`: sha256 of a file, memoised on (path, size, mtime, ctime, inode) for the process, and
  across processes inside :func:`remembered_hashes` (a small SQLite file in the feature cache).
- :func:`arrays_digest`: a short sha256 of arrays' bytes (built-in datasets, selected indices).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


def canonical_digest(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace).

    >>> canonical_digest({"b": 1, "a": [2]}) == canonical_digest({"a": [2], "b": 1})
    True
    """
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (not memoised: cache shards are checked afresh)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1 << 20)  # keys are small; a large cache has many shards, an image folder many files
def _sha256_memo(path: str, size: int, mtime_ns: int, ctime_ns: int = 0, inode: int = 0) -> str:
    return sha256_of(Path(path))


_REMEMBERED: ContextVar[sqlite3.Connection | None] = ContextVar("remembered_hashes", default=None)
# What a block computed while its memo could not be opened (the first run: no cache folder yet), written when the
# block ends if the folder exists by then: ("hashes", key + (digest,)) and ("memo", (key, json)) rows.
_PENDING: ContextVar[list[tuple[str, tuple]] | None] = ContextVar("remembered_pending", default=None)
_TABLES = ("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INT, mtime INT, ctime INT, ino INT, sha256 TEXT, "
           "PRIMARY KEY (path, size, mtime, ctime, ino))",
           "CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, value TEXT)")


def _open_memo(db: Path) -> sqlite3.Connection | None:
    try:
        if not db.parent.is_dir():  # no cache folder yet: create nothing before the run's input checks pass
            raise FileNotFoundError(db.parent)
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # a lost memo entry only costs a hash: no fsync per file
        for table in _TABLES:
            con.execute(table)
        return con
    except (OSError, sqlite3.Error):
        return None


@contextmanager
def remembered_hashes(db: Path) -> Iterator[None]:
    """Inside the block, :func:`file_sha256` also remembers hashes in ``db`` (SQLite), keyed by (path, size, mtime,
    ctime, inode), so a later run reads a large local dataset's headers, not its bytes; and :func:`remembered`
    remembers metadata (a checkpoint's pretrained config, its preprocessing) so a cached run needs no timm.
    A memo that cannot be opened or written (a read-only cache) only costs the work. When the cache folder does not
    exist yet (the first run), nothing is created before the block's checks pass: what it computed is written at its
    end if the folder exists by then."""
    con = _open_memo(db)
    pending: list[tuple[str, tuple]] = []
    token = _REMEMBERED.set(con)
    pending_token = _PENDING.set(pending if con is None else None)
    try:
        yield
    finally:
        _REMEMBERED.reset(token)
        _PENDING.reset(pending_token)
        if con is None and pending:
            con = _open_memo(db)
            if con is not None:
                try:
                    con.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)",
                                    [row for table, row in pending if table == "hashes"])
                    con.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?)",
                                    [row for table, row in pending if table == "memo"])
                except sqlite3.Error:
                    pass  # the next run computes them again
        if con is not None:
            con.close()


def remembered(key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON value, remembered under ``key`` (any JSON-able payload: put in it everything the value
    depends on, library versions included) inside :func:`remembered_hashes`; outside it, just ``compute()``.
    A value that does not read back (a damaged memo) is computed again."""
    digest = canonical_digest(key)
    con = _REMEMBERED.get()
    if con is not None:
        try:
            found = con.execute("SELECT value FROM memo WHERE key=?", (digest,)).fetchone()
            if found:
                return json.loads(found[0])
        except (sqlite3.Error, ValueError):
            pass
    value = compute()
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return value  # not plain JSON: not remembered
    if con is not None:
        try:
            con.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (digest, text))
        except sqlite3.Error:
            pass  # a read-only or busy memo: the next run computes it again
    elif (pending := _PENDING.get()) is not None:
        pending.append(("memo", (digest, text)))
    return json.loads(text)  # the same value a later run reads back (tuples become lists)


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime, ctime, inode) for the life of the process (weights, data
    files). ctime moves on every write and cannot be set back, so a file edited with its mtime kept is hashed again."""
    st = Path(path).stat()
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    con = _REMEMBERED.get()
    if con is None:
        digest = _sha256_memo(*key)
        if (pending := _PENDING.get()) is not None:
            pending.append(("hashes", (*key, digest)))
        return digest
    try:
        found = con.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime=? AND ctime=? AND ino=?",
                            key).fetchone()
    except sqlite3.Error:
        return _sha256_memo(*key)
    if found:
        return str(found[0])
    digest = _sha256_memo(*key)
    try:
        con.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
    except sqlite3.Error:
        pass  # a read-only or busy memo: the next run hashes again
    return digest


def arrays_digest(*arrays: np.ndarray, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of the arrays' bytes, in order.

    >>> arrays_digest(np.arange(3)) == arrays_digest(np.arange(3))
    True
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:length]


def string_digest(text: str, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]
