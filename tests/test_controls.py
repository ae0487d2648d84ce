"""Issue 19 items 5-6 with a known truth: width-matched controls, LogME and CKA on the probes' standardization, LogME
against the reference code's default variant, and few-shot intervals over seeds and images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from zoo_survey.probes.combine import standardized_blocks, weight_blocks
from zoo_survey.probes.linear import LinearProbe
from zoo_survey.probes.logme import LogMEProbe, logme
from zoo_survey.probes.numerics import fit_threads
from zoo_survey.probes.projection import gaussian_projection, pca_components, project_blocks
from zoo_survey.probes.protocol import DECLARED, MemberFeatures, ProbeConfig, Setting
from zoo_survey.results.stats import crossed_difference, linear_cka, paired_interval
from zoo_survey.survey.controls import control_features, control_key, controlled
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.plan import CONTROL_ROLES, Comparison
from zoo_survey.survey.units import SimilarityUnit

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- LogME: the reference's variants, ported


def _reference_fixed_point(f: np.ndarray, y: np.ndarray) -> float:
    """thuml/LogME ``LogME._fit_fixed_point`` (its default ``_fit``) with its ``truncated_svd``, in plain numpy."""
    f = f.astype(np.float64)
    N, D = f.shape
    if N > D:
        u, s, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s)
        u_times_sigma = f @ vh.T
        k = int(np.sum(s > 1e-10))
        s = s.reshape(-1, 1)[:k]
        vh = vh[:k]
        u = u_times_sigma[:, :k] / s.reshape(1, -1)
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
    s = s.reshape(-1, 1)
    sigma = s**2
    evidences = []
    for i in range(int(y.max() + 1)):
        y_ = (y == i).astype(np.float64).reshape(-1, 1)
        x = u.T @ y_
        x2 = x**2
        res_x2 = (y_**2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (N - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        evidence = (D / 2.0 * np.log(alpha) + N / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - N / 2.0 * np.log(2 * np.pi))
        evidences.append(evidence / N)
    return float(np.mean(evidences))


def _reference_icml(f: np.ndarray, y: np.ndarray) -> float:
    """thuml/LogME ``LogME._fit_icml`` with its ``each_evidence``, in plain numpy (the variant zoo-survey had)."""
    f = f.astype(np.float64)
    fh, ft = f, f.T
    D, N = ft.shape
    v, s, vh = np.linalg.svd(ft @ fh, full_matrices=True)
    evidences = []
    for i in range(int(y.max() + 1)):
        y_ = (y == i).astype(np.float64)
        alpha, beta, lam = 1.0, 1.0, 1.0
        tmp = vh @ (ft @ y_)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + 1e-5)
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (N - gamma) / (beta_de + 1e-5)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (D / 2.0 * np.log(alpha) + N / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2.0 * (beta_de + 1e-5) - alpha / 2.0 * (alpha_de + 1e-5) - N / 2.0 * np.log(2 * np.pi))
        evidences.append(evidence / N)
    return float(np.mean(evidences))


@pytest.mark.parametrize("n,d", [(40, 300), (60, 120), (400, 30)])
def test_logme_is_the_reference_default_variant(n, d):
    rng = np.random.default_rng(n + d)
    y = np.arange(n) % 4
    X = np.eye(4)[y] @ rng.normal(size=(4, d)) + rng.normal(size=(n, d))
    X = standardized_blocks([X])
    assert logme(X, y) == pytest.approx(_reference_fixed_point(X, y), rel=1e-6, abs=1e-9)
    if d > n:  # the ICML variant (zoo-survey's before issue 19) differs exactly there
        assert abs(_reference_icml(X, y) - _reference_fixed_point(X, y)) > 1e-3


def _features(blocks, labels=None, combine="single") -> MemberFeatures:
    if labels is None:
        labels = {s: np.arange(len(blocks[s][0])) % 3 for s in SPLITS}
    return MemberFeatures(blocks, labels, combine)


def test_logme_scores_every_model_on_the_probes_standardization():
    rng = np.random.default_rng(0)
    y = {s: np.arange(m) % 3 for s, m in zip(SPLITS, (90, 30, 30), strict=True)}
    X = {s: (np.eye(3)[y[s]] @ rng.normal(size=(3, 12)) + rng.normal(size=(len(y[s]), 12))).astype(np.float32)
         for s in SPLITS}
    scales = np.logspace(-3, 3, 12).astype(np.float32)  # raw columns at wildly different scales
    run = LogMEProbe.run
    single = run(_features({s: [X[s]] for s in SPLITS}, y), Setting(), ProbeConfig()).score
    scaled = run(_features({s: [X[s] * scales] for s in SPLITS}, y), Setting(), ProbeConfig()).score
    assert scaled == pytest.approx(single, rel=1e-6)  # standardized: the scale is gone
    raw = logme(np.concatenate([X["train"], X["val"]]) * scales, np.concatenate([y["train"], y["val"]]))
    assert abs(raw - single) > 0.01  # raw features: another score for the same information
    # a concatenation: each block standardized with its train+val statistics (the rows scored) and weighted
    # 1/sqrt(width), the single's rule; a member's raw scale changes nothing
    X2 = {s: rng.normal(size=(len(y[s]), 20)).astype(np.float32) for s in SPLITS}
    both = run(_features({s: [X[s], X2[s] * 1e3] for s in SPLITS}, y, "concat"), Setting(), ProbeConfig()).score
    trval = [np.concatenate([M["train"], M["val"]]) for M in (X, X2)]
    assert both == pytest.approx(logme(standardized_blocks(trval), np.concatenate([y["train"], y["val"]])), rel=1e-6)


# --------------------------------------------------------------------------- CKA on the probes' standardization


def test_member_cka_is_computed_on_standardized_features():
    rng = np.random.default_rng(1)
    n = {"train": 80, "val": 20, "test": 60}
    base = {s: rng.normal(size=(m, 6)) + np.arange(6) for s, m in n.items()}
    scales = np.array([1e-3, 1e-2, 1.0, 10.0, 100.0, 1e3])
    feats = {"a": base, "b": {s: v * scales for s, v in base.items()}}  # b: a's columns rescaled, nothing else

    def get(model, ds, split):
        return SimpleNamespace(features=feats[model.id][split], indices=np.arange(len(feats[model.id][split])))

    ws = SimpleNamespace(dataset=lambda spec, fp: SimpleNamespace(spec=spec), checkpoint=lambda m: m,
                         source=SimpleNamespace(get=get))
    unit = SimilarityUnit("fam", (SimpleNamespace(id="a"), SimpleNamespace(id="b")), SimpleNamespace(id="ds"), "fp", "key")
    (row,) = unit.run(ws)  # type: ignore[arg-type]
    assert row.cka == pytest.approx(1.0, abs=1e-9)  # the probe sees the same standardized features
    assert linear_cka(feats["a"]["test"], feats["b"]["test"]) < 0.9  # raw: per-column scale moves CKA


# --------------------------------------------------------------------------- the projection


def _blocks(rng, n=(120, 40, 50), widths=(16, 24)):
    return {s: [rng.normal(size=(m, w)).astype(np.float32) * (1 + np.arange(w)) for w in widths]
            for s, m in zip(SPLITS, n, strict=True)}


def test_pca_control_has_the_baseline_width_is_fitted_on_train_only_and_not_whitened():
    rng = np.random.default_rng(2)
    blocks = _blocks(rng)
    out = project_blocks(blocks, 10, "pca")
    assert {s: m.shape for s, m in out.items()} == {"train": (120, 10), "val": (40, 10), "test": (50, 10)}
    Z = weight_blocks(blocks)
    # train only: other val/test rows change nothing of the projection, and its directions are train's top PCs
    other = {**blocks, "val": [b * 5 + 3 for b in blocks["val"]], "test": [b[::-1] for b in blocks["test"]]}
    again = project_blocks(other, 10, "pca")
    np.testing.assert_allclose(again["train"], out["train"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again["test"], out["test"][::-1], rtol=1e-5, atol=1e-5)
    from sklearn.decomposition import PCA

    ref = PCA(10, svd_solver="full").fit(Z["train"].astype(np.float64))
    np.testing.assert_allclose(np.abs(out["test"]), np.abs(ref.transform(Z["test"])), rtol=1e-4, atol=1e-4)
    # no whitening: each component keeps its variance (train's eigenvalues), largest first
    np.testing.assert_allclose(out["train"].var(0, ddof=1), ref.explained_variance_, rtol=1e-4)
    assert ref.explained_variance_[0] > 1.3 * ref.explained_variance_[-1]  # whitened, all would be 1


def test_pca_width_is_bounded_by_the_train_rank_and_random_projection_is_seeded():
    rng = np.random.default_rng(3)
    blocks = _blocks(rng, n=(8, 5, 5))
    assert project_blocks(blocks, 30, "pca")["test"].shape == (5, 7)  # 8 centred train rows span 7 directions
    r1, r2 = project_blocks(blocks, 30, "random"), project_blocks(blocks, 30, "random")
    assert r1["test"].shape == (5, 30)
    np.testing.assert_array_equal(r1["test"], r2["test"])
    R = gaussian_projection(400, 50)
    assert R.std() == pytest.approx(1 / np.sqrt(50), rel=0.02)  # E||xR||^2 = ||x||^2
    V, _ = pca_components(rng.normal(size=(30, 6)), 3)
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-10)


def test_the_projection_is_the_same_with_one_or_two_threads():
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(4)
    blocks = _blocks(rng, n=(300, 50, 50), widths=(64, 96))
    outs = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            torch.set_num_threads(threads)
            with fit_threads():
                outs.append(project_blocks(blocks, 32, "pca")["test"])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_pure_width_gain_vanishes_when_width_is_matched():
    """Every model sees a random 8-dim linear view of one 40-dim latent (labels linear in it): the concatenation of
    two members sees 16 dims, so its gain over the single is pure width. Held to the single's width, by PCA or a
    random projection, the view is again a random 8-dim one: the width-matched gain is 0 in expectation."""
    D, d = 40, 8
    n = {"train": 600, "val": 200, "test": 1500}
    config = ProbeConfig(grid=tuple(np.logspace(-2, 2, 5)))
    gains = []
    for trial in range(8):
        rng = np.random.default_rng(trial)
        z = {s: rng.normal(size=(m, D)) for s, m in n.items()}
        W = rng.normal(size=(D, 3))
        y = {s: np.argmax(v @ W, 1) for s, v in z.items()}
        views = [{s: (z[s] @ g).astype(np.float32) for s in n} for g in (rng.normal(size=(D, d)) for _ in range(3))]
        single = LinearProbe.run(MemberFeatures({s: [views[0][s]] for s in n}, y, "single"), Setting(), config).top1
        ens = MemberFeatures({s: [views[1][s], views[2][s]] for s in n}, y, "concat")
        top1 = [LinearProbe.run(ens, Setting(), config).top1]
        for how in CONTROL_ROLES.values():
            control = control_features(Comparison("c", "width-pca", (), "concat", how, None), ens, d)
            assert control.width == d
            top1.append(LinearProbe.run(control, Setting(), config).top1)
        gains.append([t - single for t in top1])
    raw, pca, random = 100 * np.mean(gains, axis=0)
    assert raw > 5  # more dimensions of the latent: a real gain
    assert abs(pca) < 2 and abs(random) < 2  # ... that width matching removes


# --------------------------------------------------------------------------- the rows: roles, keys, probes


def test_controls_get_the_paired_accuracy_probes_and_their_own_key():
    comp = Comparison("pca(a+b)", "width-pca", (), "concat", "pca", SimpleNamespace(id="base", feature_output=None))
    plain = Comparison("a+b", "ensemble", (), "concat")
    on, off = resolve_options(device="cpu"), resolve_options(device="cpu", width_controls=False)
    assert [p for p in DECLARED if controlled(comp, DECLARED[p], on)] == ["linear", "knn", "ncm"]
    assert not any(controlled(comp, DECLARED[p], off) for p in DECLARED)
    assert all(controlled(plain, DECLARED[p], off) for p in DECLARED)
    assert control_key(plain, {}, on) == {}  # every other row's key is as it was
    resolved = {"base": SimpleNamespace(key=lambda: {"id": "base"})}
    key = control_key(comp, resolved, on)["control"]
    assert key["project"] == "pca" and key["width_of"] == {"id": "base"}


# --------------------------------------------------------------------------- few-shot: seeds x images


def test_fewshot_interval_carries_the_test_image_noise():
    """Five seeds that agree exactly: the t interval over seeds is [d, d] (certainty), yet 1,000 test images with
    60 discordant ones leave several points of doubt; the two-way bootstrap keeps it."""
    rng = np.random.default_rng(5)
    a = rng.random(1000) < 0.7
    b = a.copy()
    flip = rng.choice(1000, 60, replace=False)
    b[flip[:40]], b[flip[40:]] = True, False
    a[flip[:40]], a[flip[40:]] = False, True
    A, B = np.tile(a, (5, 1)), np.tile(b, (5, 1))
    delta, half = paired_interval(A.mean(1).tolist(), B.mean(1).tolist())
    assert half == pytest.approx(0.0, abs=1e-12)
    d, low, high = crossed_difference(A, B)
    assert d == pytest.approx(delta)
    assert low < d - 0.01 and high > d + 0.01  # about ±1.5 points from the images alone
    # and with no image noise left (every image alike within a seed), only the seeds' spread remains
    seeds = np.repeat(np.array([[0.0], [0.1], [0.2], [0.3], [0.4]]), 200, axis=1)
    d2, low2, high2 = crossed_difference(np.zeros_like(seeds, dtype=bool), rng.random(seeds.shape) < seeds)
    assert low2 < d2 < high2 and high2 - low2 > 0.1


def test_the_cli_runs_the_controls_by_default_and_skips_them_on_request(tmp_path, monkeypatch, capsys, tiny_registry,
                                                                         cache_env):
    import sqlite3

    from test_cli import TINY_RUN, zoo

    roles = {}
    for name, flags in (("on", ()), ("off", ("--no-width-controls",))):
        out_dir = tmp_path / name
        code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir),
                             *TINY_RUN, "--probes", "linear", *flags)
        assert code == 0, err
        with sqlite3.connect(out_dir / "results.sqlite") as con:
            roles[name] = sorted(r[0] for r in con.execute("SELECT role FROM results"))
    assert roles["on"] == sorted(roles["off"] + ["width-pca", "width-random"])
    zoo(monkeypatch, capsys, "report", "--out", str(tmp_path / "on"))
    md = (tmp_path / "on" / "report.md").read_text()
    assert "width-matched PCA: gain [95% CI] (p Holm)" in md and "width-matched random − single" in md


# --------------------------------------------------------------------------- refit: one statistics rule for all models


def _shifted_val_blocks(seed: int = 0):
    """Two members of 6 columns each, 3 classes; the validation rows are scaled x3 and shifted, so train-only and
    train+val statistics differ a lot."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, 12)) * 0.35
    out, labels = {}, {}
    for s, n in (("train", 240), ("val", 120), ("test", 300)):
        y = np.arange(n) % 3
        X = means[y] + rng.normal(size=(n, 12))
        if s == "val":
            X = X * 3.0 + 2.0
        out[s], labels[s] = [X[:, :6].astype(np.float32), X[:, 6:].astype(np.float32)], y
    return out, labels


