"""Faults across whole runs and hostile inputs: two `run`s at once on one cache and store, kill -9 while
probing and while writing a row, paths that escape the registry folder, symlink loops, odd image files."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_cli import zoo

from zoo_survey.errors import ZooSurveyError

# A real `zoo-survey run` in a subprocess. Before main(), the wrapper may wrap a real function so the test can
# see (or stop the process at) a chosen point: it always calls the real code; nothing is replaced.
_WRAPPER = textwrap.dedent("""
    import os, sys
    from zoo_survey.survey.units import ProbeUnit
    mode, log = sys.argv[1], sys.argv[2]
    real_run = ProbeUnit.run

    def run(unit, ws):
        with open(log, "a") as f:  # one line per probe actually computed
            f.write(unit.row_key + "\\n")
        if mode == "kill-in-probe":  # SIGKILL halfway through the second probe fit of the run
            if sum(1 for _ in open(log)) == 2:
                os.kill(os.getpid(), 9)
        return real_run(unit, ws)

    ProbeUnit.run = run
    if mode == "kill-in-write":  # SIGKILL after the second row's INSERT ran, before its COMMIT
        import sqlite3
        real_connect, n = sqlite3.connect, [0]

        class Con(sqlite3.Connection):
            def execute(self, sql, *a):
                cur = super().execute(sql, *a)
                if sql.startswith("INSERT OR IGNORE INTO results"):
                    n[0] += 1
                    if n[0] == 2:
                        os.kill(os.getpid(), 9)
                return cur

        sqlite3.connect = lambda *a, **k: real_connect(*a, factory=Con, **k)
    from zoo_survey.cli import main
    sys.argv = ["zoo-survey", *sys.argv[3:]]
    main()
