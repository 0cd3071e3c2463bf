"""LDEQ: the landmark deep equilibrium model, and its harness plug-in with Recurrence without Recurrence (RwR).

The network (paper Sec. 3) maps a normalised RGB crop ``x: (N, 3, 256, 256)`` to L heatmaps ``z* = f(z*, x)``,
``(N, L, 64, 64)``, the equilibrium of one weight-tied cell ``f(z, x) = sigma(head(hourglass(tail([z, s(x)]))))``
where ``s`` is a small convolutional stem and ``sigma(z) = exp(beta (z - max_ij z))`` per heatmap (``beta`` =
``1 / T``, the inverse temperature; the paper's T = 2.5 is beta = 0.4). Module and parameter names follow the
released implementation so that its checkpoints load with ``strict=True``.

Counting convention: ``max_iters`` counts solver iterations as the released code does (see
:mod:`wflwv.models.solvers`). The solver answers with ``z*`` and the output heatmaps are ``f(z*)`` -- the released
inference applies the cell once more after the solver. Fixed-point iteration with ``max_iters = M`` answers with
``f^i(z0)`` once the tolerance is met at its i-th evaluation (i <= M), so the output is ``f^(i+1)(z0)``: i + 1 cell
evaluations. Anderson answers with its best mixed iterate, whose f the solver has already computed, so its output
costs no extra evaluation: at most M + 2 (x0, f(x0), M mixes). ``final_eval=False`` (the released
``take_one_less_inference_step``) outputs ``z*`` itself; ``early_exit=True`` (not released) lets any evaluated
iterate that meets the tolerance end the solve with the value computed there. Per sample the output dict reports
``solver_iters`` (released iterations) and ``cell_evals`` (what was spent).

Training (``net.train()`` with autograd on) differentiates through the equilibrium with ``grad_mode``:
``"implicit"`` (implicit function theorem; the backward pass solves ``y = J_f(z*)^T y + dL/df`` as a fixed point
inside a gradient hook, memory independent of the number of solver iterations), ``"jfb"`` (Jacobian-free: the
gradient of one cell application at ``z*``) or ``"unrolled"`` (back-propagation through the forward fixed-point
iterations, memory grows with them). The output is then one tracked cell evaluation at the solver's answer ``z*``
(as the released training does; the solver skips its own final evaluation). The backward
problem is linear in ``dL/df``, so it is solved for the per-sample unit-norm gradient and scaled back (solver
constants such as Anderson's absolute ridge term then see unit-scale vectors; the backward tolerances apply to that
scaled problem). ``backward_solver`` / ``backward_max_iters`` / ``backward_tol_rel`` default to the forward ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from wflwv.models.ldeq.config import CELL_NORMS, GRAD_MODES, LDEQConfig
from wflwv.models.ldeq.implicit import attach_implicit_backward, unrolled_forward
from wflwv.models.parallel import current_splitter
from wflwv.models.solvers import SolverStats, residuals, solve

__all__ = ["LDEQNet", "heatmaps_to_keypoints", "normalise_heatmaps"]


# ---------------------------------------------------------------------------------------------------------
# building blocks (names match the released state dict)


class _ConvBlock(nn.Module):
    """k x k convolution (bias, 'same' padding) -> LeakyReLU(0.01) -> norm; ``act=False, norm=None``: conv only."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        stride: int = 1,
        norm: str | None = "bn",
        gn_groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=True)
        self.act = nn.LeakyReLU(0.01) if act else nn.Identity()
        if norm == "bn":
            self.norm = nn.BatchNorm2d(c_out)
        elif norm == "gn":
            self.norm = nn.GroupNorm(gn_groups, c_out)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, act, norm = self.conv, self.act, self.norm
        split = current_splitter()  # set by the harness model to share large convolutions among CPU threads
        h = None if split is None else split(c, x, act)
        if h is None:  # the functional calls the modules make, without their call overhead (the same numbers)
            h = F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
            h = F.leaky_relu(h, act.negative_slope) if isinstance(act, nn.LeakyReLU) else act(h)
        if isinstance(norm, nn.GroupNorm):
            return F.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return norm(h)


