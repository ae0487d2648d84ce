"""Store: one row per (comparison, dataset, probe, setting, seed) in an embedded SQLite file, with provenance.

Rows are keyed by a digest of everything that determines them (members and their
revisions, dataset fingerprint and split, probe settings), so a rerun skips finished
work and a changed input never overwrites an old row. Each insert is one transaction.

Schema 3 keeps each row's predicted class for every test image (a compressed int32
array), and each test split's labels once (table ``test_splits``), so the report can
pair two models image by image; and the linear CKA between models (table ``similarity``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..digests import canonical_digest
from ..errors import ZooSurveyError, ZooSurveyFailure

SCHEMA_VERSION = 3
STORE_NAME = "results.sqlite"

_COLUMNS = """
    row_key TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    comparison TEXT NOT NULL,
    role TEXT NOT NULL,
    members TEXT NOT NULL,
    combine TEXT NOT NULL,
    dataset TEXT NOT NULL,
    probe TEXT NOT NULL,
    setting TEXT NOT NULL,
    seed INTEGER,
    top1 REAL,
    mean_per_class REAL,
    top5 REAL,
    score REAL,
    hparams TEXT NOT NULL,
    params_m REAL NOT NULL,
    gflops REAL NOT NULL,
    feature_dim INTEGER NOT NULL,
    n_train INTEGER NOT NULL,
    n_val INTEGER NOT NULL,
    n_test INTEGER NOT NULL,
    extract_seconds REAL,
    warnings TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_at REAL NOT NULL,
    test_key TEXT NOT NULL,
    predictions BLOB
"""
_TABLES = (
    f"CREATE TABLE IF NOT EXISTS results ({_COLUMNS})",
    "CREATE TABLE IF NOT EXISTS test_splits (test_key TEXT PRIMARY KEY, labels BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS similarity (sim_key TEXT PRIMARY KEY, family TEXT NOT NULL, dataset TEXT NOT NULL, "
    "a TEXT NOT NULL, b TEXT NOT NULL, cka REAL NOT NULL, n_rows INTEGER NOT NULL, created_at REAL NOT NULL)",
)


@dataclass(frozen=True)
class ResultRow:
    row_key: str
    family: str
    comparison: str
    role: str
    members: list[str]
    combine: str
    dataset: str
    probe: str
    top1: float | None  # None for a score-only probe (logme)
    mean_per_class: float | None
    top5: float | None
    hparams: dict[str, Any]
    params_m: float
    gflops: float  # GMACs (multiply-accumulates); the column keeps its old name so stores stay readable
    feature_dim: int
    n_train: int
    n_val: int
    n_test: int
    extract_seconds: float | None
    warnings: list[str]
    provenance: dict[str, Any]
    score: float | None = None  # a transferability score (logme); None for accuracy probes
    setting: str = ""  # e.g. "5-shot" for few-shot rows; "" for the full-data probes
    seed: int | None = None
    created_at: float = field(default_factory=time.time)
    test_key: str = ""  # the test split the predictions are on: one key, the same images and labels
    predictions: np.ndarray | None = field(default=None, compare=False, repr=False)  # predicted class per test image
    test_labels: np.ndarray | None = field(default=None, compare=False, repr=False)  # stored once per test_key

    @property
    def correct(self) -> np.ndarray | None:
        """Per test image: was it classified correctly (None for a score probe or a row without predictions)."""
        if self.predictions is None or self.test_labels is None:
            return None
        return self.predictions == self.test_labels

    def fields(self) -> dict[str, Any]:
        """Every stored field except the arrays (for JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAYS}


@dataclass(frozen=True)
class SimilarityRow:
    """Linear CKA between two models' test features on one dataset (``a`` and ``b`` are comparison names)."""

    sim_key: str
    family: str
    dataset: str
    a: str
    b: str
    cka: float
    n_rows: int
    created_at: float = field(default_factory=time.time)


_JSON_FIELDS = ("members", "hparams", "warnings", "provenance")
_ARRAYS = ("predictions", "test_labels")


def encode_ints(values: np.ndarray) -> bytes:
    """A compact blob of an integer array (little-endian int32, zlib)."""
    return zlib.compress(np.ascontiguousarray(values, dtype="<i4").tobytes(), 6)