""")

RUN = ("--family", "tiny", "--ensemble", "1", "-d", "digits", "--max-train", "100", "--max-test", "50",
       "--image-size", "32", "--workers", "0", "--device", "cpu", "--grid", "0.1,1,10", "--probes", "linear,ncm",
       "--offline")


def _run_cmd(tmp_path: Path, registry: Path, cache: Path, out: Path, mode: str = "plain", log: str = "") -> list[str]:
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_WRAPPER)
    log = log or str(tmp_path / f"probes-{out.name}.log")
    return [sys.executable, str(wrapper), mode, log, "run", "--registry", str(registry), "--cache-dir", str(cache),
            "--out", str(out), *RUN]


def _env(hub_env: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_CACHE": str(hub_env), "COLUMNS": "200"}


def _summary(text: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) result row\(s\) written, (\d+) already done; (\d+) forward batch", text)
    assert m, text
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _rows(store: Path) -> dict[str, tuple]:
    with sqlite3.connect(store) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT row_key, comparison, probe, top1, mean_per_class FROM results").fetchall()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate row keys"
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def registry(pair_registry) -> Path:
    """Two checkpoints that both run a forward: a hub snapshot and a local .pth kept next to the YAML."""
    return pair_registry


_REFERENCE: dict[str, tuple] = {}


@pytest.fixture()
def reference(tmp_path_factory, registry, hub_env, monkeypatch, capsys):
    """One clean run (in this process, once per module) in its own cache and out folder:
    its rows, its forward-batch count and its cache folder."""
    if "ref" not in _REFERENCE:
        tmp = tmp_path_factory.mktemp("faults-reference")
        code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(registry), "--cache-dir", str(tmp / "cache"),
                             "--out", str(tmp / "out"), *RUN)
        assert code == 0, out + err
        written, skipped, batches = _summary(out)
        assert written > 0 and skipped == 0 and batches > 0
        _REFERENCE["ref"] = (_rows(tmp / "out" / "results.sqlite"), batches, tmp / "cache")
    return _REFERENCE["ref"]


def test_two_runs_at_once_on_one_cache_and_store_do_each_piece_of_work_once(tmp_path, registry, hub_env, reference):
    ref_rows, ref_batches, _ = reference
    cache, out = tmp_path / "cache", tmp_path / "out"
    logs = [tmp_path / "probes-a.log", tmp_path / "probes-b.log"]
    procs = [subprocess.Popen(_run_cmd(tmp_path, registry, cache, out, log=str(log)), env=_env(hub_env),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for log in logs]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    summaries = [_summary(o) for o in outs]
    assert sum(s[2] for s in summaries) == ref_batches  # every cache entry computed by one of the two
    assert sum(s[0] for s in summaries) == len(ref_rows)  # every row written by exactly one of the two
    computed = [k for log in logs if log.exists() for k in log.read_text().split()]
    assert sorted(computed) == sorted(set(computed)) and set(computed) == set(ref_rows)  # each probe fitted once
    rows = _rows(out / "results.sqlite")
    assert rows == ref_rows  # same keys, same numbers as one run alone


@pytest.mark.parametrize("mode", ["kill-in-probe", "kill-in-write"])
def test_kill_9_while_probing_or_writing_a_row_then_rerun_loses_and_duplicates_nothing(tmp_path, registry, hub_env, reference,
                                                                                      monkeypatch, capsys, mode):
    import shutil

    ref_rows, _, ref_cache = reference
    cache, out = tmp_path / "cache", tmp_path / "out"
    shutil.copytree(ref_cache, cache)  # features are cached: this run only probes and writes rows
    killed = subprocess.run(_run_cmd(tmp_path, registry, cache, out, mode=mode), env=_env(hub_env),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    # The first row was committed; the second was being fitted (or inserted, uncommitted) when the process died.
    assert len(_rows(out / "results.sqlite")) == 1
    code, text, err = zoo(monkeypatch, capsys, "run", "--registry", str(registry), "--cache-dir", str(cache),
                          "--out", str(out), *RUN)
    assert code == 0, text + err
    assert _summary(text) == (len(ref_rows) - 1, 1, 0)  # nothing recomputed; one row already done
    assert _rows(out / "results.sqlite") == ref_rows


def _open_store(path: str, barrier) -> None:
    from zoo_survey.results.store import ResultStore

    barrier.wait()
    ResultStore(Path(path))


def test_six_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    """Before the fix, ~1 in 4 such races failed: 'UNIQUE constraint failed: meta.key' or 'database is locked'."""
    import multiprocessing as mp

    from zoo_survey.results.store import SCHEMA_VERSION

    ctx = mp.get_context("fork")
    for trial in range(5):
        path = str(tmp_path / f"t{trial}" / "results.sqlite")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_store, args=(path, barrier)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        with sqlite3.connect(path) as con:
            assert con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]


# --------------------------------------------------------------------------- paths that leave the registry folder

_ENTRY = "  - {{id: test_resnet.x, source: {{type: file, path: {}}}, params_m: 1, gmacs: 1, feature_dim: 96}}\n"


def _family(folder: Path, weights: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "f.yaml").write_text("family: f\ncheckpoints:\n" + _ENTRY.format(weights))
    return folder


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_weights_path_outside_the_registry_folder_is_refused_until_allowed(tmp_path, monkeypatch, capsys, tiny_pth, how):
    import shutil

    from zoo_survey.zoo.registry import load_registry

    monkeypatch.delenv("ZOO_SURVEY_ALLOWED_PATHS", raising=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(tiny_pth, outside / "w.pth")
    reg = tmp_path / "reg"
    weights = {"dotdot": "../elsewhere/w.pth", "absolute": str(outside / "w.pth"), "symlink": "link.pth"}[how]
    _family(reg, weights)
    if how == "symlink":
        (reg / "link.pth").symlink_to(outside / "w.pth")  # inside by name, outside once followed
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(reg))
    assert code == 2 and "Traceback" not in err
    line = " ".join(err.split())  # rich may wrap the line
    assert f"{reg / 'f.yaml'}: checkpoint 'test_resnet.x': field 'source.path':" in line
    assert f"resolves to '{outside.resolve() / 'w.pth'}', outside the folder of this file" in line
    assert f"ZOO_SURVEY_ALLOWED_PATHS={outside.resolve()}" in line

    monkeypatch.setenv("ZOO_SURVEY_ALLOWED_PATHS", os.pathsep.join(["/nonexistent", str(outside)]))
    spec = load_registry([reg]).checkpoint("test_resnet.x")
    assert spec.source.path.resolve() == (outside / "w.pth").resolve()


def test_a_weights_path_inside_the_registry_folder_needs_nothing(tmp_path, monkeypatch, tiny_pth):
    import shutil

    from zoo_survey.zoo.registry import load_registry

    monkeypatch.delenv("ZOO_SURVEY_ALLOWED_PATHS", raising=False)
    (tmp_path / "reg" / "weights").mkdir(parents=True)
    shutil.copy(tiny_pth, tmp_path / "reg" / "weights" / "w.pth")
    _family(tmp_path / "reg", "weights/../weights/w.pth")  # a .. that stays below the YAML file's folder
    assert load_registry([tmp_path / "reg"]).checkpoint("test_resnet.x").source.path.is_file()
    (tmp_path / "reg" / "f.yaml").unlink()
    _family(tmp_path / "reg" / "sub", "../weights/w.pth")  # the rule is the YAML file's own folder, not the registry's
    with pytest.raises(ZooSurveyError, match="outside the folder of this file"):
        load_registry([tmp_path / "reg"])


def test_a_symlink_loop_as_weights_is_one_clear_line(tmp_path, monkeypatch, capsys):
    reg = _family(tmp_path / "reg", "loop.pth")
    (reg / "loop.pth").symlink_to(reg / "loop2.pth")
    (reg / "loop2.pth").symlink_to(reg / "loop.pth")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(reg))
    assert code == 2 and "Traceback" not in err
    assert "checkpoint 'test_resnet.x': field 'source.path':" in err and "is a symbolic link loop" in " ".join(err.split())


@pytest.mark.parametrize("kind", ["imagefolder", "parquet"])
def test_a_dataset_path_escaping_with_dotdot_is_refused(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.delenv("ZOO_SURVEY_ALLOWED_PATHS", raising=False)
    reg = tmp_path / "reg"
    reg.mkdir()
    (tmp_path / "secret").mkdir()
    src = ("{type: imagefolder, path: ../secret}" if kind == "imagefolder"
           else f"{{type: parquet, data_files: {{train: '{reg}/../secret/*.parquet'}}}}")
    (reg / "ds.yaml").write_text(f"datasets:\n  - {{id: leak, source: {src}, num_classes: 2}}\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(reg))
    field = "source.path" if kind == "imagefolder" else "source.data_files.train"
    assert code == 2 and "Traceback" not in err
    line = " ".join(err.split())
    assert f"ds.yaml: dataset 'leak': field '{field}':" in line and "outside the folder of this file" in line
    monkeypatch.setenv("ZOO_SURVEY_ALLOWED_PATHS", str(tmp_path / "secret"))
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(reg))
    assert code == 0, err


def test_builtin_dataset_paths_and_the_shipped_registry_are_exempt(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ZOO_SURVEY_ALLOWED_PATHS", raising=False)
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - {id: fm2, source: {type: builtin, name: fashion-mnist, path: /usr/share/datasets/fashion-mnist}, num_classes: 10}\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tmp_path))
    assert code == 0, err


# --------------------------------------------------------------------------- odd files in a local image folder


def _odd_folder(root: Path) -> None:
    """Class folders of small PNGs plus: a corrupt JPEG, a text file, grayscale, CMYK, palette, a 6000x6000
    JPEG and a PNG above PIL's decompression-bomb limit (14000x14000, 1-bit: 24 kB on disk)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    a, b = root / "train" / "a", root / "train" / "b"
    (a / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    (a / "notes.txt").write_text("not an image")
    pic = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    pic.convert("L").save(b / "gray.png")
    pic.convert("CMYK").save(b / "cmyk.jpg")
    pic.convert("P").save(b / "palette.png")
    Image.new("RGB", (6000, 6000), (10, 200, 30)).save(b / "huge.jpg", quality=50)
    Image.new("1", (14000, 14000)).save(a / "bomb.png")


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_an_image_folder_with_odd_files_end_to_end(tmp_path, registry, hub_env, mode):
    import datasets as hfds

    from zoo_survey.data.datasets import prepare
    from zoo_survey.errors import ZooSurveyFailure
    from zoo_survey.features.cache import FeatureCache
    from zoo_survey.features.extract import ExtractOptions
    from zoo_survey.features.source import FeatureSource
    from zoo_survey.zoo.checkpoints import resolve
    from zoo_survey.zoo.registry import load_registry

    _odd_folder(tmp_path / "imgs")
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: odd, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    ds = prepare(load_registry([tmp_path]).dataset("odd"))
    # notes.txt is not an image: the folder reader leaves it out. Every other file is a row, labelled by its folder.
    paths = {}
    for name, split in ds.splits.items():
        files = split.images.ds.cast_column("image", hfds.Image(decode=False))["image"]
        paths[name] = [Path(files[int(i)]["path"]) for i in split.indices]
        assert [p.parent.name for p in paths[name]] == [("a", "b")[int(y)] for y in split.labels]
    found = {p.name for ps in paths.values() for p in ps}
    assert "notes.txt" not in found and {"corrupt.jpg", "bomb.png", "gray.png", "cmyk.jpg", "palette.png", "huge.jpg"} <= found
    assert sum(len(s) for s in ds.splits.values()) == 12 + 12 + 6

    ckpt = resolve(load_registry([registry]).checkpoint("test_convnext.hub"), offline=True, image_size=32)
    src = FeatureSource(FeatureCache(tmp_path / "c"), ExtractOptions(device="cpu", batch_size=8, workers=0, bad_images=mode))
    if mode == "fail":
        with pytest.raises(ZooSurveyFailure, match=r"cannot be decoded \((UnidentifiedImageError|DecompressionBombError).*bad_images='skip'"):
            for s in ("train", "val", "test"):
                src.get(ckpt, ds, s)
        return
    got = {s: src.get(ckpt, ds, s) for s in ("train", "val", "test")}
    assert sum(f.skipped for f in got.values()) == 2  # the corrupt JPEG and the decompression bomb
    kept = {paths[s][list(ds.splits[s].indices).index(i)].name for s, f in got.items() for i in f.indices}
    assert {"corrupt.jpg", "bomb.png"}.isdisjoint(kept) and {"gray.png", "cmyk.jpg", "palette.png", "huge.jpg"} <= kept
    for s, f in got.items():
        assert np.isfinite(f.features).all() and len(f.features) == len(ds.splits[s]) - f.skipped
        pos = {int(i): k for k, i in enumerate(ds.splits[s].indices)}
        assert [int(ds.splits[s].labels[pos[int(i)]]) for i in f.indices] == f.labels.tolist()  # labels stay aligned
    assert sum("could not be decoded and were skipped" in n for n in src.notes) >= 1


# --------------------------------------------------------------------------- malformed registry files (what test_registry.py does not cover)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "f.yaml: expected a mapping at the top level, got list"),
        ("family: f\ncheckpoints: not-a-list\n", "family 'f': field 'checkpoints': expected a list, got 'not-a-list'"),
        ("family: f\ndefaults: [1, 2]\ncheckpoints: []\n", "family 'f': field 'defaults': expected a mapping, got [1, 2]"),
        ("family: f\ncheckpoints:\n  - just-a-string\n", "family 'f': field 'checkpoints', entry 1: expected a mapping, got 'just-a-string'"),
        ("family: f\nchekpoints: []\n", "family 'f': unknown top-level field(s) ['chekpoints']"),
        ("family: f\ncheckpoints: []\nensembles: [a, b]\n", "field 'ensembles': expected a mapping, got ['a', 'b']"),
        ("datasets: {id: x}\n", "datasets file: field 'datasets': expected a list, got {'id': 'x'}"),
        ("datasets:\n  - {id: x, source: {type: builtin, name: digits}, num_classes: ten}\n",
         "dataset 'x': field 'num_classes': Input should be a valid integer"),
        ("datasets:\n  - {id: x, source: {type: builtin, name: digits, colour: red}, num_classes: 10}\n",
         "dataset 'x': field 'source.colour': unknown field"),
        ("datasets: []\nextra: 1\n", "unknown top-level field(s) ['extra']; expected ['datasets', 'description']"),
    ],
)
def test_malformed_registry_files_get_one_line_naming_file_entry_and_field(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "f.yaml").write_text(text)
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tmp_path / "f.yaml"))
    assert code == 2 and "Traceback" not in err
    assert message in " ".join(err.split())


