"""Batched multinomial L2 logistic regression: many problems, one L-BFGS each, solved together (issue 20).

A *problem* is one feature matrix (a :class:`Group`), a path of ``C`` values and a start. Problems are laid out
as ``(G, P)``: G matrices, each with up to P problems (its C values, or its paths). A problem that has met its
stopping rule at one C records that solution and goes on to its next C from where it stands, with a new history
(the objectives differ only in the penalty, so no pass over the matrix is needed), while the others iterate:
a regularization path is one solve, not one per C. Every iteration costs
two passes over each matrix, shared by all its problems: the search direction's logits
``D^T Z^T`` (one ``(P*k, d) x (d, n)`` GEMM per matrix, ``bmm`` over matrices; logits are class-major,
``(G, P, k, n)``) and the gradient ``G Z``. The line search needs no pass: along a direction the logits
are ``L + t A``, so every trial step is elementwise.

Each problem keeps its own L-BFGS history (memory 20), its own step (backtracking Armijo from 1, the
first step scaled to ``min(1, 1/|g|_1)`` as torch's LBFGS does) and its own stopping rule: max
|gradient| <= its tol (scikit-learn's), ``max_iter``, or a step that no longer changes the objective.
A problem that stops is frozen (its step is 0); once the live problems fill no more than three quarters
of the batch, the stopped ones are dropped: the batch shrinks as problems converge.

Padding, exact in exact arithmetic and in floats (no term changes): matrices of another size are padded
with zero rows (row weight 0: no loss, no gradient) and zero columns (the weight on a zero column has
gradient ``lam * w``, so from 0 it stays exactly 0); problems with fewer classes get logit -inf on the
missing ones (probability 0, gradient 0). What is *not* bit-identical to a problem solved alone is the
rounding: a GEMM or a sum over a padded or wider batch may add in another order, so a batched solution
differs from a lone one at float32 rounding (relative 1e-6 on the coefficients) and the paths of two
solves may part where the stopping rule is borderline. The survey therefore always solves the same batch
for a row, whatever runner asked for it (see ``fewshot.py``), and rows stay bit-identical across runners
and thread counts (issue 22).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HISTORY = 20  # L-BFGS memory, as the sequential solver had
ARMIJO = 1e-4
MAX_BACKTRACKS = 40
REFRESH = 25  # recompute the logits Z @ W every this many iterations (the line search updates them incrementally)
# Solve in the row space only when there are this many times more columns than rows: the decomposition (a float64
# Gram matrix and its eigenvectors) costs about as many flops as the iterations it saves between d = 2.4 n and 4 n
# (benchmarks/solver_choices.py: at d = 2.4 n the row space took 1.58x the plain solve, at 3.8 n 0.78x, at 8.5 n 0.53x).
REDUCE_ABOVE = 4.0
# Groups of other shapes share a batch, padded, while that costs under PAD_RATIO times their own work, or under
# SMALL_WORK multiply-adds a pass (an iteration's fixed cost). Padding every few-shot fold to the largest (k = 25)
# was slower (2.2 s against 1.4 s a comparison; a one-off measurement of a variant no longer in the code); these
# merge the small ones only.
PAD_RATIO = 2.0
SMALL_WORK = 4e6
SHRINK_BELOW = 0.75  # the batch is rebuilt smaller once its live problems fill no more than this share of it


def tensor(a: np.ndarray, device: Any):
    """A float32 copy in torch's own memory (64-byte aligned, as MKL's reproducible paths want), not a view of
    numpy's buffer, whose alignment depends on how the caller allocated it."""
    import torch

    return torch.tensor(np.asarray(a, dtype=np.float32), device=device)


