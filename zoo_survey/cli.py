"""The ``zoo-survey`` command line. Commands are thin: they parse options and call library functions.

Heavy modules (torch, timm) are imported inside commands, so ``--help`` is instant.
Exit codes: 0 success, 2 bad input, 1 a failure of the work, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException
from rich.table import Table

from .errors import ZooSurveyError

app = typer.Typer(
    help="Survey model zoos: does one large pretrained model transfer better than an ensemble of smaller ones?\n\n"
    "Examples:\n\n"
    "  zoo-survey run                                  # offline efficientnet-lite family, built-in datasets\n\n"
    "  zoo-survey run --family resnet --ensemble 4     # needs the hub (or a filled HF cache)\n\n"
    "  zoo-survey prefetch -f resnet -d cifar10        # on a login node; then run with --offline\n\n"
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


DatasetsOpt = Annotated[str, typer.Option("--datasets", "-d", help="Comma-separated dataset ids.")]
FamilyCheckpointsOpt = Annotated[list[str], typer.Option("--family", "-f", help="Family (repeatable, or 'all'): every checkpoint in it.")]
CheckpointIdsOpt = Annotated[Optional[str], typer.Option(help="Only these checkpoint ids (comma-separated).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
FullOpt = Annotated[bool, typer.Option("--full", help="On CPU too: native resolution and every sample.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(min=1, help="Images per forward batch [default: 16 on CPU, 256 on CUDA].", show_default=False)]
WorkersOpt = Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers [default: 0 on a CPU of up to 4 cores (decode inline), more on CUDA].", show_default=False)]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (also: HF_HUB_OFFLINE=1); what is missing from the caches is named, with the prefetch command that fetches it.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option(help="Input resolution for every model [default: each checkpoint's own; 96 on CPU].", show_default=False)]
MaxTrainOpt = Annotated[Optional[int], typer.Option(help="Subsample train (stratified, seeded) [default: all; 2000 on CPU].", show_default=False)]
MaxTestOpt = Annotated[Optional[int], typer.Option(help="Subsample test (stratified, seeded) [default: all; 1000 on CPU].", show_default=False)]
DtypeOpt = Annotated[str, typer.Option(help="Forward dtype: float32, or bfloat16/float16 autocast on CUDA (part of the cache key).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile each model (pays off on CUDA for long extractions).")]
BadImagesOpt = Annotated[str, typer.Option(help="An image that cannot be decoded: fail (stop, naming it) or skip (leave it out, counted).")]
LayerOpt = Annotated[str, typer.Option("--features", help="Which features: pre_logits (timm's pooled pre-logits), avg or max (pooling of the last feature map / tokens).")]
ShardRowsOpt = Annotated[int, typer.Option(min=1, help="Rows per cache shard (the unit of resume after an interruption).")]


def _registry(folders: list[Path] | None):
    from .registry import load_registry, registry_folders

    return load_registry(registry_folders(folders or ()))


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def run(
    family: Annotated[
        list[str], typer.Option("--family", "-f", help="Family to survey (repeatable or comma-separated, or 'all').")
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
    datasets: DatasetsOpt = DEFAULT_DATASETS,
    device: DeviceOpt = "auto",
    out: OutOpt = DEFAULT_OUT,
    cache_dir: CacheOpt = None,
    registry: RegistryOpt = None,
    image_size: ImageSizeOpt = None,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    full: FullOpt = False,
    probes: Annotated[str, typer.Option(help="Comma-separated probes: linear (C sweep), knn (weighted cosine kNN), ncm (nearest class mean), fewshot (k per class, seeds, paired CIs), logme (transferability score).")] = "linear,fewshot",
    grid: Annotated[Optional[str], typer.Option(help="Regularization grid C1,C2,... [default: 45 values, 1e-6..1e5].", show_default=False)] = None,
    shots: Annotated[str, typer.Option(help="Few-shot k values (examples per class), for --probes fewshot.")] = "1,5,10,25",
    seeds: Annotated[int, typer.Option(min=1, help="Few-shot seeds per k; differences get paired 95% intervals over them.")] = 5,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    compile: CompileOpt = False,
    bad_images: BadImagesOpt = "fail",
    shard_rows: ShardRowsOpt = 4096,
    features: LayerOpt = "pre_logits",
) -> None:
    """Extract features (cached), probe singles and the ensemble, and store one row per result.

    Examples:

      zoo-survey run                                            # the offline default, CPU-sized

      zoo-survey run --family resnet --ensemble 4 --strategy same-arch --device cuda

      zoo-survey run -f efficientnet-lite --members lite01 -d digits
    """
    offline = _offline(offline)
    from .cache import FeatureCache, cache_root
    from .plan import plan_family
    from .store import STORE_NAME
    from .probes.fewshot import parse_shots
    from .survey import PROBES, run_survey

    reg = _registry(registry)
    fams = _families(reg, family)
    ds_specs = _datasets(reg, datasets)
    probe_list = tuple(dict.fromkeys(_csv(probes)))
    for p in probe_list:
        if p not in PROBES:
            from .errors import unknown

            raise unknown("probe", p, PROBES)
    grid_values = _parse_grid(grid)
    k = ensemble if ensemble is not None else (len(_member_names(fams, members)) if members else 2)
    plans = []
    for fam in fams:
        plan = plan_family(fam, k, strategy, against=against, members=members, budget_by=budget_by)
        if len(plan.ensemble.members) != k:
            raise ZooSurveyError(f"--ensemble {k} but --members names {len(plan.ensemble.members)} checkpoints; make them agree")
        plans.append(plan)
    options, budget = _run_options(
        device, image_size, max_train, max_test, full, batch_size, workers, dtype, compile, bad_images, features, offline,
        probes=probe_list, grid=grid_values, shots=parse_shots(shots), seeds=seeds,
    )
    for plan in plans:
        console.print(
            f"[bold]{plan.family}[/]: single [cyan]{plan.baseline.name}[/] ({plan.baseline.params_m:.1f}M params, "
            f"{plan.baseline.gflops:.2f} GFLOPs) vs ensemble of {k} ({plan.strategy}): [cyan]{plan.ensemble.name}[/] "
            f"({plan.ensemble.params_m:.1f}M, {plan.ensemble.gflops:.2f} GFLOPs)"
        )
    _print_budget(budget, options)
    cache = FeatureCache(cache_root(cache_dir), shard_rows=shard_rows)
    with _RichHooks() as hooks, _prefetch_hint(family, datasets, registry):
        result = run_survey(plans, ds_specs, cache, out / STORE_NAME, options, hooks)
    for n in result.notes:
        console.print(f"[dim]note: {n}[/]")
    _print_summary(result.rows)
    console.print(
        f"{result.written} result row(s) written, {result.skipped} already done; "
        f"{result.forward_batches} forward batch(es) run. Store: {result.store}  Cache: {cache.root}"
    )
    console.print(f"Next: zoo-survey report --out {out}")


@contextmanager
def _prefetch_hint(family: list[str], datasets: str, registry: list[Path] | None, checkpoints: str | None = None):
    """Offline with inputs missing: end the one message with the prefetch command that fetches them."""
    from .errors import NotCachedError

    try:
        yield
    except NotCachedError as e:
        cmd = ["zoo-survey prefetch", f"--family {','.join(family)}", f"--datasets {datasets}"]
        cmd += [f"--checkpoints {checkpoints}"] if checkpoints else []
        cmd += [f"--registry {r}" for r in registry or ()]
        e.args = (f"{e}\nOn a machine with internet run `{' '.join(cmd)}`, copy its Hugging Face cache "
                  "(HF_HUB_CACHE, default ~/.cache/huggingface/hub) here, and rerun.",)
        raise


@app.command()
def prefetch(
    family: FamilyCheckpointsOpt = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    checkpoints: CheckpointIdsOpt = None,
    datasets: DatasetsOpt = DEFAULT_DATASETS,
    registry: RegistryOpt = None,
) -> None:
    """Download every checkpoint and dataset a run would need into the local caches, and report sizes.

    Run it on a machine with internet (a login node), copy the Hugging Face cache
    (HF_HUB_CACHE) to the machine without, and run there with --offline.

    Example: zoo-survey prefetch -f resnet -d cifar10,pets
    """
    if _offline(False):
        raise ZooSurveyError("prefetch downloads, but HF_HUB_OFFLINE is set; unset it (HF_HUB_OFFLINE=0) on a machine with internet")
    from .survey import prefetch as fetch

    reg = _registry(registry)
    specs = _checkpoint_specs(reg, family, checkpoints)
    ds_specs = _datasets(reg, datasets)
    with console.status(f"fetching {len(specs)} checkpoint(s) and {len(ds_specs)} dataset(s)..."):
        items = fetch(specs, ds_specs)
    table = Table(title="prefetched")
    for col in ("kind", "id", "source", "revision", "size", "where"):
        table.add_column(col, overflow="fold")
    for it in items:
        table.add_row(it.kind, it.id, it.source, it.revision[:19], _human(it.bytes) if it.bytes else "bundled",
                      str(it.path) if it.path else "")
    console.print(table)
    from huggingface_hub import constants

    console.print(f"{len(items)} item(s), {_human(sum(i.bytes for i in items))}. Hugging Face cache: {constants.HF_HUB_CACHE}. "
                  "Copy it to the offline machine (or point HF_HUB_CACHE at it) and pass --offline; "
                  "package and builtin items are installed there with pip / apt, not copied.")


def _checkpoint_specs(reg, family: list[str], checkpoints: str | None):
    """Every checkpoint of the families, or only the named ones."""
    specs = [c for fam in _families(reg, family) for c in fam.checkpoints]
    if checkpoints:
        wanted = _csv(checkpoints)
        for cid in wanted:
            if cid not in {c.id for c in specs}:
                from .errors import unknown

                raise unknown("checkpoint", cid, [c.id for c in specs])
        specs = [c for c in specs if c.id in wanted]
    return specs


def _offline(flag: bool) -> bool:
    """--offline or HF_HUB_OFFLINE; set before huggingface_hub / datasets are imported (they read it then)."""
    offline = flag or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return offline


def _families(reg, names: list[str]):
    """--family values, repeatable or comma-separated; 'all' means every family."""
    flat = [n for v in names for n in _csv(v)]
    if not flat:
        raise ZooSurveyError("--family is empty; name a family (zoo-survey registry list) or 'all'")
    return [reg.family(n) for n in dict.fromkeys(list(reg.families) if "all" in flat else flat)]


def _datasets(reg, datasets: str):
    specs = [reg.dataset(d) for d in dict.fromkeys(_csv(datasets))]
    if not specs:
        raise ZooSurveyError("--datasets is empty; name at least one dataset (zoo-survey registry list)")
    return specs


def _run_options(
    device, image_size, max_train, max_test, full, batch_size, workers, dtype, compile, bad_images, layer, offline, **probe_args
):
    """RunOptions from the shared flags; on CPU without --full, the CPU budget fills unset sizes."""
    from .extract import ExtractOptions, default_batch_size, default_workers, resolve_device
    from .survey import RunOptions

    dev = resolve_device(device)
    given = {"image_size": image_size, "max_train": max_train, "max_test": max_test}
    budget = {k: v for k, v in CPU_BUDGET.items() if given[k] is None} if dev == "cpu" and not full else {}
    extract = ExtractOptions(
        device=dev, batch_size=batch_size or default_batch_size(dev), workers=default_workers(dev) if workers is None else workers,
        dtype=dtype, compile=compile, bad_images=bad_images, layer=layer,
    )
    sizes = {k: given[k] or budget.get(k) for k in given}
    return RunOptions(offline=offline, extract=extract, **sizes, **probe_args), budget


def _print_budget(budget: dict, options) -> None:
    if budget:
        console.print(
            f"[yellow]CPU budget[/]: {options.image_size} px, at most {options.max_train} train / {options.max_test} test "
            "images per dataset (override with --image-size/--max-train/--max-test, or --full)"
        )


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

    table = Table(title="single vs ensemble (test top-1, %): concatenated features, and averaged outputs")
    for col in ("family", "dataset", "probe", "single", "ensemble", "difference", "averaged"):
        table.add_column(col, justify="left" if col in {"family", "dataset", "probe"} else "right")
    for ln in comparison_lines(rows):
        d = ln.delta
        table.add_row(
            ln.family,
            ln.dataset,
            ln.probe,
            f"{100 * ln.baseline.top1:.1f}" if ln.baseline else "missing",
            f"{100 * ln.ensemble.top1:.1f}" if ln.ensemble else "missing",
            "n/a" if d is None else f"[{'green' if d > 0 else 'red'}]{100 * d:+.1f}[/]",
            f"{100 * ln.averaged.top1:.1f}" if ln.averaged else "",
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


@app.command()
def extract(
    family: FamilyCheckpointsOpt = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    checkpoints: CheckpointIdsOpt = None,
    datasets: DatasetsOpt = DEFAULT_DATASETS,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    registry: RegistryOpt = None,
    image_size: ImageSizeOpt = None,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    full: FullOpt = False,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    compile: CompileOpt = False,
    bad_images: BadImagesOpt = "fail",
    shard_rows: ShardRowsOpt = 4096,
    features: LayerOpt = "pre_logits",
) -> None:
    """Extract and cache features only (e.g. on a GPU node), without probing.

    A later `zoo-survey run` with the same settings reads them and runs no forward pass.

    Example: zoo-survey extract -f resnet -d cifar10,cifar100 --device cuda --dtype bfloat16
    """
    offline = _offline(offline)
    from .cache import FeatureCache, cache_root
    from .survey import extract_all, RunReport

    reg = _registry(registry)
    specs = _checkpoint_specs(reg, family, checkpoints)
    options, budget = _run_options(
        device, image_size, max_train, max_test, full, batch_size, workers, dtype, compile, bad_images, features, offline
    )
    _print_budget(budget, options)
    cache = FeatureCache(cache_root(cache_dir), shard_rows=shard_rows)
    result = RunReport()
    with _RichHooks() as hooks, _prefetch_hint(family, datasets, registry, checkpoints):
        extract_all(specs, _datasets(reg, datasets), cache, options, hooks, result)
    for n in result.notes:
        console.print(f"[dim]note: {n}[/]")
    console.print(f"{len(specs)} checkpoint(s) cached; {result.forward_batches} forward batch(es) run. Cache: {cache.root}")


cache_app = typer.Typer(help="Inspect, verify and clean the feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _entries_table(entries, title: str) -> Table:
    table = Table(title=title)
    for col in ("family", "checkpoint", "dataset", "split", "rows", "dim", "size", "status"):
        table.add_column(col)
    for e in entries:
        colour = {"complete": "green", "partial": "yellow", "corrupt": "red"}[e.status]
        table.add_row(e.family, e.checkpoint, e.dataset, e.split, str(e.rows or ""), str(e.dim or ""), _human(e.bytes),
                      f"[{colour}]{e.status}[/]" + (f" ({e.detail})" if e.detail else ""))
    return table


@cache_app.command("ls")
def cache_ls(cache_dir: CacheOpt = None) -> None:
    """List cache entries with their size and what they are."""
    from .cache import FeatureCache, cache_root, scan

    cache = FeatureCache(cache_root(cache_dir))
    entries = scan(cache)
    console.print(_entries_table(entries, f"feature cache {cache.root}"))
    console.print(f"{len(entries)} entr(ies), {_human(sum(e.bytes for e in entries))}")


@cache_app.command("verify")
def cache_verify(cache_dir: CacheOpt = None) -> None:
    """Re-check every shard's size and sha256; report corrupt and partial entries (exit 1 if any is corrupt)."""
    from .cache import FeatureCache, cache_root, scan

    cache = FeatureCache(cache_root(cache_dir))
    entries = scan(cache, verify=True)
    bad = [e for e in entries if e.status != "complete"]
    if bad:
        console.print(_entries_table(bad, "entries that are not complete"))
    corrupt = sum(e.status == "corrupt" for e in entries)
    console.print(f"{len(entries)} entr(ies) checked: {corrupt} corrupt, {sum(e.status == 'partial' for e in entries)} partial. "
                  + ("Run `zoo-survey cache gc` to remove them; the next run recomputes what it needs." if bad else "All intact."))
    if corrupt:
        raise typer.Exit(1)


