"""Training through the equilibrium: the implicit gradient (a backward fixed-point solve inside a gradient hook)
and back-propagation through unrolled fixed-point iteration. :meth:`LDEQNet.forward` calls these when autograd is on.
"""

from __future__ import annotations

import torch

from wflwv.models.solvers import residuals, solve

__all__ = ["unrolled_forward", "attach_implicit_backward"]


def unrolled_forward(net, feats, z0, max_iters, **solver_overrides):
    """Back-propagate through fixed-point iteration counted as the released ``fpi``; memory grows with it.

    Each sample iterates ``z_k = f(z_{k-1})`` until its relative (or absolute, per ``stop_mode``) residual is below
    the tolerance or ``max_iters`` is reached (per-sample stopping by masking), then the output is f once more at
    that last value, ``heat = f(z_i)``: i + 1 tracked cell evaluations.

    Returns:
        ``(heat, z_i, iters, rel_residual, converged)``: the output heatmaps (differentiable), the iterate they
        were evaluated at, and per-sample (N,) iteration counts, relative residuals of ``heat`` and convergence
        flags.
    """
    c = net.config
    solver_overrides.pop("solver", None)
    tol_rel = solver_overrides.pop("tol_rel", c.tol_rel)
    tol_abs = solver_overrides.pop("tol_abs", c.tol_abs)
    stop_mode = solver_overrides.pop("stop_mode", c.stop_mode)
    if solver_overrides.pop("early_exit", False):
        raise TypeError("early_exit is an inference option; the unrolled training path iterates as released")
    if solver_overrides:
        raise TypeError(f"unknown solver override(s): {', '.join(solver_overrides)}")
    n = z0.shape[0]
    budget = torch.as_tensor(max_iters, device=z0.device, dtype=torch.long).reshape(-1).expand(n).clone()
    active = budget > 0
    iters = torch.zeros(n, dtype=torch.long, device=z0.device)
    conv = torch.zeros(n, dtype=torch.bool, device=z0.device)
    z = z0
    for _ in range(int(budget.max().item())):
        if not bool(active.any()):
            break
        fz = net.cell(z, feats)
        with torch.no_grad():
            a_r, r_r = residuals(fz.detach(), z.detach())
        iters = iters + active.long()
        stop = {"rel": r_r < tol_rel, "abs": a_r < tol_abs}.get(stop_mode, (r_r < tol_rel) | (a_r < tol_abs))
        conv = conv | (active & stop)
        z = torch.where(active.view(-1, 1, 1, 1), fz, z)
        active = active & ~stop & (iters < budget)
    heat = net.cell(z, feats)
    with torch.no_grad():
        rel = residuals(heat.detach(), z.detach())[1]
    return heat, z.detach(), iters, rel, conv


def attach_implicit_backward(net, heat: torch.Tensor, zs: torch.Tensor) -> None:
    """Make the gradient reaching ``heat = f(z*)`` the implicit one.

    With ``g = dL/df`` arriving at ``heat``, the hook replaces it by the solution of ``y = J^T y + g``
    (``J = df/dz`` at ``z*``), i.e. ``y = (I - J^T)^{-1} g``; autograd then carries ``y`` through the one
    tracked cell evaluation to the parameters and the stem, giving ``dL/dtheta = y^T df/dtheta`` (IFT). The
    vector-Jacobian products reuse that evaluation's graph, so memory does not depend on the number of
    forward or backward iterations.
    """
    c = net.config
    handle: list = []

    def hook(grad: torch.Tensor) -> torch.Tensor:
        while handle:  # one-shot: also keeps the inner autograd.grad calls from re-entering the hook
            handle.pop().remove()

        # the problem is linear in g: solve it for g / ||g|| per sample (so that solver constants such as
        # Anderson's absolute ridge term see unit-scale vectors) and scale back
        n = grad.shape[0]
        scale = torch.linalg.vector_norm(grad.reshape(n, -1), dim=1).clamp_min(1e-30)
        scale = scale.view((n,) + (1,) * (grad.dim() - 1))
        g_unit = grad / scale

        def vjp_plus_g(y: torch.Tensor) -> torch.Tensor:
            (jty,) = torch.autograd.grad(heat, zs, y, retain_graph=True)
            return jty + g_unit

        kw = c.solver_kwargs(c.backward_solver)
        if c.backward_tol_rel is not None:
            kw["tol_rel"] = c.backward_tol_rel
        y, st = solve(vjp_plus_g, torch.zeros_like(grad), max_iter=c.backward_max_iters or c.max_iters, **kw)
        net.last_backward_stats = st
        out = st.f_star
        bad = ~torch.isfinite(out.reshape(n, -1)).all(dim=1)
        if bool(bad.any()):
            out = out.clone()
            out[bad] = y[bad]
        return out * scale

    handle.append(heat.register_hook(hook))