@dataclass
class Group:
    """One standardized training matrix, in the basis the solver works in.

    With far fewer rows than columns (``reduce``, d > 4 n) the solver works on ``Z = X V = U S`` (X = U S V^T; U and S
    from the float64 Gram matrix X X^T = U S^2 U^T), which is exact for L2-regularized models: the optimal weights are
    a combination of the training rows. V = X^T U / S is never formed (d x r, the costliest product of a few-shot
    fold): other rows are projected as (Xs X^T) U / S and weights mapped back as X^T (U / S) W.
    """

    Z: Any  # (n, r) float32 tensor
    y: Any  # (n,) int64 tensor: class indices
    n_classes: int
    X64: Any = None  # (n, d) float64: the training rows, when reduced
    US: Any = None  # (n, r) float64: M with V = X^T M (U / S, or Q L^-T: see _centered_factor), when reduced
    _Zt: Any = None

    @property
    def reduced(self) -> bool:
        return self.X64 is not None

    @property
    def Zt(self):
        """Z^T, contiguous (r, n): the logits pass reads it (made once; a path's solves share it)."""
        if self._Zt is None:
            self._Zt = self.Z.T.contiguous()
        return self._Zt

    @classmethod
    def build(cls, Xs: np.ndarray, y: np.ndarray, n_classes: int, device: Any, reduce: bool = True) -> Group:
        import torch

        dev = torch.device(device)
        X = tensor(Xs, dev)
        n, d = X.shape
        yt = torch.as_tensor(np.asarray(y), device=dev)
        if not (reduce and d > REDUCE_ABOVE * n):
            return cls(X, yt, n_classes)
        X64 = X.double()
        K = X64 @ X64.T
        factor = _centered_factor(K)
        if factor is not None:
            Z, M = factor
            return cls(Z.float().contiguous(), yt, n_classes, X64, M)
        # X X^T = U S^2 U^T (float64: 3x faster than an SVD of X at 1,600 x 3,840).
        ev, U = torch.linalg.eigh(K)
        keep = ev > ev.max() * 1e-12
        S = ev[keep].sqrt()
        U = U[:, keep]
        return cls((U * S).float().contiguous(), yt, n_classes, X64, U / S)

    def project(self, Xs: np.ndarray):
        """Rows in the solver's basis: as they are, or X V = (X X_train^T) U / S."""
        X = tensor(Xs, self.Z.device)
        return X if not self.reduced else ((X.double() @ self.X64.T) @ self.US).float()

    def to_features(self, W) -> np.ndarray:
        """Weights (r, k) in feature space (d, k): V W = X_train^T (U / S) W."""
        return (W if not self.reduced else self.X64.T @ (self.US @ W.double())).float().cpu().numpy()

    def from_features(self, W):
        """Weights (d, k) in the solver's basis (r, k): V^T W (exact for weights in the training rows' span)."""
        return W if not self.reduced else (self.US.T @ (self.X64 @ W.to(self.X64))).float()


def _centered_factor(K):
    """``(Z, M)`` with ``Z Z^T = K`` and ``Z = K M`` (so ``V = X^T M`` has orthonormal columns and ``Z = X V``), from a
    Cholesky factor, for the Gram matrix ``K = X X^T`` of rows whose columns are centred (``K 1 = 0``, as the probes'
    standardization leaves them); None when they are not, or when the rest is singular (duplicate rows): then the
    caller decomposes K with ``eigh``. About 6x cheaper than ``eigh`` at n = 200 (0.4 against 2.3 ms).

    The centring takes one dimension: the Householder reflection H that maps 1 / sqrt(n) to e_1 turns K into
    ``[[0, 0], [0, K_r]]``; with ``K_r = L L^T``, ``Z = H[:, 1:] L`` and ``M = H[:, 1:] L^-T``. The solver works in a
    rotation of the basis ``eigh`` gives (the same n - 1 dimensions), and L-BFGS is unchanged by a rotation: the same
    iterates, up to rounding."""
    import torch

    n = K.shape[0]
    top = K.diagonal().max()
    if n < 2 or not bool(top > 0) or bool(K.sum(1).abs().max() > 1e-6 * top * n ** 0.5):
        return None
    w = torch.full((n,), n ** -0.5, dtype=K.dtype, device=K.device)
    w[0] -= 1.0
    w /= w.norm()
    Kw = K @ w
    Kr = (K - 2 * torch.outer(w, Kw) - 2 * torch.outer(Kw, w) + 4 * (w @ Kw) * torch.outer(w, w))[1:, 1:]
    L, info = torch.linalg.cholesky_ex(Kr)
    if int(info) or bool(L.diagonal().min() ** 2 <= 1e-12 * Kr.diagonal().max()):
        return None
    Linv_T = torch.linalg.solve_triangular(L, torch.eye(n - 1, dtype=K.dtype, device=K.device), upper=False).T

    def reflect(B):  # H[:, 1:] @ B = [0; B] - 2 w (w[1:] . B)
        return torch.cat([torch.zeros(1, B.shape[1], dtype=B.dtype, device=B.device), B]) - 2 * torch.outer(w, w[1:] @ B)

    return reflect(L), reflect(Linv_T)


