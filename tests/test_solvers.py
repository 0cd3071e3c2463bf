"""Fixed-point solvers: convergence, acceleration, per-sample stopping, released counting and stopping, options."""

import math

import pytest
import torch

from wflwv.models.solvers import SOLVERS, SolverStats, anderson, broyden, fixed_point_iteration, get_solver, solve

D = torch.float64


def _linear_problems(n=3, d=30, norms=(0.5, 0.7, 0.85), seed=0):
    """Batched affine maps z -> A_n z + b_n with spectral norm ||A_n|| = norms[n] (< 1) and their fixed points."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, d, generator=g, dtype=D)
    for i in range(n):
        A[i] *= norms[i] / torch.linalg.matrix_norm(A[i], 2)
    b = torch.randn(n, d, generator=g, dtype=D)
    z_star = torch.linalg.solve(torch.eye(d, dtype=D) - A, b.unsqueeze(-1)).squeeze(-1)

    def f_idx(z, idx):
        return torch.einsum("nij,nj->ni", A[idx], z) + b[idx]

    return A, b, z_star, f_idx


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("pass_index", [True, False])
def test_converges_to_known_fixed_point(name, pass_index):
    A, b, z_star, f_idx = _linear_problems()
    n = b.shape[0]
    f = f_idx if pass_index else (lambda z: f_idx(z, torch.arange(n)))
    kw = {"lam": 1e-12} if name == "anderson" else {}
    z, st = SOLVERS[name](f, torch.zeros_like(b), max_iter=300, tol_rel=1e-10, pass_index=pass_index, **kw)
    assert isinstance(st, SolverStats)
    assert st.converged.all()
    assert torch.allclose(z, z_star, atol=1e-8), (z - z_star).abs().max()
    assert torch.allclose(st.f_star, z_star, atol=1e-8)
    assert (st.rel_residual < 1e-10).all()
    # residual of the returned iterate is the one reported
    assert torch.allclose(st.f_star, f_idx(z, torch.arange(n)), atol=1e-12)
    assert st.iterations.dtype == torch.long and (st.iterations > 1).all() and (st.iterations < 300).all()


def _slow_symmetric(d=40, top=0.95, seed=1):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))
    A = (Q * torch.linspace(0.0, top, d, dtype=D)) @ Q.T
    b = torch.randn(2, d, generator=g, dtype=D)
    z_star = torch.linalg.solve(torch.eye(d, dtype=D) - A, b.T).T
    return A, b, z_star


@pytest.mark.slow
def test_anderson_needs_fewer_iterations_on_slow_contraction():
    A, b, z_star = _slow_symmetric()

    def f(z):
        return z @ A.T + b

    z0 = torch.zeros_like(b)
    _, st_fpi = fixed_point_iteration(f, z0, max_iter=5000, tol_rel=1e-8)
    # lam is an absolute ridge on G G^T: it must be small next to ||g||^2 near the tolerance
    z_and, st_and = anderson(f, z0, max_iter=5000, tol_rel=1e-8, m=8, lam=1e-14)
    assert st_fpi.converged.all() and st_and.converged.all()
    assert (st_and.iterations * 5 < st_fpi.iterations).all(), (st_and.iterations, st_fpi.iterations)
    assert torch.allclose(z_and, z_star, atol=1e-5)


@pytest.mark.slow
def test_broyden_converges_faster_than_fpi_on_nonsymmetric_map():
    A, b, z_star = _slow_symmetric(top=0.9, seed=3)
    g = torch.Generator().manual_seed(4)
    A = A + 0.02 * torch.randn(A.shape, generator=g, dtype=D)  # no longer symmetric
    z_star = torch.linalg.solve(torch.eye(A.shape[0], dtype=D) - A, b.T).T

    def f(z):
        return z @ A.T + b

    z, st = broyden(f, torch.zeros_like(b), max_iter=500, tol_rel=1e-9)
    _, st_fpi = fixed_point_iteration(f, torch.zeros_like(b), max_iter=5000, tol_rel=1e-9)
    assert st.converged.all()
    assert torch.allclose(z, z_star, atol=1e-6)
    assert (st.iterations < st_fpi.iterations).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("pass_index", [True, False])
def test_batch_equals_one_at_a_time(name, pass_index):
    A, b, _, f_idx = _linear_problems(norms=(0.3, 0.6, 0.9))
    n = b.shape[0]
    z0 = torch.randn(b.shape, generator=torch.Generator().manual_seed(5), dtype=D)
    f = f_idx if pass_index else (lambda z: f_idx(z, torch.arange(n)))
    z, st = SOLVERS[name](f, z0, max_iter=200, tol_rel=1e-6, pass_index=pass_index)
    assert len(set(st.iterations.tolist())) > 1, "the rows should stop at different iterations"
    for i in range(n):

        def fi(z, idx, i=i):
            return f_idx(z, idx + i)

        zi, sti = SOLVERS[name](fi, z0[i : i + 1], max_iter=200, tol_rel=1e-6, pass_index=True)
        assert sti.iterations.item() == st.iterations[i].item()
        assert sti.evaluations.item() == st.evaluations[i].item()
        assert torch.allclose(zi[0], z[i], rtol=0, atol=1e-12)
        assert torch.allclose(sti.rel_residual[0], st.rel_residual[i], rtol=1e-6, atol=1e-12)
        # the stopped row's trace ends with its last evaluation
        k = st.evaluations[i].item()
        assert torch.isfinite(st.rel_trace[:k, i]).all() and torch.isnan(st.rel_trace[k:, i]).all()


def test_tolerance_semantics_rel_abs_either():
    A, b, _, f_idx = _linear_problems()
    n = b.shape[0]

    def f(z):
        return f_idx(z, torch.arange(n))

    z0 = torch.zeros_like(b)
    # tol 0: every iteration runs, nobody converges; fpi spends one more evaluation at its answer
    _, st0 = fixed_point_iteration(f, z0, max_iter=7, tol_rel=0.0)
    assert st0.iterations.tolist() == [7] * n and st0.evaluations.tolist() == [8] * n and not st0.converged.any()
    full_rel, full_abs = st0.rel_trace[:7], st0.abs_trace[:7]
    # rel: stop at the first check whose residual is strictly below tol
    tol = float(full_rel[3, 0])  # equal to the residual at check 4 of row 0 -> not below, must go on to check 5
    _, st = fixed_point_iteration(f, z0, max_iter=7, tol_rel=tol)
    for i in range(n):
        below = (full_rel[:, i] < tol).nonzero()
        expect = int(below[0]) + 1 if below.numel() else 7
        assert st.iterations[i].item() == expect and st.evaluations[i].item() == expect + 1
        assert bool(st.converged[i]) == bool(below.numel())
    assert st.iterations[0].item() == 5
    # abs: the absolute residual decides, the relative tolerance is ignored
    tol_a = float(full_abs[2, 1]) * 1.0001
    _, st_a = fixed_point_iteration(f, z0, max_iter=7, tol_rel=1.0, tol_abs=tol_a, stop_mode="abs")
    assert st_a.iterations[1].item() == 3
    assert torch.equal(st_a.residual, st_a.abs_residual)
    # either: whichever comes first
    _, st_e = fixed_point_iteration(f, z0, max_iter=7, tol_rel=tol, tol_abs=tol_a, stop_mode="either")
    assert (st_e.iterations <= torch.minimum(st.iterations, st_a.iterations)).all()
    # relative residual definitions: fpi divides by ||f(z)|| + 1e-5
    fz = f(z0)
    expect_rel = (fz - z0).norm(dim=1) / (fz.norm(dim=1) + 1e-5)
    assert torch.allclose(full_rel[0], expect_rel)


def test_anderson_relative_residual_adds_eps_to_every_element():
    # values of order 1e-5, where ||f(z) + 1e-5|| and ||f(z)|| + 1e-5 differ clearly
    g = torch.Generator().manual_seed(2)
    c = 1e-5 * torch.rand(2, 16, generator=g, dtype=D)

    def f(z):
        return 0.5 * z + c

    z, st = anderson(f, 3e-5 * torch.ones(2, 16, dtype=D), max_iter=1, tol_rel=0.0)
    fz, g_norm = st.f_star, (st.f_star - z).norm(dim=1)
    inside = g_norm / (fz + 1e-5).norm(dim=1)
    outside = g_norm / (fz.norm(dim=1) + 1e-5)
    assert torch.allclose(st.rel_residual, inside, rtol=1e-12)
    assert not torch.allclose(inside, outside, rtol=1e-2)


def test_per_row_budget_and_zero_budget():
    A, b, _, f_idx = _linear_problems()
    z0 = torch.ones_like(b)
    z, st = anderson(f_idx, z0, max_iter=torch.tensor([0, 2, 5]), tol_rel=0.0, pass_index=True)
    assert st.iterations.tolist() == [0, 2, 5]
    # anderson: x0, f(x0), one mixed iterate per iteration; a row without iterations is evaluated at z0 once
    assert st.evaluations.tolist() == [1, 4, 7]
    assert torch.equal(z[0], z0[0]) and torch.allclose(st.f_star[0], f_idx(z0[:1], torch.tensor([0]))[0])
    z, st = anderson(f_idx, z0, max_iter=[0, 2, 5], tol_rel=0.0, pass_index=True, final_eval=False)
    assert st.evaluations.tolist() == [0, 4, 7] and torch.isnan(st.f_star[0]).all() and torch.isnan(st.rel_residual[0])
    with pytest.raises(ValueError, match="entries"):
        anderson(f_idx, z0, max_iter=[1, 2], pass_index=True)


def _powers(f, z0, k):
    z = z0
    for _ in range(k):
        z = f(z)
    return z


def test_fpi_answers_with_the_value_after_the_last_check():
    A, b, _, f_idx = _linear_problems()

    def f(z):
        return f_idx(z, torch.arange(3))

    z0 = torch.zeros_like(b)
    z, st = fixed_point_iteration(f, z0, max_iter=4, tol_rel=0.0)
    assert torch.allclose(z, _powers(f, z0, 4)) and torch.allclose(st.f_star, _powers(f, z0, 5))
    assert st.evaluations.tolist() == [5, 5, 5] and st.answer_evaluation.tolist() == [5, 5, 5]
    # without the final evaluation the answer's f is unknown
    z, st = fixed_point_iteration(f, z0, max_iter=4, tol_rel=0.0, final_eval=False)
    assert torch.allclose(z, _powers(f, z0, 4)) and torch.isnan(st.f_star).all() and st.evaluations.tolist() == [4] * 3
    # the tolerance met at check i: the released answer f^i(z0), then f once more (i + 1 evaluations) ...
    _, st0 = fixed_point_iteration(f, z0, max_iter=6, tol_rel=0.0)
    tol = float(st0.rel_trace[2, 0]) * 1.0001  # row 0 meets it at check 3
    f0 = lambda z: f_idx(z, torch.tensor([0]))
    z, st = fixed_point_iteration(f0, z0[:1], max_iter=6, tol_rel=tol)
    assert st.iterations.item() == 3 and st.evaluations.item() == 4 and bool(st.converged.item())
    assert torch.allclose(z, _powers(f, z0, 3)[:1]) and torch.allclose(st.f_star, _powers(f, z0, 4)[:1])
    # ... while early_exit answers with the checked iterate f^2(z0), whose f^3(z0) is already known
    z, st = fixed_point_iteration(f0, z0[:1], max_iter=6, tol_rel=tol, early_exit=True)
    assert st.evaluations.item() == 3 and torch.allclose(z, _powers(f, z0, 2)[:1])
    assert torch.allclose(st.f_star, _powers(f, z0, 3)[:1])


def _scripted(steps):
    """f(x) = x + s_k u at its k-th call: residual ||f(x) - x|| = s_k ||u|| whatever the iterate."""
    u = torch.linspace(1.0, 2.0, 8, dtype=D)[None]
    calls = []

    def f(z):
        calls.append(z.clone())
        return z + steps[len(calls) - 1] * u

    return f, calls


def test_anderson_candidates_are_the_mixed_iterates_only():
    steps = [1e-4, 2e-4, 0.5, 0.3, 0.1]  # x0 and f(x0) have the smallest residuals
    f, calls = _scripted(steps)
    z0 = torch.ones(1, 8, dtype=D)
    z, st = anderson(f, z0, max_iter=3, tol_rel=0.01)
    # the warm-up iterates meet the tolerance but are neither checked nor answered: the full budget runs
    assert st.evaluations.item() == 5 and st.iterations.item() == 3 and not bool(st.converged.item())
    rel = st.rel_trace[:5, 0]
    assert float(rel[:2].max()) < 0.01 < float(rel[2:].min())
    assert st.answer_evaluation.item() == int(rel[2:].argmin()) + 3
    assert torch.equal(z, calls[st.answer_evaluation.item() - 1])
    # early_exit: the first evaluation meets the tolerance and is the answer
    f, calls = _scripted(steps)
    z, st = anderson(f, z0, max_iter=3, tol_rel=0.01, early_exit=True)
    assert st.evaluations.item() == 1 and bool(st.converged.item()) and torch.equal(z, z0)


def test_anderson_warm_start_at_the_fixed_point_still_runs_its_budget():
    A, b, z_star, f_idx = _linear_problems()
    f = lambda z: f_idx(z, torch.arange(3))
    z, st = anderson(f, z_star.clone(), max_iter=1, tol_rel=0.05)
    assert st.evaluations.tolist() == [3, 3, 3] and st.answer_evaluation.tolist() == [3, 3, 3]
    assert torch.allclose(z, z_star, atol=1e-9)
    _, st = anderson(f, z_star.clone(), max_iter=1, tol_rel=0.05, early_exit=True)
    assert st.evaluations.tolist() == [1, 1, 1]


def test_return_best_picks_lowest_residual_iterate():
    # z -> -1.3 z + 1 diverges with growing residuals after the first step, so the best checked iterate is early
    b = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=D)

    def f(z):
        return -1.3 * z + b

    z0 = torch.tensor([[0.3, -0.9], [0.2, 0.1]], dtype=D)
    z, st = fixed_point_iteration(f, z0, max_iter=6, tol_rel=0.0, return_best=True)
    best = torch.nan_to_num(st.rel_trace, nan=math.inf).argmin(dim=0) + 1
    assert torch.equal(st.answer_evaluation, best) and st.evaluations.tolist() == [6, 6]  # f of the answer known
    for i in range(2):
        ref = z0[i : i + 1]
        for _ in range(int(best[i]) - 1):
            ref = -1.3 * ref + b[i : i + 1]
        assert torch.allclose(z[i], ref[0])
        assert torch.allclose(st.rel_residual[i], st.rel_trace[best[i] - 1, i])
    z_last, _ = fixed_point_iteration(f, z0, max_iter=6, tol_rel=0.0, return_best=False)
    assert not torch.allclose(z_last, z)


def test_bad_arguments():
    b = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="stop_mode"):
        fixed_point_iteration(lambda z: z, b, max_iter=2, stop_mode="relative")
    with pytest.raises(ValueError, match=">= 0"):
        fixed_point_iteration(lambda z: z, b, max_iter=2, tol_rel=-1)
    with pytest.raises(ValueError, match="shape"):
        fixed_point_iteration(lambda z: z[:, :2], b, max_iter=2)
    with pytest.raises(ValueError, match="m >= 2"):
        anderson(lambda z: z, b, max_iter=2, m=1)
    with pytest.raises(TypeError, match="has no option.*m, lam, beta"):
        anderson(lambda z: z, b, max_iter=2, history=3)
    with pytest.raises(TypeError, match="has no option"):
        fixed_point_iteration(lambda z: z, b, max_iter=2, m=3)
    with pytest.raises(KeyError, match="anderson"):
        get_solver("newton")
    assert get_solver("fpi") is fixed_point_iteration and get_solver("fixed-point") is fixed_point_iteration
    z, st = solve(lambda z: 0.5 * z, b + 1, solver="broyden", max_iter=3, tol_rel=0.0)
    assert st.solver == "broyden" and st.evaluations.tolist() == [4, 4]  # x0, then one per step
