"""The registry family a trained zoo becomes: one YAML file beside its weights, validated by the registry itself.

The file is an ordinary family (docs/registry.md): CAT1 is the ``baseline``, each CAT-k
is a named ensemble (``cat2``, ``cat4``, ...), the wide single is the one-member
ensemble ``wide``, and every entry records how it was trained under ``pretrain:``
(``steps``, ``images_seen``, ``seed``), so ``zoo-survey run --members cat4`` and
``--strategy budget --budget-by pretrain`` compare at equal pretraining cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..zoo.add import check_and_write
from ..zoo.budgets import round_sig
from ..zoo.registry import SHIPPED_REGISTRY, FamilySpec, check_weight_files, load_files, registry_files
from .budget import ZooPlan
from .trainer import ModelFacts, Recipe


def family_document(plan: ZooPlan, dataset: str, recipe: Recipe, facts: Mapping[str, ModelFacts],
                    weights_folder: str) -> dict[str, Any]:
    """The family as a YAML-ready mapping; ``facts`` by member id, weights paths relative to the YAML file."""
    base = facts[plan.baseline.id]
    entries = []
    for m in plan.members:
        f = facts[m.id]
        entry: dict[str, Any] = {
            "id": m.id,
            "arch": m.arch,
            "source": {"type": "file", "path": f"{weights_folder}/{m.tag}.safetensors"},
        }
        if m.model_args:
            entry["model_args"] = json.loads(json.dumps(dict(m.model_args)))
        entry |= {
            "params_m": round_sig(f.params / 1e6, 6),
            "gmacs": round_sig(f.gmacs, 6),
            "feature_dim": f.feature_dim,
            "pretrain": {"steps": m.steps, "images_seen": m.images_seen, "seed": m.seed},
        }
        if (f.mean, f.std) != (base.mean, base.std):
            entry["preprocess"] = {"mean": list(f.mean), "std": list(f.std)}
        entries.append(entry)
    groups = ", ".join(f"{g} ({len(ids)} x {plan.steps // len(ids) if g != 'wide' else plan.steps:,} steps)"
                       for g, ids in plan.ensembles.items())
    return {
        "family": plan.family,
        "description": (f"Time-Cat zoo trained by zoo-survey {__version__} on {dataset}: one budget of {plan.steps:,} "
                        f"steps x {plan.batch_size} images, as CAT1 (the baseline) and {groups}"),
        "baseline": plan.baseline.id,
        "defaults": {
            "input_size": recipe.image_size,
            # Extraction sees the pixels training saw (less augmentation): the same resize, no crop, the same normalization.
            "preprocess": {"input_size": recipe.image_size, "interpolation": recipe.interpolation, "crop_pct": 1.0,
                           "crop_mode": "center", "mean": list(base.mean), "std": list(base.std)},
            "pretrain": {"data": dataset, "recipe": recipe.describe(plan.batch_size)},
        },
        "checkpoints": entries,
        "ensembles": {k: list(v) for k, v in plan.ensembles.items()},
    }


HEADER = ("# Written by `zoo-survey pretrain`; survey it with\n"
          "#   zoo-survey run -r {folder} -f {family} --members cat2\n"
          "#   zoo-survey run -r {folder} -f {family} -k 4 --strategy budget --budget-by pretrain\n")


def write_family(path: Path, document: Mapping[str, Any]) -> FamilySpec:
    """Validate the family YAML with the whole registry (shipped, ``$ZOO_SURVEY_REGISTRY`` and the families already
    in its folder, so a colliding id is caught before anything is written), write it atomically, and check its
    weight files; returns the parsed family."""
    text = HEADER.format(folder=path.parent, family=document["family"]) + yaml.safe_dump(
        dict(document), sort_keys=False, width=120, default_flow_style=None)
    check_and_write(path, text, [path.parent])
    reg = load_files(registry_files([SHIPPED_REGISTRY], [path]))
    check_weight_files(reg)
    return reg.family(str(document["family"]))
