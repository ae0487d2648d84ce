"""Training one member: timm's model, optimizer and scheduler, label smoothing, AMP on CUDA; resumable.

The recipe is the field's ordinary one: ``timm.create_model(arch, **model_args)``,
``timm.optim.create_optimizer_v2`` (AdamW by default, no weight decay on norms and
biases), ``timm.scheduler.CosineLRScheduler`` stepped per update with a linear warmup,
label-smoothed cross-entropy, bf16 autocast and ``channels_last`` on CUDA.

Every ``checkpoint_every`` steps the model, optimizer, scheduler and RNG states go to
``<tag>.state.pt`` (written atomically), and a rerun of the same command continues from
it: since the data order and augmentation are functions of (seed, step)
(:mod:`.data`), the resumed run ends with the weights an uninterrupted run ends with
(bit for bit on the same machine and thread count). The finished member is
``<tag>.safetensors`` plus ``<tag>.json``, its record, written last: a member with a
record is done, and a rerun skips it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..digests import file_sha256
from ..errors import ZooSurveyError, ZooSurveyFailure, shown, unknown
from ..files import atomic_write
from ..zoo.flops import count_gmacs
from .budget import Member
from .data import AUGMENTS, Batches, TrainingData


@dataclass(frozen=True)
class Recipe:
    """The training hyper-parameters every member of a zoo shares (each member's length is its own)."""

    opt: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of each member's steps, linear from lr / 100
    min_lr: float = 0.01  # the cosine's floor, as a fraction of lr
    smoothing: float = 0.1
    augment: str = "crop-flip"
    image_size: int = 32
    interpolation: str = "bilinear"

    def check(self) -> None:
        import timm.optim

        names = [o if isinstance(o, str) else o[0] for o in timm.optim.list_optimizers()]
        if self.opt not in names:
            raise unknown("optimizer (timm.optim)", self.opt, names)
        if not self.lr > 0:
            raise ZooSurveyError(f"'lr' must be positive, got {self.lr}", param="lr")
        if self.weight_decay < 0:
            raise ZooSurveyError(f"'weight_decay' must be 0 or more, got {self.weight_decay}", param="weight_decay")
        if not 0 <= self.warmup < 1:
            raise ZooSurveyError(f"'warmup' is a fraction of each member's steps, in [0, 1); got {self.warmup}", param="warmup")
        if not 0 <= self.min_lr <= 1:
            raise ZooSurveyError(f"'min_lr' is a fraction of 'lr', in [0, 1]; got {self.min_lr}", param=("min_lr", "lr"))
        if not 0 <= self.smoothing < 1:
            raise ZooSurveyError(f"'smoothing' must be in [0, 1), got {self.smoothing}", param="smoothing")
        if self.augment not in AUGMENTS:
            raise ZooSurveyError(f"'augment' must be one of {', '.join(AUGMENTS)}, got {shown(self.augment)}", param="augment")

    def describe(self, batch_size: int) -> str:
        """One line for the registry's ``pretrain.recipe``."""
        return (f"zoo-survey pretrain: {self.opt} lr {self.lr:g} wd {self.weight_decay:g}, batch {batch_size}, cosine to "
                f"{self.min_lr:g} x lr, warmup {self.warmup:.0%}, label smoothing {self.smoothing:g}, {self.augment}, "
                f"{self.image_size} px")


@dataclass(frozen=True)
class ModelFacts:
    """What the registry records of an architecture with its kwargs, counted on a freshly built model."""

    params: int
    gmacs: float  # one forward at the training resolution (zoo/flops.py)
    feature_dim: int  # pooled pre-logits
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_model(arch: str, model_args: Mapping[str, Any], num_classes: int):
    """``timm.create_model`` with a clear error for an unknown architecture or a keyword it does not take."""
    import timm

    if not timm.is_model(arch):
        raise unknown(f"timm architecture (timm {timm.__version__})", arch, timm.list_models())
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_args)
    except Exception as e:  # noqa: BLE001 - timm raises TypeError, ValueError, AssertionError for bad kwargs
        raise ZooSurveyError(f"timm cannot build {arch!r} with model_args {dict(model_args)}: {type(e).__name__}: {e}") from e


