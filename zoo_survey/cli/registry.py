"""``zoo-survey registry list / show / validate / add``: thin commands over :mod:`zoo_survey.zoo.registry`,
:mod:`zoo_survey.zoo.budgets` (recounts) and :mod:`zoo_survey.zoo.add`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from ..document import Table
from ..errors import ZooSurveyError
from ..zoo.add import add_tags, default_path
from ..zoo.budgets import check_registry, is_timm_entry
from ..zoo.registry import (
    SHIPPED_REGISTRY,
    Registry,
    check_weight_files,
    load_files,
    registry_files,
    registry_folders,
)
from .app import console, registry_app
from .options import ListFormatOpt, RegistryOpt, open_registry
from .output import emit, resolve_format, say


def checkpoints_table(reg: Registry, families: list[str] | None = None) -> Table:
    rows = []
    for fam in reg.select_families(families) if families else reg.families.values():
        for c in fam.checkpoints:
            pre = " ".join(x for x in (c.pretrain.data, f"{c.pretrain.epochs} ep" if c.pretrain.epochs else None) if x)
            size = (f"{c.download_gb:.2f} GB" if c.download_gb >= 1 else f"{c.download_gb * 1000:.0f} MB") + (
                " (heavy)" if c.heavy else "")
            rows.append([fam.name, c.id, c.source.type, c.params_m, c.gmacs, c.input_size, c.feature_dim, c.feature_output,
                         size, c.lineage, pre])
    return Table(("family", "id", "source", "params (M)", "GMACs", "input", "feature dim", "feature output",
                  "download (est.)", "lineage", "pretraining"), rows, title="checkpoints")


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
    fmt = resolve_format(format, console)
    tables = [checkpoints_table(reg, family)] + ([] if family else [datasets_table(reg)])
    emit(tables, console, fmt)
    specs = {c.id: c for f in (reg.select_families(family) if family else reg.families.values()) for c in f.checkpoints}
    heavy = sum(c.heavy for c in specs.values())
    say(f"{len(specs)} checkpoint(s), about {sum(c.download_gb for c in specs.values()):.1f} GB of weights to download "
        f"(estimated at 4 bytes a parameter); {heavy} heavy (over 1.5 GB: refused on a CPU unless --allow-heavy)", fmt)


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
        obj = {"family": fam.name, "kind": fam.kind, "files": [str(f) for f in fam.files], "baseline": fam.baseline,
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
    recount: Annotated[bool, typer.Option(
        "--recount/--no-recount", help="Recount params, GMACs and feature width from timm (offline, no weights) for "
        "the timm-tag entries of the given files and of the non-shipped folders (the shipped ones are checked by the "
        "tests; other entries' heads depend on weights, which validate does not read).")] = True,
) -> None:
    """Validate registry YAML (with the shipped registry, so duplicates are caught), check local weight files exist,
    that every timm tag named exists, and that the budgets agree with timm's count (within 1%).

    Example: zoo-survey registry validate my-models
    """
    files = registry_files(registry_folders(registry or ()), paths or ())
    reg = load_files(files)
    check_weight_files(reg)
    named = set(registry_files([], paths or ()))
    shipped = set(registry_files([SHIPPED_REGISTRY]))
    specs = list({c.id: c for f in reg.families.values() for c in f.checkpoints}.values())
    todo = [c for c in specs if recount and is_timm_entry(c) and (c.defined_in in named or c.defined_in not in shipped)]
    problems = check_registry(specs, todo)
    if problems:
        raise ZooSurveyError(f"{len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
                             + "\nfix the fields to timm's counts (or add the tags again with zoo-survey registry add)")
    n_ck = len(specs)
    console.print(f"OK: {len(files)} file(s), {len(reg.families)} families, {n_ck} checkpoints, {len(reg.datasets)} datasets"
                  + (f"; {len(todo)} recounted against timm" if recount else ""), soft_wrap=True)


@registry_app.command("add")
def registry_add(
    tags: Annotated[Optional[list[str]], typer.Argument(
        help="timm pretrained tags, arch.tag (an architecture alone: its default tag).", show_default=False)] = None,
    family: Annotated[str, typer.Option("--family", "-f", help="The family the entries join (the file's 'family:').")] = "",
    to: Annotated[Optional[Path], typer.Option(
        "--to", help="The family YAML file, created if missing [default: <family>.yaml in the first $ZOO_SURVEY_REGISTRY "
        "folder].", show_default=False)] = None,
    pattern: Annotated[Optional[str], typer.Option(
        help="Also every timm pretrained tag matching this (wildcards * and ?).", show_default=False)] = None,
    registry: RegistryOpt = None,
) -> None:
    """Add timm pretrained tags to a family file: budgets counted offline (no weights downloaded), input size,
    preprocessing, pretraining and lineage from timm. The file's comments and order are kept.

    Examples:

      zoo-survey registry add convnextv2_atto.fcmae_ft_in1k --family mine --to my/mine.yaml

      zoo-survey registry add --pattern 'convnextv2_*.fcmae_ft_in1k' --family convnextv2-mine --to my/cnv2.yaml
    """
    if not family:
        raise ZooSurveyError("--family is required: the family the new entries join (a new name starts a family)")
    path = to if to is not None else default_path(family)
    result = add_tags(tags or [], family, path, registry or (), pattern=pattern)
    for cid in result.added:
        console.print(f"added {cid}", soft_wrap=True)
    for cid in result.included:
        console.print(f"included {cid} (another family defines it: listed under 'include:', the same entry)", soft_wrap=True)
    for cid in result.skipped:
        console.print(f"[dim]skipped {cid}: already in family {family!r}[/]", soft_wrap=True)
    verb = "wrote" if result.created else "updated"
    console.print(f"{verb} {path}: {len(result.added)} added, {len(result.included)} included, {len(result.skipped)} already "
                  f"there. Next: zoo-survey registry validate {path.parent}", soft_wrap=True)
