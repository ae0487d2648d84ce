"""``zoo-survey pretrain`` as a library call: check every input, decode the data once, train each member, write the family.

>>> plan = plan_zoo("test_resnet", cats=(1, 2, 4), steps=400, batch_size=64)           # doctest: +SKIP
>>> report = pretrain(plan, reg.dataset("fashion-mnist-a"), Recipe(), Path("zoo"))      # doctest: +SKIP
>>> report.yaml                                                                          # doctest: +SKIP
PosixPath('zoo/timecat-test_resnet.yaml')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.datasets import prepare
from ..zoo.registry import DatasetSpec, FamilySpec
from .budget import ZooPlan
from .data import TrainingData, load_training_data
from .family import family_document, write_family
from .trainer import ModelFacts, Recipe, TrainHooks, model_facts, train_member


@dataclass
class PretrainReport:
    """What a pretraining call did: the family file, every member's record, which were trained now."""

    family: FamilySpec
    yaml: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def check_zoo(plan: ZooPlan, recipe: Recipe, num_classes: int) -> dict[str, ModelFacts]:
    """Before any data is read: the recipe's values, and every member's architecture and kwargs built once (an unknown
    arch, a kwarg timm refuses, a resolution the model cannot take); returns each member's counted facts."""
    recipe.check()
    built: dict[str, ModelFacts] = {}
    out = {}
    for m in plan.members:
        key = json.dumps([m.arch, dict(m.model_args)], sort_keys=True, default=str)
        if key not in built:
            built[key] = model_facts(m.arch, m.model_args, num_classes, recipe.image_size)
        out[m.id] = built[key]
    return out


def pretrain(
    plan: ZooPlan,
    dataset: DatasetSpec,
    recipe: Recipe,
    out: Path,
    *,
    device: str = "cpu",
    max_train: int | None = None,
    eval_max: int | None = 2000,
    offline: bool = False,
    checkpoint_every: int = 100,
    hooks: TrainHooks | None = None,
    data: TrainingData | None = None,
) -> PretrainReport:
    """Train every member of ``plan`` on ``dataset``'s train split (resuming where a previous call stopped) and write
    ``<out>/<family>.yaml`` with the weights in ``<out>/<family>/``. ``data``: already decoded (several zoos, one decode)."""
    facts = check_zoo(plan, recipe, dataset.num_classes)
    if data is None:
        ds = prepare(dataset, max_train=max_train, offline=offline)
        data = load_training_data(ds, recipe.image_size, recipe.interpolation, eval_max)
    folder = Path(out) / plan.family
    report_records: dict[str, dict[str, Any]] = {}
    trained: list[str] = []
    skipped: list[str] = []
    for m in plan.members:
        record, now = train_member(m, recipe, data, facts[m.id], folder, device=device, checkpoint_every=checkpoint_every,
                                   hooks=hooks)
        report_records[m.id] = record
        (trained if now else skipped).append(m.id)
    yaml_path = Path(out) / f"{plan.family}.yaml"
    family = write_family(yaml_path, family_document(plan, dataset.id, recipe, facts, plan.family))
    return PretrainReport(family, yaml_path, report_records, trained, skipped)