def model_facts(arch: str, model_args: Mapping[str, Any], num_classes: int, image_size: int) -> ModelFacts:
    """Params, GMACs at ``image_size``, feature dim, and the normalization of ``arch`` (from its pretrained config)."""
    import torch
    from timm.data import resolve_data_config

    model = build_model(arch, model_args, num_classes).eval()
    try:
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(torch.zeros(1, 3, image_size, image_size)), pre_logits=True)
        gmacs = count_gmacs(model, image_size)
    except Exception as e:  # noqa: BLE001 - a model that cannot take this resolution fails in many ways
        raise ZooSurveyError(
            f"{arch!r} with model_args {dict(model_args)} cannot run at {image_size} px: {type(e).__name__}: {e}; "
            "choose another 'image_size' or 'model_args' (e.g. img_size, patch_size)", param=("image_size", "model_args")
        ) from e
    cfg = resolve_data_config({}, model=model)
    mean, std = (tuple(float(v) for v in cfg[k]) for k in ("mean", "std"))
    return ModelFacts(sum(p.numel() for p in model.parameters()), gmacs, int(feats.shape[-1]), mean, std)  # type: ignore[arg-type]  # 3-tuples from timm's config


class TrainHooks:
    """Progress callbacks; the CLI shows a rich bar with loss and images per second, tests pass nothing."""

    def start(self, member: Member, done: int) -> None:
        pass

    def step(self, member: Member, step: int, loss: float, images_per_s: float) -> None:
        pass

    def finish(self, member: Member, record: Mapping[str, Any], trained: bool) -> None:
        pass


@dataclass(frozen=True)
class MemberFiles:
    weights: Path
    record: Path
    state: Path

    @classmethod
    def of(cls, folder: Path, member: Member) -> MemberFiles:
        return cls(folder / f"{member.tag}.safetensors", folder / f"{member.tag}.json", folder / f"{member.tag}.state.pt")


