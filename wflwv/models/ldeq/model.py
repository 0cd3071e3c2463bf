"""The LDEQ harness plug-in: :class:`LDEQModel`, with Recurrence without Recurrence (RwR) on video."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, imagenet_normalise
from wflwv.models.checkpoints import load_arch_checkpoint, load_state_dict_strict, resolve_default_weights, seeded_init
from wflwv.models.ldeq.config import RWR_ITERS_RENAMED, LDEQConfig
from wflwv.models.ldeq.net import LDEQNet
from wflwv.models.parallel import cpu_threads, one_thread, run_tasks, split_convolutions

__all__ = ["LDEQModel"]


class LDEQModel(LandmarkModel):
    """LDEQ landmark model (deep equilibrium heatmaps), optionally with Recurrence without Recurrence (RwR).

    The defaults reproduce the released evaluation code (``docs/ldeq-released.md``): a released checkpoint's
    ``args`` give the solver settings, counted as released (``max_iters`` = solver iterations).

    Args:
        weights: a released LDEQ checkpoint (``{'args', 'state_dict'}``) or a wflwv training checkpoint
            (``{'arch': 'ldeq', 'config', 'state_dict', ...}``). None: the shipped demo model, or a random
            initialisation (with a warning) when architecture fields are given.
        rwr: Recurrence without Recurrence: every frame gets ``rwr_max_iters`` solver iterations, a clip's first
            frame from zeros, every later frame from the previous frame's output heatmaps (the clip's state).
        rwr_max_iters: solver iterations per frame under RwR (default: the config's, 1 as released).
        rwr_full_first_frame: not released: give a clip's first frame the full ``max_iters`` solve instead.
        sequential: evaluate the network on each sample as a batch of one with one-threaded CPU kernels, as the
            released sequential evaluation computes, so that the float rounding -- and with it every number -- is
            the same whatever ``--batch-videos`` and the machine's thread count (convolution kernels round
            differently for other batch sizes and thread counts). The samples of a batch are shared among
            ``threads`` CPU threads, and a batch of one splits its large convolutions among them by output channels
            (:mod:`wflwv.models.parallel`): the same numbers as one sample after another on one thread. False:
            one batched call using torch's own threads (the same numbers up to rounding, which RwR on a trained
            model keeps at rounding level but a random network amplifies to pixels within a few frames). On a GPU
            ``sequential`` makes one call per sample.
        threads: CPU threads of the sequential evaluation (None: the caller's, :func:`wflwv.models.parallel.cpu_threads`
            at each call; 1: one sample after another on the calling thread). Never changes a number.
        solver, max_iters, tol, stop_mode: forward solver settings (None: from the weights' config); ``tol`` is the
            tolerance of ``stop_mode`` (relative for "rel"/"either", absolute for "abs").
        device: torch device.
        seed: the random initialisation without weights (recorded in :meth:`config`, so a run without weights
            is reproducible and a resumed run cannot mix two networks).
        config_overrides: any other :class:`LDEQConfig` field, e.g. ``early_exit=True`` (not released: a sample
            stops at the first evaluated iterate that meets the tolerance and outputs the value computed there,
            so a warm start that is already good costs one evaluation), ``final_eval=False``, or
            ``injection_width=8`` for tiny tests.

    Every sample is solved independently (per-sample stopping and caps), so batch composition never changes
    results. Stats per frame: ``solver_iters``, ``cell_evals``, ``residual``. Without RwR the model is not
    :attr:`stateful`: the harness may pass several frames of one clip in one call (``--frame-batch``), and they are
    shared among the CPU threads like clips.
    """

    def __init__(
        self,
        weights: str | None = None,
        rwr: bool = False,
        rwr_max_iters: int | None = None,
        solver: str | None = None,
        max_iters: int | None = None,
        tol: float | None = None,
        stop_mode: str | None = None,
        device: str | torch.device = "cpu",
        rwr_full_first_frame: bool = False,
        sequential: bool = True,
        threads: int | None = None,
        seed: int = 0,
        **config_overrides: Any,
    ):
        if "rwr_iters" in config_overrides:
            raise TypeError(RWR_ITERS_RENAMED)
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
        if rwr_max_iters is not None:
            over["rwr_max_iters"] = int(rwr_max_iters)
        cfg = cfg.with_overrides(**over) if over else cfg
        self.cfg = cfg
        self.rwr = bool(rwr)
        self.rwr_full_first_frame = bool(rwr_full_first_frame)
        self.sequential = bool(sequential)
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1 (or None: torch's thread count), got {threads}")
        self.threads = None if threads is None else int(threads)
        self.scheme = {98: "wflw98", 68: "ibug68"}.get(cfg.num_landmarks, "")
        if not self.scheme:
            raise ValueError(
                f"the harness model needs 98 (wflw98) or 68 (ibug68) landmarks, got num_landmarks={cfg.num_landmarks}"
            )
        self.seed = int(seed)
        with seeded_init(self.seed):
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

    @property
    def batch_invariant(self) -> bool:
        """The sequential evaluation computes every sample alone on one-threaded kernels (on a CPU)."""
        return self.sequential and self.device.type == "cpu"

    def not_released(self) -> list[str]:
        """The options in use that the released evaluation does not have (empty: the released behaviour)."""
        out = []
        if self.cfg.early_exit:
            out.append("early exit")
        if self.rwr and self.rwr_full_first_frame:
            out.append("full first frame")
        if self.cfg.stop_mode == "either":
            out.append("stop either")
        if not self.sequential:
            out.append("batched")
        return out

    def config(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d.update(
            {
                "weights": self.weights,
                "rwr": self.rwr,
                "rwr_full_first_frame": self.rwr_full_first_frame,
                "sequential": self.sequential,
            }
        )
        if self.weights is None:  # randomly initialised: the seed decides the network
            d["seed"] = self.seed
        d["label_tags"] = self.not_released()  # a report shows these next to the model's name
        return d

    @torch.no_grad()
    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """images: (N, 3, S, S) RGB in [0, 1]; states: N previous outputs (None at a clip's first frame)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB, got {tuple(images.shape)}")
        if len(states) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(states)} states")
        if any(m.training for m in self.net.modules()):  # eval() sets every module's flag: only when one is off
            self.net.eval()
        p = next(self.net.parameters())
        if not (self.sequential and p.device.type == "cpu"):
            return self._predict(images, states, p, threads=1)
        threads = self.threads or cpu_threads()  # the caller's count, read before going to one thread
        with one_thread():  # everything on one thread: no wake-ups of idle threads for the small steps either
            return self._predict(images, states, p, threads)

    def _predict(self, images: torch.Tensor, states: Sequence[Any], p: torch.Tensor, threads: int) -> ModelOutput:
        c = self.cfg
        n = images.shape[0]
        x = imagenet_normalise(images.to(device=p.device, dtype=p.dtype))
        z0 = self.net.zeros(n)
        budget = torch.full((n,), c.rwr_max_iters if self.rwr else c.max_iters, dtype=torch.long, device=p.device)
        if self.rwr:
            for i, s in enumerate(states):
                if s is None:  # a clip's first frame starts from zeros
                    if self.rwr_full_first_frame:
                        budget[i] = c.max_iters
                    continue
                s = torch.as_tensor(s).to(device=p.device, dtype=p.dtype)
                if tuple(s.shape) != tuple(z0.shape[1:]):
                    raise ValueError(
                        f"state {i} has shape {tuple(s.shape)}, expected {tuple(z0.shape[1:])} "
                        "(states must be what this model returned for the previous frame)"
                    )
                z0[i] = s
        out = self._run(x, z0, budget, threads)
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

    def _run(self, x: torch.Tensor, z0: torch.Tensor, budget: torch.Tensor, threads: int) -> dict[str, Any]:
        """The network on the batch: one call, or (``sequential``) one call per sample, on CPU spread over
        ``threads`` threads of one-threaded kernels (samples, or a single sample's large convolutions)."""
        if not self.sequential:
            return self.net(x, z0=z0, max_iters=budget, differentiable=False)

        def one(i: int):
            return lambda: self.net(x[i : i + 1], z0=z0[i : i + 1], max_iters=budget[i : i + 1], differentiable=False)

        n = x.shape[0]
        if x.device.type != "cpu":
            outs = [one(i)() for i in range(n)]
        elif n == 1:
            with split_convolutions(threads):
                outs = [one(0)()]
        else:
            outs = run_tasks([one(i) for i in range(n)], threads)
        return {k: torch.cat([o[k] for o in outs]) for k in _PER_SAMPLE}


#: the per-sample entries of :meth:`LDEQNet.forward`'s output that :meth:`LDEQModel.predict` reads
_PER_SAMPLE = ("keypoints", "heatmaps", "solver_iters", "cell_evals", "residual")
