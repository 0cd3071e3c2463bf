"""The LDEQ harness plug-in: :class:`LDEQModel`, with Recurrence without Recurrence (RwR) on video."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, imagenet_normalise
from wflwv.models.checkpoints import load_arch_checkpoint, load_state_dict_strict, resolve_default_weights
from wflwv.models.ldeq.config import LDEQConfig
from wflwv.models.ldeq.net import LDEQNet

__all__ = ["LDEQModel"]


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
        weights = resolve_default_weights("ldeq", weights, custom_architecture=bool(config_overrides))
        self.weights = None if weights is None else str(weights)
        if weights is not None:
            _, cfg, state_dict, self.checkpoint_info = load_arch_checkpoint(weights, "ldeq")
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
            raise ValueError(
                f"the harness model needs 98 (wflw98) or 68 (ibug68) landmarks, got num_landmarks={cfg.num_landmarks}"
            )
        self.net = LDEQNet(cfg)
        if state_dict is not None:
            load_state_dict_strict(self.net, state_dict, source=str(weights))
        else:
            warnings.warn(
                "LDEQ model created without weights: randomly initialised, its landmarks are meaningless. "
                "Pass weights=<checkpoint path> (a released LDEQ .pth.tar or a wflwv training checkpoint).",
                stacklevel=2,
            )
        self.to(device)

    @property
    def stateful(self) -> bool:
        """Only RwR carries state (the previous frame's equilibrium); a plain solve is per frame."""
        return self.rwr

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
                    raise ValueError(
                        f"state {i} has shape {tuple(s.shape)}, expected {tuple(z0.shape[1:])} "
                        "(states must be what this model returned for the previous frame)"
                    )
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
