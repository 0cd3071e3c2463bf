"""Fixed-point solvers for deep equilibrium models, batched with per-sample stopping.

Every solver looks for ``z* = f(z*)`` and shares one signature::

    z_star, stats = solver(f, z0, *, max_iter, tol_rel=1e-3, tol_abs=0.0, stop_mode="rel",
                           return_best=..., pass_index=False, **solver_kwargs)

* ``z0``: (N, ...) batch of starting points; row n is an independent problem.
* ``f``: maps a batch to a batch of the same shape. With ``pass_index=False`` it is called as ``f(z)`` on the
  full (N, ...) batch (rows that already stopped are re-evaluated and their outputs thrown away); with
  ``pass_index=True`` it is called as ``f(z_active, index)`` with only the M rows still running (``index``: int64
  (M,) positions of those rows in the batch) -- this saves the work for finished rows. Either way, as long as
  ``f`` treats rows independently, a row's result does not depend on the other rows: solving a batch gives the
  same numbers as solving each row alone.
* One **iteration** is one evaluation of ``f`` (for every solver), so ``max_iter`` is a budget of evaluations.
  ``max_iter`` may be an int or a per-row (N,) tensor / sequence of ints.
* Residuals are measured at a *checked* iterate z (one at which ``f`` was evaluated): ``abs = ||f(z) - z||_2`` over
  all of the row's elements, ``rel = abs / (||f(z)||_2 + 1e-5)``. A row stops as soon as its residual is
  **strictly** below the tolerance (so ``tol = 0`` runs every iteration): ``stop_mode="rel"`` tests ``rel <
  tol_rel``, ``"abs"`` tests ``abs < tol_abs``, ``"either"`` stops on whichever comes first. A stopped row keeps
  its value and its iteration count while the other rows go on.
* The returned ``z_star`` is always a checked iterate: the last one (``return_best=False``) or the one with the
  lowest residual (``return_best=True``; the residual of ``stop_mode``, the relative one for ``"either"``).
  Because ``f(z_star)`` is known, it is returned too (``stats.f_star``) -- a model that applies ``f`` once more
  after the solver (as the released LDEQ inference does) can use it instead of re-evaluating. For fixed-point
  iteration the last checked iterate is ``f^(K-1)(z0)`` after K evaluations and ``f_star = f^K(z0)``.
* Rows with a budget of 0 iterations return ``z0`` with ``f_star`` = NaN and ``iterations = 0``.

Solvers run in whatever autograd mode the caller sets (normally ``torch.no_grad()``); they are not meant to be
differentiated through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "SolverStats",
    "fixed_point_iteration",
    "anderson",
    "broyden",
    "SOLVERS",
    "get_solver",
    "residuals",
]

_NORM_EPS = 1e-5
STOP_MODES = ("rel", "abs", "either")


@dataclass
class SolverStats:
    """Per-row statistics of one solver call (N rows, T = the largest per-row budget).

    Attributes:
        solver: the solver's name.
        iterations: int64 (N,) evaluations of ``f`` spent on each row.
        converged: bool (N,) whether the row stopped because its residual met the tolerance.
        abs_residual: (N,) absolute residual ``||f(z*) - z*||`` of the returned iterate (NaN if never evaluated).
        rel_residual: (N,) relative residual of the returned iterate.
        best_iteration: int64 (N,) 1-based iteration at which the returned iterate was evaluated (0: none).
        abs_trace: (T, N) absolute residual of the iterate checked at each iteration, NaN after the row stopped.
        rel_trace: (T, N) relative residual, likewise.
        f_star: (N, ...) ``f`` evaluated at the returned iterate (NaN rows where it was never evaluated), or
            None when the caller asked not to keep it.
        stop_mode, tol_rel, tol_abs: the stopping rule used.
    """

    solver: str
    iterations: torch.Tensor
    converged: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    best_iteration: torch.Tensor
    abs_trace: torch.Tensor
    rel_trace: torch.Tensor
    f_star: torch.Tensor | None = None
    stop_mode: str = "rel"
    tol_rel: float = 0.0
    tol_abs: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def residual(self) -> torch.Tensor:
        """(N,) residual of the returned iterate in the stop mode's measure (relative for ``"either"``)."""
        return self.abs_residual if self.stop_mode == "abs" else self.rel_residual