@cache_app.command("gc")
def cache_gc(
    cache_dir: CacheOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete what the plan lists (without it, only show the plan).")] = False,
) -> None:
    """Remove corrupt entries, abandoned partial entries and temporary files: shows a plan, --yes executes it."""
    from .cache import FeatureCache, cache_root, gc_execute, gc_plan

    cache = FeatureCache(cache_root(cache_dir))
    plan = gc_plan(cache)
    if not plan:
        console.print(f"Nothing to clean in {cache.root}.")
        return
    table = Table(title="cache gc plan")
    for col in ("path", "reason", "size"):
        table.add_column(col)
    for path, reason, size in plan:
        table.add_row(str(path.relative_to(cache.root)), reason, _human(size))
    console.print(table)
    total = _human(sum(size for _, _, size in plan))
    if not yes:
        console.print(f"{len(plan)} item(s), {total}. Nothing deleted: rerun with --yes to delete them.")
        return
    console.print(f"Deleted {len(plan)} item(s), freed {_human(gc_execute(plan))}.")


@app.command()
def report(
    out: OutOpt = DEFAULT_OUT,
    format: Annotated[str, typer.Option("--format", help="md (with plots/), html (one self-contained file), csv or json.")] = "md",
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
    paths = write_report(rows, out, format)
    _print_summary(rows)
    console.print("Written: " + ", ".join(str(p) for p in paths))


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


def _interrupted() -> None:
    err_console.print("interrupted: finished shards and result rows are kept; rerun the same command to resume")
    sys.exit(130)


def main() -> None:
    """Entry point: run the app, format user errors on one line, map them to exit codes."""
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        if rc == 130:  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ZooSurveyError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except TyperException as e:  # usage errors (unknown option, bad value): click's own message, exit 2
        if hasattr(e, "show"):
            e.show()
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