@dataclass
class Path:
    """Problems on one group solved one after another, each warm-started from the previous one's solution
    (a regularization path); the first from ``start`` (W, b in the group's basis) or zero."""

    group: int
    Cs: Sequence[float]
    tol: float
    max_iter: int
    start: tuple[Any, Any] | None = None


Solution = tuple[Any, Any, int]  # W (r, k), b (k,), L-BFGS iterations


def batches(groups: Sequence[Group], problems: Sequence[int]) -> list[list[int]]:
    """The problems (indices into ``groups``) split into batches solved together: groups of one shape always share a
    batch; groups of other shapes join it, padded, while the padded work stays under PAD_RATIO times the unpadded
    work or under SMALL_WORK multiply-adds a pass (there an iteration costs its fixed overhead, whatever the size)."""
    def work(n: int, d: int, k: int) -> int:
        return n * d * k

    by_shape: dict[tuple[int, int], list[int]] = {}
    for i in problems:
        by_shape.setdefault(tuple(groups[i].Z.shape), []).append(i)
    out: list[list[int]] = []
    merged: list[int] = []
    for shape in sorted(by_shape):
        trial = merged + by_shape[shape]
        n, d, k = (max(int(groups[i].Z.shape[0]) for i in trial), max(int(groups[i].Z.shape[1]) for i in trial),
                   max(groups[i].n_classes for i in trial))
        padded = len(trial) * work(n, d, k)
        plain = sum(work(int(groups[i].Z.shape[0]), int(groups[i].Z.shape[1]), groups[i].n_classes) for i in trial)
        if merged and padded > max(PAD_RATIO * plain, SMALL_WORK):
            out.append(merged)
            trial = by_shape[shape]
        merged = trial
    if merged:
        out.append(merged)
    return out


def solve_paths(groups: Sequence[Group], paths: Sequence[Path]) -> list[list[Solution]]:
    """Every path's solutions, in its order of C, in a few batches (:func:`batches`: groups of other shapes padded
    together while padding costs less than the iterations it saves). Within a batch each path goes on to its next C as
    soon as it has met its stopping rule at this one (from where it stands, with a new L-BFGS history), not when the
    whole batch has: one solve per batch, not one per C, and no problem waits for the slowest."""
    out: list[list[Solution]] = [[] for _ in paths]
    of_group: dict[int, list[int]] = {}
    for i, p in enumerate(paths):
        if len(p.Cs):
            of_group.setdefault(p.group, []).append(i)
    for batch in batches(groups, sorted(of_group)):
        todo = [i for g in batch for i in of_group[g]]
        sols = _solve(groups, [(paths[i].group, tuple(paths[i].Cs), paths[i].tol, paths[i].max_iter, paths[i].start)
                               for i in todo])
        for i, s in zip(todo, sols, strict=True):
            out[i] = s
    return out


def solve(groups: Sequence[Group], problems: Sequence[tuple[int, float, float, int, Any]]) -> list[Solution]:
    """Solve ``(group, C, tol, max_iter, start)`` problems together; returns (W, b, n_iter) for each, in order."""
    return [s for s, in _solve(groups, [(g, (C,), t, mi, start) for g, C, t, mi, start in problems])]


