"""Fixed-point solvers for deep equilibrium models, batched with per-sample stopping, counting as the released LDEQ.

One function runs every solver, so the options are declared once::

    z_star, stats = solve(f, z0, solver="anderson", max_iter=5, tol_rel=0.05, stop_mode="rel",
                          return_best=None, early_exit=False, final_eval=True, pass_index=False, m=6, lam=1e-4)

``fixed_point_iteration(f, z0, **options)``, ``anderson(...)`` and ``broyden(...)`` are that call with the solver
named. A solver itself is a :class:`SolverSpec`: how it starts, how the next iterate follows from the evaluated
ones, and how it counts.

**The batch.** ``z0`` is (N, ...); row n is an independent problem with its own stopping and its own budget
(``max_iter`` may be an int or an (N,) tensor / sequence). ``f`` maps a batch to a batch of the same shape: with
``pass_index=False`` it is called as ``f(z)`` on the full batch (rows that already stopped are re-evaluated and
their outputs thrown away); with ``pass_index=True`` as ``f(z_rows, index)`` on the rows still running (``index``:
int64 positions in the batch), which saves their work. As long as ``f`` treats rows independently, a row's result
does not depend on the other rows: a batch gives the same numbers as each row alone.

**Iterations (as the released code counts them).** ``max_iter`` counts *solver iterations*, not evaluations of f:

* ``fpi``: iteration k evaluates ``z_k = f(z_{k-1})``. The answer is the last value ``f(z)``, an iterate whose own
  f has not been evaluated yet (``final_eval`` evaluates it: K iterations cost K + 1 evaluations).
* ``anderson``: two *warm-up* evaluations, at ``x0`` and ``x1 = f(x0)``; iteration k mixes the history into
  ``x_{k+1}`` and evaluates it. The answer is the mixed iterate with the lowest residual, whose f is known:
  K iterations cost K + 2 evaluations (the released inference evaluates f at the answer once more; here the value
  the solver computed is reused, the same number without the extra evaluation).
* ``broyden``: one warm-up evaluation at ``x0``; iteration k takes a quasi-Newton step and evaluates it; the answer
  is the stepped iterate with the lowest residual: K + 1 evaluations. (No released reference outputs exist for it.)

**Checks.** After every evaluation the row's residual at the evaluated iterate z is ``abs = ||f(z) - z||`` (over all
of the row's elements) and ``rel = abs / (||f(z)|| + 1e-5)`` (fpi, broyden) or ``abs / ||f(z) + 1e-5||`` (anderson,
1e-5 added to every element, as released). Only *candidates* are checked and can be the answer: the iterates of
the iterations, never the warm-up ones. A row stops as soon as a candidate's residual is **strictly** below the
tolerance (``tol = 0`` runs every iteration) -- ``stop_mode="rel"``: ``rel < tol_rel``; ``"abs"``: ``abs <
tol_abs``; ``"either"``: whichever first -- or after ``max_iter`` iterations.

**The answer** ``z_star``: with ``return_best`` (default: anderson and broyden yes, fpi no) the candidate with the
lowest residual (in the stop mode's measure, the relative one for ``"either"``); otherwise fpi's last value
``f(z)``, or the last candidate for the others. ``final_eval=True`` evaluates f at the answer when the solver has
not (fpi), so ``stats.f_star = f(z_star)`` for every row; with ``final_eval=False`` such rows have NaN there.

**early_exit** (not released; an option): every evaluated iterate, warm-up included, is a candidate, and a row
whose candidate meets the tolerance answers with that candidate, whose f is already known -- no further evaluation.
A warm start that is already good enough then costs one evaluation (fpi returns the checked iterate instead of the
value after it).

Rows with ``max_iter = 0`` are not iterated: ``z_star = z0`` (evaluated once when ``final_eval``). Solvers run in
whatever autograd mode the caller sets (normally ``torch.no_grad()``); they are not meant to be differentiated
through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "SolverSpec",
    "SolverStats",
    "solve",
    "fixed_point_iteration",
    "anderson",
    "broyden",
    "SOLVERS",
    "SPECS",
    "STOP_MODES",
    "get_solver",
    "solver_spec",
    "residuals",
]

_NORM_EPS = 1e-5
STOP_MODES = ("rel", "abs", "either")


@dataclass
class SolverStats:
    """Per-row statistics of one solver call (N rows, E = the largest number of evaluations of any row).

    Attributes:
        solver: the solver's name.
        iterations: int64 (N,) solver iterations done (the released count, <= ``max_iter``).
        evaluations: int64 (N,) evaluations of ``f`` spent on the row (warm-up + iterations + final evaluation).
        converged: bool (N,) whether the row stopped because a candidate met the tolerance.
        abs_residual, rel_residual: (N,) residual of the answer ``||f(z*) - z*||`` and its relative form (NaN when
            f was never evaluated at the answer).
        answer_evaluation: int64 (N,) 1-based evaluation that computed ``f(z*)`` (0: none).
        abs_trace, rel_trace: (E, N) residual at each evaluation (the final evaluation included), NaN afterwards.
        f_star: (N, ...) ``f(z*)`` (NaN rows where it was not evaluated).
        stop_mode, tol_rel, tol_abs: the stopping rule used.
    """

    solver: str
    iterations: torch.Tensor
    evaluations: torch.Tensor
    converged: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    answer_evaluation: torch.Tensor
    abs_trace: torch.Tensor
    rel_trace: torch.Tensor
    f_star: torch.Tensor
    stop_mode: str = "rel"
    tol_rel: float = 0.0
    tol_abs: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def residual(self) -> torch.Tensor:
        """(N,) residual of the answer in the stop mode's measure (relative for ``"either"``)."""
        return self.abs_residual if self.stop_mode == "abs" else self.rel_residual