def decode_ints(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i4").astype(np.int64)


class StoreDamaged(ZooSurveyFailure):
    """The results store's file is damaged past its header (SQLite: "database disk image is malformed")."""


class ResultStore:
    """The SQLite results file of one output folder.

    >>> store = ResultStore(out_dir / "results.sqlite")   # doctest: +SKIP
    >>> store.has(row_key), len(store.rows())             # doctest: +SKIP
    """

    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ZooSurveyError(
                f"no results store at {self.path}; run a survey first (`zoo-survey run` or zoo_survey.survey()), or pass the 'out' folder it wrote", param="out"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two runs creating one store at once: sqlite may refuse the switch to WAL ("database is locked").
        lock: contextlib.AbstractContextManager[Any]
        try:
            (self.path.parent / ".locks").mkdir(exist_ok=True)
            lock = FileLock(str(self.path.parent / ".locks" / f"{self.path.name}.lock"))
        except OSError:  # a read-only folder: nobody can be creating the store in it
            lock = contextlib.nullcontext()
        try:
            with lock:
                self._init()
        except StoreDamaged as e:
            if "not a database" not in str(e.__cause__):
                raise  # a store, damaged: one line saying how to go on
            raise ZooSurveyError(f"{self.path} is not a zoo-survey results store ({e.__cause__}); move it away or pick "
                                 "another 'out'", param="out") from e
        except sqlite3.OperationalError as e:  # a full disk ("disk I/O error", "database or disk is full"), no permission
            raise ZooSurveyFailure(f"cannot open or create the results store {self.path}: {e}; free space or permissions "
                                   "there, or pass another 'out'", param="out") from e
        except sqlite3.DatabaseError as e:
            raise ZooSurveyError(f"{self.path} is not a zoo-survey results store ({e}); move it away or pick another 'out'",
                                param="out") from e

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=60)
            try:
                with con:  # one transaction: committed on success, rolled back on error
                    yield con
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "malformed" not in str(e):
                raise  # locked, read-only, disk full: the CLI's boundary names it; not damage
            raise StoreDamaged(
                f"{self.path}: the results store is damaged ({e}); move it away and rerun with another 'out' (the "
                f"feature cache keeps the features, so only the probes run again), or try `sqlite3 {self.path} "
                "\".recover\"` to save its rows", param="out") from e

    def _init(self) -> None:
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:  # a new store; another process may be creating it at the same moment
                for table in _TABLES:
                    con.execute(table)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if int(row[0]) != SCHEMA_VERSION:
                why = (" (version 3 keeps every test image's prediction, which the paired intervals need and older "
                       "rows lack)" if int(row[0]) < SCHEMA_VERSION else "")
                raise ZooSurveyError(
                    f"{self.path} was written by schema version {row[0]}, this zoo-survey reads {SCHEMA_VERSION}{why}; "
                    f"move it away (e.g. `mv {self.path} {self.path.with_suffix(f'.v{row[0]}.sqlite')}`) and rerun: "
                    "cached features are reused, only the probes rerun"
                )

    @contextmanager
    def claim(self, key: str, wait: bool = True) -> Iterator[bool]:
        """An advisory lock on one unit of work (a row, or a comparison's rows on a dataset), so two runs
        sharing this store do not compute the same rows.

        Yields False at once when ``wait`` is False and another process holds it. Like the
        cache's lock it only saves work: rows are inserted with INSERT OR IGNORE either way.
        """
        lock_path = self.path.parent / ".locks" / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=-1 if wait else 0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def has(self, row_key: str) -> bool:
        with self._connect() as con:
            return con.execute("SELECT 1 FROM results WHERE row_key=?", (row_key,)).fetchone() is not None

    def put(self, row: ResultRow) -> bool:
        """Insert ``row`` (and its test labels, once per test split); returns False when a row with its key
        already exists (it is left as it was)."""
        data = row.fields()
        for k in _JSON_FIELDS:
            data[k] = json.dumps(data[k], sort_keys=True)
        data["predictions"] = None if row.predictions is None else encode_ints(row.predictions)
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._connect() as con:  # one transaction: the labels and the row land together
            if row.test_labels is not None:
                con.execute("INSERT OR IGNORE INTO test_splits VALUES (?, ?)", (row.test_key, encode_ints(row.test_labels)))
            cur = con.execute(f"INSERT OR IGNORE INTO results ({cols}) VALUES ({marks})", tuple(data.values()))
            return cur.rowcount == 1

    def rows(self, **where: str) -> list[ResultRow]:
        """Rows (optionally ``column=value`` filtered), each with its predictions and test labels."""
        clause = " AND ".join(f"{k}=?" for k in where) or "1"
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            raw = con.execute(
                f"SELECT * FROM results WHERE {clause} ORDER BY family, dataset, probe, setting, seed, role, comparison",
                tuple(where.values()),
            ).fetchall()
            try:
                labels = {k: decode_ints(b) for k, b in con.execute("SELECT test_key, labels FROM test_splits")}
                out = []
                for r in raw:
                    d: dict[str, Any] = dict(r)
                    for k in _JSON_FIELDS:
                        d[k] = json.loads(d[k])
                    blob = d.pop("predictions")
                    out.append(ResultRow(**d, predictions=None if blob is None else decode_ints(blob),
                                         test_labels=labels.get(d["test_key"])))
            except (zlib.error, ValueError, TypeError) as e:  # a stored value that no longer decodes (a flipped byte)
                raise sqlite3.DatabaseError(f"database disk image is malformed: a stored value does not decode ({e})") from e
        return out

    def has_similarity(self, sim_key: str) -> bool:
        with self._connect() as con:
            return con.execute("SELECT 1 FROM similarity WHERE sim_key=?", (sim_key,)).fetchone() is not None

    def put_similarity(self, rows: Iterable[SimilarityRow]) -> int:
        """Insert CKA rows (existing keys are left as they were); returns how many were new."""
        with self._connect() as con:
            return sum(con.execute("INSERT OR IGNORE INTO similarity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   tuple(asdict(r).values())).rowcount for r in rows)

    def similarity(self) -> list[SimilarityRow]:
        with self._connect() as con:
            return [SimilarityRow(*r) for r in con.execute("SELECT * FROM similarity ORDER BY family, dataset, a, b")]


def row_key(payload: Mapping[str, Any]) -> str:
    """The first 32 hex digits of the canonical digest of what determines a row."""
    return canonical_digest(payload)[:32]