def _solve(groups: Sequence[Group], problems: Sequence[tuple[int, tuple[float, ...], float, int, Any]]) -> list[list[Solution]]:
    """Solve ``(group, Cs, tol, max_iter, start)`` paths together: (W, b, n_iter) at each C of each, in order."""
    import torch

    used = sorted({p[0] for p in problems})
    slot_of = {g: i for i, g in enumerate(used)}
    members: list[list[int]] = [[] for _ in used]
    for i, p in enumerate(problems):
        members[slot_of[p[0]]].append(i)
    G, P = len(used), max(len(m) for m in members)
    steps = max(len(p[1]) for p in problems)
    gs = [groups[g] for g in used]
    dev = gs[0].Z.device
    n, d, k = (max(int(g.Z.shape[0]) for g in gs), max(int(g.Z.shape[1]) for g in gs), max(g.n_classes for g in gs))
    if G == 1 and tuple(gs[0].Z.shape) == (n, d):
        Z, Zt = gs[0].Z[None], gs[0].Zt[None]
    else:
        Z = torch.zeros(G, n, d, device=dev)
        Zt = torch.zeros(G, d, n, device=dev)
        for i, g in enumerate(gs):
            Z[i, : g.Z.shape[0], : g.Z.shape[1]] = g.Z
            Zt[i, : g.Z.shape[1], : g.Z.shape[0]] = g.Zt
    Y = torch.zeros(G, n, dtype=torch.long, device=dev)
    rw = torch.zeros(G, n, device=dev)  # 1/n on a group's rows (the mean), 0 on padding
    cbias = torch.zeros(G, k, device=dev)  # -inf on classes a group does not have
    for i, g in enumerate(gs):
        m = g.Z.shape[0]
        Y[i, :m] = g.y
        rw[i, :m] = 1.0 / m
        cbias[i, g.n_classes:] = float("-inf")
    # Per-problem scalars as Python lists, one tensor each (not one small write per problem and field).
    ids_l, tol_l, it_l, len_l = ([[fill] * P for _ in range(G)] for fill in (-1, 0.0, 0, 1))
    lam_l = [[[0.0] * steps for _ in range(P)] for _ in range(G)]  # lam at each C of the path (the last repeated)
    theta = torch.zeros(G, P, d * k + k, device=dev)
    for gi, mem in enumerate(members):
        g = gs[gi]
        r, nc = int(g.Z.shape[1]), g.n_classes
        for pi, i in enumerate(mem):
            _, Cs, t, mi, start = problems[i]
            ids_l[gi][pi], tol_l[gi][pi], it_l[gi][pi], len_l[gi][pi] = i, t, mi, len(Cs)
            lam_l[gi][pi] = [1.0 / (C * g.Z.shape[0]) for C in Cs] + [1.0 / (Cs[-1] * g.Z.shape[0])] * (steps - len(Cs))
            if start is not None:  # class-major: theta holds W^T (k, d), row after row
                W0 = torch.as_tensor(start[0], device=dev).T
                if (r, nc) == (d, k):
                    theta[gi, pi, : d * k] = W0.reshape(-1)
                else:
                    theta[gi, pi, : d * k].view(k, d)[:nc, :r] = W0
                theta[gi, pi, d * k : d * k + nc] = torch.as_tensor(start[1], device=dev)
    ids = torch.tensor(ids_l, dtype=torch.long)
    lams, tol = torch.tensor(lam_l, device=dev), torch.tensor(tol_l, device=dev)
    max_iter, n_steps = (torch.tensor(v, dtype=torch.long, device=dev) for v in (it_l, len_l))
    with torch.inference_mode():  # no autograd bookkeeping on an iteration's many small operations: 7% of the probe phase
        W_out, n_iter_out = _lbfgs(Z, Zt, Y, rw, cbias, lams, n_steps, tol, max_iter, theta, ids, len(problems), d, k)
    sols: list[list[Solution]] = []
    for i, p in enumerate(problems):
        g = groups[p[0]]
        path = []
        for j in range(len(p[1])):
            th = W_out[i, j]
            W = th[: d * k].view(k, d)[: g.n_classes, : g.Z.shape[1]].T.contiguous()
            path.append((W, th[d * k : d * k + g.n_classes].clone(), int(n_iter_out[i, j])))
        sols.append(path)
    return sols


