"""Coverage of the paired 95% interval: how often it contains the true ensemble-minus-single difference.

Synthetic paired predictions with a known truth: for each of n test images the single is
right with probability p_single; the ensemble keeps the single's outcome with probability
1 - flip and otherwise is right with probability p_flip, so the true difference is known in
closed form. Each simulation draws n images, computes the interval exactly as the report
does (zoo_survey.results.stats.paired_difference), and checks whether it covers the truth.
Target: 93-97% of 1,000 simulations, for each setting. Prints one line per setting, then a
final JSON line.

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
    (200, 0.80, 0.10, 0.80),  # ~6 discordant images, no true difference
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
        covered = 0
        for sim in range(args.sims):
            single = rng.random(n) < p_single
            redraw = rng.random(n) < flip
            ensemble = np.where(redraw, rng.random(n) < p_flip, single)
            d = paired_difference(single, ensemble, seed=sim)
            covered += d.low <= true <= d.high
        rate = covered / args.sims
        results.append({"n": n, "true_difference": round(true, 4), "coverage": rate})
        print(f"n={n:>5}  true difference {100 * true:+.2f} points: covered in {rate:.1%} of {args.sims}")
    rates = [r["coverage"] for r in results]
    print(json.dumps({"benchmark": "ci_coverage", "sims": args.sims, "settings": results, "min_coverage": min(rates),
                      "max_coverage": max(rates), "within_93_97": all(0.93 <= r <= 0.97 for r in rates),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
