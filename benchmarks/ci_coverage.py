"""Coverage of the paired 95% interval, and the false-positive rate of the verdict at a true difference of 0.

Synthetic paired predictions with a known truth: for each of n test images the single is
right with probability p_single; the ensemble keeps the single's outcome with probability
1 - flip and otherwise is right with probability p_flip, so the true difference is known in
closed form. Each simulation draws n images, computes the interval exactly as the report
does (zoo_survey.results.stats.paired_difference: Newcombe's interval, McNemar's exact p) and
checks whether it covers the truth, and, where the truth is 0, how often the verdict says
significant. Targets: 93-97% coverage where the test images hold enough discordant pairs for
any interval to be near-exact, and a false-positive rate <= 5% everywhere. With 0-3 discordant
images on average every interval that never says "significant" wrongly must cover (nearly)
always: those settings show it. Prints one line per setting, then a final JSON line.

    python benchmarks/ci_coverage.py [--sims 1000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import LITE  # noqa: F401 - importing it puts the repository on sys.path

from zoo_survey.results.stats import paired_difference

# (n test images, p_single, flip, p_flip): from a few discordant images to hundreds; no gain, gains, a loss.
# The default run's linear probe on digits had 25 discordant images of 449 (5.6%).
SETTINGS = [
    (1000, 0.84, 0.0005, 0.84),  # ~0-1 discordant images, no true difference
    (1000, 0.84, 0.004, 0.84),  # ~1 discordant image
    (1000, 0.84, 0.012, 0.84),  # ~3 discordant images
    (1000, 0.84, 0.006, 0.99),  # ~1 discordant, a small gain, all lopsided (issue 19's 4-0 row)
    (449, 0.94, 0.04, 0.94),  # ~2 discordant
    (200, 0.80, 0.10, 0.80),  # ~6 discordant images, no true difference
    (1000, 0.84, 0.06, 0.84),  # ~8 discordant, no true difference
    (1000, 0.84, 0.035, 0.99),  # ~6 discordant, a gain
    (449, 0.94, 0.06, 0.50),  # digits-like: ~13 discordant, a loss
    (1000, 0.84, 0.08, 0.95),  # ~15 discordant, a gain
    (1000, 0.84, 0.30, 0.86),  # Fashion-MNIST-like: ~75 discordant, a small gain
    (10000, 0.70, 0.20, 0.75),  # a full test set: ~800 discordant
]


def truth(p_single: float, flip: float, p_flip: float) -> float:
    """E[ensemble right] - E[single right] = flip * (p_flip - p_single)."""
    return flip * (p_flip - p_single)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    results = []
    start = time.perf_counter()
    for n, p_single, flip, p_flip in SETTINGS:
        true = truth(p_single, flip, p_flip)
        covered = significant = discordant = 0
        for _ in range(args.sims):
            single = rng.random(n) < p_single
            redraw = rng.random(n) < flip
            ensemble = np.where(redraw, rng.random(n) < p_flip, single)
            d = paired_difference(single, ensemble)
            covered += d.low <= true <= d.high
            significant += d.significant
            discordant += d.only_a + d.only_b
        rate, mean_d = covered / args.sims, discordant / args.sims
        fpr = significant / args.sims if true == 0 else None
        results.append({"n": n, "true_difference": round(true, 4), "mean_discordant": round(mean_d, 1), "coverage": rate,
                        "false_positive_rate": fpr})
        print(f"n={n:>5}  ~{mean_d:5.1f} discordant  true difference {100 * true:+.2f} points: covered in {rate:.1%}"
              + ("" if fpr is None else f", significant in {fpr:.1%}") + f" of {args.sims}")
    near_exact = [r["coverage"] for r in results if r["mean_discordant"] >= 5]
    fprs = [r["false_positive_rate"] for r in results if r["false_positive_rate"] is not None]
    print(json.dumps({"benchmark": "ci_coverage", "sims": args.sims, "settings": results,
                      "min_coverage": min(r["coverage"] for r in results),
                      "coverage_range_5plus_discordant": [min(near_exact), max(near_exact)],
                      "within_93_97_5plus_discordant": all(0.93 <= r <= 0.97 for r in near_exact),
                      "max_false_positive_rate": max(fprs), "fpr_at_most_5pct": max(fprs) <= 0.05,
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
