"""LDEQ configuration: architecture and solver settings (:class:`LDEQConfig`), and the translation of a released
checkpoint's ``args`` into it.

Counting convention: ``max_iters`` and ``rwr_max_iters`` count **solver iterations as the released code does**
(:mod:`wflwv.models.solvers`), so a released setting is written with the same number: fixed-point iteration with
``max_iters = M`` spends at most M + 1 cell evaluations (M in the solver, then f once more), Anderson M + 2 (x0,
f(x0), M mixed iterates; the released code's final evaluation of the best iterate is the value the solver already
computed). The settings table: ``docs/ldeq-released.md``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from wflwv.models.solvers import STOP_MODES, solver_spec

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
    max_iters: int = 10  # solver iterations of the forward solve, counted as released (module docstring)
    stop_mode: str = "rel"  # "rel" | "abs" | "either": which residual the tolerance applies to
    tol_rel: float = 5e-3  # stop a sample once its relative residual < tol_rel (0: run max_iters)
    tol_abs: float = 0.0  # stop a sample once ||f(z)-z|| < tol_abs (stop_mode "abs" / "either")
    return_best: bool | None = None  # answer with the lowest-residual iterate; None: anderson/broyden yes, fpi no
    anderson_m: int = 6  # Anderson history size
    anderson_lam: float = 1e-4  # Anderson ridge term (absolute, added to G G^T as in the released solver)
    anderson_beta: float = 1.0  # Anderson mixing (1 = undamped)
    final_eval: bool = True  # output f(z*) (released take_one_less_inference_step=False); False: output z* itself
    early_exit: bool = False  # not released: stop as soon as any evaluated iterate meets the tolerance and output
    # the f-value already computed there (a good warm start costs one evaluation; see wflwv.models.solvers)
    # --- Recurrence without Recurrence (inference on video)
    rwr_max_iters: int = 1  # solver iterations of every frame under RwR, the first included (released: 1)
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
            "rwr_max_iters",
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
        solver_spec(self.solver)
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {self.stop_mode!r}")
        if self.tol_rel < 0 or self.tol_abs < 0:
            raise ValueError("tolerances must be >= 0")
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")
        if self.backward_solver is not None:
            solver_spec(self.backward_solver)
        if self.backward_max_iters is not None and self.backward_max_iters < 1:
            raise ValueError("backward_max_iters must be >= 1 or None")

    def solver_kwargs(self, solver: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`wflwv.models.solvers.solve` for ``solver`` (default: the config's) with this
        config's stopping rule (``max_iter`` excluded; ``return_best`` only when set for the config's own solver)."""
        spec = solver_spec(solver or self.solver)
        own = {"m": self.anderson_m, "lam": self.anderson_lam, "beta": self.anderson_beta}
        kw: dict[str, Any] = {k: own[k] for k in spec.options}
        kw.update(solver=spec.name, tol_rel=self.tol_rel, tol_abs=self.tol_abs, stop_mode=self.stop_mode)
        if self.return_best is not None and spec.name == solver_spec(self.solver).name:
            kw["return_best"] = bool(self.return_best)
        return kw

    # ---- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-/weights_only-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LDEQConfig:
        """Build from :meth:`to_dict` output (or an older version's, see :meth:`upgrade_dict`); unknown keys raise a
        ValueError listing them."""
        d = cls.upgrade_dict(d)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown LDEQConfig field(s): {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}"
            )
        return cls(**dict(d))

    @staticmethod
    def upgrade_dict(d: Mapping[str, Any]) -> dict[str, Any]:
        """A config dict in today's fields: one written by wflwv 0.1 (it has ``rwr_iters``; its caps counted cell
        evaluations) is translated so that it evaluates as it did then (:func:`_from_cell_evaluation_counts`)."""
        if "rwr_iters" in d and "rwr_max_iters" not in d:
            return _from_cell_evaluation_counts(d)
        return dict(d)

    def with_overrides(self, **overrides: Any) -> LDEQConfig:
        """A copy with some fields replaced (unknown names raise TypeError listing the valid ones)."""
        names = {f.name for f in fields(self)}
        if "rwr_iters" in overrides:
            raise TypeError(RWR_ITERS_RENAMED)
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown LDEQ config field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return replace(self, **overrides)

    @classmethod
    def from_released_args(cls, args: argparse.Namespace | Mapping[str, Any]) -> LDEQConfig:
        """Translate the ``args`` namespace stored in a released LDEQ checkpoint, evaluation settings included.

        ``max_iters``, ``solver``, ``stop_mode``, ``rel_diff_target`` / ``abs_diff_target`` and the Anderson options
        keep their numbers (``fpi_max_iters`` / ``anderson_max_iters`` are not read: the released solvers use
        ``max_iters``); ``take_one_less_inference_step=True`` becomes ``final_eval=False``. The released evaluation
        halves the cap of a checkpoint trained with ``stochastic_max_iters`` (``max(1, round(max_iters / 2))``,
        Python rounding), so that halved cap is the config's ``max_iters``.
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
        if solver not in ("fpi", "anderson", "broyden"):
            raise ValueError(f"unsupported solver {solver!r} in checkpoint args (fpi, anderson or broyden)")
        max_iters = int(get("max_iters"))
        stochastic = bool(get("stochastic_max_iters", False, required=False))
        if stochastic:
            max_iters = max(1, round(max_iters / 2))
        stop_mode = str(get("stop_mode", "rel", required=False))
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
            max_iters=max_iters,
            stop_mode=stop_mode,
            tol_rel=float(get("rel_diff_target", 0.0, required=False)),
            tol_abs=float(get("abs_diff_target", 0.0, required=False)),
            anderson_m=int(get("anderson_m", 6, required=False)),
            anderson_lam=float(get("anderson_lam", 1e-4, required=False)),
            anderson_beta=float(get("anderson_beta", 1.0, required=False)),
            final_eval=not bool(get("take_one_less_inference_step", False, required=False)),
            grad_mode="jfb" if bool(get("JFB", False, required=False)) else "implicit",
            stochastic_max_iters=stochastic,
        )


#: the released model file's configuration (16,531,346 parameters)
PAPER_CONFIG = LDEQConfig()

RWR_ITERS_RENAMED = (
    "rwr_iters (cell evaluations per warm-started frame) was replaced by rwr_max_iters, which counts solver "
    "iterations as the released code does: the old default rwr_iters=2 with fpi is rwr_max_iters=1; pass "
    "rwr_max_iters (see docs/ldeq-released.md)"
)


def _from_cell_evaluation_counts(d: Mapping[str, Any]) -> dict[str, Any]:
    """A wflwv 0.1 config dict in today's fields, evaluating as it did then.

    wflwv 0.1 counted ``max_iters`` in cell evaluations including the output's and stopped as soon as any evaluated
    iterate met the tolerance, outputting the value computed there: that is ``early_exit=True`` with ``max_iters``
    reduced by the solver's extra evaluations (fpi and broyden 1, anderson 2; at least 1). Its ``rwr_iters``
    becomes ``rwr_max_iters = max(1, rwr_iters - 1)`` (exact for fpi).
    """
    out = dict(d)
    solver = solver_spec(str(out.get("solver", "anderson"))).name
    extra = 2 if solver == "anderson" else 1
    if "max_iters" in out:
        out["max_iters"] = max(1, int(out["max_iters"]) - extra)
    if out.get("backward_max_iters") is not None:
        out["backward_max_iters"] = max(1, int(out["backward_max_iters"]) - extra)
    out["rwr_max_iters"] = max(1, int(out.pop("rwr_iters")) - 1)
    out.setdefault("early_exit", True)
    return out
