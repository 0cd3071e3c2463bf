"""LDEQ: the landmark deep equilibrium model, and its harness plug-in with Recurrence without Recurrence (RwR).

The network (paper Sec. 3) maps a normalised RGB crop ``x: (N, 3, 256, 256)`` to L heatmaps ``z* = f(z*, x)``,
``(N, L, 64, 64)``, the equilibrium of one weight-tied cell ``f(z, x) = sigma(head(hourglass(tail([z, s(x)]))))``
where ``s`` is a small convolutional stem and ``sigma(z) = exp(beta (z - max_ij z))`` per heatmap (``beta`` =
``1 / T``, the inverse temperature; the paper's T = 2.5 is beta = 0.4). Module and parameter names follow the
released implementation so that its checkpoints load with ``strict=True``.

Counting convention (used everywhere in this module): **one solver iteration = one cell evaluation**. The released
inference runs a solver and then applies the cell once more; here the solver returns a *checked* iterate ``z*``
together with ``f(z*)`` (the value it evaluated there), and ``f(z*)`` is the output heatmap -- the same number the
released code gets by applying the cell again, without paying for the extra evaluation. So

* fixed-point iteration with K evaluations outputs ``f^K(z0)``; the released ``fpi`` with ``max_iters = M`` then
  one more evaluation is K = M + 1 (its solver result, ``f^M(z0)``, is our ``z_star``);
* Anderson with K evaluations outputs ``f(x_best)`` for the lowest-residual iterate ``x_best`` among the K
  evaluated ones; the released ``anderson`` with ``max_iters = M`` evaluates 2 + M iterates, so K = M + 2;
* RwR with ``rwr_iters = B`` spends at most B cell evaluations per frame: the paper's / released default
  ("1 solver iteration + 1 evaluation") is B = 2. A frame whose warm start already meets the tolerance at the
  first check stops after 1 evaluation (the paper's "adaptive compute ... when two consecutive frames are almost
  identical").

Training (``net.train()`` with autograd on) differentiates through the equilibrium with ``grad_mode``:
``"implicit"`` (implicit function theorem; the backward pass solves ``y = J_f(z*)^T y + dL/df`` as a fixed point
inside a gradient hook, memory independent of the number of solver iterations), ``"jfb"`` (Jacobian-free: the
gradient of one cell application at ``z*``) or ``"unrolled"`` (back-propagation through the forward fixed-point
iterations, memory grows with them). Those paths spend one extra, tracked, cell evaluation at ``z*``. The backward
problem is linear in ``dL/df``, so it is solved for the per-sample unit-norm gradient and scaled back (solver
constants such as Anderson's absolute ridge term then see unit-scale vectors; the backward tolerances apply to that
scaled problem). ``backward_solver`` / ``backward_max_iters`` / ``backward_tol_rel`` default to the forward ones.
"""
from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, imagenet_normalise
from wflwv.models.registry import register_model
from wflwv.models.solvers import DEFAULT_RETURN_BEST, SOLVER_KWARGS, SOLVERS, SolverStats, get_solver, residuals

__all__ = [
    "LDEQConfig",
    "LDEQNet",
    "LDEQModel",
    "PAPER_CONFIG",
    "heatmaps_to_keypoints",
    "normalise_heatmaps",
    "imagenet_normalise",
    "count_parameters",
]

GRAD_MODES = ("implicit", "jfb", "unrolled")
CELL_NORMS = ("softargmax", "linear", "none")