def residuals(fz: torch.Tensor, z: torch.Tensor, eps_inside: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absolute and relative residuals of ``f(z)`` vs ``z``, both (N, ...) -> two (N,) tensors.

    ``rel = ||f(z) - z|| / (||f(z)|| + 1e-5)``, or ``/ ||f(z) + 1e-5||`` with ``eps_inside`` (released Anderson).
    """
    n = z.shape[0]
    abs_r = torch.linalg.vector_norm((fz - z).reshape(n, -1), dim=1)
    if eps_inside:
        rel_r = abs_r / torch.linalg.vector_norm((fz + _NORM_EPS).reshape(n, -1), dim=1)
    else:
        rel_r = abs_r / (torch.linalg.vector_norm(fz.reshape(n, -1), dim=1) + _NORM_EPS)
    return abs_r, rel_r


# ---------------------------------------------------------------------------------------------------------
# what a solver is


@dataclass(frozen=True)
class SolverSpec:
    """One solver: its counting and its update rule (the loop, checks and answer are :func:`solve`'s).

    Attributes:
        name: registry key.
        warmup: evaluations before the first iteration (not candidates unless ``early_exit``).
        return_best: default of ``return_best``.
        answer_is_next: without ``return_best``, the answer is the value after the last evaluation (fpi's
            ``f(z)``) rather than the last candidate.
        eps_inside: relative residual ``/ ||f(z) + 1e-5||`` instead of ``/ (||f(z)|| + 1e-5)``.
        options: the solver's own keyword arguments and their defaults.
        start: ``start(z0_flat (N, d), max_evaluations, **options) -> state`` (any object).
        step: ``step(state, rows, k, x, fx, go, **options) -> next iterates (G, d)``: after the rows ``rows`` (M,)
            evaluated their k-th iterate (0-based, (M,)) ``x`` (M, d) with values ``fx`` (M, d), the next iterate
            of the rows ``rows[go]`` that go on.
    """

    name: str
    warmup: int
    return_best: bool
    answer_is_next: bool
    eps_inside: bool
    options: dict[str, Any]
    start: Callable[..., Any]
    step: Callable[..., torch.Tensor]


def _fpi_step(state, rows, k, x, fx, go):
    return fx[go]


def _anderson_start(z0, max_evals, m, lam, beta):
    if int(m) < 2:
        raise ValueError(f"anderson needs a history m >= 2, got m={m}")
    n, d = z0.shape
    m = int(m)
    return {  # circular history of the iterates and their values
        "X": torch.zeros(n, m, d, dtype=z0.dtype, device=z0.device),
        "F": torch.zeros(n, m, d, dtype=z0.dtype, device=z0.device),
    }


def _anderson_step(state, rows, k, x, fx, go, m, lam, beta):
    X, F = state["X"], state["F"]
    m = int(m)
    slot = k % m
    X[rows, slot] = x
    F[rows, slot] = fx.to(X.dtype)
    rows, kk = rows[go], k[go] + 1  # kk: iterates in the history now
    nxt = torch.empty(rows.numel(), X.shape[2], dtype=X.dtype, device=X.device)
    first = kk == 1  # only x0 known: the next iterate is f(x0)
    nxt[first] = F[rows[first], 0]
    hist = torch.clamp(kk, max=m)
    for n_hist in torch.unique(hist[~first]).tolist():  # rows with the same history length share one solve
        sel = (~first) & (hist == n_hist)
        nxt[sel] = _anderson_mix(X[rows[sel], :n_hist], F[rows[sel], :n_hist], lam, beta)
    return nxt


def _anderson_mix(Xh: torch.Tensor, Fh: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """One Anderson mixing step. Xh, Fh: (B, n, d) -> next iterates (B, d).

    With residuals ``G = Fh - Xh``, the weights ``alpha`` minimise ``||alpha^T G||^2 + lam ||alpha||^2`` subject to
    ``sum(alpha) = 1`` (the bordered system ``[[0, 1^T], [1, G G^T + lam I]] [mu; alpha] = [1; 0]``; ``lam`` is an
    absolute ridge term), and the next iterate is ``beta alpha^T Fh + (1 - beta) alpha^T Xh``.
    """
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


def _broyden_start(z0, max_evals):
    n, d = z0.shape
    slots = max(max_evals - 1, 0)  # one rank-one update per step after the first
    zeros = lambda *s: torch.zeros(*s, dtype=z0.dtype, device=z0.device)
    return {"U": zeros(n, slots, d), "V": zeros(n, slots, d), "x": zeros(n, d), "g": zeros(n, d)}


def _broyden_step(state, rows, k, x, fx, go):
    """Broyden's ("good") method on ``g(z) = f(z) - z`` without line search.

    The inverse Jacobian of g starts at ``-I`` (so the first step is a fixed-point step) and receives one
    Sherman-Morrison rank-one update per step, stored as ``-I + sum_t u_t v_t^T``.
    """
    g = (fx - x).to(x.dtype)
    rows, x, g, k = rows[go], x[go], g[go], k[go]
    U, V = state["U"], state["V"]
    used = int(k.max()) if k.numel() else 0  # slots 0..k-1 hold a row's updates after this step's update
    Ur, Vr = U[rows, :used], V[rows, :used]
    upd = k >= 1  # rows that have made a step before: update the inverse Jacobian from it
    if bool(upd.any()):
        dx, dg = x - state["x"][rows], g - state["g"][rows]
        vT = _jinv_rmatvec(Ur, Vr, dx)  # dx^T J^-1
        u = (dx - _jinv_matvec(Ur, Vr, dg)) / (vT * dg).sum(dim=1, keepdim=True)
        u = torch.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        vT = torch.nan_to_num(vT, nan=0.0, posinf=0.0, neginf=0.0)
        slot = k[upd] - 1
        U[rows[upd], slot], V[rows[upd], slot] = u[upd], vT[upd]
        ar = torch.arange(rows.numel(), device=x.device)[upd]
        Ur[ar, slot], Vr[ar, slot] = u[upd], vT[upd]
    state["x"][rows], state["g"][rows] = x, g
    return x - _jinv_matvec(Ur, Vr, g)


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


#: name -> solver (see :class:`SolverSpec`)
SPECS: dict[str, SolverSpec] = {
    spec.name: spec
    for spec in (
        SolverSpec(
            name="fpi", warmup=0, return_best=False, answer_is_next=True, eps_inside=False, options={},
            start=lambda z0, max_evals: None, step=_fpi_step,
        ),
        SolverSpec(
            name="anderson", warmup=2, return_best=True, answer_is_next=False, eps_inside=True,
            options={"m": 6, "lam": 1e-4, "beta": 1.0}, start=_anderson_start, step=_anderson_step,
        ),
        SolverSpec(
            name="broyden", warmup=1, return_best=True, answer_is_next=False, eps_inside=False, options={},
            start=_broyden_start, step=_broyden_step,
        ),
    )
}  # fmt: skip

_ALIASES = {"fixed_point_iteration": "fpi", "fixed-point": "fpi"}


def solver_spec(name: str) -> SolverSpec:
    """The :class:`SolverSpec` registered under ``name`` (``fpi``, ``anderson``, ``broyden``)."""
    key = _ALIASES.get(name, name)
    if key not in SPECS:
        raise KeyError(f"unknown solver {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[key]


# ---------------------------------------------------------------------------------------------------------
# the one loop


def _budget(max_iter, n: int, device) -> torch.Tensor:
    if isinstance(max_iter, torch.Tensor):
        b = max_iter.to(device=device, dtype=torch.long).reshape(-1)
    elif isinstance(max_iter, int) and not isinstance(max_iter, bool):
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
    """``call(z_rows, idx, z_full)``: f on rows ``idx`` whose values are ``z_rows`` (``z_full``: every row's)."""

    def call(z_rows, idx, z_full):
        out = f(z_rows, idx) if pass_index else f(z_full)
        expect = z_rows if pass_index else z_full
        if out.shape != expect.shape:
            raise ValueError(f"f returned shape {tuple(out.shape)} for input shape {tuple(expect.shape)}")
        return out if pass_index or idx.numel() == n else out[idx]

    return call


def solve(
    f: Callable,
    z0: torch.Tensor,
    *,
    solver: str = "anderson",
    max_iter,
    tol_rel: float = 1e-3,
    tol_abs: float = 0.0,
    stop_mode: str = "rel",
    return_best: bool | None = None,
    early_exit: bool = False,
    final_eval: bool = True,
    pass_index: bool = False,
    **solver_options: Any,
) -> tuple[torch.Tensor, SolverStats]:
    """Find ``z* = f(z*)`` for every row of ``z0`` (the contract is in the module docstring).

    Args:
        f: the map, ``f(z)`` or ``f(z_rows, index)`` (``pass_index=True``).
        z0: (N, ...) starting points.
        solver: ``fpi``, ``anderson`` or ``broyden``.
        max_iter: solver iterations, int or (N,).
        tol_rel, tol_abs, stop_mode: the stopping rule.
        return_best: answer with the lowest-residual candidate (None: the solver's default).
        early_exit: warm-up iterates are candidates too and a converged row answers with its converged candidate.
        final_eval: evaluate f at answers the solver has not evaluated (fpi's last value).
        solver_options: the solver's own options (anderson: ``m``, ``lam``, ``beta``).
    Returns:
        ``(z_star (N, ...), SolverStats)``.
    """
    spec = solver_spec(solver)
    unknown = sorted(set(solver_options) - set(spec.options))
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise TypeError(f"solver {spec.name!r} has no option(s) {', '.join(unknown)}; its options: {valid}")
    opts = {**spec.options, **solver_options}
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    if tol_rel < 0 or tol_abs < 0:
        raise ValueError(f"tolerances must be >= 0, got tol_rel={tol_rel}, tol_abs={tol_abs}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must be a non-empty batch (N, ...), got shape {tuple(z0.shape)}")
    best = spec.return_best if return_best is None else bool(return_best)
    n, dev, shape = z0.shape[0], z0.device, tuple(z0.shape)
    budget = _budget(max_iter, n, dev)
    cap = torch.where(budget > 0, budget + spec.warmup, budget)  # evaluations before the final one
    e_max = int(cap.max()) if n else 0
    call = _caller(f, pass_index, n)
    rdt = z0.dtype if z0.is_floating_point() else torch.float32
    nan = float("nan")

    flat0 = z0.detach().reshape(n, -1)
    state = spec.start(flat0, e_max, **opts)
    z = flat0.clone()  # each row's next iterate to evaluate
    last_f = torch.full_like(flat0, nan) if spec.answer_is_next and not best else None
    evals = torch.zeros(n, dtype=torch.long, device=dev)
    active = budget > 0
    converged = torch.zeros(n, dtype=torch.bool, device=dev)
    abs_trace = torch.full((e_max + 1, n), nan, dtype=rdt, device=dev)
    rel_trace = torch.full((e_max + 1, n), nan, dtype=rdt, device=dev)
    # the answer so far: a candidate, its value, residuals, key and evaluation number
    ans_z, ans_f = flat0.clone(), torch.full_like(flat0, nan)
    ans_abs = torch.full((n,), nan, dtype=rdt, device=dev)
    ans_rel = torch.full((n,), nan, dtype=rdt, device=dev)
    ans_key = torch.full((n,), float("inf"), dtype=rdt, device=dev)
    ans_eval = torch.zeros(n, dtype=torch.long, device=dev)

    for _ in range(e_max):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        k = evals[idx]  # 0-based evaluation of each row
        x = z[idx]
        fx = call(x.reshape((-1,) + shape[1:]), idx, z.reshape(shape)).reshape(idx.numel(), -1).to(z.dtype)
        abs_r, rel_r = residuals(fx, x, spec.eps_inside)
        abs_trace[k, idx], rel_trace[k, idx] = abs_r.to(rdt), rel_r.to(rdt)
        evals[idx] = k + 1
        cand = (k >= spec.warmup) | early_exit
        key = torch.nan_to_num((abs_r if stop_mode == "abs" else rel_r).to(rdt), nan=float("inf"))
        take = cand
        if best:  # a lower residual than the answer so far (the first candidate always counts)
            take = cand & ((key < ans_key[idx]) | (ans_eval[idx] == 0))
        if bool(take.any()):
            r = idx[take]
            ans_z[r], ans_f[r] = x[take], fx[take]
            ans_abs[r], ans_rel[r], ans_key[r] = abs_r[take].to(rdt), rel_r[take].to(rdt), key[take]
            ans_eval[r] = k[take] + 1
        if last_f is not None:
            last_f[idx] = fx
        below = {"rel": rel_r < tol_rel, "abs": abs_r < tol_abs}.get(stop_mode, (rel_r < tol_rel) | (abs_r < tol_abs))
        stop = cand & below
        converged[idx] = stop
        go = ~stop & (evals[idx] < cap[idx])
        active[idx] = go
        if bool(go.any()):
            z[idx[go]] = spec.step(state, idx, k, x, fx, go, **opts).to(z.dtype)

    if last_f is not None:  # fpi: the answer is the value after the last evaluation, unless early_exit took a candidate
        nxt = (evals > 0) & ~(converged & early_exit)
        ans_z[nxt], ans_f[nxt] = last_f[nxt], nan
        ans_abs[nxt], ans_rel[nxt], ans_eval[nxt] = nan, nan, 0
    iters = torch.clamp(evals - spec.warmup, min=0)
    missing = (ans_eval == 0).nonzero().squeeze(1)
    if final_eval and missing.numel():
        full = z.clone()
        full[missing] = ans_z[missing]
        x = ans_z[missing]
        fx = call(x.reshape((-1,) + shape[1:]), missing, full.reshape(shape)).reshape(missing.numel(), -1)
        abs_r, rel_r = residuals(fx.to(z.dtype), x, spec.eps_inside)
        k = evals[missing]
        abs_trace[k, missing], rel_trace[k, missing] = abs_r.to(rdt), rel_r.to(rdt)
        evals[missing] = k + 1
        ans_f[missing] = fx.to(ans_f.dtype)
        ans_abs[missing], ans_rel[missing], ans_eval[missing] = abs_r.to(rdt), rel_r.to(rdt), k + 1
    stats = SolverStats(
        solver=spec.name,
        iterations=iters,
        evaluations=evals,
        converged=converged,
        abs_residual=ans_abs,
        rel_residual=ans_rel,
        answer_evaluation=ans_eval,
        abs_trace=abs_trace,
        rel_trace=rel_trace,
        f_star=ans_f.reshape(shape),
        stop_mode=stop_mode,
        tol_rel=float(tol_rel),
        tol_abs=float(tol_abs),
        extra=dict(opts),
    )
    return ans_z.reshape(shape), stats


def fixed_point_iteration(f: Callable, z0: torch.Tensor, **options: Any) -> tuple[torch.Tensor, SolverStats]:
    """Fixed-point iteration ``z_k = f(z_{k-1})`` (released ``fpi``): :func:`solve` with ``solver="fpi"``."""
    return solve(f, z0, solver="fpi", **options)


def anderson(f: Callable, z0: torch.Tensor, **options: Any) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration (options ``m`` history, ``lam`` ridge, ``beta`` mixing): :func:`solve` with
    ``solver="anderson"``."""
    return solve(f, z0, solver="anderson", **options)


def broyden(f: Callable, z0: torch.Tensor, **options: Any) -> tuple[torch.Tensor, SolverStats]:
    """Broyden's quasi-Newton method without line search: :func:`solve` with ``solver="broyden"``."""
    return solve(f, z0, solver="broyden", **options)


#: name -> solver function (each :func:`solve` with the solver named)
SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, SolverStats]]] = {
    "fpi": fixed_point_iteration,
    "anderson": anderson,
    "broyden": broyden,
}


def get_solver(name: str) -> Callable[..., tuple[torch.Tensor, SolverStats]]:
    """The solver function registered under ``name`` (``fpi``, ``anderson``, ``broyden``; aliases accepted)."""
    return SOLVERS[solver_spec(name).name]