class _State:
    """The batch being solved, laid out (G, P, ...); rebuilt smaller as problems stop."""

    Z: Any
    Zt: Any
    Y: Any
    rw: Any
    cbias: Any
    ids: Any
    active: Any
    lam: Any
    lams: Any
    step: Any
    n_steps: Any
    tol: Any
    max_iter: Any
    theta: Any
    L: Any
    g: Any
    f: Any
    S: Any
    Yh: Any
    rho: Any
    gamma: Any
    n_iter: Any

    def __init__(self, **tensors: Any):
        self.__dict__.update(tensors)

    def take(self, gi, order) -> None:
        """Keep groups ``gi`` and, in each, the problems ``order`` (G', P')."""
        import torch

        rows = torch.arange(len(gi), device=gi.device)[:, None]
        for name in ("Z", "Zt", "Y", "rw", "cbias"):
            setattr(self, name, getattr(self, name)[gi])
        for name in ("ids", "active", "lam", "lams", "step", "n_steps", "tol", "max_iter", "theta", "L", "g", "f", "S", "Yh", "rho",
                     "gamma", "n_iter"):
            t = getattr(self, name)
            setattr(self, name, t[gi.to(t.device)][rows.to(t.device), order.to(t.device)])


def _lbfgs(Z, Zt, Y, rw, cbias, lams, n_steps, tol, max_iter, theta, ids, count: int, d: int, k: int):
    """Every problem's path of ``lams`` (G, P, steps; its first ``n_steps``): (count, steps, D) solutions and
    (count, steps) iteration counts, indexed by ``ids``."""
    import torch

    G, P, D = theta.shape
    dev = theta.device
    m = HISTORY
    s = _State(Z=Z, Zt=Zt, Y=Y, rw=rw, cbias=cbias, ids=ids.to(dev), active=ids.to(dev) >= 0, lam=lams[..., 0], lams=lams,
               step=torch.zeros(G, P, dtype=torch.long, device=dev), n_steps=n_steps, tol=tol, max_iter=max_iter,
               theta=theta)
    s.L = _logits(s.Zt, s.theta, d, k)
    s.f, s.g = _loss_grad(s, d, k)
    s.S = torch.zeros(G, P, m, D, device=dev)
    s.Yh = torch.zeros(G, P, m, D, device=dev)
    s.rho = torch.zeros(G, P, m, device=dev)
    s.gamma = torch.zeros(G, P, device=dev)  # 0: no curvature pair yet (first step scaled instead)
    s.n_iter = torch.zeros(G, P, dtype=torch.long, device=dev)
    W_out = torch.zeros(count, lams.shape[-1], D, device=dev)
    n_iter_out = torch.zeros(count, lams.shape[-1], dtype=torch.long)
    # already optimal: 0 iterations, as torch's LBFGS (and on to the next C)
    _next_c(s, s.active & (s.g.abs().amax(-1) <= s.tol), W_out, n_iter_out, d, k)
    ptr, it, live = 0, 0, -1
    while True:
        was, live = live, int(s.active.sum())
        if live != was:  # a problem stopped (or this is the start): free its slot, perhaps shrink the batch
            _retire(s)
        if not live:
            break
        it += 1
        act = s.active
        # Two-loop recursion over the pairs written so far, newest first; a skipped pair has rho = 0 (no effect).
        # Only the newest pairs any live problem has had since its C began (older slots are 0 for all of them).
        # Each slot's views made once, dot products as one operation, updates in place: fewer operations per pair.
        Ss, Ys, rhos = s.S.unbind(-2), s.Yh.unbind(-2), s.rho.unbind(-1)
        q = -s.g
        alphas = []
        for j in range(min(int(torch.where(act, s.n_iter, 0).max()), m)):
            slot = (ptr - 1 - j) % m
            a = rhos[slot] * torch.linalg.vecdot(Ss[slot], q)
            q.sub_(Ys[slot] * a[..., None])
            alphas.append((slot, a))
        first = s.gamma == 0
        r = q.mul_(torch.where(first, 1.0, s.gamma)[..., None])
        for slot, a in reversed(alphas):
            r.add_(Ss[slot] * (a - rhos[slot] * torch.linalg.vecdot(Ys[slot], r))[..., None])
        direction = r
        gd = (s.g * direction).sum(-1)
        bad = gd >= 0  # not a descent direction (rounding): restart that problem from steepest descent
        if bool((bad & act).any()):
            direction = torch.where(bad[..., None], -s.g, direction)
            gd = torch.where(bad, -(s.g * s.g).sum(-1), gd)
            s.rho = torch.where(bad[..., None], 0.0, s.rho)
            s.gamma = torch.where(bad, 0.0, s.gamma)
            first = s.gamma == 0
        t0 = torch.where(first, torch.clamp(1.0 / s.g.abs().sum(-1).clamp_min(1e-30), max=1.0), torch.ones_like(gd))
        t = torch.where(act, t0, 0.0)
        # Line search along the direction: logits L + t A, no further pass over Z.
        A = _logits(s.Zt, direction, d, k)
        W = s.theta[..., : d * k]
        DW = direction[..., : d * k]
        w_d, d_d = (W * DW).sum(-1), (DW * DW).sum(-1)
        w_w = (W * W).sum(-1)
        pending = act.clone()
        f_new = s.f.clone()
        for _ in range(MAX_BACKTRACKS):
            phi = _ce(s, s.L + t[..., None, None] * A) + 0.5 * s.lam * (w_w + 2 * t * w_d + t * t * d_d)
            ok = pending & (phi <= s.f + ARMIJO * t * gd)
            f_new = torch.where(ok, phi, f_new)
            pending &= ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * 0.5, t)
        failed = pending  # no decrease found: stop where it stands
        t = torch.where(failed | ~act, 0.0, t)
        step = t[..., None] * direction
        s.theta = s.theta + step
        s.L = s.L + t[..., None, None] * A
        if it % REFRESH == 0:
            s.L = _logits(s.Zt, s.theta, d, k)
        f_old = s.f
        s.f = torch.where(act & ~failed, f_new, s.f)
        g_old = s.g
        _, s.g = _loss_grad(s, d, k, with_loss=False)
        s.g = torch.where((act & ~failed)[..., None], s.g, g_old)
        yv = s.g - g_old
        sy = (step * yv).sum(-1)
        keep = act & ~failed & (sy > 1e-10)
        s.S[..., ptr, :] = torch.where(keep[..., None], step, 0.0)
        s.Yh[..., ptr, :] = torch.where(keep[..., None], yv, 0.0)
        s.rho[..., ptr] = torch.where(keep, 1.0 / torch.where(keep, sy, 1.0), 0.0)
        s.gamma = torch.where(keep, sy / (yv * yv).sum(-1).clamp_min(1e-30), s.gamma)
        ptr = (ptr + 1) % m
        s.n_iter = s.n_iter + act.long()
        done = (s.g.abs().amax(-1) <= s.tol) | (s.n_iter >= s.max_iter) | failed | (act & (s.f == f_old) & (t > 0))
        s.active = act
        if bool((act & done).any()):
            _next_c(s, act & done, W_out, n_iter_out, d, k)
    return W_out, n_iter_out


