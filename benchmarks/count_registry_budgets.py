"""Recount the budget numbers of model-family registry files from timm, offline.

For every checkpoint in the given family YAML file(s) (default: every shipped family) this
counts, with :func:`zoo_survey.zoo.budgets.count_entry` (the architecture built on torch's
meta device with ``pretrained=False``: nothing is downloaded or allocated), and compares:

* ``params_m``    -- parameter count / 1e6, rounded to 2 decimals, with the head of the entry's
                     timm tag (its pretrained config's ``num_classes``);
* ``gflops``      -- multiply-accumulates of one eval forward of a 1x3xSxS input at the
                     entry's ``input_size`` (FLOPs / 2e9), rounded to 3 significant digits;
* ``feature_dim`` -- the width of the entry's ``features`` output;
* ``input_size``  -- against the entry's ``preprocess.input_size``, else ``input_size[-1]`` of timm's
                     pretrained config for the tag, when timm knows the tag;

and that every tag the entries name is in timm's pretrained list. ``--rel-tol`` allows a
relative difference on params and GFLOPs (default 0: the rounded numbers must be equal;
``registry validate`` allows 1%). Prints one line per mismatching field or unknown tag, then a final JSON line
``{"checked": N, "mismatches": M, "seconds": S}``; exits 1 when anything mismatches.

    python benchmarks/count_registry_budgets.py registries/models/resnet.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.zoo.budgets import check_registry
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="family YAML files or folders [default: every shipped family]")
    ap.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance on params_m and gflops")
    args = ap.parse_args(argv)
    files = registry_files([], args.files) if args.files else registry_files([SHIPPED_REGISTRY / "models"])
    start = time.perf_counter()
    checked, mismatches = check(files, args.rel_tol)
    print(json.dumps({"checked": checked, "mismatches": mismatches, "seconds": round(time.perf_counter() - start, 1)}))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
