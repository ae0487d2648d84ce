"""The ``zoo-survey`` command line. Commands are thin: they parse options and call library functions.

Heavy modules (torch, timm) are imported inside commands, so ``--help`` is instant.
Exit codes: 0 success, 2 bad input, 1 a failure of the work, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ZooSurveyError

app = typer.Typer(
    help="Survey model zoos: does one large pretrained model transfer better than an ensemble of smaller ones?\n\n"
    "Examples:\n\n"
    "  zoo-survey run                                  # offline efficientnet-lite family, built-in datasets\n\n"
    "  zoo-survey run --family resnet --ensemble 4     # needs the hub (or a filled HF cache)\n\n"
    "  zoo-survey report --format html",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="List, show and validate registry entries.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console()
err_console = Console(stderr=True)

DEFAULT_FAMILY = "efficientnet-lite"
DEFAULT_DATASETS = "digits,lfw-subset,fashion-mnist"
DEFAULT_OUT = Path("zoo-survey-out")
CPU_BUDGET = {"image_size": 96, "max_train": 2000, "max_test": 1000}

# Options shared across commands.
RegistryOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--registry", "-r", help="Extra registry folder (repeatable); also $ZOO_SURVEY_REGISTRY.", show_default=False),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder: results.sqlite and reports.")]
CacheOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Feature cache root [default: $ZOO_SURVEY_CACHE, else $XDG_CACHE_HOME/zoo-survey].", show_default=False),
]


def _registry(folders: list[Path] | None):
    from .registry import load_registry, registry_folders

    return load_registry(registry_folders(folders or ()))


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def run(
    family: Annotated[
        list[str], typer.Option("--family", "-f", help="Family to survey (repeatable, or 'all').")
    ] = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    ensemble: Annotated[
        Optional[int], typer.Option("--ensemble", "-k", help="Ensemble size K [default: 2, or the number of --members].", show_default=False)
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="How to pick the K members: smallest (the K smallest checkpoints; default), same-arch (K recipes of "
            "one architecture), budget (largest summed params within the baseline's), explicit (--members)."
        ),
    ] = "smallest",
    members: Annotated[Optional[str], typer.Option(help="Explicit members a,b,c, or a named ensemble of the family YAML.")] = None,
    budget_by: Annotated[str, typer.Option(help="What --strategy budget matches: params or flops.")] = "params",
    against: Annotated[Optional[str], typer.Option(help="The single baseline [default: the family's largest checkpoint].")] = None,
    datasets: Annotated[str, typer.Option("--datasets", "-d", help="Comma-separated dataset ids.")] = DEFAULT_DATASETS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: OutOpt = DEFAULT_OUT,
    cache_dir: CacheOpt = None,
    registry: RegistryOpt = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input resolution for every model [default: each checkpoint's own; 96 on CPU].", show_default=False)] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Subsample train (stratified, seeded) [default: all; 2000 on CPU].", show_default=False)] = None,
    max_test: Annotated[Optional[int], typer.Option(help="Subsample test (stratified, seeded) [default: all; 1000 on CPU].", show_default=False)] = None,
    full: Annotated[bool, typer.Option("--full", help="On CPU too: native resolution and every sample.")] = False,
    probes: Annotated[str, typer.Option(help="Comma-separated probes.")] = "linear",
    grid: Annotated[Optional[str], typer.Option(help="Regularization grid C1,C2,... [default: 45 values, 1e-6..1e5].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward batch.")] = 64,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers [default: half the cores].", show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (also: HF_HUB_OFFLINE=1).")] = False,
) -> None:
    """Extract features (cached), probe singles and the ensemble, and store one row per result.

    Examples:

      zoo-survey run                                            # the offline default, CPU-sized

      zoo-survey run --family resnet --ensemble 4 --strategy same-arch --device cuda

      zoo-survey run -f efficientnet-lite --members lite01 -d digits
    """
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline:  # huggingface_hub and datasets read this at import time: set it before importing them
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    from .cache import FeatureCache, cache_root
    from .extract import ExtractOptions, default_workers, resolve_device
    from .plan import plan_family
    from .store import STORE_NAME
    from .survey import PROBES, RunOptions, run_survey

    reg = _registry(registry)
    names = list(reg.families) if "all" in family else family
    fams = [reg.family(n) for n in dict.fromkeys(names)]
    ds_specs = [reg.dataset(d) for d in dict.fromkeys(_csv(datasets))]
    if not ds_specs:
        raise ZooSurveyError("--datasets is empty; name at least one dataset (zoo-survey registry list)")
    probe_list = tuple(dict.fromkeys(_csv(probes)))
    for p in probe_list:
        if p not in PROBES:
            from .errors import unknown

            raise unknown("probe", p, PROBES)
    grid_values = _parse_grid(grid)
    member_list = members
    k = ensemble if ensemble is not None else (len(_member_names(fams, members)) if members else 2)
    plans = []
    for fam in fams:
        plan = plan_family(fam, k, strategy, against=against, members=member_list, budget_by=budget_by)
        if len(plan.ensemble.members) != k:
            raise ZooSurveyError(f"--ensemble {k} but --members names {len(plan.ensemble.members)} checkpoints; make them agree")
        plans.append(plan)
    dev = resolve_device(device)
    budget = {}
    if dev == "cpu" and not full:
        given = {"image_size": image_size, "max_train": max_train, "max_test": max_test}
        budget = {name: v for name, v in CPU_BUDGET.items() if given[name] is None}
    options = RunOptions(
        probes=probe_list,
        image_size=image_size or budget.get("image_size"),
        max_train=max_train or budget.get("max_train"),
        max_test=max_test or budget.get("max_test"),
        grid=grid_values,
        offline=offline,
        extract=ExtractOptions(device=dev, batch_size=batch_size, workers=default_workers() if workers is None else workers),
    )
    for plan in plans:
        console.print(
            f"[bold]{plan.family}[/]: single [cyan]{plan.baseline.name}[/] ({plan.baseline.params_m:.1f}M params, "
            f"{plan.baseline.gflops:.2f} GFLOPs) vs ensemble of {k} ({plan.strategy}): [cyan]{plan.ensemble.name}[/] "
            f"({plan.ensemble.params_m:.1f}M, {plan.ensemble.gflops:.2f} GFLOPs)"
        )
    if budget:
        console.print(
            f"[yellow]CPU budget[/]: {options.image_size} px, at most {options.max_train} train / {options.max_test} test "
            "images per dataset (override with --image-size/--max-train/--max-test, or --full)"
        )
    cache = FeatureCache(cache_root(cache_dir))
    with _RichHooks() as hooks:
        result = run_survey(plans, ds_specs, cache, out / STORE_NAME, options, hooks)
    for n in result.notes:
        console.print(f"[dim]note: {n}[/]")
    _print_summary(result.rows)
    console.print(
        f"{result.written} result row(s) written, {result.skipped} already done; "
        f"{result.forward_batches} forward batch(es) run. Store: {result.store}  Cache: {cache.root}"
    )
    console.print(f"Next: zoo-survey report --out {out}")


def _member_names(fams, members: str) -> list[str]:
    for fam in fams:
        if members in fam.ensembles:
            return list(fam.ensembles[members])
    return _csv(members)


def _parse_grid(grid: str | None) -> tuple[float, ...] | None:
    if grid is None:
        return None
    try:
        values = tuple(float(v) for v in _csv(grid))
    except ValueError as e:
        raise ZooSurveyError(f"--grid must be comma-separated numbers like 0.01,0.1,1,10; got {grid!r}") from e
    if not values or any(v <= 0 for v in values):
        raise ZooSurveyError(f"--grid values must be positive (they are inverse regularization strengths C); got {grid!r}")
    return values


def _print_summary(rows) -> None:
    from .report import comparison_lines

    table = Table(title="single vs ensemble (test top-1, %)")
    for col in ("family", "dataset", "probe", "single", "ensemble", "difference"):
        table.add_column(col, justify="right" if col in {"single", "ensemble", "difference"} else "left")
    for ln in comparison_lines(rows):
        d = ln.delta
        table.add_row(
            ln.family,
            ln.dataset,
            ln.probe,
            f"{100 * ln.baseline.top1:.1f}" if ln.baseline else "missing",
            f"{100 * ln.ensemble.top1:.1f}" if ln.ensemble else "missing",
            "n/a" if d is None else f"[{'green' if d > 0 else 'red'}]{100 * d:+.1f}[/]",
        )
    console.print(table)


class _RichHooks:
    """rich progress bars for the survey's stages."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def stage(self, label: str, total: int):
        task = self.progress.add_task(label, total=total)
        return lambda done: self.progress.update(task, completed=done)

    def note(self, message: str) -> None:
        self.progress.console.print(message)