# ---------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class LDEQConfig:
    """Architecture and solver settings of an LDEQ network. Defaults are the released model file's widths."""

    # --- landmarks / heatmaps
    num_landmarks: int = 98  # L heatmaps that become keypoints (98 = WFLW, 68 = iBUG)
    extra_latent_channels: int = 0  # extra equilibrium channels that are not keypoints (released cell_extra_latent_width)
    input_size: int = 256  # side of the square input the stem sees; larger crops (the 256 px protocol crop) are resized to it
    heatmap_size: int = 64  # side of the heatmaps; the stem downsamples by 4, so must equal input_size // 4
    input_channels: int = 3  # RGB
    # --- widths (released: injection_width / cell_base_width / cell_width_increment / cell_gn_groups)
    injection_width: int = 224  # stem output channels w (stem widths w/4 -> w/2 -> w)
    cell_base_width: int = 224  # hourglass width b at full resolution
    cell_width_increment: int = 24  # hourglass widths b + i, b + 2i, b + 3i, b + 4i at the coarser levels
    cell_gn_groups: int = 1  # GroupNorm groups inside the cell
    # --- heatmap normalisation inside the cell
    cell_norm: str = "softargmax"  # "softargmax": exp(beta (z - max)); "linear": min-max to [0, 1]; "none"
    cell_softargmax_beta: float = 0.4  # beta = 1 / temperature (paper: T = 2.5)
    # --- forward solver
    solver: str = "anderson"  # "anderson" | "fpi" | "broyden"
    max_iters: int = 10  # cap on cell evaluations of the forward solve (see the module docstring)
    stop_mode: str = "rel"  # "rel" | "abs" | "either": which residual the tolerance applies to
    tol_rel: float = 5e-3  # stop a sample once ||f(z)-z|| / ||f(z)|| < tol_rel (0: run max_iters)
    tol_abs: float = 0.0  # stop a sample once ||f(z)-z|| < tol_abs (stop_mode "abs" / "either")
    return_best: bool | None = None  # return the lowest-residual iterate; None: anderson/broyden yes, fpi no
    anderson_m: int = 6  # Anderson history size
    anderson_lam: float = 1e-4  # Anderson ridge term (absolute, added to G G^T as in the released solver)
    anderson_beta: float = 1.0  # Anderson mixing (1 = undamped)
    # --- Recurrence without Recurrence (inference on video)
    rwr_iters: int = 2  # cap on cell evaluations per warm-started frame (paper / release: 2)
    # --- training
    grad_mode: str = "implicit"  # "implicit" | "jfb" | "unrolled"
    backward_solver: str | None = None  # solver of the backward fixed-point problem (None: same as solver)
    backward_max_iters: int | None = None  # cap of the backward fixed-point solve (None: max_iters)
    backward_tol_rel: float | None = None  # its relative tolerance (None: tol_rel)
    stochastic_max_iters: bool = False  # training only: cap each batch's forward solve at randint(1, max_iters)

    def __post_init__(self):
        self.validate()

    # ---- derived
    @property
    def z_width(self) -> int:
        """Channels of the equilibrium state: num_landmarks + extra_latent_channels."""
        return self.num_landmarks + self.extra_latent_channels

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        pos = ("num_landmarks", "input_size", "heatmap_size", "input_channels", "injection_width",
               "cell_base_width", "cell_gn_groups", "max_iters", "rwr_iters", "anderson_m")
        for name in pos:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LDEQConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.extra_latent_channels < 0 or self.cell_width_increment < 0:
            raise ValueError("LDEQConfig.extra_latent_channels and cell_width_increment must be >= 0")
        if self.injection_width % 4:
            raise ValueError(f"injection_width must be a multiple of 4 (stem widths w/4, w/2, w), got {self.injection_width}")
        if self.input_size % 4 or self.heatmap_size != self.input_size // 4:
            raise ValueError(
                f"heatmap_size must be input_size // 4 (the stem downsamples by 4): input_size={self.input_size}, "
                f"heatmap_size={self.heatmap_size}")
        if self.heatmap_size % 16:
            raise ValueError(f"heatmap_size must be a multiple of 16 (four 2x poolings in the hourglass), got {self.heatmap_size}")
        b, i = self.cell_base_width, self.cell_width_increment
        for w in (b, b + i, b + 2 * i, b + 3 * i, b + 4 * i):
            if w % self.cell_gn_groups:
                raise ValueError(f"cell_gn_groups={self.cell_gn_groups} must divide every hourglass width; {w} is not divisible")
        if self.cell_norm not in CELL_NORMS:
            raise ValueError(f"cell_norm must be one of {CELL_NORMS}, got {self.cell_norm!r}")
        if not self.cell_softargmax_beta > 0:
            raise ValueError(f"cell_softargmax_beta must be > 0, got {self.cell_softargmax_beta}")
        get_solver(self.solver)
        if self.stop_mode not in ("rel", "abs", "either"):
            raise ValueError(f"stop_mode must be 'rel', 'abs' or 'either', got {self.stop_mode!r}")
        if self.tol_rel < 0 or self.tol_abs < 0:
            raise ValueError("tolerances must be >= 0")
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")
        if self.backward_solver is not None:
            get_solver(self.backward_solver)
        if self.backward_max_iters is not None and self.backward_max_iters < 1:
            raise ValueError("backward_max_iters must be >= 1 or None")

    def resolved_return_best(self) -> bool:
        return DEFAULT_RETURN_BEST[_solver_key(self.solver)] if self.return_best is None else bool(self.return_best)

    def solver_kwargs(self) -> dict[str, Any]:
        key = _solver_key(self.solver)
        all_kw = {"m": self.anderson_m, "lam": self.anderson_lam, "beta": self.anderson_beta}
        return {k: all_kw[k] for k in SOLVER_KWARGS[key]}

    # ---- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-/weights_only-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LDEQConfig":
        """Build from :meth:`to_dict` output; unknown keys raise a ValueError listing them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LDEQConfig field(s): {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
        return cls(**dict(d))

    def with_overrides(self, **overrides: Any) -> "LDEQConfig":
        """A copy with some fields replaced (unknown names raise TypeError listing the valid ones)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown LDEQ config field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return replace(self, **overrides)

    @classmethod
    def from_released_args(cls, args: argparse.Namespace | Mapping[str, Any]) -> "LDEQConfig":
        """Translate the ``args`` namespace stored in a released LDEQ checkpoint.

        Iteration caps are converted to this module's convention (cell evaluations including the one whose value
        is the output): ``fpi`` and ``broyden``: ``max_iters + 1``; ``anderson``: ``max_iters + 2``.
        """
        a = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)

        def get(name, default=None, required=True):
            if name in a:
                return a[name]
            if required and default is None:
                raise ValueError(f"the checkpoint's args lack the field {name!r} that the released model reads")
            return default

        mode = get("model_mode", "implicit", required=False)
        if mode != "implicit":
            raise ValueError(
                f"checkpoint args have model_mode={mode!r}; only the implicit (equilibrium) LDEQ is supported")
        if get("cell_name", "Cell0", required=False) != "Cell0":
            raise ValueError(f"unsupported cell_name {a.get('cell_name')!r} (only 'Cell0' exists in the release)")
        if get("z0_mode", "zeros", required=False) != "zeros":
            raise ValueError(f"unsupported z0_mode {a.get('z0_mode')!r} (only 'zeros')")
        n_kp = int(get("n_keypoints"))
        extra = int(get("cell_extra_latent_width", 0, required=False))
        if "z_width" in a and int(a["z_width"]) != n_kp + extra:
            raise ValueError(f"inconsistent args: z_width={a['z_width']} != n_keypoints + cell_extra_latent_width = {n_kp + extra}")
        beta = float(get("cell_softargmax_beta"))
        if bool(get("cell_learn_softargmax_beta", False, required=False)):
            # the release passes beta through a softplus in that mode (the tensor is never trained)
            beta = float(math.log1p(math.exp(beta)))
        norm = str(get("cell_norm"))
        norm = "none" if norm == "None" else norm
        solver = str(get("solver"))
        released_iters = int(get("max_iters"))
        extra_evals = {"fpi": 1, "anderson": 2, "broyden": 1}
        if solver not in extra_evals:
            raise ValueError(f"unsupported solver {solver!r} in checkpoint args")
        stop_mode = str(get("stop_mode", "rel", required=False))
        if bool(get("take_one_less_inference_step", False, required=False)):
            warnings.warn("checkpoint args set take_one_less_inference_step=True; wflwv always outputs f(z*)",
                          stacklevel=2)
        im = int(get("im_size"))
        hm = int(get("heatmap_size", im // 4, required=False))
        return cls(
            num_landmarks=n_kp,
            extra_latent_channels=extra,
            input_size=im,
            heatmap_size=hm,
            input_channels=int(get("input_channels", 3, required=False)),
            injection_width=int(get("injection_width")),
            cell_base_width=int(get("cell_base_width")),
            cell_width_increment=int(get("cell_width_increment")),
            cell_gn_groups=int(get("cell_gn_groups")),
            cell_norm=norm,
            cell_softargmax_beta=beta,
            solver=solver,
            max_iters=released_iters + extra_evals[solver],
            stop_mode=stop_mode,
            tol_rel=float(get("rel_diff_target", 0.0, required=False)),
            tol_abs=float(get("abs_diff_target", 0.0, required=False)),
            anderson_m=int(get("anderson_m", 6, required=False)),
            anderson_lam=float(get("anderson_lam", 1e-4, required=False)),
            anderson_beta=float(get("anderson_beta", 1.0, required=False)),
            grad_mode="jfb" if bool(get("JFB", False, required=False)) else "implicit",
            stochastic_max_iters=bool(get("stochastic_max_iters", False, required=False)),
        )


#: the released model file's configuration (16,531,346 parameters)
PAPER_CONFIG = LDEQConfig()


def _solver_key(name: str) -> str:
    fn = get_solver(name)
    return next(k for k, v in SOLVERS.items() if v is fn)


# ---------------------------------------------------------------------------------------------------------
# building blocks (names match the released state dict)


class _ConvBlock(nn.Module):
    """k x k convolution (bias, 'same' padding) -> LeakyReLU(0.01) -> norm; ``act=False, norm=None``: conv only."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, norm: str | None = "bn",
                 gn_groups: int = 1, act: bool = True):
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
        return self.norm(self.act(self.conv(x)))


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
        self.tail = _ConvBlock(cfg.z_width + cfg.injection_width, cfg.cell_base_width, 1, norm="gn",
                               gn_groups=cfg.cell_gn_groups)
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
    * ``z_solver`` (N, Z, H, W): the solver's returned iterate ``z*`` itself (``heatmaps = f(z_solver)``);
    * ``solver_iters``, ``cell_evals`` (N,) int64; ``residual`` (N,) ``||f(z*) - z*|| / (||f(z*)|| + 1e-5)``;
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
                f"got {tuple(x.shape)}")
        if x.shape[2] != c.input_size:
            # a model configured for smaller crops (e.g. the fast demo model) sees the protocol's crop resized;
            # keypoints are in unit crop coordinates, so they need no change
            x = F.interpolate(x, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False, antialias=True)
        return self.tail(x)

    def cell(self, z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """One cell evaluation f(z, x): (N, Z, H, W), (N, w, H, W) -> (N, Z, H, W)."""
        return self.deq_layer.cell(z, feats)

    def zeros(self, n: int, device=None, dtype=None) -> torch.Tensor:
        """The default start z0 = 0, (n, Z, H, W)."""
        c = self.config
        p = next(self.parameters())
        return torch.zeros(n, c.z_width, c.heatmap_size, c.heatmap_size, device=device or p.device,
                           dtype=dtype or p.dtype)

    def keypoints(self, heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, Z, H, W) output heatmaps -> keypoints dict (uses the first num_landmarks channels)."""
        h = heatmaps[:, : self.config.num_landmarks]
        if self.config.cell_norm == "none":
            h = normalise_heatmaps(h, "softargmax", self.config.cell_softargmax_beta)
        return heatmaps_to_keypoints(h)

    # ---- solving
    def _solve(self, feats: torch.Tensor, z0: torch.Tensor, max_iters, **solver_over) -> tuple[torch.Tensor, SolverStats]:
        c = self.config
        name = solver_over.pop("solver", None) or c.solver
        kw = dict(
            max_iter=max_iters,
            tol_rel=solver_over.pop("tol_rel", c.tol_rel),
            tol_abs=solver_over.pop("tol_abs", c.tol_abs),
            stop_mode=solver_over.pop("stop_mode", c.stop_mode),
        )
        if solver_over:
            raise TypeError(f"unknown solver override(s): {', '.join(solver_over)}")
        cfg = c if name == c.solver else c.with_overrides(solver=name, return_best=None)
        kw.update(cfg.solver_kwargs())
        solver = get_solver(name)

        def f(z, idx):
            return self.cell(z, feats if idx.numel() == feats.shape[0] else feats[idx])

        with torch.no_grad():
            return solver(f, z0, return_best=cfg.resolved_return_best(), pass_index=True, **kw)

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
            max_iters: cell-evaluation cap of the solve, an int or per-sample (N,) (None: ``config.max_iters``).
            grad_mode: ``"implicit" | "jfb" | "unrolled"`` for the differentiable path (None: config).
            differentiable: force (True) or skip (False) the differentiable path; None = ``self.training`` and
                autograd enabled.
            solver_overrides: ``solver``, ``tol_rel``, ``tol_abs``, ``stop_mode`` for this call.
        Returns:
            the dict described in the class docstring.
        """
        c = self.config
        n = x.shape[0]
        diff = (self.training and torch.is_grad_enabled()) if differentiable is None else bool(differentiable)
        with torch.set_grad_enabled(diff):
            feats = self.features(x)
        if z0 is None:
            z0 = self.zeros(n, device=x.device, dtype=feats.dtype)
        exp_shape = (n, c.z_width, c.heatmap_size, c.heatmap_size)
        if tuple(z0.shape) != exp_shape:
            raise ValueError(f"z0 must have shape {exp_shape}, got {tuple(z0.shape)}")
        z0 = z0.detach().to(feats.dtype)
        gm = grad_mode or c.grad_mode
        if gm not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {gm!r}")
        if max_iters is None:
            max_iters = c.max_iters
            if diff and c.stochastic_max_iters:
                max_iters = int(torch.randint(1, c.max_iters + 1, (1,)).item())

        if diff and gm == "unrolled":
            return self._forward_unrolled(feats, z0, max_iters, **solver_overrides)

        z_star, stats = self._solve(feats, z0, max_iters, **solver_overrides)
        iters = stats.iterations.clone()
        if diff:
            zs = z_star.detach()
            if gm == "implicit":
                zs = zs.requires_grad_()
            heat = self.cell(zs, feats)
            if gm == "implicit":
                self._attach_implicit_backward(heat, zs)
            cell_evals = iters + 1
            with torch.no_grad():
                _, rel = residuals(heat.detach(), z_star)
        else:
            heat = stats.f_star
            cell_evals = iters.clone()
            missing = iters == 0  # rows with a zero budget: evaluate once
            if bool(missing.any()):
                with torch.no_grad():
                    heat = heat.clone()
                    heat[missing] = self.cell(z_star[missing], feats[missing]).to(heat.dtype)
                cell_evals[missing] = 1
            _, rel = residuals(heat, z_star)
        return self._outputs(heat, z_star, iters, cell_evals, rel, stats.converged.clone(), stats)

    def _forward_unrolled(self, feats, z0, max_iters, **solver_overrides) -> dict[str, Any]:
        """Back-propagate through fixed-point iteration (per-sample stopping by masking); memory grows with it."""
        c = self.config
        solver_overrides.pop("solver", None)
        tol_rel = solver_overrides.pop("tol_rel", c.tol_rel)
        tol_abs = solver_overrides.pop("tol_abs", c.tol_abs)
        stop_mode = solver_overrides.pop("stop_mode", c.stop_mode)
        if solver_overrides:
            raise TypeError(f"unknown solver override(s): {', '.join(solver_overrides)}")
        n = z0.shape[0]
        budget = torch.as_tensor(max_iters, device=z0.device, dtype=torch.long).reshape(-1).expand(n).clone()
        active = budget > 0
        iters = torch.zeros(n, dtype=torch.long, device=z0.device)
        conv = torch.zeros(n, dtype=torch.bool, device=z0.device)
        z = z0
        heat = None
        rel_last = torch.full((n,), float("nan"), device=z0.device)
        z_prev = z0
        for _ in range(int(budget.max().item())):
            if not bool(active.any()):
                break
            fz = self.cell(z, feats)
            with torch.no_grad():
                a_r, r_r = residuals(fz.detach(), z.detach())
            m = active.view(-1, 1, 1, 1)
            heat = fz if heat is None else torch.where(m, fz, heat)
            z_prev = torch.where(m, z.detach(), z_prev)
            rel_last = torch.where(active, r_r, rel_last)
            iters = iters + active.long()
            stop = {"rel": r_r < tol_rel, "abs": a_r < tol_abs}.get(stop_mode, (r_r < tol_rel) | (a_r < tol_abs))
            conv = conv | (active & stop)
            active = active & ~stop & (iters < budget)
            z = torch.where(m, fz, z)
        if heat is None:
            heat = self.cell(z0, feats)
            iters = torch.ones_like(iters)
            with torch.no_grad():
                rel_last = residuals(heat.detach(), z0)[1]
        return self._outputs(heat, z_prev, iters, iters.clone(), rel_last, conv, None)

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

    def _attach_implicit_backward(self, heat: torch.Tensor, zs: torch.Tensor) -> None:
        """Make the gradient reaching ``heat = f(z*)`` the implicit one.

        With ``g = dL/df`` arriving at ``heat``, the hook replaces it by the solution of ``y = J^T y + g``
        (``J = df/dz`` at ``z*``), i.e. ``y = (I - J^T)^{-1} g``; autograd then carries ``y`` through the one
        tracked cell evaluation to the parameters and the stem, giving ``dL/dtheta = y^T df/dtheta`` (IFT). The
        vector-Jacobian products reuse that evaluation's graph, so memory does not depend on the number of
        forward or backward iterations.
        """
        c = self.config
        handle: list = []
        net = self

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

            bc = c.with_overrides(solver=c.backward_solver, return_best=None) if c.backward_solver else c
            y, st = get_solver(bc.solver)(
                vjp_plus_g, torch.zeros_like(grad), max_iter=c.backward_max_iters or c.max_iters,
                tol_rel=c.tol_rel if c.backward_tol_rel is None else c.backward_tol_rel,
                tol_abs=c.tol_abs, stop_mode=c.stop_mode, return_best=bc.resolved_return_best(),
                pass_index=False, **bc.solver_kwargs())
            net.last_backward_stats = st
            out = st.f_star
            bad = ~torch.isfinite(out.reshape(n, -1)).all(dim=1)
            if bool(bad.any()):
                out = out.clone()
                out[bad] = y[bad]
            return out * scale

        handle.append(heat.register_hook(hook))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (elements of ``module.parameters()``)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------
# the harness plug-in


@register_model("ldeq")
class LDEQModel(LandmarkModel):
    """LDEQ landmark model (deep equilibrium heatmaps), optionally with Recurrence without Recurrence (RwR).

    Args:
        weights: a released LDEQ checkpoint (``{'args', 'state_dict'}``) or a wflwv training checkpoint
            (``{'arch': 'ldeq', 'config', 'state_dict', ...}``). None: random initialisation (with a warning:
            the landmarks are meaningless until weights are given).
        rwr: warm-start each frame from the previous frame's output heatmaps (the clip's state) and cap the
            frame's cell evaluations at ``rwr_iters``. A clip's first frame (state None) starts from zeros and
            gets a full solve (``max_iters``) unless ``rwr_full_first_frame=False``.
        rwr_iters: cell evaluations per warm-started frame (default: the config's, 2). With fixed-point
            iteration, 2 = the released "1 solver iteration + 1 more evaluation".
        solver, max_iters, tol, stop_mode: forward solver settings (None: from the weights' config / defaults);
            ``tol`` is the tolerance of ``stop_mode`` (relative for "rel"/"either", absolute for "abs").
        device: torch device.
        config_overrides: any other :class:`LDEQConfig` field (e.g. ``injection_width=8`` for tiny tests).

    Every sample is solved independently (per-sample stopping and caps), so batch composition never changes
    results. Stats per frame: ``solver_iters``, ``cell_evals``, ``residual``.
    """

    def __init__(
        self,
        weights: str | None = None,
        rwr: bool = False,
        rwr_iters: int | None = None,
        solver: str | None = None,
        max_iters: int | None = None,
        tol: float | None = None,
        stop_mode: str | None = None,
        device: str | torch.device = "cpu",
        rwr_full_first_frame: bool = True,
        **config_overrides: Any,
    ):
        from wflwv.models.checkpoints import load_ldeq_checkpoint
        from wflwv.models.shipped import resolve_default_weights

        weights = resolve_default_weights("ldeq", weights, custom_architecture=bool(config_overrides))
        self.weights = None if weights is None else str(weights)
        if weights is not None:
            cfg, state_dict, info = load_ldeq_checkpoint(weights)
            self.checkpoint_info = info
        else:
            cfg, state_dict, self.checkpoint_info = LDEQConfig(), None, {}
        over = dict(config_overrides)
        if solver is not None:
            over["solver"] = solver
            over.setdefault("return_best", None)
        if max_iters is not None:
            over["max_iters"] = int(max_iters)
        if stop_mode is not None:
            over["stop_mode"] = stop_mode
        if tol is not None:
            mode = over.get("stop_mode", cfg.stop_mode)
            over["tol_abs" if mode == "abs" else "tol_rel"] = float(tol)
        if rwr_iters is not None:
            over["rwr_iters"] = int(rwr_iters)
        cfg = cfg.with_overrides(**over) if over else cfg
        self.cfg = cfg
        self.rwr = bool(rwr)
        self.rwr_full_first_frame = bool(rwr_full_first_frame)
        self.scheme = {98: "wflw98", 68: "ibug68"}.get(cfg.num_landmarks, "")
        if not self.scheme:
            raise ValueError(f"the harness model needs 98 (wflw98) or 68 (ibug68) landmarks, got num_landmarks={cfg.num_landmarks}")
        self.net = LDEQNet(cfg)
        if state_dict is not None:
            from wflwv.models.checkpoints import load_state_dict_strict

            load_state_dict_strict(self.net, state_dict, source=str(weights))
        else:
            warnings.warn(
                "LDEQ model created without weights: randomly initialised, its landmarks are meaningless. "
                "Pass weights=<checkpoint path> (a released LDEQ .pth.tar or a wflwv training checkpoint).",
                stacklevel=2)
        self.to(device)

    def config(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d.update({"weights": self.weights, "rwr": self.rwr, "rwr_full_first_frame": self.rwr_full_first_frame})
        return d

    @torch.no_grad()
    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """images: (N, 3, S, S) RGB in [0, 1]; states: N previous outputs (None at a clip's first frame)."""
        c = self.cfg
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB, got {tuple(images.shape)}")
        n = images.shape[0]
        if len(states) != n:
            raise ValueError(f"got {n} images but {len(states)} states")
        self.net.eval()
        p = next(self.net.parameters())
        x = imagenet_normalise(images.to(device=p.device, dtype=p.dtype))
        z0 = self.net.zeros(n)
        budget = torch.full((n,), c.max_iters, dtype=torch.long, device=p.device)
        if self.rwr:
            for i, s in enumerate(states):
                if s is None:
                    if not self.rwr_full_first_frame:
                        budget[i] = c.rwr_iters
                    continue
                s = torch.as_tensor(s).to(device=p.device, dtype=p.dtype)
                if tuple(s.shape) != tuple(z0.shape[1:]):
                    raise ValueError(f"state {i} has shape {tuple(s.shape)}, expected {tuple(z0.shape[1:])} "
                                     "(states must be what this model returned for the previous frame)")
                z0[i] = s
                budget[i] = c.rwr_iters
        out = self.net(x, z0=z0, max_iters=budget, differentiable=False)
        heat = out["heatmaps"]
        landmarks = out["keypoints"] * images.shape[-1]
        return ModelOutput(
            landmarks=landmarks,
            states=[heat[i].clone() for i in range(n)],
            stats={
                "solver_iters": out["solver_iters"].cpu(),
                "cell_evals": out["cell_evals"].cpu(),
                "residual": out["residual"].cpu(),
            },
            heatmaps=heat[:, : c.num_landmarks],
        )