def test_a_concatenation_is_refitted_on_train_val_statistics_like_a_single_model():
    """Issue 19 item 6: the refit re-standardizes a concatenation's columns on train+val, as a single model's; before,
    its blocks kept train-only statistics (weighted before the probe, never re-standardized)."""
    from zoo_survey.probes.base import probe_estimator

    blocks, labels = _shifted_val_blocks()
    data = MemberFeatures(blocks, labels, "concat")
    X, est = probe_estimator(LinearProbe, data, ProbeConfig())
    assert est.block_widths == (6, 6) and est.standardize
    est.fit(X["train"], labels["train"], X_val=X["val"], y_val=labels["val"])
    both = np.concatenate([X["train"], X["val"]])
    np.testing.assert_allclose(est.mean_, both.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.std_, both.std(0) * np.sqrt(6), rtol=1e-5)
    # The single model's rule, on the same matrix: the same statistics, without the block weights.
    single = LinearProbe().fit(X["train"], labels["train"], X_val=X["val"], y_val=labels["val"])
    np.testing.assert_allclose(est.std_ / single.std_, np.sqrt(6), rtol=1e-5)
    np.testing.assert_allclose(est.mean_, single.mean_, rtol=1e-5, atol=1e-5)


def test_equal_width_blocks_are_a_single_model_with_its_grid_scaled():
    """With equal widths w the block weight 1/sqrt(w) is one global scale: the concatenation's probe at C equals a
    single model's probe on the same columns at C / w (the L2 penalty absorbs the scale). Same statistics rule for
    both, so the same chosen C and the same test predictions; with the old rule (train-only block statistics at the
    refit) the two differ on data whose validation rows are shifted."""
    blocks, labels = _shifted_val_blocks(1)
    grid = tuple(float(c) for c in np.logspace(-3, 2, 11))
    concat = MemberFeatures(blocks, labels, "concat")
    single = MemberFeatures({s: [np.concatenate(b, axis=1)] for s, b in blocks.items()}, labels, "single")
    with fit_threads():
        a = LinearProbe.run(concat, Setting(), ProbeConfig(grid=grid))
        b = LinearProbe.run(single, Setting(), ProbeConfig(grid=tuple(c / 6 for c in grid)))
    assert np.isclose(a.hparams["C"] / 6, b.hparams["C"])
    assert np.mean(a.predictions == b.predictions) >= 0.99
    # The old rule on the same data: blocks weighted with train statistics and not re-standardized at the refit.
    old = LinearProbe(grid=grid, standardize=False)
    W = weight_blocks(blocks)
    with fit_threads():
        old.fit(W["train"], labels["train"], X_val=W["val"], y_val=labels["val"])
    assert np.mean(old.predict(W["test"]) == b.predictions) < np.mean(a.predictions == b.predictions)


def test_block_widths_must_cover_the_columns():
    from zoo_survey.probes.base import ProbeInputError

    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 2
    with pytest.raises(ProbeInputError, match="add up to the 5 feature columns"):
        LinearProbe(block_widths=(2, 2)).fit(X, y, X_val=X, y_val=y)