# --------------------------------------------------------------------------- hostile input, full disks, closed pipes, signals


def _zoo_subprocess(*args: str) -> list[str]:
    return [sys.executable, "-c", "from zoo_survey.cli import main; main()", *args]


def test_a_billion_laughs_registry_file_gets_a_bounded_one_line_error_in_seconds(tmp_path):
    """9 chained anchors: the value expands to 9**9 items; the message shows a bounded piece of it."""
    anchors = ["&a0 [" + ", ".join(["lol"] * 9) + "]"]
    anchors += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("family: bomb\ncheckpoints:\n  - [" + ", ".join(anchors) + "]\n")
    proc = subprocess.run(_zoo_subprocess("registry", "validate", "-r", str(tmp_path)), capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[:2000]
    assert "field 'checkpoints', entry 1: expected a mapping, got [['lol'" in proc.stderr
    assert len(proc.stderr) < 1000  # bounded: the whole expansion would be gigabytes


def test_shown_bounds_what_a_message_prints():
    from zoo_survey.errors import shown

    deep: list = ["lol"] * 9
    for _ in range(9):
        deep = [deep] * 9  # shared references, as YAML aliases make them: 9**10 items when expanded
    assert len(shown(deep)) <= 200 and len(shown("x" * 10**6)) <= 200
    assert shown("ok") == "'ok'"


def test_a_number_key_beside_a_text_key_at_the_top_level_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "f.yaml").write_text("a: 1\n2: 3\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tmp_path / "f.yaml"))
    assert code == 2 and "Traceback" not in err, err
    assert "not a registry file" in err and "found ['2', 'a']" in " ".join(err.split())


def test_output_to_a_full_disk_is_one_line_and_exit_1(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(_zoo_subprocess("registry", "list"), stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: cannot write the output (standard output): No space left on device")


def test_a_closed_pipe_exits_quietly(tmp_path):
    proc = subprocess.Popen(_zoo_subprocess("registry", "list", "--format", "tsv"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == "", err  # no traceback, no "Exception ignored" from the exit's flush


def test_a_read_only_store_folder_or_a_damaged_store_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from zoo_survey.cli.app import _os_error

    with pytest.raises(SystemExit) as e:
        _os_error(PermissionError(13, "Permission denied", str(tmp_path / "out" / "results.sqlite")))
    assert e.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {tmp_path / 'out' / 'results.sqlite'}: Permission denied; choose a folder you can write" in err
    store = tmp_path / "bad" / "results.sqlite"
    store.parent.mkdir()
    store.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a header, then garbage
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(store.parent))
    assert code in (1, 2) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


_SIGNAL_WRAPPER = textwrap.dedent("""
    import os, sys, time
    import zoo_survey.features.source as source
    mark, after = sys.argv[1], int(sys.argv[2])
    real_forward = source.run_forward

    def run_forward(*a, **k):  # the real forward; once `after` batches are out, say so and wait for the signal
        for i, batch in enumerate(real_forward(*a, **k)):
            if i == after:
                open(mark, "w").close()
                time.sleep(120)
            yield batch

    source.run_forward = run_forward
    from zoo_survey.cli import main
    sys.argv = ["zoo-survey", *sys.argv[3:]]
    main()
""")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_or_sighup_while_extracting_stops_like_ctrl_c_and_a_rerun_completes(
        tmp_path, registry, hub_env, reference, monkeypatch, capsys, sig, code):
    import time

    ref_rows, ref_batches, _ = reference
    cache, out, mark = tmp_path / "cache", tmp_path / "out", tmp_path / "extracting"
    (tmp_path / "wrapper.py").write_text(_SIGNAL_WRAPPER)
    args = ["run", "--registry", str(registry), "--cache-dir", str(cache), "--out", str(out), *RUN,
            "--batch-size", "16", "--shard-rows", "16"]
    proc = subprocess.Popen([sys.executable, str(tmp_path / "wrapper.py"), str(mark), "2", *args], env=_env(hub_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.exists(), proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in stderr
    assert f"stopped by {sig.name}: finished shards and result rows are kept; rerun the same command to resume" in stderr
    assert list(cache.rglob("shard-*.feat.npy")), "the finished feature shards were not kept"
    code2, text, err = zoo(monkeypatch, capsys, *args)
    assert code2 == 0, text + err
    written, skipped, batches = _summary(text)
    assert batches < ref_batches  # the shards written before the signal were read, not recomputed
    assert _rows(out / "results.sqlite") == ref_rows


@pytest.mark.parametrize("pattern", ["{reg}/*/../../secret/x.parquet", "{reg}/data/*.parquet"])
def test_a_parquet_pattern_cannot_reach_outside_its_folder(tmp_path, monkeypatch, capsys, pattern):
    # issue 21: only the part before the first wildcard was checked, so `*/..` climbed out, and a matched symlink
    # pointed out
    monkeypatch.delenv("ZOO_SURVEY_ALLOWED_PATHS", raising=False)
    reg = tmp_path / "reg"
    (reg / "data").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.parquet").write_bytes(b"PAR1")
    (reg / "data" / "link.parquet").symlink_to(tmp_path / "secret" / "x.parquet")
    (reg / "ds.yaml").write_text("datasets:\n  - {id: leak, source: {type: parquet, data_files: {train: '"
                                 + pattern.format(reg=reg) + "'}}, num_classes: 2}\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(reg))
    line = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "field 'source.data_files.train':" in line and "outside the folder of this file" in line


@pytest.mark.parametrize("path", ["/etc", "../secret", "~/data", "./local", "owner/../x"])
def test_an_hf_source_takes_a_repo_id_not_a_local_path(tmp_path, monkeypatch, capsys, path):
    (tmp_path / "ds.yaml").write_text(f"datasets:\n  - {{id: sneaky, source: {{type: hf, path: '{path}'}}, num_classes: 2}}\n")
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", str(tmp_path))
    line = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "field 'source.path'" in line and "expected a hub dataset repo id" in line, line
