"""``zoo-survey run``, ``extract`` and ``prefetch``: thin commands over :mod:`zoo_survey.survey`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..api import SurveyResult, prepare_survey
from ..document import Table
from ..errors import ZooSurveyError
from ..features.cache import FeatureCache, cache_root
from ..probes import PROBES
from ..survey.options import DEFAULT_PROBES, RunOptions, parse_list, resolve_options
from ..survey.plan import STRATEGIES
from ..survey.ray_runner import RayCluster, RayRunner, connect, node_label, ray_options
from ..survey.run import extract_all, prefetch
from ..survey.runner import Hooks, NodeTally, RunnerFactory, RunReport
from .app import app, console
from .options import (
    DEFAULT_DATASETS,
    DEFAULT_FAMILY,
    DEFAULT_OUT,
    CheckpointIdsOpt,
    DatasetsOpt,
    FamilyCheckpointsOpt,
    ListFormatOpt,
    OutOpt,
    RegistryOpt,
    csv,
    extraction_flags,
    offline_env,
    open_registry,
    prefetch_hint,
)
from .output import emit, human, print_summary, where_table


def _probes_help() -> str:
    """The --probes help: every probe, plug-ins' included; a broken plug-in is reported when a run looks probes up
    (inside the CLI's error boundary), not while the CLI is built."""
    try:
        return "Comma-separated probes: " + "; ".join(f"{p.name} ({p.summary})" for p in PROBES) + "."
    except ZooSurveyError:
        return "Comma-separated probes (a plug-in failed to load; a run says which)."


def _options(flags: dict[str, Any], cluster: RayCluster | None = None, **probe_args: Any) -> RunOptions:
    """The shared flags (and a run's probe flags) through the one library function that resolves them.

    On a Ray cluster, ``--device auto`` and ``cuda`` ask whether the cluster has GPUs, not this machine.
    """
    f = flags
    return resolve_options(
        device=f["device"], image_size=f["image_size"], max_train=f["max_train"], max_test=f["max_test"], full=f["full"],
        batch_size=f["batch_size"], workers=f["workers"], dtype=f["dtype"], compile=f["compile"],
        bad_images=f["bad_images"], feature_output=f["features"] or f["feature_output"], pixel_route=f["preprocess"], offline=f["offline"],
        allow_heavy=f["allow_heavy"], cuda=cluster.gpus > 0 if cluster is not None else None, **probe_args,
    )


def _on_ray(ctx: typer.Context, flags: dict[str, Any]) -> tuple[RayCluster | None, RunnerFactory | None]:
    """Without --ray: nothing (units run here; Ray is never imported). With it: the cluster, connected until the
    command ends, and its runner."""
    ray = ray_options(flags["ray"], flags["ray_gpus_per_actor"], flags["ray_cpus_per_actor"], flags["ray_cache"],
                      flags["device"], flags["ray_gpus_per_probe"])
    if ray is None:
        return None, None
    cluster = ctx.with_resource(connect(ray.address))
    console.print(f"Ray ({ray.address}): {len(cluster.nodes)} node(s), {cluster.cpus:g} CPU(s), {cluster.gpus:g} GPU(s)",
                  soft_wrap=True)
    return cluster, RayRunner.factory(cluster, ray)


def _print_limits(options: RunOptions) -> None:
    if options.cpu_limits:
        console.print(
            f"[yellow]CPU limits[/]: {options.image_size} px, at most {options.max_train} train / {options.max_test} test "
            "images per dataset (override with --image-size/--max-train/--max-test, or --full)",
            soft_wrap=True,
        )


class RichHooks(Hooks):
    """rich progress bars for the survey's stages, on a terminal."""

    def __enter__(self) -> RichHooks:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False, disable=not console.is_terminal,  # piped: no bars, one line per note
        )
        self.progress.__enter__()
        self._node_tasks: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def stage(self, label: str, total: int):
        task = self.progress.add_task(label, total=total)
        return lambda done: self.progress.update(task, completed=done)

    def nodes(self, tallies: Mapping[str, NodeTally]) -> None:
        """One line per node of a Ray cluster: units done, running and failed (and retried)."""
        for node, t in tallies.items():
            text = (f"  {node_label(node, t.host)}: {t.extract + t.probe} done, {t.running} running, {t.failed} failed"
                    + (f", {t.retried} retried" if t.retried else ""))
            if node not in self._node_tasks:
                self._node_tasks[node] = self.progress.add_task(text, total=None)
            self.progress.update(self._node_tasks[node], description=text)


