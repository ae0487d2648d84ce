"""``zoo-survey pretrain``: a thin command over :mod:`zoo_survey.pretrain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..document import Table
from ..errors import ZooSurveyError
from ..features.extract import resolve_device
from ..pretrain.budget import Member, plan_zoo
from ..pretrain.data import AUGMENTS
from ..pretrain.run import pretrain
from ..pretrain.trainer import Recipe, TrainHooks
from ..survey.options import parse_list
from .app import app, console
from .options import ListFormatOpt, RegistryOpt, offline_env, open_registry
from .output import emit

DEFAULT_OUT = Path("zoo-pretrain")


class RichTrainHooks(TrainHooks):
    """A rich bar per member with its loss and images per second, on a terminal; piped, one line per member."""

    def __enter__(self) -> RichTrainHooks:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False, disable=not console.is_terminal,
        )
        self.progress.__enter__()
        self.tasks: dict[str, TaskID] = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, member: Member, done: int) -> None:
        label = f"train {member.id}" + (f" (resumed at step {done:,})" if done else "")
        self.tasks[member.id] = self.progress.add_task(label, total=member.steps, completed=done, loss="-", rate="-")

    def step(self, member: Member, step: int, loss: float, images_per_s: float) -> None:
        self.progress.update(self.tasks[member.id], completed=step, loss=f"{loss:.3f}", rate=f"{images_per_s:,.0f}")

    def finish(self, member: Member, record: Any, trained: bool) -> None:
        if not console.is_terminal:
            what = "trained" if trained else "already trained"
            console.print(f"{member.id}: {what}, {member.steps:,} steps, head top-1 {100 * record['head_top1']:.1f}%",
                          soft_wrap=True)


def _json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ZooSurveyError(f"{flag} must be a JSON object like '{{\"embed_dim\": 128}}'; got {text!r} ({e})") from e
    if not isinstance(value, dict):
        raise ZooSurveyError(f"{flag} must be a JSON object like '{{\"embed_dim\": 128}}'; got {text!r}")
    return value


@app.command("pretrain")
def pretrain_command(
    arch: Annotated[str, typer.Option("--arch", "-a", help="timm architecture to train (timm.list_models()).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Registry dataset to pretrain on (its train split).")],
    steps: Annotated[Optional[int], typer.Option(help="The whole budget in optimizer steps (CAT1 trains them all).",
                                                 show_default=False)] = None,
    images: Annotated[Optional[int], typer.Option(help="The whole budget in images seen (instead of --steps).",
                                                  show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per optimizer step, the same for every member.")] = 64,
    cat: Annotated[str, typer.Option(help="Ensemble sizes k: each CAT-k is k seeds of 1/k of the budget (1, the "
                                          "single, is always trained).")] = "1,2,4",
    model_args: Annotated[Optional[str], typer.Option(help="JSON kwargs for timm.create_model, e.g. '{\"patch_size\": 4}'.",
                                                      show_default=False)] = None,
    wide_args: Annotated[Optional[str], typer.Option(help="Also train a wide single for the whole budget: JSON kwargs over "
                                                          "--model-args, e.g. '{\"embed_dim\": 128}' (about k x the params).",
                                                     show_default=False)] = None,
    wide_arch: Annotated[Optional[str], typer.Option(help="The wide single's architecture, if not --arch.",
                                                     show_default=False)] = None,
    image_size: Annotated[int, typer.Option(help="Training resolution (survey the zoo at the same --image-size).")] = 32,
    opt: Annotated[str, typer.Option(help="Optimizer, by timm.optim's name.")] = "adamw",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (not on norms and biases).")] = 0.05,
    warmup: Annotated[float, typer.Option(help="Linear warmup, as a fraction of each member's steps.")] = 0.05,
    min_lr: Annotated[float, typer.Option(help="Where the cosine ends, as a fraction of --lr.")] = 0.01,
    smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.1,
    augment: Annotated[str, typer.Option(help=f"Augmentation: {', '.join(AUGMENTS)} (random crop of a padded image, "
                                              "horizontal flip).")] = "crop-flip",
    seed: Annotated[int, typer.Option(min=0, help="First seed; each member gets the next.")] = 0,
    name: Annotated[str, typer.Option(help="Names the zoo: family <name>-<arch>, ids <arch>.<name>-cat<k>-<i>.")] = "timecat",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <family>.yaml and <family>/ weights.")] = DEFAULT_OUT,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_train: Annotated[Optional[int], typer.Option(help="Subsample the train split (stratified, seeded).",
                                                     show_default=False)] = None,
    eval_max: Annotated[int, typer.Option(min=1, help="Test images the trained heads are scored on.")] = 2000,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between resumable checkpoints.")] = 100,
    registry: RegistryOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (hub datasets from the cache).")] = False,
    format: ListFormatOpt = None,
) -> None:
    """Train a Time-Cat zoo: one budget split as CAT1 / CAT2 / CAT4 ..., written as a registry family.

    Kill it at any time: the same command resumes from the last checkpoint and ends with the same weights.

    Examples:

      zoo-survey pretrain -a test_resnet -d fashion-mnist-a --steps 1200 --cat 1,2,4

      zoo-survey pretrain -a resnet18 -d fashion-mnist-a --images 1536000 --batch-size 256 --wide-args '{"channels": [128, 256, 512, 1024]}' --device cuda

      zoo-survey run -r zoo-pretrain -f timecat-test_resnet --members cat4 --image-size 32 -d fashion-mnist-b,digits
    """
    offline = offline_env(offline)
    reg = open_registry(registry)
    spec = reg.dataset(dataset)
    recipe = Recipe(opt=opt, lr=lr, weight_decay=weight_decay, warmup=warmup, min_lr=min_lr, smoothing=smoothing,
                    augment=augment, image_size=image_size)
    plan = plan_zoo(arch, cats=parse_list(cat, "cat", int), steps=steps, images=images, batch_size=batch_size, seed=seed,
                    name=name, model_args=_json_object(model_args, "--model-args"),
                    wide_args=_json_object(wide_args, "--wide-args"), wide_arch=wide_arch)
    dev = resolve_device(device)
    console.print(f"[bold]{plan.family}[/]: {plan.steps:,} steps x {plan.batch_size} = {plan.images:,} images on "
                  f"{spec.id}, as " + ", ".join(f"{g} ({len(plan.group(g))} x {plan.group(g)[0].steps:,} steps)"
                                                  for g in dict.fromkeys(m.group for m in plan.members)), soft_wrap=True)
    with RichTrainHooks() as hooks:
        report = pretrain(plan, spec, recipe, out, device=dev, max_train=max_train, eval_max=eval_max, offline=offline,
                          checkpoint_every=checkpoint_every, hooks=hooks)
    rows = [[m.id, m.group, m.seed, m.steps, m.images_seen, f"{r['params'] / 1e6:.3g}", f"{r['gmacs']:.3g}",
             f"{100 * r['head_top1']:.1f}", f"{r['seconds']:.0f}", r["images_per_s"] or ""]
            for m in plan.members for r in [report.records[m.id]]]
    emit([Table(("id", "group", "seed", "steps", "images seen", "params (M)", "GMACs", "head top-1 (%)", "seconds",
                 "img/s"), rows, title=f"{plan.family} on {spec.id}")], console, format, titled=True)
    console.print(f"{len(report.trained)} member(s) trained, {len(report.skipped)} already done. Family: {report.yaml}",
                  soft_wrap=True)
    cats = [g for g in plan.ensembles if g.startswith("cat")]
    if cats:
        console.print(f"Next: zoo-survey run -r {out} -f {plan.family} --members {cats[-1]} --image-size {image_size} "
                      "-d <datasets> (extract at the training resolution)", soft_wrap=True)