def member_config(member: Member, recipe: Recipe, data: TrainingData, facts: ModelFacts) -> dict[str, Any]:
    """Everything the trained weights depend on; a rerun with another config in the same folder is refused."""
    return {
        "arch": member.arch,
        "model_args": json.loads(json.dumps(dict(member.model_args))),  # tuples as lists, as JSON and YAML read them
        "seed": member.seed,
        "steps": member.steps,
        "batch_size": member.batch_size,
        "num_classes": data.num_classes,
        "mean": list(facts.mean),
        "std": list(facts.std),
        "recipe": asdict(recipe),
        "data": data.identity(),
    }


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _refuse(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> ZooSurveyError:
    return ZooSurveyError(
        f"{path} was trained with other settings ({', '.join(_differences(old, new))} differ); train into another "
        "'out', or delete it to retrain", param="out"
    )


def finished(files: MemberFiles, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The member's record when it finished with ``config`` and its weights are intact; None when it has not finished."""
    if not files.record.is_file():
        return None
    try:
        record = json.loads(files.record.read_text())
    except (OSError, ValueError) as e:
        raise ZooSurveyFailure(f"{files.record} is unreadable ({e}); delete it to retrain that member") from e
    if record.get("config") != config:
        raise _refuse(files.record, record.get("config") or {}, config)
    if not files.weights.is_file() or "sha256:" + file_sha256(files.weights) != record.get("weights"):
        raise ZooSurveyFailure(
            f"{files.weights} is missing or does not match its record {files.record.name}; delete the record to retrain"
        )
    return record


def train_member(member: Member, recipe: Recipe, data: TrainingData, facts: ModelFacts, folder: Path, *,
                 device: str = "cpu", checkpoint_every: int = 100, hooks: TrainHooks | None = None
                 ) -> tuple[dict[str, Any], bool]:
    """Train ``member`` (or finish training it, or find it finished); returns its record and whether it trained now.

    >>> record, trained = train_member(plan.members[0], Recipe(), data, facts, out / plan.family)   # doctest: +SKIP
    >>> record["head_top1"]                                                                          # doctest: +SKIP
    0.91
    """
    import torch
    from safetensors.torch import save as save_safetensors
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    hooks = hooks or TrainHooks()
    if checkpoint_every < 1:
        raise ZooSurveyError(f"'checkpoint_every' must be at least 1 step, got {checkpoint_every}", param="checkpoint_every")
    files = MemberFiles.of(folder, member)
    config = member_config(member, recipe, data, facts)
    done = finished(files, config)
    if done is not None:
        hooks.finish(member, done, trained=False)
        return done, False

    cuda = device.startswith("cuda")
    torch.manual_seed(member.seed)  # the initialisation
    model = build_model(member.arch, member.model_args, data.num_classes).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    opt = create_optimizer_v2(model, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = int(recipe.warmup * member.steps)
    sched = CosineLRScheduler(opt, t_initial=max(1, member.steps - warmup), lr_min=recipe.lr * recipe.min_lr, warmup_t=warmup,
                              warmup_lr_init=recipe.lr / 100, warmup_prefix=True, t_in_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(recipe.smoothing) if recipe.smoothing > 0 else torch.nn.CrossEntropyLoss()
    mean = torch.tensor(facts.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(facts.std, device=device).view(1, 3, 1, 1) * 255
    batches = Batches(data, member.batch_size, member.seed, recipe.augment, device)

    start, seconds, resumed = 0, 0.0, []
    if files.state.is_file():
        state = _read_state(files.state)
        if state["config"] != config:
            raise _refuse(files.state, state["config"], config)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start, seconds, resumed = int(state["step"]), float(state["seconds"]), [*state["resumed"], int(state["step"])]

    def save_state(step: int) -> None:
        payload = {"config": config, "step": step, "seconds": seconds, "resumed": resumed, "model": model.state_dict(),
                   "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                   "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None}
        atomic_write(files.state, lambda f: torch.save(payload, f))

    hooks.start(member, start)
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    report_every = 20 if cuda else 1  # reading the loss waits for the GPU
    loss_sum = torch.zeros((), device=device)
    last_losses: list[float] = []
    t0 = time.perf_counter()
    tick, tick_step = t0, start
    for step in range(start, member.steps):
        sched.step_update(step)
        x, y = batches.batch(step)
        x = (x.float() - mean) / std
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
        if (step + 1) % report_every == 0 or step + 1 == member.steps:
            now = time.perf_counter()
            mean_loss = float(loss_sum) / (step + 1 - tick_step)
            if not mean_loss == mean_loss or mean_loss in (float("inf"), float("-inf")):
                raise ZooSurveyFailure(
                    f"{member.id}: the loss is {mean_loss} at step {step + 1}; lower 'lr' (now {recipe.lr:g}) and delete "
                    f"{files.state} if it exists", param="lr"
                )
            hooks.step(member, step + 1, mean_loss, member.batch_size * (step + 1 - tick_step) / max(now - tick, 1e-9))
            last_losses.append(mean_loss)
            loss_sum.zero_()
            tick, tick_step = now, step + 1
        if (step + 1) % checkpoint_every == 0 and step + 1 < member.steps:
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_state(step + 1)
    seconds += time.perf_counter() - t0

    model.eval()
    head_top1 = _evaluate(model, data, mean, std, device, autocast)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(files.weights, lambda f: f.write(save_safetensors(tensors)))
    record = {
        "id": member.id,
        "config": config,
        "weights": "sha256:" + file_sha256(files.weights),
        "group": member.group,
        "steps": member.steps,
        "images_seen": member.images_seen,
        "params": facts.params,
        "gmacs": facts.gmacs,
        "feature_dim": facts.feature_dim,
        "head_top1": head_top1,
        "eval_images": len(data.eval_labels),
        "final_loss": _tail_mean(last_losses),
        "seconds": round(seconds, 3),
        "images_per_s": round(member.images_seen / seconds, 1) if seconds > 0 else None,  # every session's
        "resumed_at": resumed,
        "device": device,
        "torch": torch.__version__,
    }
    atomic_write(files.record, lambda f: f.write(json.dumps(record, indent=1).encode()))
    files.state.unlink(missing_ok=True)
    hooks.finish(member, record, trained=True)
    return record, True


def _read_state(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: say which, and how to recover
        raise ZooSurveyFailure(f"cannot read the training state {path} ({type(e).__name__}: {e}); delete it to restart "
                               "that member from step 0") from e


def _tail_mean(values: list[float], fraction: float = 0.1) -> float | None:
    if not values:
        return None
    tail = values[-max(1, int(len(values) * fraction)):]
    return round(sum(tail) / len(tail), 5)


def _evaluate(model, data: TrainingData, mean, std, device: str, autocast, batch_size: int = 256) -> float:
    """Top-1 of the trained head on the evaluation subset of the pretraining task's test split."""
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.eval), batch_size):
            x = torch.from_numpy(data.eval[i:i + batch_size]).to(device)
            x = (x.float() - mean) / std
            with autocast:
                pred = model(x).argmax(-1).cpu()
            correct += int((pred == torch.from_numpy(data.eval_labels[i:i + batch_size])).sum())
    return round(correct / max(len(data.eval), 1), 5)
