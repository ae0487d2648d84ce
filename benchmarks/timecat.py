"""The miniature Time-Cat table: at one pretraining budget, CAT1 against CAT2 / CAT4 (and a wide single),
for a small ResNet, ViT and ConvNeXt, pretrained on Fashion-MNIST classes 0-4 and transferred.

For each architecture `zoo-survey pretrain`'s library trains, on fashion-mnist-a (T-shirt,
Trouser, Pullover, Dress, Coat): CAT1, one model for the whole budget (``--steps`` x
``--batch-size`` images); CAT2 and CAT4, 2 and 4 seeds for 1/2 and 1/4 of it each; and a wide
single of about 4x the parameters for the whole budget. The decoded training images are
shared by all 24 models. The survey then extracts features and fits the linear probe on
fashion-mnist-a (the pretraining task: the paper's "equal ImageNet top-1" column) and on
three transfer sets: fashion-mnist-b (the 5 held-out classes), digits and lfw-subset. Each
CAT-k (concatenated) and the wide single are set against CAT1 on the same test images with
the survey's paired bootstrap interval and McNemar p (results/analysis.pair), and the mean
transfer gain gets the two-level bootstrap over the three sets (results/stats.pooled_difference).

Prints the table, then a final JSON line with every figure, the wall time and the load
average at start and end (the machine is shared: say so when you quote a time).

    python benchmarks/timecat.py                        # CPU, ~20 minutes on 2 quiet cores
    python benchmarks/timecat.py --threads 1            # a busy machine: 1 thread beats 2 that wait on each other
    python benchmarks/timecat.py --large --device cuda  # the H200 configuration (timm's resnet18 / vit_tiny / convnext_atto)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.data.datasets import prepare
from zoo_survey.document import Document, Section, Table, to_markdown
from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import resolve_device
from zoo_survey.pretrain.budget import plan_zoo
from zoo_survey.pretrain.data import load_training_data
from zoo_survey.pretrain.run import pretrain
from zoo_survey.pretrain.trainer import Recipe, TrainHooks
from zoo_survey.results.analysis import pair
from zoo_survey.results.stats import pooled_difference
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import run_survey
from zoo_survey.zoo.registry import load_registry, registry_folders

PRETRAIN_ON = "fashion-mnist-a"
TRANSFER = ("fashion-mnist-b", "digits", "lfw-subset")


@dataclass(frozen=True)
class Arch:
    label: str
    arch: str
    model_args: dict[str, Any]
    wide_args: dict[str, Any] | None
    wide_arch: str | None = None


# CPU: timm's test models at 32 px (the ViT with 8 px patches: 16 tokens); each wide single has about 4x the params.
SMALL = (
    Arch("ResNet", "test_resnet", {}, {"channels": [64, 96, 96, 192], "stem_width": 32}),         # 0.37 M -> 1.49 M
    Arch("ViT", "test_vit", {"patch_size": 8, "img_size": 32}, {"embed_dim": 128, "num_heads": 4}),  # 0.26 M -> 1.02 M
    Arch("ConvNeXt", "test_convnext", {}, {"dims": [48, 64, 96, 128]}),                          # 0.21 M -> 0.78 M
)
# GPU: ordinary small models of each kind at 32 px.
LARGE = (
    Arch("ResNet", "resnet18", {}, {"channels": [128, 256, 512, 1024]}),                          # 11.2 M -> 44.6 M
    Arch("ViT", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, {}, "vit_small_patch16_224"),  # 5.4 M -> 21.3 M
    Arch("ConvNeXt", "convnext_atto", {}, None, "convnext_nano"),                                  # 3.4 M -> 15.0 M
)


class Log(TrainHooks):
    def finish(self, member, record, trained: bool) -> None:
        rate = f", {record['images_per_s']:.0f} img/s" if trained and record.get("images_per_s") else ""
        print(f"  {member.id}: {member.steps} steps, head top-1 {100 * record['head_top1']:.1f}%, "
              f"{record['seconds']:.0f} s{rate}{'' if trained else ' (already trained)'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="the GPU configuration (not runnable on a small CPU)")
    ap.add_argument("--steps", type=int, help="CAT1's budget in optimizer steps [800; --large 2000]")
    ap.add_argument("--batch-size", type=int, help="[32; --large 512]")
    ap.add_argument("--lr", type=float, help="[1e-3; --large 2e-3]")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--cats", default="2,4")
    ap.add_argument("--no-wide", action="store_true", help="leave out the wide single")
    ap.add_argument("--archs", default="ResNet,ViT,ConvNeXt")
    ap.add_argument("--max-train", type=int, default=None, help="pretraining images (default: all 24,000 of the train split)")
    ap.add_argument("--survey-max-train", type=int, help="probe train+val images per dataset [2000; --large all]")
    ap.add_argument("--survey-max-test", type=int, help="probe test images per dataset [1000; --large all]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads [torch's default]")
    ap.add_argument("--out", type=Path, help="work folder (zoos, feature cache, store) [a new temporary folder]")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    large = args.large
    steps = args.steps or (2000 if large else 800)
    batch = args.batch_size or (512 if large else 32)
    lr = args.lr or (2e-3 if large else 1e-3)
    cats = tuple(int(k) for k in args.cats.split(","))
    wanted = [a.strip() for a in args.archs.split(",")]
    archs = [a for a in (LARGE if large else SMALL) if a.label in wanted]
    device = resolve_device(args.device)
    out = args.out or Path(tempfile.mkdtemp(prefix="timecat-"))
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    print(f"Time-Cat miniature: {len(archs)} architectures, CAT1 budget {steps} steps x {batch} = {steps * batch:,} images "
          f"on {PRETRAIN_ON}, {args.image_size} px, {device}, {torch.get_num_threads()} thread(s); work folder {out}; "
          f"load average {load_start[0]:.1f}", flush=True)

    reg = load_registry()
    recipe = Recipe(lr=lr, image_size=args.image_size)
    spec = reg.dataset(PRETRAIN_ON)
    t0 = time.perf_counter()
    data = load_training_data(prepare(spec, max_train=args.max_train), args.image_size)
    decode_s = time.perf_counter() - t0
    print(f"decoded {len(data.train):,} training images in {decode_s:.1f} s", flush=True)
    families = {}
    train_s = {}
    for a in archs:
        plan = plan_zoo(a.arch, cats=cats, steps=steps, batch_size=batch, model_args=a.model_args,
                        wide_args=None if args.no_wide else a.wide_args, wide_arch=None if args.no_wide else a.wide_arch)
        print(f"{a.label}: training {len(plan.members)} models", flush=True)
        t0 = time.perf_counter()
        report = pretrain(plan, spec, recipe, out / "zoos", device=device, data=data, hooks=Log())
        train_s[a.label] = round(time.perf_counter() - t0, 1)
        families[a.label] = (plan, report)

    # The survey: every zoo as an ordinary registry family, compared with the survey's own plans and store.
    reg = load_registry(registry_folders([out / "zoos"]))
    options = resolve_options(device=device, image_size=args.image_size, probes=("linear",), full=large,
                              max_train=args.survey_max_train, max_test=args.survey_max_test)
    groups = [f"cat{k}" for k in sorted(set(cats) - {1})] + ([] if args.no_wide else ["wide"])
    plans = [plan_family(reg.family(plan.family), members=g) for plan, _ in families.values() for g in groups]
    datasets = [reg.dataset(d) for d in (PRETRAIN_ON, *TRANSFER)]
    t0 = time.perf_counter()
    result = run_survey(plans, datasets, FeatureCache(out / "cache"), out / "results.sqlite", options)
    survey_s = time.perf_counter() - t0

    rows = {(r.family, r.role, r.comparison, r.dataset): r for r in result.rows if r.probe == "linear"}
    table: list[dict[str, Any]] = []
    text_rows: list[list[str]] = []
    for label, (plan, report) in families.items():
        single = plan.baseline
        for g in ["cat1", *groups]:
            ids = [single.id] if g == "cat1" else list(plan.ensembles[g])
            # CAT1 is the baseline row, CAT-k the concatenated ensemble, the wide single its plan's lone member.
            role, comp = ("baseline", single.id) if g == "cat1" else ("ensemble", "+".join(ids)) if len(ids) > 1 else ("member", ids[0])
            recs = [report.records[i] for i in ids]
            line: dict[str, Any] = {
                "arch": label, "model": g, "members": ids,
                "params_m": round(sum(r["params"] for r in recs) / 1e6, 3),
                "pretrain_compute_vs_cat1": round(sum(r["gmacs"] * r["images_seen"] for r in recs)
                                                  / (report.records[single.id]["gmacs"] * single.images_seen), 3),
                "head_top1_mean": round(100 * sum(r["head_top1"] for r in recs) / len(recs), 2),
                "probe": {},
            }
            cells, pairs = [], []
            for d in (PRETRAIN_ON, *TRANSFER):
                base, this = rows.get((plan.family, "baseline", single.id, d)), rows.get((plan.family, role, comp, d))
                if this is None or this.top1 is None:
                    cells.append("missing")
                    continue
                cell: dict[str, Any] = {"top1": round(100 * this.top1, 2)}
                text = f"{100 * this.top1:.1f}"
                diff = None if g == "cat1" else pair(base, this)
                if diff is not None:
                    cell |= {"delta": round(100 * diff.delta, 2), "low": round(100 * diff.low, 2),
                             "high": round(100 * diff.high, 2), "mcnemar_p": round(diff.p_value, 4)}
                    text += f" ({100 * diff.delta:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}], p {diff.p_value:.2g})"
                    if d in TRANSFER and base is not None and base.correct is not None and this.correct is not None:
                        pairs.append((base.correct, this.correct))
                line["probe"][d] = cell
                cells.append(text)
            gain = ""
            if len(pairs) == len(TRANSFER):
                pooled = pooled_difference(pairs)
                mean, low, high = pooled.delta, pooled.low, pooled.high
                line["mean_transfer_gain"] = {"delta": round(100 * mean, 2), "low": round(100 * low, 2),
                                              "high": round(100 * high, 2)}
                gain = f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
            table.append(line)
            text_rows.append([label, g.upper() if g != "wide" else "wide", f"{line['params_m']:.2f}",
                              f"{line['pretrain_compute_vs_cat1']:.2f}x", f"{line['head_top1_mean']:.1f}", *cells, gain])
    header = ("arch", "model", "params (M)", "pretraining compute", "head top-1 (mean)", *(f"{d} (linear)" for d in
              (PRETRAIN_ON, *TRANSFER)), "mean transfer gain [95% CI]")
    print()
    print(to_markdown(Document("Time-Cat miniature", sections=(Section("", (
        "Linear-probe test top-1 (%); against CAT1: the difference in points, its paired 95% bootstrap interval and "
        "McNemar's p. The mean transfer gain pools the three transfer sets (two-level bootstrap). Head top-1: the "
        "trained classifier on 2,000 test images of the pretraining task, mean over the members.",),
        (Table(header, text_rows),)),))))

    load_end = os.getloadavg()
    wall = time.perf_counter() - t_start
    print(f"\nwall {wall:.0f} s (decode {decode_s:.0f} s, training {sum(train_s.values()):.0f} s, survey {survey_s:.0f} s); "
          f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end, on {os.cpu_count()} cores")
    print(json.dumps({
        "benchmark": "timecat", "large": large, "device": device, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "wall_s": round(wall, 1), "decode_s": round(decode_s, 1), "train_s": train_s,
        "survey_s": round(survey_s, 1), "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "config": {"steps": steps, "batch_size": batch, "images": steps * batch, "lr": lr, "image_size": args.image_size,
                   "cats": [1, *sorted(set(cats) - {1})], "wide": not args.no_wide, "pretrain_rows": len(data.train),
                   "survey_max_train": options.max_train, "survey_max_test": options.max_test,
                   "recipe": recipe.describe(batch)},
        "table": table,
    }))


if __name__ == "__main__":
    main()
