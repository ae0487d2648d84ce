"""The built-in dataset source types: ``builtin``, ``hf``, ``imagefolder`` and ``parquet`` (one class each)."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import field_validator

from ..errors import ZooSurveyError
from .base import DatasetSource

if TYPE_CHECKING:
    from ..data.datasets import Raw
    from ..zoo.registry import DatasetSpec


class BuiltinSource(DatasetSource):
    """Datasets that need no network: scikit-learn's digits, scikit-image's LFW subset, Debian's Fashion-MNIST."""

    type: Literal["builtin"]
    name: Literal["digits", "lfw-subset", "fashion-mnist"]
    path: Path | None = None  # fashion-mnist: folder of the idx .gz files
    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    confined: ClassVar[bool] = False  # builtin paths (e.g. /usr/share/datasets) are exempt

    def load(self, spec: DatasetSpec, offline: bool = False) -> Raw:
        from ..data import datasets as d

        if self.name == "digits":
            return d._digits()
        if self.name == "lfw-subset":
            return d._lfw_subset()
        return d._fashion_mnist(self.path)


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class HFSource(DatasetSource):
    """A Hugging Face ``datasets`` dataset on the hub (``path``) with an optional config and pinned revision."""

    type: Literal["hf"]
    path: str
    name: str | None = None
    revision: str | None = None

    @field_validator("path")
    @classmethod
    def _a_repo_id(cls, v: str) -> str:
        """A hub repo id, never a local path: local data goes through the confined imagefolder / parquet sources."""
        if not _REPO_ID.fullmatch(v) or ".." in v:
            raise ValueError("expected a hub dataset repo id such as 'owner/name'; a local folder or file is an "
                             "'imagefolder' or 'parquet' source")
        return v

    def load(self, spec: DatasetSpec, offline: bool = False) -> Raw:
        from ..data.datasets import hub_snapshot, read_with_datasets

        def open_(hfds: Any) -> tuple[Any, str, str | None]:
            local, revision = hub_snapshot(spec, offline)
            return hfds.load_dataset(str(local), self.name), f"{self.path}:{self.name}@{revision}", revision

        return read_with_datasets(spec, open_)

    def local_folder(self, spec: DatasetSpec) -> Path | None:
        from ..data.datasets import hub_snapshot

        return hub_snapshot(spec, offline=True)[0]


class ImageFolderSource(DatasetSource):
    """A local folder ``<path>/<split>/<class>/<image>`` read with ``datasets``' imagefolder builder."""

    type: Literal["imagefolder"]
    path: Path
    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    label_hint: ClassVar[str] = " (an image folder needs a subfolder per class: <path>/<split>/<class>/<image>)"

    def load(self, spec: DatasetSpec, offline: bool = False) -> Raw:
        from ..data.datasets import read_with_datasets

        def open_(hfds: Any) -> tuple[Any, str, str | None]:
            if not self.path.is_dir():
                raise ZooSurveyError(f"{spec.defined_in}: dataset {spec.id!r}: field 'source.path': {self.path} is not a folder")
            return hfds.load_dataset("imagefolder", data_dir=str(self.path)), f"imagefolder:{self.path}", None

        return read_with_datasets(spec, open_, files=lambda: [p for p in self.path.rglob("*") if p.is_file()])


def _pattern_paths(pattern: str) -> list[Path]:
    """The paths a glob ``pattern`` can reach, for the confinement check: the pattern with each wildcard part taken
    as a plain folder name (so ``dir/*/../../outside/x.parquet`` is checked as the ``outside`` it climbs to, however
    the folders below are named), and every file it matches now."""
    parts = Path(pattern).parts
    lexical = Path(*(("_" if re.search(r"[*?\[]", part) else part) for part in parts)) if parts else Path(".")
    return [lexical] + [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]


class ParquetSource(DatasetSource):
    """Local parquet files per split, e.g. ``{train: data/train-*.parquet, test: data/test.parquet}``."""

    type: Literal["parquet"]
    data_files: dict[str, str]

    @classmethod
    def localize(cls, raw: dict[str, Any], yaml_file: Path) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
        confine = []
        if isinstance(raw.get("data_files"), dict):
            for split, pattern in raw["data_files"].items():
                if isinstance(pattern, str) and "://" not in pattern:  # datasets reads it from the working folder
                    confine += [(f"source.data_files.{split}", p) for p in _pattern_paths(os.path.expanduser(pattern))]
        return raw, confine

    def load(self, spec: DatasetSpec, offline: bool = False) -> Raw:
        from ..data.datasets import read_with_datasets

        def open_(hfds: Any) -> tuple[Any, str, str | None]:
            return (hfds.load_dataset("parquet", data_files=self.data_files),
                    f"parquet:{sorted(self.data_files.items())}", None)

        def files() -> list[Path]:
            return [Path(m) for pattern in self.data_files.values() if "://" not in pattern
                    for m in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(m).is_file()]

        return read_with_datasets(spec, open_, files=files)
