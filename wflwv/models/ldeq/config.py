"""LDEQ configuration: architecture and solver settings (:class:`LDEQConfig`), and the translation of a released
checkpoint's ``args`` into it.

Counting convention (used everywhere in :mod:`wflwv.models.ldeq`): **one solver iteration = one cell evaluation**;
see :mod:`wflwv.models.ldeq.net` for how that relates to the released code's ``max_iters``.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from wflwv.models.solvers import DEFAULT_RETURN_BEST, SOLVER_KWARGS, SOLVERS, get_solver

__all__ = ["LDEQConfig", "PAPER_CONFIG", "GRAD_MODES", "CELL_NORMS"]

GRAD_MODES = ("implicit", "jfb", "unrolled")
CELL_NORMS = ("softargmax", "linear", "none")


# ---------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class LDEQConfig:
    """Architecture and solver settings of an LDEQ network. Defaults are the released model file's widths."""

    # --- landmarks / heatmaps
    num_landmarks: int = 98  # L heatmaps that become keypoints (98 = WFLW, 68 = iBUG)
    extra_latent_channels: int = (
        0  # extra equilibrium channels that are not keypoints (released cell_extra_latent_width)
    )
    input_size: int = (
        256  # side of the square input the stem sees; larger crops (the 256 px protocol crop) are resized to it
    )
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
        pos = (
            "num_landmarks",
            "input_size",
            "heatmap_size",
            "input_channels",
            "injection_width",
            "cell_base_width",
            "cell_gn_groups",
            "max_iters",
            "rwr_iters",
            "anderson_m",
        )
        for name in pos:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LDEQConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.extra_latent_channels < 0 or self.cell_width_increment < 0:
            raise ValueError("LDEQConfig.extra_latent_channels and cell_width_increment must be >= 0")
        if self.injection_width % 4:
            raise ValueError(
                f"injection_width must be a multiple of 4 (stem widths w/4, w/2, w), got {self.injection_width}"
            )
        if self.input_size % 4 or self.heatmap_size != self.input_size // 4:
            raise ValueError(
                f"heatmap_size must be input_size // 4 (the stem downsamples by 4): input_size={self.input_size}, "
                f"heatmap_size={self.heatmap_size}"
            )
        if self.heatmap_size % 16:
            raise ValueError(
                f"heatmap_size must be a multiple of 16 (four 2x poolings in the hourglass), got {self.heatmap_size}"
            )
        b, i = self.cell_base_width, self.cell_width_increment
        for w in (b, b + i, b + 2 * i, b + 3 * i, b + 4 * i):
            if w % self.cell_gn_groups:
                raise ValueError(
                    f"cell_gn_groups={self.cell_gn_groups} must divide every hourglass width; {w} is not divisible"
                )
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
    def from_dict(cls, d: Mapping[str, Any]) -> LDEQConfig:
        """Build from :meth:`to_dict` output; unknown keys raise a ValueError listing them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown LDEQConfig field(s): {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}"
            )
        return cls(**dict(d))

    def with_overrides(self, **overrides: Any) -> LDEQConfig:
        """A copy with some fields replaced (unknown names raise TypeError listing the valid ones)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown LDEQ config field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return replace(self, **overrides)

    @classmethod
    def from_released_args(cls, args: argparse.Namespace | Mapping[str, Any]) -> LDEQConfig:
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
                f"checkpoint args have model_mode={mode!r}; only the implicit (equilibrium) LDEQ is supported"
            )
        if get("cell_name", "Cell0", required=False) != "Cell0":
            raise ValueError(f"unsupported cell_name {a.get('cell_name')!r} (only 'Cell0' exists in the release)")
        if get("z0_mode", "zeros", required=False) != "zeros":
            raise ValueError(f"unsupported z0_mode {a.get('z0_mode')!r} (only 'zeros')")
        n_kp = int(get("n_keypoints"))
        extra = int(get("cell_extra_latent_width", 0, required=False))
        if "z_width" in a and int(a["z_width"]) != n_kp + extra:
            raise ValueError(
                f"inconsistent args: z_width={a['z_width']} != n_keypoints + cell_extra_latent_width = {n_kp + extra}"
            )
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
            warnings.warn(
                "checkpoint args set take_one_less_inference_step=True; wflwv always outputs f(z*)", stacklevel=2
            )
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
