"""Cache and engine faults: corrupt shards, kill -9, a full disk, undecodable images, OOM, two processes."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import zoo

from zoo_survey.data.datasets import prepare
from zoo_survey.errors import ZooSurveyFailure
from zoo_survey.features.cache import FeatureCache, gc_plan, scan
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.source import FeatureSource, feature_key
from zoo_survey.zoo.checkpoints import resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry, registry_folders

OPTS = ExtractOptions(device="cpu", batch_size=16, workers=0)
EXE = str(Path(sys.executable).parent / "zoo-survey")


@pytest.fixture()
def setup(tiny_registry):
    reg = load_registry(registry_folders([tiny_registry]))
    ckpt = resolve(reg.checkpoint("test_resnet.hub"), offline=True, image_size=32)
    ds = prepare(load_registry([SHIPPED_REGISTRY]).dataset("lfw-subset"))
    return ckpt, ds


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_caught_by_verify_and_only_that_shard_is_recomputed(setup, tmp_path, monkeypatch, capsys):
    ckpt, ds = setup
    cache = FeatureCache(tmp_path / "c", shard_rows=32)
    first = FeatureSource(cache, OPTS).get(ckpt, ds, "train")
    key = feature_key(ckpt, ds, "train", OPTS)
    manifest = json.loads((cache.path(key) / "manifest.json").read_text())
    _flip_byte(cache.path(key) / manifest["shards"][1]["features"])

    code, out, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(tmp_path / "c"))
    assert code == 1 and "1 corrupt" in err and "shard-00001.feat.npy" in out  # piped: table on stdout, totals on stderr

    again = FeatureSource(FeatureCache(tmp_path / "c", shard_rows=32), OPTS)
    feats = again.get(ckpt, ds, "train")
    assert again.forward_batches == 2  # one 32-row shard, two 16-row batches
    assert any("fail their checksum" in r for r in again.cache.repaired)
    np.testing.assert_allclose(feats.features, first.features, rtol=1e-5, atol=1e-5)
    code, out, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(tmp_path / "c"))
    assert code == 0 and "0 corrupt" in err


def test_a_truncated_manifest_is_recomputed(setup, tmp_path):
    ckpt, ds = setup
    cache = FeatureCache(tmp_path, shard_rows=64)
    FeatureSource(cache, OPTS).get(ckpt, ds, "val")
    key = feature_key(ckpt, ds, "val", OPTS)
    m = cache.path(key) / "manifest.json"
    first = json.loads(m.read_text())
    m.write_text(m.read_text()[:40])
    src = FeatureSource(cache, OPTS)
    assert len(src.get(ckpt, ds, "val").features) == len(ds.splits["val"])
    assert src.forward_batches == 0  # the shards were intact: only the manifest was rewritten
    assert any("not valid JSON" in r for r in cache.repaired)
    again = json.loads(m.read_text())  # what the rows report: the GMACs, and the extraction's time, not this call's
    assert first["gflops"] > 0 and first["extract_seconds"] > 0
    assert (again["gflops"], again["extract_seconds"]) == (first["gflops"], first["extract_seconds"])


def test_disk_full_during_a_shard_write_is_a_clear_error_and_leaves_no_partial_entry(setup, tmp_path, monkeypatch):
    ckpt, ds = setup
    cache = FeatureCache(tmp_path, shard_rows=32)
    import numpy as _np

    real_save, calls = _np.save, {"n": 0}

    def save(f, arr, **kw):
        calls["n"] += arr.dtype == _np.float32  # feature matrices only (the pixel cache's arrays are integers)
        if calls["n"] == 2 and arr.dtype == _np.float32:  # the second shard's features
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(f, arr, **kw)

    monkeypatch.setattr(_np, "save", save)
    with pytest.raises(ZooSurveyFailure, match=r"cannot write .*shard-00001.feat.npy: No space left on device .*nothing half-written"):
        FeatureSource(cache, OPTS).get(ckpt, ds, "train")
    monkeypatch.setattr(_np, "save", real_save)
    folder = cache.path(feature_key(ckpt, ds, "train", OPTS))
    assert not (folder / "manifest.json").exists()
    assert not list(folder.glob("*.incomplete"))
    assert sorted(p.name for p in folder.glob("shard-*.json")) == ["shard-00000.json"]
    assert FeatureSource(cache, OPTS).get(ckpt, ds, "train").features.shape == (120, 96)


def test_an_unwritable_cache_fails_before_any_work(tmp_path, monkeypatch, capsys, tiny_registry):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "-f", "tiny", "-d", "lfw-subset",
                         "--cache-dir", str(blocker / "cache"), "--out", str(tmp_path / "out"), "--workers", "0")
    assert code == 1 and "cannot create the feature cache at" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _write_images(root: Path, broken: bool) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    if broken:
        (root / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_an_undecodable_image_fails_or_is_skipped_and_counted(tmp_path, setup, mode):
    ckpt, _ = setup
    _write_images(tmp_path / "imgs", broken=True)
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: broken, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    try:
        ds = prepare(load_registry([tmp_path]).dataset("broken"))
    except Exception as e:  # the imagefolder builder may refuse the file itself: that is a clear error too
        pytest.skip(f"the datasets library rejected the broken file up front: {e}")
    src = FeatureSource(FeatureCache(tmp_path / "c"), ExtractOptions(device="cpu", batch_size=4, workers=0, bad_images=mode))
    if mode == "fail":
        with pytest.raises(ZooSurveyFailure, match=r"cannot be decoded .*bad_images='skip'"):
            for s in ("train", "val"):
                src.get(ckpt, ds, s)
    else:
        got = [src.get(ckpt, ds, s) for s in ("train", "val")]
        assert sum(f.skipped for f in got) == 1
        assert sum(len(f.features) for f in got) == len(ds.splits["train"]) + len(ds.splits["val"]) - 1
        assert any("could not be decoded" in n for n in src.notes)


class _OOMAbove:
    """Wraps a model so any batch larger than ``limit`` raises torch.OutOfMemoryError."""

    def __init__(self, model, limit: int):
        self.model, self.limit, self.sizes = model, limit, []

    def to(self, *a, **k):
        return self

    def forward_features(self, x):
        import torch

        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model.forward_features(x)

    def forward_head(self, x, pre_logits=False):
        return self.model.forward_head(x, pre_logits=pre_logits)


@pytest.mark.parametrize("path", ["tensor", "pil"])
def test_out_of_memory_halves_the_batch_and_keeps_every_row(setup, tmp_path, path):
    from zoo_survey.data.pixels import PixelCache
    from zoo_survey.features.extract import run_forward
    from zoo_survey.zoo.checkpoints import load_model

    ckpt, ds = setup
    model = load_model(ckpt)
    wrapped = _OOMAbove(model, limit=5)
    split = ds.splits["val"]
    pixels = PixelCache(tmp_path).ensure(ds, "val") if path == "tensor" else None  # preprocessing inside the backoff
    batches = list(run_forward(wrapped, split, range(len(split)), ckpt.preprocessing, OPTS, pixels))
    rows = np.concatenate([b.rows for b in batches])
    assert np.array_equal(rows, np.arange(len(split)))
    assert wrapped.sizes[:3] == [16, 8, 4] and max(wrapped.sizes[2:]) <= 4  # 16 -> 8 -> 4, and it stays there
    plain = np.concatenate([b.features for b in run_forward(model, split, range(len(split)), ckpt.preprocessing, OPTS, pixels)])
    assert np.allclose(np.concatenate([b.features for b in batches]), plain, atol=1e-5)


def _extract_cmd(tiny_registry, cache: Path, shard_rows: int) -> list[str]:
    return [EXE, "extract", "--registry", str(tiny_registry), "-f", "tiny", "--checkpoints", "test_convnext.hub",
            "-d", "fashion-mnist", "--max-train", "3000", "--max-test", "100", "--image-size", "64", "--workers", "0",
            "--batch-size", "50", "--shard-rows", str(shard_rows), "--cache-dir", str(cache), "--offline"]


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(), reason="needs Fashion-MNIST")
def test_kill_9_during_extraction_then_rerun_loses_no_finished_shard(tmp_path, tiny_registry, hub_env):
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_CACHE": str(hub_env), "COLUMNS": "200"}
    proc = subprocess.Popen(_extract_cmd(tiny_registry, cache, 200), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("*/*/*/train/*/shard-*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for p in cache.glob("*/*/*/train/*/shard-*.json")}
    assert len(before) >= 3, "extraction did not get far enough before the kill"
    assert not list(cache.glob("*/*/*/train/*/manifest.json"))

    out = subprocess.run(_extract_cmd(tiny_registry, cache, 200), env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    batches = int(re.search(r"(\d+) forward batch", out.stdout).group(1))
    assert batches < 2400 // 50 + 8  # the finished shards were not recomputed
    after = {p.name: p.read_bytes() for p in cache.glob("*/*/*/train/*/shard-*.json")}
    assert all(after[name] == data for name, data in before.items())  # kept as they were
    entries = scan(FeatureCache(cache), verify=True)
    assert entries and all(e.status == "complete" for e in entries)

    fresh = tmp_path / "fresh"
    subprocess.run(_extract_cmd(tiny_registry, fresh, 200), env=env, capture_output=True, check=True, timeout=300)
    a = sorted(cache.glob("*/*/*/train/*/manifest.json"))[0]
    b = sorted(fresh.glob("*/*/*/train/*/manifest.json"))[0]
    ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
    fa = np.concatenate([np.load(a.parent / s["features"]) for s in ma["shards"]])
    fb = np.concatenate([np.load(b.parent / s["features"]) for s in mb["shards"]])
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-5)


def test_two_processes_on_one_key_compute_it_once(tmp_path, tiny_registry, hub_env):
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_CACHE": str(hub_env), "COLUMNS": "200"}
    cmd = [EXE, "extract", "--registry", str(tiny_registry), "-f", "tiny", "--checkpoints", "test_vit.hub", "-d", "digits",
           "--image-size", "32", "--workers", "0", "--cache-dir", str(cache), "--offline"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    counts = sorted(int(re.search(r"(\d+) forward batch", o).group(1)) for o in outs)
    single = subprocess.run(cmd[:-3] + ["--cache-dir", str(tmp_path / "single"), "--offline"], env=env,
                            capture_output=True, text=True, check=True, timeout=300)
    total = int(re.search(r"(\d+) forward batch", single.stdout).group(1))
    assert sum(counts) == total  # the lock made the second wait and read, not recompute


def test_gc_shows_a_plan_then_deletes_with_yes(setup, tmp_path, monkeypatch, capsys):
    ckpt, ds = setup
    cache = FeatureCache(tmp_path, shard_rows=32)
    FeatureSource(cache, OPTS).get(ckpt, ds, "test")
    w = cache.writer(feature_key(ckpt, ds, "train", OPTS), total_rows=120)
    w.write(0, np.zeros((32, 96), np.float32), np.arange(32), np.zeros(32))  # abandoned partial entry
    (tmp_path / "stray.npy.abc.incomplete").write_bytes(b"x")
    plan = gc_plan(cache)
    assert {reason.split(" (")[0] for _, reason, _ in plan} == {"temporary file of an interrupted write", "partial entry not being written"}
    code, out, err = zoo(monkeypatch, capsys, "cache", "gc", "--cache-dir", str(tmp_path))
    assert code == 0 and "Nothing deleted" in err and (tmp_path / "stray.npy.abc.incomplete").exists()
    code, out, err = zoo(monkeypatch, capsys, "cache", "gc", "--cache-dir", str(tmp_path), "--yes")
    assert code == 0 and "Deleted 2 item(s)" in err
    assert [e.status for e in scan(cache)] == ["complete"]
    code, out, err = zoo(monkeypatch, capsys, "cache", "ls", "--cache-dir", str(tmp_path))
    assert code == 0 and "test_resnet.hub" in out and "lfw-subset" in out


class _NaNModel:
    def to(self, *a, **k):
        return self

    def forward_features(self, x):
        import torch

        return torch.full((len(x), 96, 1, 1), float("nan"))

    def forward_head(self, x, pre_logits=False):
        return x.flatten(1)


def test_nan_features_name_the_checkpoint_and_dataset_and_write_nothing(setup, tmp_path):
    ckpt, ds = setup
    cache = FeatureCache(tmp_path)
    src = FeatureSource(cache, OPTS)
    src._model = (ckpt.spec.id, _NaNModel())
    with pytest.raises(ZooSurveyFailure, match=r"checkpoint 'test_resnet.hub' produced NaN or inf features on lfw-subset/val"):
        src.get(ckpt, ds, "val")
    assert not list(cache.root.glob("*/*/*/*/*/shard-*.json")) and not list(cache.root.glob("*/*/*/*/*/manifest.json"))
