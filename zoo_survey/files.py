"""Atomic file writes: every file zoo-survey writes (cache shards, manifests, reports, plots) goes through here.

A file is written to ``<name>.<random>.incomplete`` beside its target, fsynced, and moved
into place with ``os.replace``, so a reader never sees a torn file; the temp file is
removed in ``finally`` whatever happens (huggingface_hub's ``file_download.py`` does the same).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import ZooSurveyFailure


class WriteError(ZooSurveyFailure):
    """A folder cannot take a file (read-only, full, missing permissions)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's files are 0600


def atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file_object)`` on a temp file beside ``target``, then ``os.replace`` it into place.

    >>> atomic_write(tmp_path / "a.txt", lambda f: f.write(b"hello"))   # doctest: +SKIP
    """
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".incomplete", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except OSError as e:
        # numpy reports a short write with no errno ("N requested and M written"): on a local disk that is a full one
        why = f"{e.strerror} (errno {e.errno})" if e.errno else f"{e}: the disk is probably full (No space left on device)"
        raise WriteError(
            f"cannot write {target}: {why}; free space or permissions there, "
            "or pass a 'cache_dir' / 'out' on another disk; nothing half-written was kept", param=("cache_dir", "out")
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
