"""Issue 21, item 8: fuzzers that stay in the suite (Hypothesis). Each property: exit code 0, 1 or 2, no traceback,
every message line under its bound, and nothing written outside the folders the command was given.

- random registry YAML (wrong types, huge numbers, unicode, anchors and aliases, deep nesting, mixed keys)
  through ``zoo-survey registry validate``;
- random byte flips and truncations of a feature cache entry's files and of a results store, read back through
  ``FeatureCache.get``, ``cache ls/verify`` and ``zoo-survey report``;
- random arguments for the quick commands.

Bounded by the ``ci`` profile (tests/conftest.py); ``--hypothesis-profile long`` runs 2,000 examples each.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from zoo_survey.cli import main
from zoo_survey.errors import ZooSurveyException
from zoo_survey.features.cache import FeatureCache, FeatureKey

MESSAGE_BOUND = 2000  # characters in any one line of an error message


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["zoo-survey", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, out: str, err: str) -> None:
    assert code in (0, 1, 2), (code, err[-500:])
    assert "Traceback" not in out + err, err[-2000:]
    assert all(len(line) <= MESSAGE_BOUND for line in err.splitlines()), max(map(len, err.splitlines()))


def tree_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- registry YAML

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
keys = st.one_of(st.sampled_from(["family", "checkpoints", "datasets", "id", "source", "type", "params_m", "gmacs",
                                  "feature_dim", "input_size", "split_sizes", "ensembles", "model_args", "include",
                                  "baseline", "path", "repo", "num_classes", "lineage", "feature_output"]),
                 st.text(max_size=10), st.integers(-5, 5))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(keys, kids, max_size=5)), max_leaves=25)


def yaml_text(tree, anchors: int) -> str:
    import yaml

    body = yaml.safe_dump(tree, allow_unicode=True, default_flow_style=None)
    if anchors:  # a chain of aliases ("billion laughs") under a field that expects a mapping
        chain = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                         for i in range(1, anchors)]
        body = "\n".join(chain) + f"\nensembles: *a{anchors - 1}\n" + (body if isinstance(tree, dict) else "")
    return body


@given(tree=trees, anchors=st.integers(0, 9), name=st.sampled_from(["fam.yaml", "models/x.yml", "datasets/d.yaml"]))
def test_random_registry_yaml_gets_one_line(tree, anchors, name):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "reg"
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text(yaml_text(tree, anchors))
        before = tree_of(folder)
        assert_clean(*run_cli("registry", "validate", str(folder)))
        assert tree_of(folder) == before  # validate writes nothing


# --------------------------------------------------------------------------- damaged cache and store files

damage = st.lists(st.tuples(st.sampled_from(["flip", "truncate"]), st.floats(0, 1), st.integers(0, 255)),
                  min_size=1, max_size=4)


def _apply(path: Path, ops) -> None:
    data = bytearray(path.read_bytes())
    for op, where, byte in ops:
        if not data:
            return
        at = min(int(where * len(data)), len(data) - 1)
        if op == "flip":
            data[at] ^= byte or 1
        else:
            del data[at:]
    path.write_bytes(bytes(data))


@given(which=st.sampled_from(["manifest.json", "shard-00000.json", "shard-00001.feat.npy", "shard-00000.meta.npy"]),
       ops=damage)
def test_a_damaged_cache_file_is_recomputed_or_reported(which, ops):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        cache = FeatureCache(root, shard_rows=4)
        key = FeatureKey("fam", "arch.tag", "ds", "train", {"x": 1})
        w = cache.writer(key, total_rows=8)
        for s in w.pending():
            r = w.shard_rows_range(s)
            w.write(s, np.full((len(r), 3), s, np.float32), np.arange(r.start, r.stop), np.zeros(len(r)))
        w.finalize()
        _apply(cache.path(key) / which, ops)
        try:
            got = FeatureCache(root, shard_rows=4).get(key)
        except ZooSurveyException:
            got = None  # named, one line: allowed
        if got is not None:  # served: then it must be the data that was written
            assert got.features.shape == (8, 3) and np.array_equal(got.features[:4], np.zeros((4, 3)))
        for cmd in ("ls", "verify"):
            assert_clean(*run_cli("cache", cmd, "--cache-dir", str(root)))


_STORE: dict[str, Path] = {}


def _a_store() -> Path:
    """One small real store, made once per session (a tiny survey's rows are not needed: any rows will do)."""
    if "path" not in _STORE:
        from test_cache_damage import _store_with_rows

        folder = Path(tempfile.mkdtemp()) / "out"
        _store_with_rows(folder / "results.sqlite")
        _STORE["path"] = folder / "results.sqlite"
    return _STORE["path"]


@given(ops=damage)
def test_a_damaged_store_is_one_line(ops):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        shutil.copy(_a_store(), out / "results.sqlite")
        _apply(out / "results.sqlite", ops)
        code, o, e = run_cli("report", "--out", str(out), "--format", "tsv")
        assert_clean(code, o, e)


# --------------------------------------------------------------------------- random arguments

FLAGS = ["--family", "-f", "--format", "--registry", "--checkpoints", "--datasets", "--out", "--cache-dir", "--yes",
         "--equivalence-margin", "--pattern", "--to", "--help"]
words = st.one_of(st.sampled_from(FLAGS), st.text(max_size=12).filter(lambda t: "\x00" not in t),
                  st.sampled_from(["resnet", "vit", "json", "tsv", "table", "-1", "1e400", "nan", "digits", ""]))


@given(cmd=st.sampled_from([["registry", "list"], ["registry", "show"], ["registry", "validate"], ["cache", "ls"],
                            ["cache", "verify"], ["report"], ["cache", "gc"]]),
       extra=st.lists(words, max_size=5))
def test_random_arguments_get_one_line(cmd, extra):
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path.cwd()
        try:
            import os

            os.chdir(tmp)  # a relative --out or --to lands in the temp folder, never in the checkout
            args = [*cmd, *extra]
            if "--cache-dir" not in args:
                args += ["--cache-dir", str(Path(tmp) / "cache")] if cmd[0] == "cache" else []
            assert_clean(*run_cli(*args))
        finally:
            os.chdir(cwd)