def _next_c(s: _State, done, W_out, n_iter_out, d: int, k: int) -> None:
    """Problems ``done`` at their current C: keep the solution; those with a C left go on to it from where they
    stand (its objective's loss and gradient differ only in the penalty: no pass over Z), with no history and no
    iteration counted yet, until one does not meet its stopping rule at once; the others stop."""
    import torch

    while bool(done.any()):
        W_out[s.ids[done], s.step[done]] = s.theta[done]
        n_iter_out[s.ids[done].cpu(), s.step[done].cpu()] = s.n_iter[done].cpu()
        more = done & (s.step + 1 < s.n_steps)
        s.active = s.active & (~done | more)
        if not bool(more.any()):
            return
        s.step = s.step + more.long()
        lam = s.lams.gather(-1, s.step[..., None])[..., 0]
        dlam = torch.where(more, lam - s.lam, 0.0)
        W = s.theta[..., : d * k]
        s.f = s.f + 0.5 * dlam * (W * W).sum(-1)
        s.g = torch.cat([s.g[..., : d * k] + dlam[..., None] * W, s.g[..., d * k :]], -1)
        s.lam = torch.where(more, lam, s.lam)
        s.rho = torch.where(more[..., None], 0.0, s.rho)  # a new objective: a new history
        s.gamma = torch.where(more, 0.0, s.gamma)
        s.n_iter = torch.where(more, 0, s.n_iter)
        done = more & (s.g.abs().amax(-1) <= s.tol)


