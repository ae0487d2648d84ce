"""Datasets: a ``DatasetSpec`` -> train / val / test splits of images with integer labels.

Splits follow the dataset's official train/test. Where there is no validation split,
a stratified ``val_fraction`` of train is carved with a fixed seed; where there is no
test split, a stratified ``test_fraction`` is carved first. ``max_train`` / ``max_test``
subsample (stratified, seeded) before the validation split is carved, so
``max_train=2000`` means 1,600 train + 400 val and a refit on all 2,000.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..digests import arrays_digest, file_sha256, string_digest
from ..errors import ZooSurveyError, ZooSurveyException, ZooSurveyFailure
from ..sources.datasets import HFSource
from ..zoo.hub import hub_call
from ..zoo.registry import DatasetSpec

SPLIT_SEED = 0  # fixed: every model and every run sees the same split
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class Images(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...  # a PIL image, RGB
    def raw(self, i: int) -> Any: ...  # the PIL image in its own mode (the pixel cache keeps grayscale as one channel)
    def encoded(self, i: int) -> bytes | None: ...  # the image file's bytes, undecoded; None when the source has none


@dataclass(frozen=True)
class Split:
    """One split: an image source, the selected positions in it, and their labels."""

    name: str
    images: Images
    indices: np.ndarray  # positions in `images`
    labels: np.ndarray  # int64, aligned with `indices`

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, row: int):
        """The RGB PIL image of row ``row`` of this split."""
        return self.images[int(self.indices[row])]

    def indices_digest(self) -> str:
        return arrays_digest(np.asarray(self.indices, dtype=np.int64))


@dataclass(frozen=True)
class PreparedDataset:
    spec: DatasetSpec
    fingerprint: str  # identifies the underlying data (file hashes, or HF fingerprint + revision)
    splits: dict[str, Split]
    class_names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = field(default=())
    revision: str = ""  # hub datasets: the resolved commit; others: "data:<fingerprint>"


# --------------------------------------------------------------------------- sources


class ArrayImages:
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3); converted to RGB PIL on access."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):
        return self.raw(i).convert("RGB")

    def raw(self, i: int):
        from PIL import Image

        return Image.fromarray(self.array[i])

    def encoded(self, i: int) -> bytes | None:
        return None  # decoded arrays: no file to hand over


class SubsetImages:
    """Positions ``positions`` of another image source, as a source of their own (a class subset)."""

    def __init__(self, images: Images, positions: np.ndarray):
        self.images, self.positions = images, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        return self.images[int(self.positions[i])]

    def raw(self, i: int):
        return self.images.raw(int(self.positions[i]))

    def encoded(self, i: int) -> bytes | None:
        return self.images.encoded(int(self.positions[i]))


class HFImages:
    """Images from a column of a Hugging Face ``datasets.Dataset``; any PIL mode becomes RGB."""

    def __init__(self, ds, column: str):
        self.ds, self.column = ds, column
        self._files = None  # the same rows with the image column undecoded, made on first use

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.raw(i).convert("RGB")

    def raw(self, i: int):
        """The image as ``datasets`` decodes it (EXIF orientation applied), in its own mode."""
        return self.ds[int(i)][self.column]

    def encoded(self, i: int) -> bytes | None:
        """The stored file bytes (parquet / hub copies), or the file's bytes (image folders); None when the
        column is not an image column."""
        import datasets as hfds

        if self._files is None:
            if not isinstance(self.ds.features.get(self.column), hfds.Image):
                return None
            self._files = self.ds.cast_column(self.column, hfds.Image(decode=False))
        value = self._files[int(i)][self.column]  # type: ignore[index]  # set just above
        if value.get("bytes"):
            return bytes(value["bytes"])
        return Path(value["path"]).read_bytes() if value.get("path") else None


# What a source loads: its splits as (images, labels), a fingerprint, class names, and a revision.
Raw = tuple[dict[str, tuple[Images, np.ndarray]], str, "tuple[str, ...] | None", str]


def package_data(package: str, *parts: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package (importing scikit-learn
    for its digits would cost a second of a cached run); None when the package or the file is not there."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (found.submodule_search_locations or []) if found is not None else []:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    return None


def _digits() -> Raw:
    path = package_data("sklearn", "datasets", "data", "digits.csv.gz")
    if path is not None:  # what load_digits() reads, read as it reads it: 1,797 rows of 64 pixels and the digit
        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        raw_images, raw_target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)
    else:  # a scikit-learn that ships its digits elsewhere
        from sklearn.datasets import load_digits

        d = load_digits()
        raw_images, raw_target = d.images, d.target
    images = np.clip(raw_images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = raw_target.astype(np.int64)
    fp = arrays_digest(images, labels)
    return {"train": (ArrayImages(images), labels)}, fp, tuple(str(n) for n in range(10)), f"data:{fp}"


def _lfw_subset() -> Raw:
    path = package_data("skimage", "data", "lfw_subset.npy")
    if path is not None:  # what skimage.data.lfw_subset() loads, without importing scikit-image
        faces = np.load(path, allow_pickle=False)
    else:
        from skimage.data import lfw_subset

        faces = lfw_subset()
    # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
    images = np.clip(faces * 255.0, 0, 255).astype(np.uint8)
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    fp = arrays_digest(images, labels)
    return {"train": (ArrayImages(images), labels)}, fp, ("non-face", "face"), f"data:{fp}"


_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ZooSurveyFailure(f"{path} is not an idx file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ZooSurveyFailure(f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape)


def _idx_shape(path: Path) -> tuple[int, ...]:
    """An idx file's shape, from its header alone (a few bytes decompressed)."""
    with gzip.open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise ZooSurveyFailure(f"{path} is not an idx file of unsigned bytes")
        zero, dtype, ndim = struct.unpack(">HBB", head)
        dims = f.read(4 * ndim)
    if zero != 0 or dtype != 0x08 or len(dims) != 4 * ndim:
        raise ZooSurveyFailure(f"{path} is not an idx file of unsigned bytes")
    return struct.unpack(">" + "I" * ndim, dims)


