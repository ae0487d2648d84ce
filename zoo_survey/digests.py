"""Digests: the one place that hashes. Cache keys, row keys, weight revisions and data fingerprints.

- :func:`canonical_digest`: sha256 of the canonical JSON of a payload (sorted keys, no whitespace).
- :func:`file_sha256`: sha256 of a file, memoised on (path, size, mtime) for the process.
- :func:`arrays_digest`: a short sha256 of arrays' bytes (built-in datasets, selected indices).
"""

from __future__ import annotations

import hashlib
import json
import os
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


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime, ctime, inode) for the life of the process (weights, data
    files). ctime moves on every write and cannot be set back, so a file edited with its mtime kept is hashed again."""
    st = Path(path).stat()
    return _sha256_memo(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


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
