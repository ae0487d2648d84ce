"""Datasets: built-in sets load offline, splits are stratified, seeded and disjoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zoo_survey.data.datasets import FASHION_MNIST_DIR, prepare, stratified_take
from zoo_survey.errors import ZooSurveyError
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry

REG = load_registry([SHIPPED_REGISTRY])


def _positions(ds, split):
    return set(ds.splits[split].indices.tolist())


@pytest.mark.parametrize(("name", "n", "classes"), [("digits", 1797, 10), ("lfw-subset", 200, 2)])
def test_builtin_sets_carve_disjoint_stratified_splits(name, n, classes):
    ds = prepare(REG.dataset(name))
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sum(sizes.values()) == n
    assert sizes["test"] == round(n * 0.25)
    tr, va, te = (_positions(ds, s) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    for s in ds.splits.values():
        assert set(np.unique(s.labels)) == set(range(classes))
        img = s.image(0)
        assert img.mode == "RGB"
    # Stratified: every split's class shares match the whole set's within one sample per class.
    all_labels = np.concatenate([s.labels for s in ds.splits.values()])
    share = np.bincount(all_labels) / len(all_labels)
    test_share = np.bincount(ds.splits["test"].labels) / sizes["test"]
    assert np.abs(test_share - share).max() < 2 / sizes["test"] * classes


def test_splits_are_deterministic():
    a, b = prepare(REG.dataset("digits"), max_train=300), prepare(REG.dataset("digits"), max_train=300)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.splits[s].indices, b.splits[s].indices)
    assert a.fingerprint == b.fingerprint


def test_max_train_caps_train_plus_val_and_max_test_caps_test():
    ds = prepare(REG.dataset("digits"), max_train=200, max_test=100)
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 200
    assert len(ds.splits["val"]) == 40
    assert len(ds.splits["test"]) == 100
    assert any("subsampled" in n for n in ds.notes)


def test_max_train_below_two_is_rejected():
    with pytest.raises(ZooSurveyError, match=r"'max_train' must be at least 2, got 1"):
        prepare(REG.dataset("digits"), max_train=1)


def test_lfw_labels_are_faces_then_non_faces():
    ds = prepare(REG.dataset("lfw-subset"))
    assert ds.class_names == ("non-face", "face")
    s = ds.splits["train"]
    assert all((s.labels[i] == 1) == (s.indices[i] < 100) for i in range(len(s)))


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_files():
    ds = prepare(REG.dataset("fashion-mnist"), max_train=1000, max_test=500)
    assert len(ds.splits["test"]) == 500
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 1000
    assert ds.splits["test"].images.array.shape == (10000, 28, 28)
    assert len(ds.class_names) == 10


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
    (tmp_path / "ds.yaml").write_text(
        f"datasets:\n  - {{id: fm, source: {{type: builtin, name: fashion-mnist, path: {tmp_path}}}, num_classes: 10}}\n"
    )
    with pytest.raises(ZooSurveyError, match=r"not found in .*apt-get install dataset-fashion-mnist"):
        prepare(load_registry([tmp_path]).dataset("fm"))


def test_stratified_take_keeps_every_class_when_it_can():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 2)
    take, rest = stratified_take(labels, 6, seed=0)
    assert len(take) == 6 and set(labels[take]) == {0, 1, 2}
    assert not set(take) & set(rest) and len(take) + len(rest) == len(labels)


def test_num_classes_too_small_for_the_labels_is_named(tmp_path):
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: d5, source: {type: builtin, name: digits}, num_classes: 5, test_split: null}\n")
    with pytest.raises(ZooSurveyError, match=r"field 'num_classes' is 5 but split 'train' has labels in \[0, 9\]"):
        prepare(load_registry([tmp_path]).dataset("d5"))


def _write_folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                mode = ("L", "RGB", "RGBA", "CMYK", "P")[i % 5]
                arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).convert(mode).save(d / f"{i}.{'png' if mode != 'CMYK' else 'jpg'}")


def test_local_image_folder_with_mixed_modes_becomes_rgb(tmp_path):
    _write_folder(tmp_path / "pets")
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: mini, source: {type: imagefolder, path: pets}, num_classes: 2}\n")
    ds = prepare(load_registry([tmp_path]).dataset("mini"))
    assert len(ds.splits["test"]) == 6
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 12
    assert ds.class_names == ("cat", "dog")
    assert {ds.splits["train"].image(i).mode for i in range(len(ds.splits["train"]))} == {"RGB"}


def test_local_parquet_files(tmp_path):
    import datasets as hfds
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 8)):
        rows = {"picture": [Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in range(n)],
                "y": [i % 2 for i in range(n)]}
        feats = hfds.Features({"picture": hfds.Image(), "y": hfds.ClassLabel(names=["a", "b"])})
        hfds.Dataset.from_dict(rows, features=feats).to_parquet(str(tmp_path / f"{split}.parquet"))
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - id: pq\n    source: {type: parquet, data_files: {train: %s, test: %s}}\n"
        "    num_classes: 2\n    image_column: picture\n    label_column: y\n" % (tmp_path / "train.parquet", tmp_path / "test.parquet")
    )
    ds = prepare(load_registry([tmp_path]).dataset("pq"))
    assert len(ds.splits["test"]) == 8 and len(ds.splits["train"]) + len(ds.splits["val"]) == 20
    assert ds.class_names == ("a", "b") and ds.splits["val"].image(0).mode == "RGB"


def test_another_label_column_is_another_dataset(tmp_path):
    import datasets as hfds
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in range(12)],
            "fine": [i % 4 for i in range(12)], "coarse": [i % 2 for i in range(12)]}
    hfds.Dataset.from_dict(rows).to_parquet(str(tmp_path / "t.parquet"))
    entry = "  - {id: %s, source: {type: parquet, data_files: {train: %s}}, num_classes: %d, test_split: null%s}\n"
    (tmp_path / "ds.yaml").write_text("datasets:\n" + entry % ("fine", tmp_path / "t.parquet", 4, ", label_column: fine")
                                      + entry % ("coarse", tmp_path / "t.parquet", 2, ", label_column: coarse"))
    reg = load_registry([tmp_path])
    fine, coarse = prepare(reg.dataset("fine")), prepare(reg.dataset("coarse"))
    assert fine.fingerprint != coarse.fingerprint  # so no cache entry (which stores labels) or row is shared
    assert set(fine.splits["train"].labels.tolist()) == {0, 1, 2, 3} and set(coarse.splits["train"].labels.tolist()) == {0, 1}


def test_wrong_column_is_named(tmp_path):
    import datasets as hfds

    hfds.Dataset.from_dict({"x": [1, 2], "label": [0, 1]}).to_parquet(str(tmp_path / "t.parquet"))
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - {id: pq, source: {type: parquet, data_files: {train: %s}}, num_classes: 2, test_split: null}\n"
        % (tmp_path / "t.parquet")
    )
    with pytest.raises(ZooSurveyError, match=r"dataset 'pq': column 'image' not found; columns are \['x', 'label'\]"):
        prepare(load_registry([tmp_path]).dataset("pq"))


def test_a_class_subset_is_a_dataset_of_its_own(tmp_path):
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - {id: odd-digits, source: {type: builtin, name: digits}, classes: [7, 3, 9], test_split: null}\n")
    sub = prepare(load_registry([tmp_path]).dataset("odd-digits"))
    whole = prepare(REG.dataset("digits"))
    assert sub.spec.num_classes == 3 and sub.class_names == ("7", "3", "9")
    raw = whole.splits["train"].images.array  # every digits image, in source order (ArrayImages)
    from sklearn.datasets import load_digits

    source_labels = load_digits().target
    for split in sub.splits.values():
        assert set(split.labels.tolist()) == {0, 1, 2}
        # Each image is the source image of the kept class its new label names (7 -> 0, 3 -> 1, 9 -> 2), and no other.
        for row in range(0, len(split), 17):
            pixels = np.asarray(split.image(row).convert("L"))
            matches = [i for i in range(len(raw)) if np.array_equal(raw[i], pixels)]
            assert matches and {source_labels[i] for i in matches} == {(7, 3, 9)[split.labels[row]]}
    assert sum(len(s) for s in sub.splits.values()) == int(np.isin(source_labels, [7, 3, 9]).sum())
    assert sub.fingerprint != whole.fingerprint and sub.revision == f"data:{sub.fingerprint}"
    assert any("classes [7, 3, 9]" in n for n in sub.notes)


def test_a_class_subset_leaves_out_unlabelled_images(tmp_path):
    import datasets as hfds
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = [2, 0, -1, 1, 2, -1, 1, 2, 0, 2, -1, 1, 2, 1]  # -1: a ClassLabel's missing label; 2, the largest, is kept
    rows = {"image": [Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in labels], "label": labels}
    feats = hfds.Features({"image": hfds.Image(), "label": hfds.ClassLabel(names=["a", "b", "c"])})
    hfds.Dataset.from_dict(rows, features=feats).to_parquet(str(tmp_path / "t.parquet"))
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - {id: pq, source: {type: parquet, data_files: {train: %s}}, classes: [1, 2], test_split: null}\n"
        % (tmp_path / "t.parquet"))
    ds = prepare(load_registry([tmp_path]).dataset("pq"))
    assert sum(len(s) for s in ds.splits.values()) == labels.count(1) + labels.count(2)  # not the unlabelled too


def test_a_class_the_source_lacks_is_named(tmp_path):
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: d, source: {type: builtin, name: lfw-subset}, classes: [0, 5]}\n")
    with pytest.raises(ZooSurveyError, match=r"dataset 'd': field 'classes': \[5\] are not labels of the source \(its labels are 0..1\)"):
        prepare(load_registry([tmp_path]).dataset("d"))


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_shipped_fashion_mnist_halves_split_the_classes():
    a, b = prepare(REG.dataset("fashion-mnist-a")), prepare(REG.dataset("fashion-mnist-b"))
    assert a.class_names + b.class_names == prepare(REG.dataset("fashion-mnist")).class_names
    for ds in (a, b):
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 24000, "val": 6000, "test": 5000}
        assert set(ds.splits["test"].labels.tolist()) == {0, 1, 2, 3, 4}
    assert a.fingerprint != b.fingerprint


def test_an_image_edited_in_place_with_its_mtime_kept_is_new_data(tmp_path):
    # issue 21: a local folder was keyed by datasets' fingerprint of paths and modification times, so an image
    # replaced with its mtime kept (touch -r, rsync -t, cp -p) reused stale pixels and features: a silent wrong answer
    from PIL import Image

    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.bmp")
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: mini, source: {type: imagefolder, path: pets}, num_classes: 2}\n")
    spec = load_registry([tmp_path]).dataset("mini")
    before = prepare(spec).fingerprint
    assert prepare(spec).fingerprint == before  # nothing changed: the same key
    img = root / "test" / "dog" / "2.bmp"
    st = img.stat()
    data = bytearray(img.read_bytes())
    data[-1] ^= 0xFF  # one pixel value: same size, still a valid image
    img.write_bytes(bytes(data))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time put back
    assert img.stat().st_mtime_ns == st.st_mtime_ns and img.stat().st_size == st.st_size
    assert prepare(spec).fingerprint != before  # in this same process too: the hash memo keys on ctime and inode


def test_digits_and_lfw_are_read_from_the_packages_files_as_their_loaders_read_them():
    """The built-ins are read from the files scikit-learn and scikit-image ship, without importing either
    (a cached run needs neither): the same images, labels and so the same fingerprints as their loaders give."""
    from skimage.data import lfw_subset
    from sklearn.datasets import load_digits

    from zoo_survey.data.datasets import _digits, _lfw_subset, package_data

    assert package_data("sklearn", "datasets", "data", "digits.csv.gz") is not None
    splits, fp, names, revision = _digits()
    images, labels = splits["train"]
    d = load_digits()
    np.testing.assert_array_equal(images.array, np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(labels, d.target)
    assert names == tuple(str(n) for n in d.target_names) and fp == "cc60545fa7fa1a8c" and revision == f"data:{fp}"
    splits, fp, _, _ = _lfw_subset()
    np.testing.assert_array_equal(splits["train"][0].array, np.clip(lfw_subset() * 255.0, 0, 255).astype(np.uint8))
    assert package_data("no_such_package_here", "x") is None and package_data("sklearn", "nope.csv") is None


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_images_are_read_only_when_asked_for():
    """Preparing Fashion-MNIST reads its labels and the images' header: a fully cached run decompresses no image."""
    from zoo_survey.data.datasets import IdxImages, _read_idx

    ds = prepare(REG.dataset("fashion-mnist"), max_train=1000, max_test=500)
    images = ds.splits["test"].images
    assert isinstance(images, IdxImages) and images._array is None and len(images) == 10_000
    row = int(ds.splits["test"].indices[3])
    np.testing.assert_array_equal(np.asarray(ds.splits["test"].images.raw(row)),
                                  _read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[row])
    assert images._array is not None and ds.splits["test"].image(3).mode == "RGB"