class IdxImages(ArrayImages):
    """An idx file's images, decompressed on first access: a run whose features are all cached never reads them
    (Fashion-MNIST's 47 MB are a third of a second)."""

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            array = _read_idx(self.path)
            if len(array) != self.count:
                raise ZooSurveyFailure(f"{self.path} changed while in use: {len(array)} images, {self.count} before")
            self._array = array
        return self._array

    @array.setter
    def array(self, value: np.ndarray) -> None:
        self._array = value

    def __len__(self) -> int:
        return self.count


def _fashion_mnist(folder: Path | None) -> Raw:
    folder = folder or FASHION_MNIST_DIR
    missing = [n for pair in _FASHION_FILES.values() for n in pair if not (folder / n).is_file()]
    if missing:
        raise ZooSurveyError(
            f"dataset 'fashion-mnist': {', '.join(missing)} not found in {folder}; install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or on a machine with internet add an "
            "hf entry (path: zalando-datasets/fashion_mnist) to a user registry, or leave it out of 'datasets'",
            param="datasets",
        )
    splits: dict[str, tuple[Images, np.ndarray]] = {}
    for split, (img_name, lab_name) in _FASHION_FILES.items():
        shape, labels = _idx_shape(folder / img_name), _read_idx(folder / lab_name).astype(np.int64)
        if len(shape) != 3 or shape[0] != len(labels):
            raise ZooSurveyFailure(f"{folder}: {img_name} has {shape[0]} images but {lab_name} {len(labels)} labels")
        splits[split] = (IdxImages(folder / img_name, shape[0]), labels)
    fp = string_digest("".join(file_sha256(folder / n) for p in _FASHION_FILES.values() for n in p))
    return splits, fp, FASHION_CLASSES, f"data:{fp}"


