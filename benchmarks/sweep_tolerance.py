"""Where the batched and the sequential engine part on a linear row: the validation counts per C at two sweep tolerances.

On two rows of the default survey where the engines choose another C (digits, lite1; fashion-mnist, lite0+lite1, the
features from the cache, extracted first if missing), the linear probe's sweep is run by the batched engine and the
sequential reference (``benchmarks/_reference_probes.py``), each at the default sweep tolerance (10 x tol) and solved
nearly exactly (1e-6). Prints the validation images right at every C evaluated and the chosen C of each, then a final
JSON line. What it showed (docs/probes.md): at 1e-6 the two engines count the same images at every C and choose the
same C; at the default they part, each where its own stopping points lead.

    python benchmarks/sweep_tolerance.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _reference_probes import RefLinearProbe  # noqa: E402 - after the sys.path insert above

from zoo_survey.api import prepare_survey  # noqa: E402
from zoo_survey.probes import LinearProbe  # noqa: E402
from zoo_survey.probes.base import fit_threads  # noqa: E402
from zoo_survey.probes.combine import probe_inputs  # noqa: E402
from zoo_survey.survey.run import extract_all  # noqa: E402
from zoo_survey.survey.runner import RunReport  # noqa: E402
from zoo_survey.survey.units import probe_units  # noqa: E402

ROWS = (("digits", "tf_efficientnet_lite1.pypi"),
        ("fashion-mnist", "tf_efficientnet_lite0.pypi+tf_efficientnet_lite1.pypi"))


def main() -> None:
    job = prepare_survey(offline=True, device="cpu", workers=0)
    checkpoints = list({c.id: c for plan in job.plans for c in plan.checkpoints}.values())
    runner = extract_all(checkpoints, job.datasets, job.cache, job.options, None, RunReport(), None)
    units = probe_units(job.plans, runner.ws.prepared, runner.ws.resolved, job.options)
    out = []
    for dataset, comparison in ROWS:
        u = next(u for u in units if u.probe.name == "linear" and u.dataset.id == dataset and u.comparison.name == comparison)
        with fit_threads():
            f = u.features(runner.ws)
            X, widths = probe_inputs(f.blocks, "raw")
            kw = {"block_widths": widths} if len(f.blocks["train"]) > 1 else {}
            fits = {name: cls(sweep_tol=tol, **kw).fit(X["train"], f.labels["train"], X_val=X["val"], y_val=f.labels["val"])
                    for name, cls, tol in (("batched_default", LinearProbe, None), ("reference_default", RefLinearProbe, None),
                                           ("batched_1e-6", LinearProbe, 1e-6), ("reference_1e-6", RefLinearProbe, 1e-6))}
        Cs = sorted(set().union(*[e.val_correct_ for e in fits.values()]))
        print(f"{dataset} · {comparison} ({len(f.labels['val'])} validation images); C: " + " ".join(f"{c:.2g}" for c in Cs))
        for name, e in fits.items():
            print(f"  {name:18s} chosen C {e.best_C_:<8.3g} right: " + " ".join(f"{e.val_correct_.get(c, '-'):>3}" for c in Cs))
        out.append({"dataset": dataset, "comparison": comparison,
                    "chosen_C": {n: e.best_C_ for n, e in fits.items()},
                    "same_counts_at_1e-6": fits["batched_1e-6"].val_correct_ == fits["reference_1e-6"].val_correct_})
    print(json.dumps({"benchmark": "sweep_tolerance", "rows": out}))


if __name__ == "__main__":
    main()
