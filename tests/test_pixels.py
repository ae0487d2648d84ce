"""The pixel cache and preprocessing on the device: keys, resume, corruption, parity with timm's PIL
transform (pixels and features), mixed image sizes, JPEG bytes decoded by torchvision, GMACs counted once."""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import pytest
from conftest import write_family
from test_cli import zoo

from zoo_survey.data.datasets import prepare
from zoo_survey.data.pixels import JPEG, STATE, DecodeSettings, PixelCache, pixel_key, to_pixels
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.preprocess import DeviceTransform, orient, unsupported
from zoo_survey.features.source import FeatureSource, feature_key
from zoo_survey.zoo.checkpoints import Preprocessing, resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry, registry_folders

OPTS = ExtractOptions(device="cpu", batch_size=16, workers=0)
PIL_OPTS = dataclasses.replace(OPTS, pixel_route="pil")
BUILTIN = load_registry([SHIPPED_REGISTRY])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _smooth(rng, h: int, w: int, c: int = 3) -> np.ndarray:
    """A natural-ish image, (h, w) for c = 1: coarse noise upscaled, plus a sharp-edged block (bicubic overshoot)."""
    from PIL import Image

    coarse = rng.integers(0, 255, (max(2, h // 6), max(2, w // 6), c), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse.squeeze(-1) if c == 1 else coarse).resize((w, h), Image.BICUBIC))
    img = img.copy()
    img[h // 4 : h // 2, w // 4 : w // 2] = 255
    return img


# --------------------------------------------------------------------------- pixels: device transform vs timm's PIL transform


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize(("crop_mode", "crop_pct"), [("center", 0.875), ("center", 1.0), ("center", 1.15), ("squash", 0.9)])
def test_the_device_transform_is_within_two_grey_levels_of_timms_pil_transform(interpolation, crop_mode, crop_pct):
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    p = Preprocessing(48, interpolation, crop_pct, crop_mode, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    pil = p.transform(normalize=False)
    device = DeviceTransform(p, "cpu", channels_last=False)
    # upscales (8 px digits, 28 px), a downscale, non-square both ways, grayscale
    for h, w, c in [(8, 8, 1), (28, 28, 1), (120, 90, 3), (37, 61, 3), (200, 150, 1)]:
        img = _smooth(rng, h, w, c)
        ref = pil(Image.fromarray(img).convert("RGB")).numpy().astype(np.float64)
        px = to_pixels(Image.fromarray(img))
        x = device.resize_crop(torch.from_numpy(px.copy()).permute(2, 0, 1)[None])
        got = x.expand(-1, 3, -1, -1)[0].numpy()
        assert got.shape == ref.shape, (h, w)
        diff = np.abs(got - ref)
        assert diff.max() <= 2 and diff.mean() < 0.15, (interpolation, crop_mode, h, w, diff.max(), diff.mean())
        mean = np.array(p.mean).reshape(3, 1, 1) * 255
        std = np.array(p.std).reshape(3, 1, 1) * 255
        assert np.allclose(device.normalize(x)[0].numpy(), (got - mean) / std, atol=1e-5)


def test_what_the_device_path_cannot_do_keeps_the_exact_path():
    base = Preprocessing(32, "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3)
    assert unsupported(base) == ""
    assert "lanczos" in unsupported(dataclasses.replace(base, interpolation="lanczos"))
    assert "border" in unsupported(dataclasses.replace(base, crop_mode="border"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_the_device_matches_pil(orientation):
    import torch
    from PIL import Image, ImageOps

    a = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    got = orient(torch.from_numpy(a).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(got, upright)


# --------------------------------------------------------------------------- the pixel cache: keys, resume, corruption


def test_pixel_keys_change_with_what_changes_the_pixels():
    ds = prepare(BUILTIN.dataset("lfw-subset"))
    base = pixel_key(ds, "train", DecodeSettings()).digest
    changed = {
        "split": pixel_key(ds, "val", DecodeSettings()),
        "rows": pixel_key(prepare(ds.spec, max_train=60), "train", DecodeSettings()),
        "fingerprint": pixel_key(dataclasses.replace(ds, fingerprint="other"), "train", DecodeSettings()),
        "form": pixel_key(ds, "train", DecodeSettings(form="jpeg")),
        "cap": pixel_key(ds, "train", DecodeSettings(max_short_side=512)),
    }
    for what, key in changed.items():
        assert key.digest != base, what
    assert pixel_key(prepare(ds.spec), "train", DecodeSettings()).digest == base  # same data, same key


def test_a_split_is_decoded_once_and_read_back_exactly(tmp_path):
    ds = prepare(BUILTIN.dataset("digits"))
    cache = PixelCache(tmp_path, shard_rows=100)
    px = cache.ensure(ds, "train")
    assert cache.decoded == len(ds.splits["train"]) and px.shape == (8, 8, 1)
    again = PixelCache(tmp_path).ensure(ds, "train")  # another process: reads, decodes nothing
    split = ds.splits["train"]
    rows = np.arange(95, 230)  # across shard boundaries
    [(shape, positions, pieces)] = again.images(rows)
    got = np.concatenate(pieces)[..., 0]
    assert shape == (8, 8, 1) and np.array_equal(positions, np.arange(len(rows)))
    assert np.array_equal(got, np.stack([np.asarray(split.images.raw(int(split.indices[r]))) for r in rows]))
    scattered = np.array([3, 500, 41])  # not consecutive: row by row
    [(_, _, pieces)] = again.images(scattered)
    assert np.array_equal(np.concatenate(pieces)[..., 0], np.stack([np.asarray(split.image(int(r)))[..., 0] for r in scattered]))


def test_an_interrupted_build_resumes_from_its_complete_shards(tmp_path, monkeypatch):
    from zoo_survey.data import pixels as pixels_mod

    ds = prepare(BUILTIN.dataset("digits"))
    real, calls = pixels_mod._pack_array, {"n": 0}

    def dies_at_the_third_shard(array):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(array)

    monkeypatch.setattr(pixels_mod, "_pack_array", dies_at_the_third_shard)
    first = PixelCache(tmp_path, shard_rows=200)
    with pytest.raises(KeyboardInterrupt):
        first.ensure(ds, "train")
    folder = first.path(pixel_key(ds, "train", DecodeSettings()))
    assert sorted(p.name for p in folder.glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    assert not (folder / "manifest.json").exists() and first.decoded == 400
    monkeypatch.setattr(pixels_mod, "_pack_array", real)
    second = PixelCache(tmp_path, shard_rows=200)
    px = second.ensure(ds, "train")
    assert second.decoded == len(ds.splits["train"]) - 400 and len(px) == len(ds.splits["train"])


def test_a_corrupt_pixel_shard_is_found_reported_and_decoded_again(tmp_path, monkeypatch, capsys):
    ds = prepare(BUILTIN.dataset("digits"))
    PixelCache(tmp_path, shard_rows=200).ensure(ds, "train")
    folder = PixelCache(tmp_path).path(pixel_key(ds, "train", DecodeSettings()))
    target = folder / "shard-00002.pix.npy"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))

    code, out, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(tmp_path), "--format", "tsv")
    assert code == 1 and "1 corrupt" in err and "pixels\t\t\tdigits\ttrain" in out
    cache = PixelCache(tmp_path, shard_rows=200)
    px = cache.ensure(ds, "train")
    assert cache.decoded == 200 and any("shard(s) [2]" in n for n in cache.repaired)  # only the damaged shard
    split = ds.splits["train"]
    [(_, _, pieces)] = px.images(np.arange(400, 600))
    assert np.array_equal(np.concatenate(pieces)[..., 0], split.images.array[split.indices[400:600]])
    code, out, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(tmp_path))
    assert code == 0 and "0 corrupt" in err


def test_cache_gc_removes_an_abandoned_partial_pixel_entry(tmp_path, monkeypatch, capsys):
    ds = prepare(BUILTIN.dataset("digits"))
    cache = PixelCache(tmp_path, shard_rows=200)
    writer_folder = cache.path(pixel_key(ds, "test", DecodeSettings()))
    cache.ensure(ds, "test")
    (writer_folder / "manifest.json").unlink()  # as if the build died before its manifest
    code, out, err = zoo(monkeypatch, capsys, "cache", "gc", "--cache-dir", str(tmp_path), "--yes", "--format", "tsv")
    assert code == 0 and "partial entry not being written" in out and not writer_folder.exists()


# --------------------------------------------------------------------------- features: device path vs the exact path


@pytest.fixture()
def tiny(tiny_registry):
    reg = load_registry(registry_folders([tiny_registry]))
    return {c: resolve(reg.checkpoint(c), offline=True, image_size=32) for c in ("test_resnet.hub", "test_vit.hub", "test_convnext.hub")}


def _both_paths(tmp_path, ckpt, ds, split, options=OPTS):
    device = FeatureSource(FeatureCache(tmp_path / "c"), options)
    exact = FeatureSource(FeatureCache(tmp_path / "c"), dataclasses.replace(options, pixel_route="pil"))
    a, b = device.get(ckpt, ds, split), exact.get(ckpt, ds, split)
    assert a.manifest["key"]["preprocess"]["path"] == "tensor" and "preprocess" not in b.manifest["key"]
    assert np.array_equal(a.indices, b.indices)
    return _cosines(a.features, b.features), device


@pytest.mark.parametrize("dataset", ["digits", "lfw-subset", "fashion-mnist"])
def test_features_from_the_device_path_match_the_exact_path_on_the_builtin_datasets(tmp_path, tiny, dataset):
    ds = prepare(BUILTIN.dataset(dataset), max_train=60, max_test=40)
    worst = {}
    for name, ckpt in tiny.items():
        cos, _ = _both_paths(tmp_path, ckpt, ds, "test")
        worst[name] = float(cos.min())
    print(f"{dataset}: min cosine device vs PIL path {worst}")
    assert min(worst.values()) > 0.999, worst


def test_features_match_on_a_hub_format_dataset(hub, tmp_path, tiny):
    from test_hub_datasets import DS_REPO, dataset_repo

    hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    write_family(tmp_path / "reg", "ds", f"datasets:\n  - {{id: tiny-shapes, source: {{type: hf, path: {DS_REPO}}}, num_classes: 3}}\n")
    ds = prepare(load_registry([tmp_path / "reg"]).dataset("tiny-shapes"))
    worst = {name: float(_both_paths(tmp_path, ckpt, ds, "train")[0].min()) for name, ckpt in tiny.items()}
    print(f"tiny-shapes (parquet, PNG bytes): min cosine device vs PIL path {worst}")
    assert min(worst.values()) > 0.999, worst


def _image_folder(root, sizes, fmt="PNG", extra=None):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                Image.fromarray(_smooth(rng, h, w)).save(d / f"{i}.{fmt.lower()}", format=fmt, quality=90)
    for name, write in (extra or {}).items():
        write(root / "train" / "a" / name)


def test_a_split_of_mixed_image_sizes(tmp_path, tiny):
    from PIL import Image

    sizes = [(16, 16), (40, 24), (7, 50), (300, 200), (40, 24), (64, 64)]
    _image_folder(tmp_path / "imgs", sizes, extra={"gray.png": lambda p: Image.fromarray(_smooth(np.random.default_rng(2), 30, 20, 1)).save(p)})
    write_family(tmp_path, "ds", "datasets:\n  - {id: mixed, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    ds = prepare(load_registry([tmp_path]).dataset("mixed"))
    cos, src = _both_paths(tmp_path, tiny["test_convnext.hub"], ds, "train", dataclasses.replace(OPTS, batch_size=5))
    px = src.pixels.ensure(ds, "train")
    shapes = {tuple(int(v) for v in px.index[r, 2:5]) for r in range(len(px))}
    assert px.shape is None and len(shapes) >= 5 and (30, 20, 1) in shapes  # mixed sizes, grayscale kept as one channel
    assert cos.min() > 0.999, cos.min()


def test_large_images_are_shrunk_to_the_cap_once_and_stay_close_to_the_exact_path(tmp_path, tiny):
    from PIL import Image

    _image_folder(tmp_path / "imgs", [(1000, 800), (900, 1300)], fmt="PNG")
    write_family(tmp_path, "ds", "datasets:\n  - {id: big, source: {type: imagefolder, path: imgs}, num_classes: 2, test_split: null}\n")
    ds = prepare(load_registry([tmp_path]).dataset("big"))
    px = PixelCache(tmp_path / "c").ensure(ds, "train")
    assert {min(int(v) for v in px.index[r, 2:4]) for r in range(len(px))} == {768}  # shorter side at the cap
    cos, _ = _both_paths(tmp_path, tiny["test_resnet.hub"], ds, "train")
    assert cos.min() > 0.999, cos.min()
    assert to_pixels(Image.new("RGB", (1000, 800)), 768).shape == (768, 960, 3)  # torchvision's Resize arithmetic


def test_jpeg_bytes_decoded_by_torchvision_match_the_exact_path(tmp_path, tiny):
    """The pixel cache's jpeg form (nvjpeg on CUDA) runs here with torchvision's CPU decoder: the same
    code path, bytes to upright tensors, with EXIF orientation and host-decoded exceptions."""
    from PIL import Image

    def rotated(path):
        img = Image.fromarray(_smooth(np.random.default_rng(3), 30, 50))
        exif = img.getexif()
        exif[0x0112] = 6
        img.save(path, format="JPEG", exif=exif.tobytes(), quality=90)

    def cmyk(path):
        Image.fromarray(_smooth(np.random.default_rng(4), 20, 20)).convert("CMYK").save(path, format="JPEG")

    def progressive(path):
        Image.fromarray(_smooth(np.random.default_rng(5), 20, 24)).save(path, format="JPEG", progressive=True)

    def truncated(path):  # a whole header, 80% of the data: fails the batched decode, then the host's, as in PIL
        buf = io.BytesIO()
        Image.fromarray(_smooth(np.random.default_rng(6), 80, 80)).save(buf, format="JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 4 // 5])

    _image_folder(tmp_path / "imgs", [(40, 30), (33, 33), (64, 48), (30, 40), (50, 50), (45, 35)], fmt="JPEG",
                  extra={"rot.jpg": rotated, "cmyk.jpg": cmyk, "prog.jpg": progressive, "cut.jpg": truncated})
    write_family(tmp_path, "ds", "datasets:\n  - {id: photos, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    ds = prepare(load_registry([tmp_path]).dataset("photos"))
    options = dataclasses.replace(OPTS, jpeg="device", batch_size=4, bad_images="skip")
    cos, src = _both_paths(tmp_path, tiny["test_vit.hub"], ds, "train", options)  # the same rows kept by both paths
    px = src.pixels.ensure(ds, "train", DecodeSettings(form="jpeg"))
    key = feature_key(tiny["test_vit.hub"], ds, "train", options)
    assert key.payload["preprocess"] == {"path": "tensor", "pixels": DecodeSettings("jpeg").key(), "decoder": "libjpeg"}
    jpeg_rows = int((px.index[:, STATE] == JPEG).sum())
    assert 0 < jpeg_rows < len(px)  # baseline JPEGs kept as bytes; CMYK and progressive decoded on the host
    assert not (px.index[:, STATE] == 0).any()  # the truncated one too: its header is whole; decoding it fails later
    assert src.get(tiny["test_vit.hub"], ds, "train").skipped + src.get(tiny["test_vit.hub"], ds, "val").skipped == 1
    assert cos.min() > 0.999, cos.min()


# --------------------------------------------------------------------------- one-off costs, keys, bad images


def test_a_second_checkpoint_decodes_nothing_and_gmacs_are_counted_once(tmp_path, tiny, monkeypatch):
    from zoo_survey.features import source as source_mod

    ds = prepare(BUILTIN.dataset("lfw-subset"))
    src = FeatureSource(FeatureCache(tmp_path), OPTS)
    first = src.get(tiny["test_resnet.hub"], ds, "test")
    assert src.pixels.decoded == len(ds.splits["test"])
    src.get(tiny["test_vit.hub"], ds, "test")
    assert src.pixels.decoded == len(ds.splits["test"])  # the second model read the same pixels

    def no_counting(*a, **k):
        raise AssertionError("GMACs counted again")

    monkeypatch.setattr(source_mod, "count_gmacs", no_counting)
    later = FeatureSource(FeatureCache(tmp_path), OPTS)  # a later run: remembered in the cache root
    again = later.get(tiny["test_resnet.hub"], ds, "val")
    assert again.manifest["gflops"] == first.manifest["gflops"] > 0


def test_the_exact_paths_keys_are_unchanged_and_the_device_path_is_recorded(tiny):
    from zoo_survey.digests import canonical_digest

    ckpt = tiny["test_resnet.hub"]
    ds = prepare(BUILTIN.dataset("digits"))
    s = ds.splits["train"]
    before = {**ckpt.key(), "dtype": "float32", "layer": "pre_logits", "dataset": "digits", "dataset_fingerprint": ds.fingerprint,
              "split": "train", "rows": len(s), "indices": s.indices_digest(), "format": 2}  # the key as it was
    assert feature_key(ckpt, ds, "train", PIL_OPTS).digest == canonical_digest(before)
    device = feature_key(ckpt, ds, "train", OPTS)
    assert device.digest != canonical_digest(before) and device.payload["preprocess"]["pixels"]["form"] == "raw"
    assert OPTS.key()["preprocess"] == "tensor" and "preprocess" not in PIL_OPTS.key()  # row keys say so too


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_bad_images_through_the_device_path(tmp_path, tiny, mode):
    from zoo_survey.errors import ZooSurveyFailure

    _image_folder(tmp_path / "imgs", [(16, 16)] * 4, extra={"broken.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not a png")})
    write_family(tmp_path, "ds", "datasets:\n  - {id: broken, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    ds = prepare(load_registry([tmp_path]).dataset("broken"))
    src = FeatureSource(FeatureCache(tmp_path / "c"), dataclasses.replace(OPTS, bad_images=mode))
    ckpt = tiny["test_resnet.hub"]
    if mode == "fail":
        failed = []
        for split in ("train", "val"):
            before = src.forward_batches
            try:
                src.get(ckpt, ds, split)
            except ZooSurveyFailure as e:
                failed.append((str(e), src.forward_batches - before))
        [(message, batches)] = failed
        assert re.search(r"the image at index \d+ cannot be decoded \(UnidentifiedImageError.*bad_images='skip'", message)
        assert batches == 0  # found in the pixel cache, before any forward pass of that split
        return
    got = [src.get(ckpt, ds, split) for split in ("train", "val")]
    assert sum(f.skipped for f in got) == 1
    assert sum(len(f.features) for f in got) == len(ds.splits["train"]) + len(ds.splits["val"]) - 1
    assert any("could not be decoded" in n for n in src.notes)