def _retire(s: _State) -> None:
    """Free the slots of the problems that stopped; shrink the batch to the groups and slots still needed once it is worth a
    copy of every state tensor (:data:`SHRINK_BELOW`)."""
    import torch

    stopped = (~s.active) & (s.ids >= 0)
    if bool(stopped.any()):  # their solutions are written (_next_c): only their slots are freed
        s.ids = torch.where(stopped, -1, s.ids)
    keep_g = s.active.any(1)
    if not bool(keep_g.any()):
        return
    count = int(s.active.sum(1).max())
    G, P = s.active.shape
    if int(keep_g.sum()) * count > SHRINK_BELOW * G * P:
        return  # stopped problems stay in place, frozen (step 0), until the batch would shrink by a quarter

    gi = keep_g.nonzero()[:, 0]
    order = torch.argsort((~s.active[gi]).to(torch.int8), dim=1, stable=True)[:, :count]
    s.take(gi, order)


def _logits(Zt, theta, d: int, k: int):
    """(G, P, k, n): every problem's logits on its group's rows, class-major (one bmm per group: (P*k, d) x (d, n)).
    Class-major because the softmax over k then runs along rows of n contiguous values: torch's log_softmax over a
    last dimension of 10 is ~15-19x slower on the CPU than over a leading one (benchmarks/solver_choices.py).
    From Z^T stored contiguous (d, n), not Z viewed transposed: 2.2-2.3x faster on the CPU at k = 10, n = 1,600 and
    d = 1,280 or 3,840 (the same benchmark); the gradient's pass reads Z itself."""
    G, P, _ = theta.shape
    W = theta[..., : d * k].reshape(G, P * k, d)
    return (W @ Zt).view(G, P, k, Zt.shape[2]) + theta[..., d * k :][..., None]


def _ce(s: _State, L):
    """(G, P): the row-weighted cross-entropy of logits L."""
    logp = (L + s.cbias[:, None, :, None]).log_softmax(2)
    G, P, _, n = logp.shape
    picked = logp.gather(2, s.Y[:, None, None, :].expand(G, P, 1, n))[:, :, 0, :]
    return -(picked * s.rw[:, None, :]).sum(-1)


def _loss_grad(s: _State, d: int, k: int, with_loss: bool = True):
    import torch

    logp = (s.L + s.cbias[:, None, :, None]).log_softmax(2)
    G, P, _, n = logp.shape
    target = s.Y[:, None, None, :].expand(G, P, 1, n)
    f = None
    if with_loss:
        f = -(logp.gather(2, target)[:, :, 0, :] * s.rw[:, None, :]).sum(-1) + 0.5 * s.lam * (s.theta[..., : d * k] ** 2).sum(-1)
    p = logp.exp_()
    p.scatter_add_(2, target, torch.full((1, 1, 1, 1), -1.0, device=p.device).expand(G, P, 1, n))
    Gm = p * s.rw[:, None, None, :]  # (G, P, k, n): softmax - one-hot, weighted by row
    gW = (Gm.view(G, P * k, n) @ s.Z).view(G, P, k * d)  # class-major, as theta holds W
    gW = gW + s.lam[..., None] * s.theta[..., : d * k]
    return f, torch.cat([gW, Gm.sum(-1)], -1)
