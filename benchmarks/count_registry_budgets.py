"""Recount the budget numbers of model-family registry files from timm, offline.

For every checkpoint in the given family YAML file(s) (default: every shipped family) this
counts, with :func:`zoo_survey.zoo.budgets.count_entry` (the architecture built on torch's
meta device with ``pretrained=False``: nothing is downloaded or allocated), and compares:

* ``params_m``    -- parameter count / 1e6, rounded to 2 decimals, with the head of the entry's
                     timm tag (its pretrained config's ``num_classes``);
* ``gmacs``       -- multiply-accumulates of one eval forward of a 1x3xSxS input at the
                     entry's ``input_size`` (FLOPs / 2e9), rounded to 3 significant digits;
* ``feature_dim`` -- the width of the entry's ``feature_output``;
* ``input_size``  -- against the entry's ``preprocess.input_size``, else ``input_size[-1]`` of timm's
                     pretrained config for the tag, when timm knows the tag;

and that every tag the entries name is in timm's pretrained list. ``--rel-tol`` allows a
relative difference on params and GMACs (default 0: the rounded numbers must be equal;
``registry validate`` allows 1%). Prints one line per mismatching field or unknown tag, then a final JSON line
``{"checked": N, "mismatches": M, "seconds": S}``; exits 1 when anything mismatches.

``--cpu`` also counts every distinct architecture below 1.5 GB of weights again on the CPU (real
tensors, as before the meta device) and adds, side by side, how many counts differ and both times:
``"cpu": {"architectures": A, "differ": D, "meta_s": .., "cpu_s": .., "ratio": ..}``.

    python benchmarks/count_registry_budgets.py zoo_survey/registries/models/resnet.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.zoo.budgets import _count, check_registry, is_timm_entry, pretrained_cfg, round_sig, timm_tag
from zoo_survey.zoo.checkpoints import create_model, feature_output_from
from zoo_survey.zoo.flops import count_gmacs
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_files, registry_files


def check(files: list[Path], rel_tol: float = 0.0) -> tuple[int, int]:
    """Recount every entry defined in ``files``; print each problem; return (entries checked, problems)."""
    reg = load_files(registry_files([SHIPPED_REGISTRY], files))  # with the shipped families, which a file may include
    wanted = {Path(f).resolve() for f in files}
    specs = list({c.id: c for fam in reg.families.values() for c in fam.checkpoints if c.defined_in in wanted}.values())
    problems = check_registry(specs, specs, rel_tol=rel_tol)
    for line in problems:
        print(line, flush=True)
    return len(specs), len(problems)


def compare_cpu(specs) -> dict:
    """Count each distinct (architecture, head, size, feature output) on meta and on the CPU; both timed."""
    import torch

    keys = {}
    for c in specs:
        if not c.heavy:
            nc = int(pretrained_cfg(timm_tag(c))["num_classes"]) if is_timm_entry(c) else None
            keys[(c.arch, nc, c.input_size, c.feature_output)] = c.id
    differ, meta_s, cpu_s = 0, 0.0, 0.0
    for arch, nc, size, feature_output in keys:
        _count.cache_clear()
        t = time.perf_counter()
        meta = _count(arch, nc, size, feature_output)
        meta_s += time.perf_counter() - t
        t = time.perf_counter()
        model = create_model(arch, size, arch, **({} if nc is None else {"num_classes": nc})).eval().requires_grad_(False)
        seen = {}

        def forward(x, model=model, seen=seen):
            seen["f"] = model.forward_features(x)
            return model.forward_head(seen["f"])

        gmacs = count_gmacs(forward, size)
        with torch.inference_mode():
            width = feature_output_from(model, seen["f"], feature_output).shape[-1]
        cpu = (round(sum(p.numel() for p in model.parameters()) / 1e6, 2), round_sig(gmacs), int(width))
        cpu_s += time.perf_counter() - t
        if cpu != (meta.params_m, meta.gmacs, meta.feature_dim):
            differ += 1
            print(f"meta and CPU differ for {arch} at {size} px: {meta} vs {cpu}", flush=True)
        del model
    return {"architectures": len(keys), "differ": differ, "meta_s": round(meta_s, 1), "cpu_s": round(cpu_s, 1),
            "ratio": round(cpu_s / meta_s, 2) if meta_s else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="family YAML files or folders [default: every shipped family]")
    ap.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance on params_m and gmacs")
    ap.add_argument("--cpu", action="store_true", help="also count on the CPU and compare (slow)")
    args = ap.parse_args(argv)
    files = registry_files([], args.files) if args.files else registry_files([SHIPPED_REGISTRY / "models"])
    start = time.perf_counter()
    checked, mismatches = check(files, args.rel_tol)
    out = {"checked": checked, "mismatches": mismatches, "seconds": round(time.perf_counter() - start, 1)}
    if args.cpu:
        reg = load_files(registry_files([SHIPPED_REGISTRY], files))
        wanted = {Path(f).resolve() for f in files}
        out["cpu"] = compare_cpu([c for f in reg.families.values() for c in f.checkpoints if c.defined_in in wanted])
        mismatches += out["cpu"]["differ"]
    print(json.dumps(out))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
