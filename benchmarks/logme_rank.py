"""How well LogME ranks models, against their linear-probe accuracy (Kendall's tau).

Runs the offline family (efficientnet-lite: lite0, lite1, lite2 and the lite0+lite1
ensemble) on the built-in datasets with the default CPU budget (96 px, 2,000 / 1,000),
probes `linear` and `logme`, and prints tau per dataset between the LogME score (train+val,
no training) and the linear probe's test top-1, then a final JSON line with the mean tau.
Features come from the cache the default run fills; missing ones are extracted first.

    python benchmarks/logme_rank.py [--datasets digits,lfw-subset,fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import LITE  # noqa: F401  (puts the repo on sys.path)

from zoo_survey.features.cache import FeatureCache, cache_root
from zoo_survey.probes import PROBES
from zoo_survey.results.report import ranking_table
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import run_survey
from zoo_survey.zoo.registry import load_registry


def main() -> None:
    from scipy.stats import kendalltau

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,lfw-subset,fashion-mnist")
    args = ap.parse_args()
    reg = load_registry()
    plan = plan_family(reg.family("efficientnet-lite"), 2)
    options = resolve_options(device="cpu", probes=("linear", "logme"))  # the CPU limits: 96 px, 2,000 / 1,000
    with tempfile.TemporaryDirectory() as tmp:
        report = run_survey([plan], [reg.dataset(d) for d in args.datasets.split(",")], FeatureCache(cache_root()),
                            Path(tmp) / "results.sqlite", options)
    taus = {}
    for _fam, ds, ranked, _tau in ranking_table(report.rows, PROBES.get("logme")).rows:
        rows = [r for r in report.rows if r.dataset == ds]
        sc = {r.comparison: r.score for r in rows if r.probe == "logme"}
        acc = {r.comparison: r.top1 for r in rows if r.probe == "linear"}
        names = sorted(sc)
        taus[ds] = float(kendalltau([sc[n] for n in names], [acc[n] for n in names]).statistic)
        print(f"{ds}: tau {taus[ds]:+.2f}; LogME {ranked}; linear top-1 "
              + ", ".join(f"{n} {acc[n]:.3f}" for n in sorted(acc, key=lambda n: -acc[n])))
    print(json.dumps({"benchmark": "logme_rank", "models": len(plan.comparisons), "kendall_tau": taus,
                      "mean_tau": round(sum(taus.values()) / len(taus), 3)}))


if __name__ == "__main__":
    main()
