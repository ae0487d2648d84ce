"""``zoo-survey registry list / show / validate``: thin commands over :mod:`zoo_survey.zoo.registry`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from ..document import Table
from ..zoo.registry import Registry, check_weight_files, load_files, registry_files, registry_folders
from .app import console, registry_app
from .options import ListFormatOpt, RegistryOpt, open_registry
from .output import emit


def checkpoints_table(reg: Registry, families: list[str] | None = None) -> Table:
    rows = []
    for fam in reg.select_families(families) if families else reg.families.values():
        for c in fam.checkpoints:
            pre = " ".join(x for x in (c.pretrain.data, f"{c.pretrain.epochs} ep" if c.pretrain.epochs else None) if x)
            rows.append([fam.name, c.id, c.source.type, c.params_m, c.gflops, c.input_size, c.feature_dim, pre])
    return Table(("family", "id", "source", "params (M)", "GFLOPs", "input", "feature dim", "pretraining"), rows,
                 title="checkpoints")


def datasets_table(reg: Registry) -> Table:
    rows = []
    for d in reg.datasets.values():
        splits = "/".join(s for s in (d.train_split, d.val_split or "(carved val)", d.test_split or "(carved test)"))
        rows.append([d.id, d.source.type, d.num_classes, splits])
    return Table(("id", "source", "classes", "splits"), rows, title="datasets")


@registry_app.command("list")
def registry_list(
    registry: RegistryOpt = None,
    family: Annotated[Optional[list[str]], typer.Option("--family", "-f", help="Only these families' checkpoints.",
                                                        show_default=False)] = None,
    format: ListFormatOpt = None,
) -> None:
    """List families (with their checkpoints) and datasets.

    Piped, it prints TSV (every id whole), so `zoo-survey registry list | grep convnext_` finds every entry.
    """
    reg = open_registry(registry)
    tables = [checkpoints_table(reg, family)] + ([] if family else [datasets_table(reg)])
    emit(tables, console, format)


@registry_app.command("show")
def registry_show(
    id: Annotated[str, typer.Argument(help="A checkpoint id, family or dataset id.")],
    registry: RegistryOpt = None,
) -> None:
    """Show one checkpoint, family or dataset as YAML."""
    reg = open_registry(registry)
    obj: dict[str, Any]
    if id in reg.families:
        fam = reg.families[id]
        obj = {"family": fam.name, "files": [str(f) for f in fam.files], "baseline": fam.baseline,
               "checkpoints": [c.id for c in fam.checkpoints], "ensembles": {k: list(v) for k, v in fam.ensembles.items()}}
    elif id in reg.datasets:
        obj = reg.datasets[id].model_dump(mode="json")
    else:
        obj = reg.checkpoint(id).model_dump(mode="json")
    console.print(yaml.safe_dump(obj, sort_keys=False).rstrip(), highlight=False, markup=False, soft_wrap=True)


@registry_app.command("validate")
def registry_validate(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="YAML files or folders [default: every registry folder].",
                                                          show_default=False)] = None,
    registry: RegistryOpt = None,
) -> None:
    """Validate registry YAML (with the shipped registry, so duplicates are caught) and check local weight files exist."""
    files = registry_files(registry_folders(registry or ()), paths or ())
    reg = load_files(files)
    check_weight_files(reg)
    n_ck = sum(len(f.checkpoints) for f in reg.families.values())
    console.print(f"OK: {len(files)} file(s), {len(reg.families)} families, {n_ck} checkpoints, {len(reg.datasets)} datasets")