@app.command()
@extraction_flags
def run(
    ctx: typer.Context,
    family: Annotated[
        list[str], typer.Option("--family", "-f", help="Family to survey (repeatable or comma-separated, or 'all').")
    ] = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    ensemble: Annotated[
        Optional[int], typer.Option("--ensemble", "-k", help="Ensemble size K [default: 2, or the number of --members].",
                                    show_default=False)
    ] = None,
    strategy: Annotated[
        Optional[str],
        typer.Option(
            help="How to pick the K members: smallest (the K smallest checkpoints; the default), same-arch (K recipes of "
            "one architecture), budget (largest summed params within the baseline's), explicit (--members; the "
            f"default when --members is given). One of {', '.join(STRATEGIES)}.", show_default=False,
        ),
    ] = None,
    members: Annotated[Optional[str], typer.Option(help="Explicit members a,b,c, or a named ensemble of the family YAML.")] = None,
    budget_by: Annotated[str, typer.Option(
        help="What --strategy budget matches: params, gmacs (multiply-accumulates of one forward; 'flops' is an old "
        "name for it), or pretrain (pretraining compute, images seen x GMACs x 3, from the registry's pretrain "
        "fields).")] = "params",
    allow_same_lineage: Annotated[bool, typer.Option(
        "--allow-same-lineage", help="Let two members descend from one pretraining run (e.g. one ViT fine-tuned at 224 "
        "and 384 px); by default every member has its own lineage.")] = False,
    against: Annotated[Optional[str], typer.Option(help="The single baseline [default: the family's largest checkpoint].")] = None,
    out: OutOpt = DEFAULT_OUT,
    probes: Annotated[str, typer.Option(help=_probes_help())] = ",".join(DEFAULT_PROBES),
    grid: Annotated[Optional[str], typer.Option(
        help="Regularization grid C1,C2,... [default: 45 values, 1e-6..1e5].", show_default=False)] = None,
    shots: Annotated[str, typer.Option(help="Few-shot k values (examples per class), for --probes fewshot.")] = "1,5,10,25",
    seeds: Annotated[int, typer.Option(min=1, help="Few-shot seeds per k; differences get paired 95% intervals over them.")] = 5,
    fewshot_val: Annotated[str, typer.Option(
        help="How few-shot chooses C: shots (cross-validation within the k examples per class, no other labels; "
        "1-shot uses a fixed C) or full (on the whole validation split: the earlier protocol, rows labelled k-shot+val).")
    ] = "shots",
    width_controls: Annotated[bool, typer.Option(
        "--width-controls/--no-width-controls",
        help="Probe each ensemble's width-matched controls: its concatenation projected to the single's feature width "
        "by PCA (fitted on train) and by a seeded random projection (docs/statistics.md).")] = True,
    format: ListFormatOpt = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Extract features (cached), probe singles and the ensemble, and store one row per result.

    Examples:

      zoo-survey run                                            # the offline default, CPU-sized

      zoo-survey run --family resnet --ensemble 4 --strategy same-arch --device cuda

      zoo-survey run -f efficientnet-lite --members lite01 -d digits
    """
    ray: dict[str, RunnerFactory | None] = {}

    def on_ray() -> bool | None:  # asked once the names are checked (as before): --ray connects here
        cluster, ray["runner"] = _on_ray(ctx, flags)
        return cluster.gpus > 0 if cluster is not None else None

    f = flags
    job = prepare_survey(
        family, ensemble, strategy, f["datasets"], csv(probes), members=members, against=against, budget_by=budget_by,
        allow_same_lineage=allow_same_lineage, registry=f["registry"] or (), out=out, cache_dir=f["cache_dir"],
        shard_rows=f["shard_rows"], device=f["device"], image_size=f["image_size"], max_train=f["max_train"],
        max_test=f["max_test"], full=f["full"], batch_size=f["batch_size"], workers=f["workers"], dtype=f["dtype"],
        compile=f["compile"], bad_images=f["bad_images"], feature_output=f["features"] or f["feature_output"], pixel_route=f["preprocess"],
        offline=f["offline"], allow_heavy=f["allow_heavy"], grid=parse_list(grid, "grid", float) if grid is not None else None,
        shots=parse_list(shots, "shots", int), seeds=seeds, fewshot_val=fewshot_val, cuda=on_ray,
        width_controls=width_controls,
    )
    for plan in job.plans:
        console.print(
            f"[bold]{plan.family}[/]: single [cyan]{plan.baseline.name}[/] ({plan.baseline.params_m:.1f}M params, "
            f"{plan.baseline.gmacs:.2f} GMACs) vs ensemble of {len(plan.ensemble.members)} ({plan.strategy}): "
            f"[cyan]{plan.ensemble.name}[/] ({plan.ensemble.params_m:.1f}M, {plan.ensemble.gmacs:.2f} GMACs)",
            soft_wrap=True,
        )
    _print_limits(job.options)
    with RichHooks() as hooks, prefetch_hint(family, flags["datasets"], flags["registry"]):
        result = job.run(hooks, ray.get("runner"))
    _print_notes(result)
    print_summary(result.rows, format, result.where)
    console.print(
        f"{result.written} result row(s) written, {result.skipped} already done; "
        f"{result.forward_batches} forward batch(es) run. Store: {result.store}  Cache: {job.cache.root}", soft_wrap=True,
    )
    console.print(f"Time: {result.timings.summary()}", soft_wrap=True)
    console.print(f"Next: zoo-survey report --out {out}", soft_wrap=True)


def _print_notes(result: RunReport | SurveyResult) -> None:
    for n in result.notes:
        console.print(f"[dim]note: {n}[/]", soft_wrap=True)


@app.command()
@extraction_flags
def extract(
    ctx: typer.Context,
    family: FamilyCheckpointsOpt = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    checkpoints: CheckpointIdsOpt = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Extract and cache features only (e.g. on a GPU node), without probing.

    A later `zoo-survey run` with the same settings reads them and runs no forward pass.

    Example: zoo-survey extract -f resnet -d cifar10,cifar100 --device cuda --dtype bfloat16
    """
    offline_env(flags["offline"])
    reg = open_registry(flags["registry"])
    specs = reg.select_checkpoints(family, csv(checkpoints))
    ds_specs = reg.select_datasets([flags["datasets"]])
    cluster, runner = _on_ray(ctx, flags)
    options = _options(flags, cluster)
    _print_limits(options)
    cache = FeatureCache(cache_root(flags["cache_dir"]), shard_rows=flags["shard_rows"])
    result = RunReport()
    with RichHooks() as hooks, prefetch_hint(family, flags["datasets"], flags["registry"], checkpoints):
        extract_all(specs, ds_specs, cache, options, hooks, result, runner)
    _print_notes(result)
    if result.where:
        emit([where_table(result.where)], console, titled=True)
    console.print(f"{len(specs)} checkpoint(s) cached; {result.forward_batches} forward batch(es) run. Cache: {cache.root}",
                  soft_wrap=True)


@app.command("prefetch")
def prefetch_command(
    family: FamilyCheckpointsOpt = [DEFAULT_FAMILY],  # noqa: B006 - typer needs a literal default
    checkpoints: CheckpointIdsOpt = None,
    datasets: DatasetsOpt = DEFAULT_DATASETS,
    registry: RegistryOpt = None,
    format: ListFormatOpt = None,
) -> None:
    """Download every checkpoint and dataset a run would need into the local caches, and report sizes.

    Run it on a machine with internet (a login node), copy the Hugging Face cache
    (HF_HUB_CACHE) to the machine without, and run there with --offline.

    Example: zoo-survey prefetch -f resnet -d cifar10,pets
    """
    if offline_env(False):
        raise ZooSurveyError("prefetch downloads, but HF_HUB_OFFLINE is set; unset it (HF_HUB_OFFLINE=0) on a machine with internet")
    reg = open_registry(registry)
    specs = reg.select_checkpoints(family, csv(checkpoints))
    ds_specs = reg.select_datasets([datasets])
    heavy = [f"{c.id} (about {c.download_gb:.1f} GB)" for c in specs if c.heavy]
    console.print(f"{len(specs)} checkpoint(s): about {sum(c.download_gb for c in specs):.1f} GB of weights to download "
                  "(estimated at 4 bytes a parameter; cached files are not fetched again)"
                  + (f"; the largest: {', '.join(heavy)}" if heavy else ""), soft_wrap=True)
    with console.status(f"fetching {len(specs)} checkpoint(s) and {len(ds_specs)} dataset(s)..."):
        items = prefetch(specs, ds_specs)
    emit([Table(("kind", "id", "source", "revision", "size", "where"),
                [[it.kind, it.id, it.source, it.revision[:19], human(it.bytes) if it.bytes else "bundled",
                  str(it.path) if it.path else ""] for it in items], title="prefetched")], console, format)
    from huggingface_hub import constants  # lazy on purpose: it reads HF_HUB_OFFLINE when imported

    console.print(f"{len(items)} item(s), {human(sum(i.bytes for i in items))}. Hugging Face cache: {constants.HF_HUB_CACHE}. "
                  "Copy it to the offline machine (or point HF_HUB_CACHE at it) and pass --offline; "
                  "package and builtin items are installed there with pip / apt, not copied.", soft_wrap=True)