@app.command()
def report(
    out: OutOpt = DEFAULT_OUT,
    format: Annotated[str, typer.Option("--format", help="md, csv or html.")] = "md",
) -> None:
    """Write the single-vs-ensemble report from the results store (it reads nothing else).

    Example: zoo-survey report --out zoo-survey-out --format html
    """
    from .report import FORMATS, write_report
    from .store import STORE_NAME, ResultStore

    if format not in FORMATS:
        from .errors import unknown

        raise unknown("report format", format, FORMATS)
    rows = ResultStore(out / STORE_NAME, create=False).rows()
    path = write_report(rows, out, format)
    _print_summary(rows)
    console.print(f"Report written: {path}")


@registry_app.command("list")
def registry_list(registry: RegistryOpt = None) -> None:
    """List families (with their checkpoints) and datasets."""
    reg = _registry(registry)
    table = Table(title="checkpoints")
    for col in ("family", "id", "source", "params (M)", "GFLOPs", "input", "feature dim", "pretraining"):
        table.add_column(col)
    for fam in reg.families.values():
        for c in fam.checkpoints:
            pre = " ".join(x for x in (c.pretrain.data, f"{c.pretrain.epochs} ep" if c.pretrain.epochs else None) if x)
            table.add_row(fam.name, c.id, c.source.type, f"{c.params_m:.2f}", f"{c.gflops:.3g}", str(c.input_size), str(c.feature_dim), pre)
    console.print(table)
    dtable = Table(title="datasets")
    for col in ("id", "source", "classes", "splits"):
        dtable.add_column(col)
    for d in reg.datasets.values():
        splits = "/".join(s for s in (d.train_split, d.val_split or "(carved val)", d.test_split or "(carved test)"))
        dtable.add_row(d.id, d.source.type, str(d.num_classes), splits)
    console.print(dtable)


