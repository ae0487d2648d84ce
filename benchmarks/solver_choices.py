"""Three choices of the batched solver (probes/batched.py), each measured side by side in one run.

1. Row space or not (``REDUCE_ABOVE``): the linear probe on lite0+lite1+lite2 Fashion-MNIST features (3,840 dims,
   from the cache; extracted first if missing), on the first N train rows for several N, solved in the original
   columns and in the row space (Gram eigendecomposition). Prints both times, the ratio and the chosen C.
2. Class-major logits: torch's ``log_softmax`` over 10 classes on a (25, 200, 1, 10) tensor (classes last, the
   earlier layout) against the same values laid out (25, 1, 10, 200) (classes before the rows, the current one).
3. The logits pass: (k, d) weights times the (n, d) features viewed transposed (the earlier product) against times
   a contiguous (d, n) copy (the current one), at k = 10 and a single model's and a concatenation's d, n = 1,600.

Both with one fit thread, as the survey fits. Prints a final JSON line.

    python benchmarks/solver_choices.py [--rows 1600,1000,700,450] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import LITE, lite_features

import zoo_survey.probes.batched as batched
from zoo_survey.probes import LinearProbe
from zoo_survey.probes.numerics import fit_threads


def row_space(rows: list[int], cache_dir: Path | None) -> list[dict[str, object]]:
    f = lite_features(cache_dir=cache_dir)
    X, Xv = (np.concatenate([f[c][s].features for c in LITE], 1) for s in ("train", "val"))
    y, yv = (f[LITE[0]][s].labels for s in ("train", "val"))
    out = []
    with fit_threads():
        LinearProbe(grid=(0.1, 1.0)).fit(X[:200], y[:200], X_val=Xv, y_val=yv)  # warm torch up, untimed
        for n in rows:
            seconds, chosen = {}, {}
            for name, above in (("plain", float("inf")), ("row_space", 0.0)):
                batched.REDUCE_ABOVE, saved = above, batched.REDUCE_ABOVE
                try:
                    t = time.perf_counter()
                    probe = LinearProbe().fit(X[:n], y[:n], X_val=Xv, y_val=yv)
                    seconds[name], chosen[name] = time.perf_counter() - t, probe.best_C_
                finally:
                    batched.REDUCE_ABOVE = saved
            ratio = seconds["row_space"] / seconds["plain"]
            print(f"{n} rows x {X.shape[1]} dims (d/n {X.shape[1] / n:.1f}): plain {seconds['plain']:.2f}s, "
                  f"row space {seconds['row_space']:.2f}s (row space / plain {ratio:.2f}); C {chosen['plain']:.3g} / "
                  f"{chosen['row_space']:.3g}")
            out.append({"rows": n, "dims": int(X.shape[1]), "plain_s": round(seconds["plain"], 3),
                        "row_space_s": round(seconds["row_space"], 3), "row_space_over_plain": round(ratio, 2),
                        "C_plain": chosen["plain"], "C_row_space": chosen["row_space"]})
    return out


def timed(fn, repeat: int) -> float:
    """Milliseconds per call of ``fn``, after one untimed call."""
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1e3


def layout(repeat: int = 300) -> dict[str, float]:
    import torch

    L = torch.randn(25, 200, 1, 10)
    Lc = L.permute(0, 2, 3, 1).contiguous()

    with fit_threads():
        last = timed(lambda: L.log_softmax(-1), repeat)
        major = timed(lambda: Lc.log_softmax(2), repeat)
        assert torch.allclose(L.log_softmax(-1).permute(0, 2, 3, 1), Lc.log_softmax(2), atol=1e-6)
    print(f"log_softmax over 10 classes: classes last {last:.3f} ms, class-major {major:.3f} ms ({last / major:.1f}x)")
    return {"classes_last_ms": round(last, 4), "class_major_ms": round(major, 4), "ratio": round(last / major, 1)}


def logits_pass(repeat: int = 40) -> list[dict[str, float]]:
    import torch

    out = []
    with fit_threads():
        for d in (1280, 3840):
            Z, W = torch.randn(1, 1600, d), torch.randn(1, 10, d)
            Zt = Z.transpose(1, 2).contiguous()
            view = timed(lambda: W @ Z.transpose(1, 2), repeat)  # noqa: B023 - timed here, in this iteration
            copy = timed(lambda: W @ Zt, repeat)  # noqa: B023 - timed here, in this iteration
            assert torch.allclose(W @ Z.transpose(1, 2), W @ Zt, rtol=1e-4, atol=1e-3)
            print(f"logits pass, k 10 x d {d} x n 1600: Z viewed transposed {view:.3f} ms, Z^T contiguous {copy:.3f} ms "
                  f"({view / copy:.1f}x)")
            out.append({"d": d, "n": 1600, "transposed_view_ms": round(view, 3), "contiguous_ms": round(copy, 3),
                        "ratio": round(view / copy, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1600,1000,700,450", help="train rows to fit on [1600,1000,700,450]")
    ap.add_argument("--cache-dir", type=Path, default=None, help="the features cache [default: zoo-survey's]")
    args = ap.parse_args()
    lay = layout()
    passes = logits_pass()
    rs = row_space([int(n) for n in args.rows.split(",")], args.cache_dir)
    print(json.dumps({"benchmark": "solver_choices", "reduce_above": batched.REDUCE_ABOVE, "row_space": rs,
                      "layout": lay, "logits_pass": passes}))


if __name__ == "__main__":
    main()
