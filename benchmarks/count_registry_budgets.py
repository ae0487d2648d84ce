"""Recount the budget numbers of a model-family registry file from timm, offline.

For every checkpoint in the given family YAML file(s) this builds
``timm.create_model(arch, pretrained=False)`` (default classifier) and compares:

* ``params_m``    -- parameter count / 1e6, rounded to 2 decimals;
* ``gflops``      -- multiply-accumulates of one eval forward of a 1x3xSxS input at the
                     entry's ``input_size``, counted with torch.utils.flop_counter
                     (FLOPs / 2e9), rounded to 3 significant digits;
* ``feature_dim`` -- the pooled pre-logits width (the classifier's ``in_features``,
                     else ``model.num_features``);
* ``input_size``  -- against ``input_size[-1]`` of timm's pretrained config for the tag,
                     when timm knows the tag.

Nothing is downloaded. Prints one line per mismatch, then a final JSON line
``{"checked": N, "mismatches": M}``; exits 1 when anything mismatches.

    python benchmarks/count_registry_budgets.py registries/models/resnet.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import timm
import torch
from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.zoo.flops import count_gmacs
from zoo_survey.zoo.registry import load_files


def round_sig(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (4.1059 -> 4.11, 0.38512 -> 0.385)."""
    if x == 0:
        return 0.0
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def feature_dim(model: torch.nn.Module) -> int:
    """Width of the pooled pre-logits features the classifier reads."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, torch.nn.Linear):
        return int(head.in_features)
    return int(model.num_features)


def measure(arch: str, input_size: int) -> dict:
    """params_m, gflops (GMACs at input_size) and feature_dim of a randomly initialised timm model."""
    model = timm.create_model(arch, pretrained=False).eval()
    params = sum(p.numel() for p in model.parameters())
    return {
        "params_m": round(params / 1e6, 2),
        "gflops": round_sig(count_gmacs(model, input_size), 3),
        "feature_dim": feature_dim(model),
    }


def cfg_input_size(checkpoint_id: str) -> int | None:
    """``input_size[-1]`` of timm's pretrained config for ``arch.tag``; None if timm lacks the tag."""
    if checkpoint_id not in timm.list_pretrained(checkpoint_id):
        return None
    return int(timm.models.get_pretrained_cfg(checkpoint_id).input_size[-1])


def check(files: list[Path]) -> tuple[int, int]:
    reg = load_files(files)
    checked = mismatches = 0
    for fam in reg.families.values():
        for c in fam.checkpoints:
            checked += 1
            got = measure(c.arch, c.input_size)
            want = {"params_m": c.params_m, "gflops": round_sig(c.gflops, 3), "feature_dim": c.feature_dim}
            cfg_size = cfg_input_size(c.id)
            if cfg_size is not None:
                got["input_size"], want["input_size"] = cfg_size, c.input_size
            bad = {k: (want[k], got[k]) for k in want if not math.isclose(want[k], got[k], rel_tol=1e-9)}
            if bad:
                mismatches += 1
                diffs = ", ".join(f"{k}: registry {w} != timm {g}" for k, (w, g) in bad.items())
                print(f"{c.defined_in.name}: {c.id}: {diffs}", flush=True)
    return checked, mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="family YAML file(s)")
    args = ap.parse_args(argv)
    checked, mismatches = check(args.files)
    print(json.dumps({"checked": checked, "mismatches": mismatches}))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