class _Hourglass(nn.Module):
    """Four-level hourglass with GroupNorm; widths b, b+i, ..., b+4i. (N, b, H, W) -> (N, b, H, W)."""

    def __init__(self, b: int, inc: int, gn_groups: int):
        super().__init__()
        w = [b + j * inc for j in range(5)]

        def blk(ci, co, k):
            return _ConvBlock(ci, co, k, norm="gn", gn_groups=gn_groups)

        for lvl in range(4):  # encoder: same{1..4} at width w[lvl], upchan{1..4} w[lvl] -> w[lvl+1]
            setattr(self, f"same{lvl + 1}", blk(w[lvl], w[lvl], 3))
            setattr(self, f"upchan{lvl + 1}", blk(w[lvl], w[lvl + 1], 3))
        self.bottlneck = blk(w[4], w[4], 3)  # (sic: the released name)
        for k in range(1, 5):  # decoder level k from the deepest: width w[5-k] -> w[4-k]
            hi, lo = w[5 - k], w[4 - k]
            setattr(self, f"downchan{2 * k - 1}", blk(hi, lo, 3))
            setattr(self, f"downchan{2 * k}", blk(2 * lo, lo, 1))
            setattr(self, f"same{4 + k}", blk(lo, lo, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for lvl in range(1, 5):
            s = getattr(self, f"same{lvl}")(h)
            skips.append(s)
            h = getattr(self, f"upchan{lvl}")(F.avg_pool2d(s, 2))
        h = self.bottlneck(h)
        for k in range(1, 5):
            h = getattr(self, f"downchan{2 * k - 1}")(h)
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = getattr(self, f"downchan{2 * k}")(torch.cat([skips[4 - k], h], dim=1))
            h = getattr(self, f"same{4 + k}")(h) + h
        return h


def normalise_heatmaps(z: torch.Tensor, mode: str = "softargmax", beta: float = 0.4) -> torch.Tensor:
    """Per-heatmap normalisation to [0, 1]. z: (N, C, H, W) -> (N, C, H, W).

    ``softargmax``: ``exp(beta (z - max_ij z))``; ``linear``: ``(z - min) / (max - min + 1e-5)``; ``none``: z.
    """
    if mode == "softargmax":
        return torch.exp(beta * (z - torch.amax(z, dim=(2, 3), keepdim=True)))
    if mode == "linear":
        lo = torch.amin(z, dim=(2, 3), keepdim=True)
        hi = torch.amax(z, dim=(2, 3), keepdim=True)
        return (z - lo) / (hi - lo + 1e-5)
    if mode == "none":
        return z
    raise ValueError(f"unknown heatmap normalisation {mode!r}; choose one of {CELL_NORMS}")


class _Cell(nn.Module):
    """The equilibrium cell ``f(z, x)``: (N, Z, H, W), (N, w, H, W) -> (N, Z, H, W)."""

    def __init__(self, cfg: LDEQConfig):
        super().__init__()
        self.tail = _ConvBlock(
            cfg.z_width + cfg.injection_width, cfg.cell_base_width, 1, norm="gn", gn_groups=cfg.cell_gn_groups
        )
        self.hourglass = _Hourglass(cfg.cell_base_width, cfg.cell_width_increment, cfg.cell_gn_groups)
        self.head = _ConvBlock(cfg.cell_base_width, cfg.z_width, 1, norm=None, act=False)
        self.norm_mode, self.beta = cfg.cell_norm, float(cfg.cell_softargmax_beta)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.hourglass(self.tail(torch.cat([z, x], dim=1))))
        return normalise_heatmaps(h, self.norm_mode, self.beta)


class _DEQLayer(nn.Module):
    """Holds the cell (exists so that parameter names read ``deq_layer.cell.*`` as in the release)."""

    def __init__(self, cfg: LDEQConfig):
        super().__init__()
        self.cell = _Cell(cfg)


def heatmaps_to_keypoints(heatmaps: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """Soft-argmax of non-negative heatmaps.

    Args:
        heatmaps: (N, K, H, W) non-negative heatmaps.
        eps: added to each heatmap's sum before normalising it to a distribution (1e-4, as released).
    Returns:
        dict with ``keypoints`` (N, K, 2): ``x = sum_ij p_ij j / W``, ``y = sum_ij p_ij i / H`` in [0, 1] crop units
        (heatmap pixel j maps to crop coordinate j * input_size / W); ``std`` (N, K): the distribution's standard
        deviation ``sqrt((var_x + var_y) / 2)`` in the same units; ``uncertainty`` (N, K): the released model's
        "uncertainty", ``sqrt((E[(j - x)^2] + E[(i - y)^2]) / 2) / H`` -- note that it measures the spread around the
        *normalised* mean x, y in [0, 1] while j, i are in heatmap pixels, so it is not the standard deviation
        (kept exactly for comparison with released outputs; prefer ``std``).
    """
    n, k, h, w = heatmaps.shape
    p = heatmaps / (eps + heatmaps.sum(dim=(2, 3), keepdim=True))
    cols = torch.arange(w, dtype=p.dtype, device=p.device)
    rows = torch.arange(h, dtype=p.dtype, device=p.device)
    px = p.sum(dim=2)  # (N, K, W) marginal over rows
    py = p.sum(dim=3)  # (N, K, H)
    mx = (px * cols).sum(-1)  # heatmap pixels
    my = (py * rows).sum(-1)
    x, y = mx / w, my / h
    var_x = (px * (cols - mx[..., None]) ** 2).sum(-1)
    var_y = (py * (rows - my[..., None]) ** 2).sum(-1)
    std = torch.sqrt(0.5 * var_x / w**2 + 0.5 * var_y / h**2)
    rel_x = (px * (cols - x[..., None]) ** 2).sum(-1)
    rel_y = (py * (rows - y[..., None]) ** 2).sum(-1)
    unc = torch.sqrt(0.5 * rel_x + 0.5 * rel_y) / h
    return {"keypoints": torch.stack([x, y], dim=-1), "std": std, "uncertainty": unc}


def _init_weights(module: nn.Module) -> None:
    """Xavier-normal convolution weights, zero biases, unit/zero norm affine parameters."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------
# the network


class LDEQNet(nn.Module):
    """The LDEQ network. Input: ImageNet-normalised RGB ``(N, 3, S, S)`` with S = ``config.input_size``.

    ``forward`` returns a dict (N samples, K landmarks, Z = K + extra channels, H = W = heatmap_size):

    * ``keypoints`` (N, K, 2) in [0, 1] crop units, ``uncertainty`` / ``std`` (N, K) (see
      :func:`heatmaps_to_keypoints`);
    * ``heatmaps`` (N, Z, H, W): the output ``f(z*)`` -- the equilibrium heatmaps (differentiable in training);
    * ``z_star`` (N, Z, H, W): the same, detached -- what the released code calls ``z_star`` and what RwR carries
      to the next frame;
    * ``z_solver`` (N, Z, H, W): the solver's answer ``z*`` itself (``heatmaps = f(z_solver)``, or ``z_solver``
      with ``final_eval=False``);
    * ``solver_iters`` (N,) int64 solver iterations (released count), ``cell_evals`` (N,) int64 cell evaluations
      spent; ``residual`` (N,) the solver's relative residual of ``z*`` (NaN when f was not evaluated there);
      ``converged`` (N,) bool; ``solver_stats``: the :class:`~wflwv.models.solvers.SolverStats`.
    """

    def __init__(self, config: LDEQConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = config if config is not None else LDEQConfig()
        if overrides:
            cfg = cfg.with_overrides(**overrides)
        self.config = cfg
        w = cfg.injection_width
        self.tail = nn.Sequential(
            _ConvBlock(cfg.input_channels, w // 4, 7, stride=2, norm="bn"),
            _ConvBlock(w // 4, w // 2, 3, norm="bn"),
            nn.MaxPool2d(2, 2),
            _ConvBlock(w // 2, w, 3, norm="bn"),
        )
        self.deq_layer = _DEQLayer(cfg)
        self.last_backward_stats: SolverStats | None = None
        if not any(p.is_meta for p in self.parameters()):
            _init_weights(self)

    # ---- pieces
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem ("injection"): (N, 3, S, S) -> (N, injection_width, S/4, S/4)."""
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.input_channels or x.shape[2] != x.shape[3]:
            raise ValueError(
                f"LDEQNet expects square input of shape (N, {c.input_channels}, S, S) (S = {c.input_size} natively), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[2] != c.input_size:
            # a model configured for smaller crops (e.g. the fast demo model) sees the protocol's crop resized;
            # keypoints are in unit crop coordinates, so they need no change
            x = F.interpolate(
                x, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        return self.tail(x)

    def cell(self, z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """One cell evaluation f(z, x): (N, Z, H, W), (N, w, H, W) -> (N, Z, H, W)."""
        return self.deq_layer.cell(z, feats)

    def zeros(self, n: int, device=None, dtype=None) -> torch.Tensor:
        """The default start z0 = 0, (n, Z, H, W)."""
        c = self.config
        p = next(self.parameters())
        return torch.zeros(
            n, c.z_width, c.heatmap_size, c.heatmap_size, device=device or p.device, dtype=dtype or p.dtype
        )

    def keypoints(self, heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, Z, H, W) output heatmaps -> keypoints dict (uses the first num_landmarks channels)."""
        h = heatmaps[:, : self.config.num_landmarks]
        if self.config.cell_norm == "none":
            h = normalise_heatmaps(h, "softargmax", self.config.cell_softargmax_beta)
        return heatmaps_to_keypoints(h)

    # ---- solving
    def _solve(
        self, feats: torch.Tensor, z0: torch.Tensor, max_iters, inference: bool, **solver_over
    ) -> tuple[torch.Tensor, SolverStats]:
        """The no-grad solve. Inference applies ``final_eval`` and ``early_exit``; training (the caller evaluates f
        at the answer with autograd on) skips the final evaluation and iterates as released."""
        c = self.config
        name = solver_over.pop("solver", None) or c.solver
        kw = c.solver_kwargs(name)
        for key in ("tol_rel", "tol_abs", "stop_mode", "early_exit"):
            if key in solver_over:
                kw[key] = solver_over.pop(key)
        kw.setdefault("early_exit", inference and c.early_exit)
        if solver_over:
            raise TypeError(f"unknown solver override(s): {', '.join(solver_over)}")

        def f(z, idx):
            return self.cell(z, feats if idx.numel() == feats.shape[0] else feats[idx])

        with torch.no_grad():
            return solve(f, z0, max_iter=max_iters, final_eval=inference and c.final_eval, pass_index=True, **kw)

    def forward(
        self,
        x: torch.Tensor,
        z0: torch.Tensor | None = None,
        *,
        max_iters: int | Sequence[int] | torch.Tensor | None = None,
        grad_mode: str | None = None,
        differentiable: bool | None = None,
        **solver_overrides: Any,
    ) -> dict[str, Any]:
        """Solve for the equilibrium heatmaps of a batch.

        Args:
            x: (N, 3, S, S) ImageNet-normalised RGB.
            z0: (N, Z, H, W) warm start (None: zeros).
            max_iters: solver iterations, an int or per-sample (N,) (None: ``config.max_iters``).
            grad_mode: ``"implicit" | "jfb" | "unrolled"`` for the differentiable path (None: config).
            differentiable: force (True) or skip (False) the differentiable path; None = ``self.training`` and
                autograd enabled.
            solver_overrides: ``solver``, ``tol_rel``, ``tol_abs``, ``stop_mode``, ``early_exit`` for this call.
        Returns:
            the dict described in the class docstring.
        """
        c = self.config
        n = x.shape[0]
        diff = (self.training and torch.is_grad_enabled()) if differentiable is None else bool(differentiable)
        with torch.set_grad_enabled(diff):
            feats = self.features(x)
        # the equilibrium is iterated at the parameters' precision even where autocast computes the cell in less
        zdt = torch.promote_types(feats.dtype, next(self.parameters()).dtype)
        if z0 is None:
            z0 = self.zeros(n, device=x.device, dtype=zdt)
        exp_shape = (n, c.z_width, c.heatmap_size, c.heatmap_size)
        if tuple(z0.shape) != exp_shape:
            raise ValueError(f"z0 must have shape {exp_shape}, got {tuple(z0.shape)}")
        z0 = z0.detach().to(zdt)
        gm = grad_mode or c.grad_mode
        if gm not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {gm!r}")
        if max_iters is None:
            max_iters = c.max_iters
            if diff and c.stochastic_max_iters:
                max_iters = int(torch.randint(1, c.max_iters + 1, (1,)).item())

        if diff and gm == "unrolled":
            heat, z_prev, iters, rel, conv = unrolled_forward(self, feats, z0, max_iters, **solver_overrides)
            return self._outputs(heat, z_prev, iters, iters + 1, rel, conv, None)

        z_star, stats = self._solve(feats, z0, max_iters, inference=not diff, **solver_overrides)
        cell_evals, rel = stats.evaluations.clone(), stats.rel_residual.clone()
        if diff:  # one tracked evaluation at the answer carries the gradient
            zs = z_star.detach()
            if gm == "implicit":
                zs = zs.requires_grad_()
            heat = self.cell(zs, feats)
            if gm == "implicit":
                attach_implicit_backward(self, heat, zs)
            cell_evals += 1
            with torch.no_grad():
                rel = residuals(heat.detach(), z_star)[1]
        else:
            heat = stats.f_star if c.final_eval else z_star
        return self._outputs(heat, z_star, stats.iterations.clone(), cell_evals, rel, stats.converged.clone(), stats)

    def _outputs(self, heat, z_solver, iters, cell_evals, residual, converged, stats) -> dict[str, Any]:
        """The dict :meth:`forward` returns (see the class docstring), from the output heatmaps ``heat = f(z*)``."""
        kp = self.keypoints(heat)
        return {
            "keypoints": kp["keypoints"],
            "uncertainty": kp["uncertainty"],
            "std": kp["std"],
            "heatmaps": heat,
            "z_star": heat.detach(),
            "z_solver": z_solver.detach(),
            "solver_iters": iters,
            "cell_evals": cell_evals,
            "residual": residual,
            "converged": converged,
            "solver_stats": stats,
        }