def residuals(fz: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absolute and relative residuals of ``f(z)`` vs ``z``, both (N, ...) -> two (N,) tensors."""
    n = z.shape[0]
    diff = (fz - z).reshape(n, -1)
    abs_r = torch.linalg.vector_norm(diff, dim=1)
    rel_r = abs_r / (torch.linalg.vector_norm(fz.reshape(n, -1), dim=1) + _NORM_EPS)
    return abs_r, rel_r


# ---------------------------------------------------------------------------------------------------------
# shared bookkeeping


class _Tracker:
    """Per-row state shared by all solvers: budgets, activity, residual traces, best iterate."""

    def __init__(self, name, z0, max_iter, tol_rel, tol_abs, stop_mode, return_best, keep_f_star):
        if stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
        if tol_rel < 0 or tol_abs < 0:
            raise ValueError(f"tolerances must be >= 0, got tol_rel={tol_rel}, tol_abs={tol_abs}")
        if z0.dim() < 1 or z0.shape[0] == 0:
            raise ValueError(f"z0 must be a non-empty batch (N, ...), got shape {tuple(z0.shape)}")
        self.name = name
        self.n = z0.shape[0]
        dev = z0.device
        self.budget = _budget(max_iter, self.n, dev)
        self.t_max = int(self.budget.max().item()) if self.n else 0
        self.tol_rel, self.tol_abs, self.stop_mode = float(tol_rel), float(tol_abs), stop_mode
        self.return_best = bool(return_best)
        self.keep_f_star = keep_f_star
        self.iters = torch.zeros(self.n, dtype=torch.long, device=dev)
        self.active = self.budget > 0
        self.converged = torch.zeros(self.n, dtype=torch.bool, device=dev)
        rdtype = z0.dtype if z0.is_floating_point() else torch.float32
        nan = float("nan")
        self.abs_trace = torch.full((self.t_max, self.n), nan, dtype=rdtype, device=dev)
        self.rel_trace = torch.full((self.t_max, self.n), nan, dtype=rdtype, device=dev)
        # the returned iterate, its f-value and residuals
        self.z_out = z0.detach().clone()
        self.f_out = torch.full_like(z0, nan) if keep_f_star else None
        self.abs_out = torch.full((self.n,), nan, dtype=rdtype, device=dev)
        self.rel_out = torch.full((self.n,), nan, dtype=rdtype, device=dev)
        self.best_key = torch.full((self.n,), float("inf"), dtype=rdtype, device=dev)
        self.best_it = torch.zeros(self.n, dtype=torch.long, device=dev)

    def active_index(self) -> torch.Tensor:
        return self.active.nonzero().squeeze(1)

    def record(self, idx: torch.Tensor, z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        """Record the evaluation ``fz = f(z)`` for rows ``idx``; returns the rows' stop flags (M,) bool."""
        abs_r, rel_r = residuals(fz, z)
        step = self.iters[idx]  # 0-based iteration index of this evaluation for each row
        self.abs_trace[step, idx] = abs_r.to(self.abs_trace.dtype)
        self.rel_trace[step, idx] = rel_r.to(self.rel_trace.dtype)
        self.iters[idx] = step + 1
        key = abs_r if self.stop_mode == "abs" else rel_r
        key = torch.nan_to_num(key.to(self.best_key.dtype), nan=float("inf"))
        if self.return_best:
            take = key < self.best_key[idx]
            take = take | (self.best_it[idx] == 0)  # the first finite evaluation is always a candidate
        else:
            take = torch.ones_like(key, dtype=torch.bool)
        if bool(take.any()):
            rows = idx[take]
            self.z_out[rows] = z[take].to(self.z_out.dtype)
            if self.f_out is not None:
                self.f_out[rows] = fz[take].to(self.f_out.dtype)
            self.abs_out[rows] = abs_r[take].to(self.abs_out.dtype)
            self.rel_out[rows] = rel_r[take].to(self.rel_out.dtype)
            self.best_key[rows] = key[take]
            self.best_it[rows] = step[take] + 1
        if self.stop_mode == "rel":
            stop = rel_r < self.tol_rel
        elif self.stop_mode == "abs":
            stop = abs_r < self.tol_abs
        else:
            stop = (rel_r < self.tol_rel) | (abs_r < self.tol_abs)
        self.converged[idx] = stop
        self.active[idx] = (~stop) & (self.iters[idx] < self.budget[idx])
        return stop

    def finish(self, extra=None) -> tuple[torch.Tensor, SolverStats]:
        stats = SolverStats(
            solver=self.name,
            iterations=self.iters,
            converged=self.converged,
            abs_residual=self.abs_out,
            rel_residual=self.rel_out,
            best_iteration=self.best_it,
            abs_trace=self.abs_trace,
            rel_trace=self.rel_trace,
            f_star=self.f_out,
            stop_mode=self.stop_mode,
            tol_rel=self.tol_rel,
            tol_abs=self.tol_abs,
            extra=dict(extra or {}),
        )
        return self.z_out, stats


def _budget(max_iter, n: int, device) -> torch.Tensor:
    if isinstance(max_iter, torch.Tensor):
        b = max_iter.to(device=device, dtype=torch.long).reshape(-1)
    elif isinstance(max_iter, (int,)) and not isinstance(max_iter, bool):
        b = torch.full((n,), int(max_iter), dtype=torch.long, device=device)
    elif isinstance(max_iter, Sequence):
        b = torch.as_tensor([int(v) for v in max_iter], dtype=torch.long, device=device)
    else:
        raise TypeError(f"max_iter must be an int or a per-row sequence/tensor of ints, got {type(max_iter).__name__}")
    if b.numel() == 1 and n != 1:
        b = b.expand(n).clone()
    if b.numel() != n:
        raise ValueError(f"max_iter has {b.numel()} entries but the batch has {n} rows")
    if bool((b < 0).any()):
        raise ValueError(f"max_iter must be >= 0, got {b.tolist()}")
    return b


def _caller(f: Callable, pass_index: bool, n: int):
    """Return ``call(z_rows, idx)`` evaluating f on rows ``idx`` whose current values are ``z_rows``."""
    if pass_index:

        def call(z_rows, idx, z_full=None):
            out = f(z_rows, idx)
            if out.shape != z_rows.shape:
                raise ValueError(f"f returned shape {tuple(out.shape)} for input shape {tuple(z_rows.shape)}")
            return out
    else:

        def call(z_rows, idx, z_full):
            # z_full holds the current iterate of every row (z_rows == z_full[idx])
            out = f(z_full)
            if out.shape != z_full.shape:
                raise ValueError(f"f returned shape {tuple(out.shape)} for input shape {tuple(z_full.shape)}")
            return out if idx.numel() == n else out[idx]

    return call


# ---------------------------------------------------------------------------------------------------------
# solvers


def fixed_point_iteration(
    f: Callable,
    z0: torch.Tensor,
    *,
    max_iter,
    tol_rel: float = 1e-3,
    tol_abs: float = 0.0,
    stop_mode: str = "rel",
    return_best: bool = False,
    pass_index: bool = False,
    keep_f_star: bool = True,
) -> tuple[torch.Tensor, SolverStats]:
    """Plain fixed-point iteration ``z_{k+1} = f(z_k)`` (see the module docstring for the common contract).

    Args:
        f: the map, ``f(z)`` or ``f(z_active, index)`` (``pass_index=True``).
        z0: (N, ...) starting points.
        max_iter: evaluation budget, int or (N,).
        return_best: return the checked iterate with the lowest residual instead of the last one.
    Returns:
        ``(z_star (N, ...), SolverStats)``. With ``return_best=False`` and K evaluations,
        ``z_star = f^(K-1)(z0)`` and ``stats.f_star = f^K(z0)``.
    """
    tr = _Tracker("fpi", z0, max_iter, tol_rel, tol_abs, stop_mode, return_best, keep_f_star)
    call = _caller(f, pass_index, tr.n)
    z = z0.detach().clone()
    for _ in range(tr.t_max):
        idx = tr.active_index()
        if idx.numel() == 0:
            break
        zi = z[idx]
        fz = call(zi, idx, z)
        tr.record(idx, zi, fz)
        z[idx] = fz.to(z.dtype)
    return tr.finish()


def anderson(
    f: Callable,
    z0: torch.Tensor,
    *,
    max_iter,
    tol_rel: float = 1e-3,
    tol_abs: float = 0.0,
    stop_mode: str = "rel",
    return_best: bool = True,
    pass_index: bool = False,
    keep_f_star: bool = True,
    m: int = 6,
    lam: float = 1e-4,
    beta: float = 1.0,
) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration with a history of ``m`` iterates (see the module docstring for the contract).

    The first two iterates are ``x_0 = z0`` and ``x_1 = f(x_0)``; afterwards, with the last ``n = min(k, m)``
    iterates ``x_i`` and their values ``f_i = f(x_i)``, residuals ``g_i = f_i - x_i``, weights ``alpha`` solve
    ``min ||sum_i alpha_i g_i||^2 + lam ||alpha||^2`` subject to ``sum_i alpha_i = 1`` (the bordered linear system
    ``[[0, 1^T], [1, G G^T + lam I]] [mu; alpha] = [1; 0]``), and the next iterate is
    ``x_{k} = beta * sum_i alpha_i f_i + (1 - beta) * sum_i alpha_i x_i``. Every iterate costs one evaluation.

    Args:
        m: history size (>= 2). lam: ridge regularisation of the weights. beta: mixing (1 = undamped).
        return_best: return the checked iterate with the lowest residual (default, as the released LDEQ does).
    """
    if int(m) < 2:
        raise ValueError(f"anderson needs a history m >= 2, got m={m}")
    m = int(m)
    tr = _Tracker("anderson", z0, max_iter, tol_rel, tol_abs, stop_mode, return_best, keep_f_star)
    call = _caller(f, pass_index, tr.n)
    n_rows = tr.n
    d = z0[0].numel()
    dt = z0.dtype
    X = torch.zeros(n_rows, m, d, dtype=dt, device=z0.device)  # circular history of iterates
    F = torch.zeros(n_rows, m, d, dtype=dt, device=z0.device)  # their f-values
    z = z0.detach().clone()  # the next iterate to evaluate, per row
    for _ in range(tr.t_max):
        idx = tr.active_index()
        if idx.numel() == 0:
            break
        k = tr.iters[idx]  # how many iterates each active row has evaluated so far
        zi = z[idx]
        fz = call(zi, idx, z)
        tr.record(idx, zi, fz)
        slot = k % m
        X[idx, slot] = zi.reshape(idx.numel(), -1)
        F[idx, slot] = fz.reshape(idx.numel(), -1).to(dt)
        # next iterate of the rows that keep going
        go = tr.active[idx]
        if not bool(go.any()):
            continue
        rows = idx[go]
        kk = k[go] + 1  # iterates in the history now
        nxt = torch.empty(rows.numel(), d, dtype=dt, device=z0.device)
        first = kk == 1
        if bool(first.any()):  # only x_0 known: plain fixed-point step
            nxt[first] = F[rows[first], 0]
        rest = ~first
        if bool(rest.any()):
            # rows with the same history length share one batched solve
            for n_hist in torch.unique(torch.clamp(kk[rest], max=m)).tolist():
                sel = rest & (torch.clamp(kk, max=m) == n_hist)
                r = rows[sel]
                Xh, Fh = X[r, :n_hist], F[r, :n_hist]
                nxt[sel] = _anderson_mix(Xh, Fh, lam, beta)
        z[rows] = nxt.reshape((rows.numel(),) + tuple(z0.shape[1:]))
    return tr.finish({"m": m, "lam": lam, "beta": beta})


def _anderson_mix(Xh: torch.Tensor, Fh: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """One Anderson mixing step. Xh, Fh: (B, n, d) -> next iterates (B, d)."""
    b, n, _ = Xh.shape
    G = Fh - Xh
    H = torch.zeros(b, n + 1, n + 1, dtype=Xh.dtype, device=Xh.device)
    H[:, 0, 1:] = 1
    H[:, 1:, 0] = 1
    H[:, 1:, 1:] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=Xh.dtype, device=Xh.device)
    rhs = torch.zeros(b, n + 1, 1, dtype=Xh.dtype, device=Xh.device)
    rhs[:, 0] = 1
    alpha = torch.linalg.solve(H, rhs)[:, 1:, 0]  # (B, n)
    mixed_f = torch.bmm(alpha[:, None], Fh)[:, 0]
    if beta == 1.0:
        return mixed_f
    mixed_x = torch.bmm(alpha[:, None], Xh)[:, 0]
    return beta * mixed_f + (1.0 - beta) * mixed_x


def broyden(
    f: Callable,
    z0: torch.Tensor,
    *,
    max_iter,
    tol_rel: float = 1e-3,
    tol_abs: float = 0.0,
    stop_mode: str = "rel",
    return_best: bool = True,
    pass_index: bool = False,
    keep_f_star: bool = True,
) -> tuple[torch.Tensor, SolverStats]:
    """Broyden's ("good") quasi-Newton method on ``g(z) = f(z) - z`` without line search.

    The inverse Jacobian of g starts at ``-I`` (so the first step is a fixed-point step) and receives one
    Sherman-Morrison rank-one update per iteration, stored as ``-I + sum_t u_t v_t^T`` (memory grows with the
    number of iterations: 2 x max_iter x d numbers per row). Each iterate costs one evaluation of ``f``.
    """
    tr = _Tracker("broyden", z0, max_iter, tol_rel, tol_abs, stop_mode, return_best, keep_f_star)
    call = _caller(f, pass_index, tr.n)
    n_rows = tr.n
    d = z0[0].numel()
    dt = z0.dtype
    n_upd = max(tr.t_max - 1, 0)
    U = torch.zeros(n_rows, n_upd, d, dtype=dt, device=z0.device)
    V = torch.zeros(n_rows, n_upd, d, dtype=dt, device=z0.device)
    z = z0.detach().clone()
    prev_x = torch.zeros(n_rows, d, dtype=dt, device=z0.device)
    prev_g = torch.zeros(n_rows, d, dtype=dt, device=z0.device)
    for _ in range(tr.t_max):
        idx = tr.active_index()
        if idx.numel() == 0:
            break
        k = tr.iters[idx]
        zi = z[idx]
        fz = call(zi, idx, z)
        tr.record(idx, zi, fz)
        x = zi.reshape(idx.numel(), -1)
        g = (fz.reshape(idx.numel(), -1) - x).to(dt)
        go = tr.active[idx]
        if not bool(go.any()):
            continue
        rows, x, g, k = idx[go], x[go], g[go], k[go]
        used = int(k.max())  # slots 0..k-1 hold this row's updates after this step's update
        Ur, Vr = U[rows, :used], V[rows, :used]
        # rank-one update from the last step (rows that have made at least one step)
        upd = k >= 1
        if bool(upd.any()):
            dx = x - prev_x[rows]
            dg = g - prev_g[rows]
            jdg = _jinv_matvec(Ur, Vr, dg)  # J^-1 dg
            vT = _jinv_rmatvec(Ur, Vr, dx)  # dx^T J^-1
            denom = (vT * dg).sum(dim=1, keepdim=True)
            u = (dx - jdg) / denom
            u = torch.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
            vT = torch.nan_to_num(vT, nan=0.0, posinf=0.0, neginf=0.0)
            r_up, slot = rows[upd], k[upd] - 1
            U[r_up, slot] = u[upd]
            V[r_up, slot] = vT[upd]
            ar = torch.arange(rows.numel(), device=z0.device)[upd]
            Ur[ar, slot] = u[upd]
            Vr[ar, slot] = vT[upd]
        step = -_jinv_matvec(Ur, Vr, g)  # -J^-1 g
        prev_x[rows], prev_g[rows] = x, g
        z[rows] = (x + step).reshape((rows.numel(),) + tuple(z0.shape[1:]))
    return tr.finish()


def _jinv_matvec(U: torch.Tensor, V: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(-I + sum_t u_t v_t^T) y for U, V: (B, T, d) (unused slots are zero), y: (B, d) -> (B, d)."""
    if U.shape[1] == 0:
        return -y
    return -y + torch.einsum("btd,bt->bd", U, torch.einsum("btd,bd->bt", V, y))


def _jinv_rmatvec(U: torch.Tensor, V: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x^T (-I + sum_t u_t v_t^T) for U, V: (B, T, d), x: (B, d) -> (B, d)."""
    if U.shape[1] == 0:
        return -x
    return -x + torch.einsum("btd,bt->bd", V, torch.einsum("btd,bd->bt", U, x))


#: name -> solver function (all with the signature described in the module docstring)
SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, SolverStats]]] = {
    "fpi": fixed_point_iteration,
    "anderson": anderson,
    "broyden": broyden,
}

#: which solver keyword arguments each solver accepts beyond the common ones
SOLVER_KWARGS = {"fpi": (), "anderson": ("m", "lam", "beta"), "broyden": ()}

#: default of ``return_best`` per solver (the released LDEQ returns the best iterate for anderson / broyden)
DEFAULT_RETURN_BEST = {"fpi": False, "anderson": True, "broyden": True}


def get_solver(name: str) -> Callable[..., tuple[torch.Tensor, SolverStats]]:
    """The solver function registered under ``name`` (``fpi``, ``anderson``, ``broyden``)."""
    key = {"fixed_point_iteration": "fpi", "fixed-point": "fpi"}.get(name, name)
    if key not in SOLVERS:
        raise KeyError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    return SOLVERS[key]
