"""Budgets counted, not copied: params, GMACs and feature width of a registry entry, offline, from timm.

The network is built on torch's meta device, so nothing is allocated and nothing is
downloaded: a ViT-g costs as little as a ResNet-18. torch's flop counter then runs one
forward of a meta tensor. Both give the same numbers as a model built on the CPU (every
shipped architecture was compared), in a fraction of the time.

An entry of a timm pretrained tag is counted with that tag's head (``num_classes`` of its
pretrained config: 1000 for ImageNet-1k tags, 512 for CLIP ViT-B's image-text projection,
0 for a headless DINOv2); any other entry with its architecture's default head.

>>> count("resnet50", 224)                     # doctest: +SKIP
Budget(params_m=25.56, gmacs=4.09, feature_dim=2048, input_size=224)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ZooSurveyError, did_you_mean
from .checkpoints import create_model, feature_output_from
from .flops import count_gmacs
from .registry import CheckpointSpec


@dataclass(frozen=True)
class Budget:
    """What a registry entry states about its cost, rounded as the registry writes it."""

    params_m: float  # millions, 2 decimals
    gmacs: float  # GMACs of one forward at input_size, 3 significant digits
    feature_dim: int
    input_size: int


def round_sig(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (4.1059 -> 4.11, 0.38512 -> 0.385)."""
    if x == 0:
        return 0.0
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def timm_tag(spec: CheckpointSpec) -> str | None:
    """The timm pretrained tag whose weights an entry names (a ``timm`` source, or an ``hf-hub`` repo of the
    ``timm`` organisation), or None."""
    return spec.source.timm_tag(spec)


@functools.lru_cache(maxsize=None)
def _pretrained_tags() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


def is_pretrained_tag(name: str) -> bool:
    return name in _pretrained_tags()


def pretrained_cfg(tag: str) -> dict:
    """timm's pretrained config of ``tag`` as a dict (an unknown tag: the error names close ones)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(tag) if is_pretrained_tag(tag) else None
    if cfg is None:
        raise ZooSurveyError(f"timm {timm.__version__} has no pretrained tag {tag!r}; {did_you_mean(tag, _pretrained_tags())}")
    return cfg.to_dict()


@functools.lru_cache(maxsize=None)
def _count(arch: str, num_classes: int | None, input_size: int, feature_output: str) -> Budget:
    import torch

    where = f"counting {arch!r} at {input_size} px"
    head = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        model = create_model(arch, input_size, where, **head).eval().requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    seen = {}

    def forward(x):  # timm's forward, keeping the feature map: one forward gives both counts (meta ops are slow)
        seen["f"] = model.forward_features(x)
        return model.forward_head(seen["f"])

    gmacs = count_gmacs(forward, input_size, device="meta")
    with torch.inference_mode():
        width = feature_output_from(model, seen["f"], feature_output).shape[-1]
    return Budget(round(params / 1e6, 2), round_sig(gmacs), int(width), input_size)


def is_timm_entry(spec: CheckpointSpec) -> bool:
    """Whether ``spec``'s weights are a timm pretrained tag, so that timm alone says what its head is."""
    tag = timm_tag(spec)
    return tag is not None and is_pretrained_tag(tag)


def count(arch: str, input_size: int, *, tag: str | None = None, feature_output: str = "pre_logits") -> Budget:
    """Params (M), GMACs of one forward at ``input_size`` and the width of ``feature_output`` of ``arch``, built with
    the head of timm pretrained ``tag`` when given (else the architecture's default). Memoised."""
    num_classes = int(pretrained_cfg(tag)["num_classes"]) if tag else None
    return _count(arch, num_classes, input_size, feature_output)


def count_entry(spec: CheckpointSpec) -> Budget:
    """``spec``'s budget, counted at the resolution its ``input_size`` states."""
    tag = timm_tag(spec)
    return count(spec.arch, spec.input_size, tag=tag if tag and is_pretrained_tag(tag) else None,
                 feature_output=spec.feature_output)


def expected_input_size(spec: CheckpointSpec) -> int | None:
    """The resolution ``spec``'s GMACs should be counted at: its ``preprocess.input_size`` when it pins one,
    else the train-time ``input_size`` of its timm tag's config; None when neither is known."""
    if spec.preprocess.input_size is not None:
        return spec.preprocess.input_size
    tag = timm_tag(spec) or spec.id
    return int(pretrained_cfg(tag)["input_size"][-1]) if is_pretrained_tag(tag) else None


@dataclass(frozen=True)
class Drift:
    """A field of a registry entry that disagrees with its recount."""

    spec: CheckpointSpec
    field: str
    registry: float
    counted: float

    def __str__(self) -> str:
        return (f"{self.spec.defined_in}: checkpoint {self.spec.id!r}: field {self.field!r} is {self.registry:g}, "
                f"but timm counts {self.counted:g}")


def drift(spec: CheckpointSpec, rel_tol: float = 0.01) -> list[Drift]:
    """Each of ``params_m``, ``gmacs`` (relative tolerance ``rel_tol``), ``feature_dim`` and ``input_size``
    (exact) that differs from what timm counts for ``spec``."""
    got = count_entry(spec)
    out = [Drift(spec, f, getattr(spec, f), getattr(got, f)) for f in ("params_m", "gmacs")
           if not math.isclose(getattr(spec, f), getattr(got, f), rel_tol=rel_tol)]
    if spec.feature_dim != got.feature_dim:
        out.append(Drift(spec, "feature_dim", spec.feature_dim, got.feature_dim))
    size = expected_input_size(spec)
    if size is not None and spec.input_size != size:
        out.append(Drift(spec, "input_size", spec.input_size, size))
    return out


def unknown_tags(specs: Iterable[CheckpointSpec]) -> list[ZooSurveyError]:
    """One error per entry whose weights name a timm tag that timm's pretrained list lacks."""
    import timm

    return [ZooSurveyError(f"{s.defined_in}: checkpoint {s.id!r}: timm {timm.__version__} has no pretrained tag "
                           f"{timm_tag(s)!r}; {did_you_mean(str(timm_tag(s)), _pretrained_tags())}")
            for s in specs if _names_unknown_tag(s)]


def check_registry(specs: Iterable[CheckpointSpec], recount: Iterable[CheckpointSpec] = (), rel_tol: float = 0.01) -> list[str]:
    """What ``registry validate`` flags: each entry of ``specs`` naming a tag timm lacks, and each field of the
    entries in ``recount`` that drifts from timm's count by more than ``rel_tol`` (one line each)."""
    lines = [str(e) for e in unknown_tags(specs)]
    todo = {s.id: s for s in recount}
    return lines + [str(d) for s in todo.values() if not _names_unknown_tag(s) for d in drift(s, rel_tol)]


def _names_unknown_tag(spec: CheckpointSpec) -> bool:
    tag = timm_tag(spec)
    return tag is not None and not is_pretrained_tag(tag)