@registry_app.command("show")
def registry_show(
    id: Annotated[str, typer.Argument(help="A checkpoint id, family or dataset id.")],
    registry: RegistryOpt = None,
) -> None:
    """Show one checkpoint, family or dataset as YAML."""
    import yaml

    reg = _registry(registry)
    if id in reg.families:
        fam = reg.families[id]
        obj = {"family": fam.name, "files": [str(f) for f in fam.files], "baseline": fam.baseline,
               "checkpoints": [c.id for c in fam.checkpoints], "ensembles": {k: list(v) for k, v in fam.ensembles.items()}}
    elif id in reg.datasets:
        obj = reg.datasets[id].model_dump(mode="json")
    else:
        obj = reg.checkpoint(id).model_dump(mode="json")
    console.print(yaml.safe_dump(obj, sort_keys=False).rstrip(), highlight=False, markup=False)


@registry_app.command("validate")
def registry_validate(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="YAML files or folders [default: every registry folder].", show_default=False)] = None,
    registry: RegistryOpt = None,
) -> None:
    """Validate registry YAML (with the shipped registry, so duplicates are caught) and check local weight files exist."""
    from .registry import FileSource, load_files, registry_folders

    folders = registry_folders(registry or ())
    files: list[Path] = []
    for folder in folders:
        files += sorted(p for p in folder.rglob("*") if p.suffix in {".yaml", ".yml"})
    for p in paths or []:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix in {".yaml", ".yml"})
        elif p.is_file():
            files.append(p)
        else:
            raise ZooSurveyError(f"{p}: no such file or folder")
    files = list(dict.fromkeys(f.resolve() for f in files))
    reg = load_files(files, folders=folders)
    for fam in reg.families.values():
        for c in fam.checkpoints:
            if isinstance(c.source, FileSource) and not c.source.path.is_file():
                raise ZooSurveyError(
                    f"{c.defined_in}: checkpoint {c.id!r}: field 'source.path': weights file {str(c.source.path)!r} does not exist"
                )
    n_ck = sum(len(f.checkpoints) for f in reg.families.values())
    console.print(f"OK: {len(files)} file(s), {len(reg.families)} families, {n_ck} checkpoints, {len(reg.datasets)} datasets")


def main() -> None:
    """Entry point: run the app, format user errors on one line, map them to exit codes."""
    from .errors import ZooSurveyFailure

    try:
        app(standalone_mode=False)
    except ZooSurveyError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code if isinstance(e, ZooSurveyFailure) else 2)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished shards and result rows are kept; rerun the same command to resume")
        sys.exit(130)
    except (typer.Abort,):
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