def read_with_datasets(spec: DatasetSpec, open_: Callable[[Any], tuple[Any, str, str | None]],
                       files: Callable[[], Sequence[Path]] | None = None) -> Raw:
    """A source read with the ``datasets`` library: ``open_(datasets)`` gives ``(DatasetDict, ident, revision)``
    (``ident`` names the data in the fingerprint; ``revision`` is a hub commit, or None for local files); the
    entry's splits and columns are checked and read here. ``files``: the local files the data comes from, whose
    bytes then key it (:func:`content_digest`), not ``datasets``' fingerprint of their paths and modification times."""
    import datasets as hfds

    try:
        dd, ident, revision = open_(hfds)
    except ZooSurveyException:
        raise
    except FileNotFoundError as e:
        raise ZooSurveyError(f"{spec.defined_in}: dataset {spec.id!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - the datasets library raises many types for "cannot load"
        raise ZooSurveyFailure(f"dataset {spec.id!r}: cannot load ({type(e).__name__}: {e})") from e
    wanted = [s for s in (spec.train_split, spec.val_split, spec.test_split) if s]
    for s in wanted:
        if s not in dd:
            raise ZooSurveyError(
                f"{spec.defined_in}: dataset {spec.id!r}: split {s!r} not found; the data has {sorted(dd)}"
            )
    first = dd[wanted[0]]
    for col in (spec.image_column, spec.label_column):
        if col not in first.column_names:
            raise ZooSurveyError(
                f"{spec.defined_in}: dataset {spec.id!r}: column {col!r} not found; columns are {first.column_names}"
            )
    feat = first.features[spec.label_column]
    names = tuple(str(n) for n in feat.names) if hasattr(feat, "names") else None
    splits: dict[str, tuple[Images, np.ndarray]] = {
        s: (HFImages(dd[s], spec.image_column), _labels(spec, s, dd[s][spec.label_column])) for s in wanted
    }
    # A hub commit names the data exactly; local files are named by datasets' fingerprint of them
    # (not used for hub snapshots: it depends on where the cache lies, which a copy changes).
    if revision:
        content = "".join(wanted)
    elif files is not None:
        content = "".join(wanted) + ":bytes:" + content_digest(files())
    else:
        content = "".join(dd[s]._fingerprint for s in wanted)
    # Which columns are the image and the label changes the data (a label_column edit must not reuse cached labels);
    # named only when not the defaults, so the fingerprints of entries that keep them are as they were.
    defaults = tuple(type(spec).model_fields[f].default for f in ("image_column", "label_column"))
    columns = "" if (spec.image_column, spec.label_column) == defaults else f":{spec.image_column}/{spec.label_column}"
    fp = string_digest(ident + columns + content)
    return splits, fp, names, revision or f"data:{fp}"


def content_digest(files: Sequence[Path]) -> str:
    """A digest of local data files' bytes and names (relative to their common folder), so an image edited in place
    with its modification time kept is new data. Each file is hashed once per (path, size, mtime, ctime, inode) in
    a process (:func:`~zoo_survey.digests.file_sha256`)."""
    paths = sorted(Path(f) for f in files)
    if not paths:
        return string_digest("no files")
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return string_digest("\n".join(f"{p.relative_to(common)}:{file_sha256(p)}" for p in paths))


def _labels(spec: DatasetSpec, split: str, values: Any) -> np.ndarray:
    """A label column as int64; rows without a label (an image folder without class subfolders) are refused."""
    values = list(values)
    missing = sum(v is None for v in values)
    if missing:
        layout = spec.source.label_hint
        raise ZooSurveyError(
            f"{spec.defined_in}: dataset {spec.id!r}: split {split!r} has {missing:,} of {len(values):,} images without a "
            f"label in column {spec.label_column!r}{layout}; a classification dataset needs a label on every image"
        )
    return np.asarray(values, dtype=np.int64)


def hub_snapshot(spec: DatasetSpec, offline: bool = False) -> tuple[Path, str]:
    """Download (or find in the HF hub cache) a hub dataset repo at its pinned revision: (folder, commit).

    The files go through ``huggingface_hub`` into the same cache as model weights, so
    ``zoo-survey prefetch`` fills it on a machine with internet and ``--offline`` reads it
    back; the commit is recorded with every result and is part of the cache key.
    """
    from huggingface_hub import snapshot_download

    src = spec.source
    if not isinstance(src, HFSource):
        raise TypeError(f"dataset {spec.id!r} is not a hub dataset")
    where = f"dataset {spec.id!r} (hub dataset {src.path!r}{'@' + src.revision if src.revision else ''})"
    folder = hub_call(
        where, "the dataset files", src.path, src.revision, offline,
        lambda: snapshot_download(src.path, repo_type="dataset", revision=src.revision, local_files_only=offline),
        repo_type="dataset",
    )
    return Path(folder), Path(folder).name  # the hub cache's snapshots/<commit> folder


def _load_raw(spec: DatasetSpec, offline: bool = False) -> Raw:
    return spec.source.load(spec, offline)  # the entry's source type reads it (zoo_survey/sources/)


# --------------------------------------------------------------------------- splitting


# Not sklearn's train_test_split(stratify=): it takes the same class counts but other rows (another RNG use), which
# would change every split, cache key and row, and it refuses a class of one row, which this keeps.
def stratified_take(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``n`` positions of ``labels``, keeping class proportions; returns (taken, rest), sorted.

    Each class gets its proportional share (largest remainder), and at least one row
    when ``n`` allows, so a small validation split still sees every class.

    >>> take, rest = stratified_take(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 4, seed=0)
    >>> sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[take].tolist())
    [0, 0, 1, 1]
    """
    labels = np.asarray(labels)
    n = int(min(max(n, 0), len(labels)))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / max(len(labels), 1))
    share = np.floor(exact).astype(int)
    if n >= len(classes):
        share = np.maximum(share, np.minimum(1, counts))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if share.sum() >= n:
            break
        if share[i] < counts[i]:
            share[i] += 1
    while share.sum() > n:  # the at-least-one rule can overshoot: trim the largest shares
        share[np.argmax(share)] -= 1
    rng = np.random.default_rng(seed)
    taken = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, share, strict=True)]
    take = np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), take)
    return take.astype(np.int64), rest.astype(np.int64)


def prepare(
    spec: DatasetSpec, *, max_train: int | None = None, max_test: int | None = None, offline: bool = False
) -> PreparedDataset:
    """Load ``spec`` and return its train / val / test splits (see the module docstring).

    >>> ds = prepare(load_registry().dataset("digits"), max_train=200)   # doctest: +SKIP
    >>> {k: len(v) for k, v in ds.splits.items()}                        # doctest: +SKIP
    {'train': 160, 'val': 40, 'test': 450}
    """
    for name, v in (("max_train", max_train), ("max_test", max_test)):
        if v is not None and v < 2:
            raise ZooSurveyError(f"'{name}' must be at least 2, got {v}", param=name)
    raw, fingerprint, class_names, revision = _load_raw(spec, offline)
    _check_sizes(spec, raw, revision)
    notes: list[str] = []
    if spec.classes is not None:
        raw, fingerprint, class_names, revision = _keep_classes(spec, spec.classes, raw, fingerprint, class_names, revision)
        notes.append(f"classes {list(spec.classes)} of the source, renumbered 0..{len(spec.classes) - 1}")
    train_images, train_labels = raw[spec.train_split if spec.train_split in raw else "train"]
    train_pos = np.arange(len(train_labels))
    if spec.test_split is None:
        n_test = int(round(len(train_pos) * spec.test_fraction))
        test_pos, train_pos = stratified_take(train_labels, n_test, SPLIT_SEED)
        test_images, test_labels_all = train_images, train_labels
        notes.append(f"no official test split: carved a stratified {spec.test_fraction:.0%} of train (seed {SPLIT_SEED})")
    else:
        test_images, test_labels_all = raw[spec.test_split]
        test_pos = np.arange(len(test_labels_all))
    if max_train is not None and len(train_pos) > max_train:
        take, _ = stratified_take(train_labels[train_pos], max_train, SPLIT_SEED)
        train_pos = train_pos[take]
        notes.append(f"train subsampled to {max_train} (stratified, seed {SPLIT_SEED})")
    if max_test is not None and len(test_pos) > max_test:
        take, _ = stratified_take(test_labels_all[test_pos], max_test, SPLIT_SEED)
        test_pos = test_pos[take]
        notes.append(f"test subsampled to {max_test} (stratified, seed {SPLIT_SEED})")
    if spec.val_split is None:
        n_val = max(int(round(len(train_pos) * spec.val_fraction)), 1)
        val_take, train_take = stratified_take(train_labels[train_pos], n_val, SPLIT_SEED + 1)
        val_pos, train_pos = train_pos[val_take], train_pos[train_take]
        val_images, val_labels_all = train_images, train_labels
        notes.append(f"no official validation split: carved a stratified {spec.val_fraction:.0%} of train")
    else:
        val_images, val_labels_all = raw[spec.val_split]
        val_pos = np.arange(len(val_labels_all))
    splits = {
        "train": Split("train", train_images, train_pos, train_labels[train_pos]),
        "val": Split("val", val_images, val_pos, val_labels_all[val_pos]),
        "test": Split("test", test_images, test_pos, test_labels_all[test_pos]),
    }
    _check_labels(spec, splits)
    return PreparedDataset(spec, fingerprint, splits, class_names, tuple(notes), revision)


def _keep_classes(spec: DatasetSpec, classes: tuple[int, ...], raw: dict[str, tuple[Images, np.ndarray]], fingerprint: str,
                  class_names: tuple[str, ...] | None, revision: str) -> Raw:
    """Only the images of ``classes``, labels renumbered 0..k-1 in that order; the fingerprint names the subset
    (a survey on a subset never shares cache entries or rows with the whole dataset)."""
    present = np.unique(np.concatenate([labels for _, labels in raw.values()]))
    absent = [c for c in classes if c not in set(present.tolist())]
    if absent:
        raise ZooSurveyError(
            f"{spec.defined_in}: dataset {spec.id!r}: field 'classes': {absent} are not labels of the source "
            f"(its labels are {present.min()}..{present.max()}); fix 'classes'"
        )
    lookup = np.full(int(present.max()) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    out: dict[str, tuple[Images, np.ndarray]] = {}
    for name, (images, labels) in raw.items():
        keep = np.flatnonzero((labels >= 0) & (lookup[np.maximum(labels, 0)] >= 0))  # -1: unlabelled, in no class
        out[name] = (SubsetImages(images, keep), lookup[labels[keep]])
    fp = string_digest(f"{fingerprint}:classes:{','.join(map(str, classes))}")
    names = tuple(class_names[c] for c in classes) if class_names and max(classes) < len(class_names) else None
    return out, fp, names, revision if not revision.startswith("data:") else f"data:{fp}"


def _check_sizes(spec: DatasetSpec, raw: dict, revision: str) -> None:
    """The loaded splits against the entry's ``split_sizes``: a dataset that changed under its name stops here."""
    for name, expected in (spec.split_sizes or {}).items():
        found = len(raw[name][1]) if name in raw else None
        if found != expected:
            what = f"has {found:,} rows" if found is not None else f"is not among the loaded splits {sorted(raw)}"
            raise ZooSurveyFailure(
                f"{spec.defined_in}: dataset {spec.id!r}: split {name!r} {what}, but the entry was checked at "
                f"{expected:,} (field 'split_sizes'; loaded revision {revision}); the data changed under this name: "
                "pin source.revision to the commit you checked, or check the new copy and update split_sizes"
            )


def _check_labels(spec: DatasetSpec, splits: dict[str, Split]) -> None:
    for s in splits.values():
        if len(s) == 0:
            raise ZooSurveyError(f"dataset {spec.id!r}: split {s.name!r} is empty")
        lo, hi = int(s.labels.min()), int(s.labels.max())
        if lo < 0 or hi >= spec.num_classes:
            raise ZooSurveyError(
                f"{spec.defined_in}: dataset {spec.id!r}: field 'num_classes' is {spec.num_classes} but split "
                f"{s.name!r} has labels in [{lo}, {hi}]; fix num_classes or label_column"
            )

