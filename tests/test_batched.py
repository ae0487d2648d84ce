"""The batched engine (probes/batched.py, issue 20): against the sequential reference and scikit-learn, per-problem
stopping, padding, few-shot batches against fits alone, output averaging, and the same bits whatever asks first."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo_survey.probes import FewShotProbe, LinearProbe
from zoo_survey.probes.base import MemberFeatures, ProbeConfig, Setting, fit_threads
from zoo_survey.probes.batched import Group, solve, solve_paths
from zoo_survey.probes.batched import Path as SolvePath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _reference_probes import RefFewShotProbe, RefLinearProbe, _Solver  # noqa: E402 - after the sys.path insert


def _problem(n=300, d=24, k=4, seed=0, sep=0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.normal(size=(k, d))[y] * sep + rng.normal(size=(n, d))).astype(np.float32)
    return (X - X.mean(0)) / X.std(0), y


def _splits(seed=0, n=500, d=24, k=4):
    X, y = _problem(n, d, k, seed)
    a, b = int(n * 0.6), int(n * 0.8)
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


def test_batched_solutions_match_the_sequential_solver_and_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    X, y = _problem()
    Cs = [1e-3, 1e-2, 0.1, 1.0, 10.0]
    with fit_threads():
        g = Group.build(X, y, 4, "cpu")
        sols = solve(  # every C in one batch, cold
            [g], [(0, C, 1e-5, 1000, None) for C in Cs])
        ref = _Solver(X, y, 4, 1000, 1e-5, "cpu")
        for C, (W, b, n_iter) in zip(Cs, sols, strict=True):
            assert 0 < n_iter < 1000
            Wr, br, _ = ref.fit(C, None)
            assert torch.allclose(W, Wr, atol=2e-3 * float(Wr.abs().max())), C
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(X, y)
            assert np.allclose(W.numpy(), sk.coef_.T, atol=1e-2 * np.abs(sk.coef_).max()), C
            pred = torch.addmm(b, g.Z, W).argmax(1).numpy()
            assert (pred == sk.predict(X)).mean() >= 0.99


def test_the_probe_chooses_the_reference_C_and_agrees_with_it_on_test():
    (Xtr, ytr), (Xv, yv), (Xte, yte) = _splits(seed=3)
    new = LinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    ref = RefLinearProbe().fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert new.best_C_ == ref.best_C_
    assert new.val_correct_.keys() == ref.val_correct_.keys()
    assert (new.predict(Xte) == ref.predict(Xte)).mean() >= 0.99


def test_a_converged_problem_does_not_move_while_the_others_iterate():
    X, y = _problem(seed=1)
    with fit_threads():
        g = Group.build(X, y, 4, "cpu")
        (W0, b0, _), = solve([g], [(0, 0.01, 1e-4, 1000, None)])
        sols = solve([g], [(0, 0.01, 1e-4, 1000, (W0, b0)), (0, 100.0, 1e-4, 1000, None)])
    (W, b, n_easy), (_, _, n_hard) = sols
    assert n_easy == 0 and n_hard > 10
    assert torch.equal(W, W0) and torch.equal(b, b0)  # bit for bit: frozen while the other ran


def test_each_problem_stops_on_its_own_rule():
    X, y = _problem(seed=2)
    with fit_threads():
        g = Group.build(X, y, 4, "cpu")
        alone = [solve([g], [(0, C, tol, 1000, None)])[0] for C, tol in ((1e-3, 1e-3), (10.0, 1e-5))]
        together = solve([g], [(0, 1e-3, 1e-3, 1000, None), (0, 10.0, 1e-5, 1000, None)])
        capped = solve([g], [(0, 10.0, 1e-5, 3, None), (0, 10.0, 1e-5, 1000, None)])
    for (Wa, _, na), (Wt, _, nt) in zip(alone, together, strict=True):
        assert na == nt  # the same iterations: its own tol, not the batch's
        assert torch.allclose(Wa, Wt, atol=1e-5 * float(Wa.abs().max()))
    assert capped[0][2] == 3 and capped[1][2] == together[1][2]


def test_padding_rows_columns_and_classes_leaves_each_problem_as_it_was():
    (X1, y1), (X2, y2) = _problem(200, 16, 3, seed=4), _problem(300, 24, 4, seed=5)
    with fit_threads():
        g1, g2 = Group.build(X1, y1, 3, "cpu"), Group.build(X2, y2, 4, "cpu")
        alone = solve([g1], [(0, 1.0, 1e-5, 1000, None)])[0]
        # g1 padded to g2's 300 rows, 24 columns and 4 classes in the same batch
        both = solve([g1, g2], [(0, 1.0, 1e-5, 1000, None), (1, 1.0, 1e-5, 1000, None)])[0]
    assert both[0].shape == (16, 3) and both[1].shape == (3,)
    assert both[2] == alone[2]
    assert torch.allclose(both[0], alone[0], atol=1e-5 * float(alone[0].abs().max()))
    # the padded coordinates are exactly zero inside the solver: the solution read back has only real ones, and
    # predictions on the real rows are those of the lone fit
    assert torch.equal(torch.addmm(both[1], g1.Z, both[0]).argmax(1), torch.addmm(alone[1], g1.Z, alone[0]).argmax(1))


def test_paths_warm_start_along_C():
    X, y = _problem(seed=6)
    Cs = [1e-2, 1e-1, 1.0, 10.0]
    with fit_threads():
        g = Group.build(X, y, 4, "cpu")
        path, = solve_paths([g], [SolvePath(0, Cs, 1e-4, 1000)])
        cold = solve([g], [(0, C, 1e-4, 1000, None) for C in Cs])
    assert sum(s[2] for s in path) < sum(s[2] for s in cold)
    for (Wp, _, _), (Wc, _, _) in zip(path, cold, strict=True):
        assert torch.allclose(Wp, Wc, atol=0.05 * float(Wc.abs().max()))


def test_a_path_in_one_solve_equals_its_cs_solved_one_after_another():
    """solve_paths moves each problem on to its next C when it meets its stopping rule, in one solve: the solution at
    every C is the one a separate solve warm-started from the previous C's reaches, paths of other lengths and
    groups sharing the batch; a repeated C is already solved (0 iterations)."""
    (X1, y1), (X2, y2) = _problem(seed=7), _problem(n=200, seed=8)
    paths = [SolvePath(0, [1e-3, 1e-2, 1e-2, 1.0, 100.0], 1e-4, 1000), SolvePath(1, [0.1, 10.0], 1e-5, 1000),
             SolvePath(0, [1.0], 1e-4, 1000)]
    with fit_threads():
        groups = [Group.build(X1, y1, 4, "cpu"), Group.build(X2, y2, 4, "cpu")]
        together = solve_paths(groups, paths)
        for p, got in zip(paths, together, strict=True):
            assert len(got) == len(p.Cs)
            start = None
            for C, (W, _, n_iter) in zip(p.Cs, got, strict=True):
                (W1, b1, n1), = solve(groups, [(p.group, C, p.tol, p.max_iter, start)])
                assert torch.allclose(W, W1, atol=1e-3 * float(W1.abs().max())), (p, C)
                assert abs(n_iter - n1) <= 2
                start = (W1, b1)
    assert together[0][2][2] == 0  # the same C again: nothing to do
    assert all(n > 0 for _, _, n in together[0][:2])


def _shots(seed):
    (Xtr, ytr), (Xv, yv), _ = _splits(seed=seed, n=400, d=40)
    idx = np.concatenate([np.flatnonzero(ytr == c)[:6] for c in range(4)])
    return Xtr[idx], ytr[idx], Xv, yv


@pytest.mark.parametrize("select", ["shots", "full"])
def test_a_fewshot_batch_equals_each_problem_fitted_alone(select):
    data = [_shots(s) for s in range(4)]
    batch = FewShotProbe.fit_many([FewShotProbe(select=select) for _ in data], data)
    for est, (X, y, Xv, yv) in zip(batch, data, strict=True):
        alone = FewShotProbe(select=select).fit(X, y, X_val=Xv, y_val=yv)
        assert est.best_C_ == alone.best_C_ and est.val_correct_ == alone.val_correct_
        assert np.array_equal(est.predict(Xv), alone.predict(Xv))
        assert np.allclose(est.coef_, alone.coef_, atol=2e-3 * np.abs(alone.coef_).max())
        ref = RefFewShotProbe(select=select).fit(X, y, X_val=Xv, y_val=yv)
        assert (est.predict(Xv) == ref.predict(Xv)).mean() >= 0.95


def _comparison(combine="single"):
    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, 300)
    blocks: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for d in ((16, 24) if combine != "single" else (16,)):
        X = (rng.normal(size=(4, d))[y] + rng.normal(size=(300, d)) * 1.5).astype(np.float32)
        for split, rows in (("train", slice(0, 180)), ("val", slice(180, 240)), ("test", slice(240, 300))):
            blocks[split].append(X[rows])
    return MemberFeatures(blocks, {"train": y[:180], "val": y[180:240], "test": y[240:]}, combine)


@pytest.mark.parametrize("combine", ["single", "concat", "average"])
def test_fewshot_rows_are_the_same_whichever_setting_is_asked_first(combine):
    from zoo_survey.probes import base, fewshot

    data, config = _comparison(combine), ProbeConfig(shots=(1, 5), seeds=2)
    settings = FewShotProbe.settings(config)
    fewshot._MEMO.clear()
    base._FITS.clear()
    forward = {s: FewShotProbe.run(data, s, config) for s in settings}
    fewshot._MEMO.clear()
    base._FITS.clear()
    backward = {s: FewShotProbe.run(data, s, config) for s in reversed(settings)}
    for s in settings:
        assert np.array_equal(forward[s].predictions, backward[s].predictions)
        assert forward[s].hparams == backward[s].hparams and forward[s].top1 == backward[s].top1
    # and the outcome of a setting alone agrees with the batch's
    for s in settings:
        alone = FewShotProbe._run_settings(data, [s], config)[s]
        assert alone.hparams == forward[s].hparams
        assert (alone.predictions == forward[s].predictions).mean() >= 0.95


def test_output_averaging_fits_each_member_as_it_would_alone():
    data, config = _comparison("average"), ProbeConfig(grid=(0.01, 0.1, 1.0, 10.0))
    out = LinearProbe.run(data, Setting(), config)
    b, y = data.blocks, data.labels
    members = [LinearProbe(grid=config.grid).fit(b["train"][i], y["train"], X_val=b["val"][i], y_val=y["val"])
               for i in range(2)]
    assert out.hparams == {"members": [m.hparams() for m in members]}
    ref = RefLinearProbe.run(data, Setting(), config)
    assert out.hparams == ref.hparams
    assert (out.predictions == ref.predictions).mean() >= 0.95


@pytest.mark.parametrize("probe", [LinearProbe, FewShotProbe])
def test_an_averaged_ensemble_reuses_its_members_own_fits_and_gets_the_same_bits_without_them(probe, monkeypatch):
    """Output averaging averages each member's single-model fit. After the members' own rows it fits nothing; in a
    fresh process (another Ray worker) it fits them itself, the same way, so its row is bit for bit the same."""
    from zoo_survey.probes import base, fewshot, linear

    data = _comparison("average")
    config = ProbeConfig(grid=(0.01, 0.1, 1.0, 10.0), shots=(1, 5), seeds=2)
    setting = probe.settings(config)[-1]
    base._FITS.clear()
    fewshot._MEMO.clear()
    cold = probe.run(data, setting, config)
    base._FITS.clear()
    fewshot._MEMO.clear()
    singles = [probe.run(data.member(i), setting, config) for i in range(2)]
    calls = []
    real = linear.sweep_many
    monkeypatch.setattr(linear, "sweep_many", lambda jobs: calls.append(len(jobs)) or real(jobs))
    monkeypatch.setattr(fewshot, "sweep_many", lambda jobs: calls.append(len(jobs)) or real(jobs))
    warm = probe.run(data, setting, config)
    assert calls == []  # nothing fitted: the members' fits were the single rows'
    assert np.array_equal(warm.predictions, cold.predictions) and warm.top1 == cold.top1
    assert warm.hparams == cold.hparams == {"members": [s.hparams for s in singles]}
    base._FITS.clear()
    fewshot._MEMO.clear()
    again = probe.run(data, setting, config)
    assert calls  # this time the members were fitted
    assert np.array_equal(again.predictions, cold.predictions)


def test_the_row_space_basis_projects_and_maps_back_exactly():
    """d > 4 n: the solver works on Z = U S and never forms V; projecting the training rows gives Z again, and weights
    mapped to features and back are unchanged (they lie in the rows' span); with fewer columns nothing is reduced."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 200)).astype(np.float32)
    y = np.arange(30) % 3
    with fit_threads():
        g = Group.build(X, y, 3, "cpu")
        assert g.reduced and tuple(g.Z.shape) == (30, 30)
        assert torch.allclose(g.project(X), g.Z, atol=1e-4)
        W = torch.as_tensor(rng.normal(size=(30, 3)), dtype=torch.float32)
        Wf = g.to_features(W)
        assert Wf.shape == (200, 3)
        assert torch.allclose(g.from_features(torch.as_tensor(Wf)), W, atol=1e-4)
        # the logits are the same in either basis
        assert torch.allclose(g.Z @ W, torch.as_tensor(X) @ torch.as_tensor(Wf), atol=1e-3)
        assert not Group.build(X[:, :100], y, 3, "cpu").reduced  # 100 columns, 30 rows: under 4x


def test_centred_rows_get_the_cholesky_basis_and_the_same_fit_as_the_eigen_basis():
    """Standardized rows (centred columns) are factored by Cholesky after the centring's dimension is taken out: n - 1
    columns, Z Z^T = X X^T, projections and the weights mapped back exact; the fit equals the one in the eigen basis
    (an orthogonal rotation of it) to rounding. Rows not centred, or with a duplicate, fall back to eigh."""
    from zoo_survey.probes import batched

    rng = np.random.default_rng(1)
    X, y = _problem(n=40, d=400, k=4, seed=2)  # standardized: centred columns
    with fit_threads():
        X64 = torch.as_tensor(X, dtype=torch.float64)
        K = X64 @ X64.T
        Z, M = batched._centered_factor(K)
        assert tuple(Z.shape) == (40, 39) and torch.allclose(Z @ Z.T, K, atol=1e-8 * float(K.abs().max()))
        assert torch.allclose(K @ M, Z, atol=1e-8 * float(Z.abs().max()))
        V = X64.T @ M
        assert torch.allclose(V.T @ V, torch.eye(39, dtype=torch.float64), atol=1e-10)  # orthonormal columns
        g = Group.build(X, y, 4, "cpu")
        assert tuple(g.Z.shape) == (40, 39) and torch.allclose(g.project(X), g.Z, atol=1e-4)
        W = torch.as_tensor(rng.normal(size=(39, 4)), dtype=torch.float32)
        assert torch.allclose(g.from_features(torch.as_tensor(g.to_features(W))), W, atol=1e-4)
        saved = batched._centered_factor
        try:
            batched._centered_factor = lambda K: None  # the eigen basis
            e = Group.build(X, y, 4, "cpu")
        finally:
            batched._centered_factor = saved
        assert tuple(e.Z.shape)[0] == 40
        (Wc, bc, _), = solve([g], [(0, 1.0, 1e-6, 1000, None)])
        (We, be, _), = solve([e], [(0, 1.0, 1e-6, 1000, None)])
        Xt = torch.as_tensor(X)
        lc, le = Xt @ torch.as_tensor(g.to_features(Wc)) + bc, Xt @ torch.as_tensor(e.to_features(We)) + be
        assert torch.allclose(lc, le, atol=1e-3 * float(le.abs().max()))  # to the solver's tolerance
        assert torch.equal(lc.argmax(1), le.argmax(1))
        assert batched._centered_factor(K + 1.0) is None  # rows not centred
        Xd = X.copy()
        Xd[1] = Xd[0]
        Xd -= Xd.mean(0)
        Xd64 = torch.as_tensor(Xd, dtype=torch.float64)
        assert batched._centered_factor(Xd64 @ Xd64.T) is None  # a duplicate row: singular beyond the centring


def test_the_fewshot_memo_tells_a_single_model_from_a_one_member_ensemble_on_the_same_arrays():
    """A single model and a pre-weighted one-block concatenation (a width-matched control, a one-member ensemble) can
    share their very arrays; the second must not be served the first's remembered outcomes."""
    from zoo_survey.probes import base, fewshot

    single = _comparison("single")
    block = MemberFeatures(single.blocks, single.labels, "concat")  # the same array objects
    config = ProbeConfig(shots=(5,), seeds=1)
    setting = FewShotProbe.settings(config)[0]
    fewshot._MEMO.clear()
    base._FITS.clear()
    fresh = FewShotProbe.run(block, setting, config)
    fewshot._MEMO.clear()
    base._FITS.clear()
    FewShotProbe.run(single, setting, config)
    after = FewShotProbe.run(block, setting, config)
    assert np.array_equal(after.predictions, fresh.predictions) and after.hparams == fresh.hparams


def test_the_battery_floor_perturbs_a_shared_matrix_alike_in_every_row_and_leaves_test_alone():
    """probe_battery.py's floor: each train and validation matrix times (1 + 1e-6 noise), the same noise wherever the
    same matrix appears (a member in its own row and in a concatenation), another draw other noise, test untouched."""
    import probe_battery

    rng = np.random.default_rng(0)
    a, b, v, t = (rng.normal(size=(40, 6)).astype(np.float32) for _ in range(4))
    labels = {s: np.arange(40) % 4 for s in ("train", "val", "test")}
    rows = {"single": MemberFeatures({"train": [a], "val": [v], "test": [t]}, labels, "single"),
            "concat": MemberFeatures({"train": [a.copy(), b], "val": [v.copy(), v], "test": [t, t]}, labels, "concat")}
    one, other = probe_battery.perturbed(rows, 0), probe_battery.perturbed(rows, 1)
    moved = one["single"].blocks["train"][0]
    assert np.array_equal(moved, one["concat"].blocks["train"][0])  # a copy of the same matrix: the same noise
    assert np.array_equal(one["single"].blocks["val"][0], one["concat"].blocks["val"][1])
    assert 0 < np.abs(moved / a - 1).max() < 1e-5 and moved.dtype == a.dtype
    assert not np.array_equal(moved, other["single"].blocks["train"][0])
    assert one["concat"].blocks["test"][0] is t and one["single"].labels is labels
