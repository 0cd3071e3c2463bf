"""The training loop shared by every architecture, with resumable checkpoints and WFLW validation.

:func:`train` builds the network from the architecture registry (:mod:`wflwv.models.archs`), trains it on augmented WFLW crops,
validates after every epoch on the WFLW test split (NME with the inter-ocular normaliser, FR and AUC at 0.1,
per test subset as in the paper's tables 1 and 2), and writes to the output folder:

* ``checkpoint.pt``: the latest state, rewritten atomically (temp file + ``os.replace``) after every epoch,
  and the file a later run resumes from;
* ``best.pt``: the checkpoint with the lowest full-set validation NME so far;
* ``metrics.json`` (whole history + best) and ``metrics.csv`` (one row per validation and subset).

Checkpoints are written and read by :mod:`wflwv.models.checkpoints` (atomic ``save_checkpoint``, which reloads
the file before it replaces the old one; ``load_checkpoint`` with ``weights_only=True`` and its allow-list), so
they hold only tensors and plain Python values: ``arch``, ``config`` (``dataclasses.asdict`` of the
architecture config), ``scheme``, ``state_dict``, ``optimizer``, ``epoch`` (completed epochs), ``metrics``
(latest validation), ``wflwv_version``, plus what resuming needs: ``scheduler``, ``step`` (optimizer steps so
far), ``epoch_step`` (steps into an unfinished epoch, after a ``max_steps`` stop or an interrupt), ``rng``
(torch generator state as a tensor, numpy and python generator states as plain lists), ``history``, ``best``,
``loss`` and ``train_config``.

Resuming is exact: the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)`` and each sample's
augmentation by ``(seed, e, index)``, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from wflwv import __version__
from wflwv.io import atomic_path, write_json
from wflwv.models.api import imagenet_normalise, resolve_device
from wflwv.models.archs import config_from_dict, get_arch, make_config
from wflwv.models.checkpoints import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from wflwv.schemes import get_scheme
from wflwv.training.augment import AugmentConfig
from wflwv.training.data import WFLWStillDataset
from wflwv.training.evaluate import evaluate, format_table
from wflwv.training.losses import make_loss

__all__ = [
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "METRICS_JSON",
    "METRICS_CSV",
    "train",
    "load_training_checkpoint",
    "EpochSampler",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"


@dataclass
class TrainConfig:
    """How to train (the architecture's own settings live in its config class)."""

    epochs: int = 60  # passes over the training set (the paper trains LDEQ for 60 epochs)
    batch_size: int = 16  # images per optimizer step
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "adam" or "adamw" (decoupled weight decay)
    weight_decay: float = 0.0  # L2 (adam) or decoupled (adamw) weight decay
    schedule: str = "cosine"  # "cosine" (decays to lr * min_lr_factor), "step" (x gamma at milestones), "constant"
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    min_lr_factor: float = 0.01  # cosine: final lr as a fraction of lr
    milestones: tuple[float, ...] = (0.5, 0.75)  # step: fractions of the run where the lr drops
    gamma: float = 0.1  # step: lr factor at each milestone
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off)
    max_steps: int = 0  # stop after this many optimizer steps in total, across resumes (0 = no limit);
    # the schedule is still laid out over `epochs`
    loss: str = ""  # "keypoint_mse", "heatmap_mse" or "awing"; "" = the architecture's default
    heatmap_sigma: float = 1.5  # Gaussian width of heatmap targets, heatmap cells
    heatmap_foreground_weight: float = 100.0  # heatmap_mse: pixel weight 1 + this * target (0 = plain MSE)
    scheme: str = "wflw98"  # landmark scheme trained ("ibug68" converts the WFLW points)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"
    workers: int = 0  # data-loader worker processes (0 = load in the main process)
    seed: int = 0  # seeds weight init, sample order and augmentations
    val_every: int = 1  # validate every this many epochs (and always after the last)
    val_batch_size: int = 0  # 0 = batch_size
    fr_threshold: float = 0.1  # NME cut-off of FR and AUC (0.1 -> FR_10 / AUC_10)
    progress: bool = True  # show a tqdm progress bar
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentations

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.milestones = tuple(float(m) for m in self.milestones)
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number (got {self.lr})")
        if self.optimizer not in ("adam", "adamw"):
            problems.append(f"optimizer must be 'adam' or 'adamw' (got {self.optimizer!r})")
        if self.schedule not in ("cosine", "step", "constant"):
            problems.append(f"schedule must be 'cosine', 'step' or 'constant' (got {self.schedule!r})")
        if self.max_steps < 0 or self.warmup_steps < 0 or self.workers < 0 or self.val_every < 1:
            problems.append("max_steps, warmup_steps and workers must be >= 0 and val_every >= 1")
        if self.seed < 0:
            problems.append(f"seed must be >= 0 (got {self.seed})")
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))


@dataclass
class TrainData:
    """Datasets for :func:`train`.

    ``train`` items are dicts with ``"image"`` (3, 256, 256) RGB in [0, 1] and ``"keypoints"`` (K, 2) in unit
    crop coordinates (as :class:`wflwv.protocol.wflw.WFLWStillDataset` yields). A ``set_epoch(e)`` method, if
    present, is called before each epoch. ``val`` (no augmentation) may offer ``subset_masks()`` for the
    per-subset table; without it only ``"full"`` is reported.
    """

    train: Dataset
    val: Dataset | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    net: torch.nn.Module
    config: Any
    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    epoch: int  # completed epochs
    step: int  # optimizer steps
    history: list[dict]
    best: dict | None


# --------------------------------------------------------------------------------------------------
# small pieces


class EpochSampler(Sampler):
    """The indices of one epoch in the order seeded by ``(seed, epoch)``, starting at position ``start``."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, shuffle: bool = True):
        self.n, self.start = int(n), int(start)
        if shuffle:
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
            self.order = torch.randperm(self.n, generator=g).tolist()
        else:
            self.order = list(range(self.n))

    def __iter__(self):
        return iter(self.order[self.start :])

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m * total for m in cfg.milestones)
        span = max(1, total - cfg.warmup_steps)
        t = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            np_state[1].astype(np.int64).tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_REQUIRED_KEYS = ("arch", "config", "scheme", "state_dict", "epoch")
_RESUME_KEYS = ("optimizer", "scheduler", "step", "rng")


def load_training_checkpoint(path: str | os.PathLike, resumable: bool = False) -> dict:
    """Read a checkpoint written by :func:`train` (through :func:`wflwv.models.checkpoints.load_checkpoint`,
    ``weights_only=True`` with its allow-list), checking it has the training keys.

    Args:
        resumable: also require what resuming needs (optimizer, scheduler, step counter, RNG states).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): unreadable, unsafe, or not a wflwv training checkpoint.
    """
    ckpt = load_checkpoint(path)
    need = _REQUIRED_KEYS + (_RESUME_KEYS if resumable else ())
    missing = [k for k in need if k not in ckpt]
    if ckpt.get("format") != "toolkit" or missing:
        have = ", ".join(sorted(k for k in ckpt if k != "format"))
        hint = "; use another --out folder, or --no-resume to start afresh there" if resumable else ""
        raise CheckpointError(
            f"{path} is not a{' resumable' if resumable else ''} wflwv training checkpoint "
            f"(needs {', '.join(need)}; has {have}){hint}"
        )
    return ckpt


def _write_metrics(out_dir: Path, summary: dict) -> None:
    write_json(out_dir / METRICS_JSON, summary)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "step", "complete", "train_loss", "lr", "subset", "nme", "fr", "auc", "count"])
    for rec in summary["history"]:
        for subset, m in (rec.get("val") or {}).items():
            w.writerow(
                [
                    rec["epoch"],
                    rec["step"],
                    int(rec["complete"]),
                    rec["train_loss"],
                    rec["lr"],
                    subset,
                    m["nme"],
                    m["fr"],
                    m["auc"],
                    m["count"],
                ]
            )
    with atomic_path(out_dir / METRICS_CSV) as tmp:
        tmp.write_text(buf.getvalue())


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _config_diff(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
        for k in keys
        if _canonical(saved.get(k)) != _canonical(now.get(k))
    ]


# --------------------------------------------------------------------------------------------------
# the loop


def _as_train_data(data, cfg: TrainConfig) -> TrainData:
    if isinstance(data, TrainData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return TrainData(train=data[0], val=data[1])
    if isinstance(data, (str, os.PathLike)):
        return TrainData(
            train=WFLWStillDataset(data, "train", scheme=cfg.scheme, augment=cfg.augment, seed=cfg.seed),
            val=WFLWStillDataset(data, "test", scheme=cfg.scheme, augment=None),
        )
    raise TypeError(
        f"data must be a WFLW folder, a TrainData or a (train, val) pair of datasets; got {type(data).__name__}"
    )


def _resolve_config(arch: str, config: Any, scheme) -> Any:
    """The architecture config from an instance, a dict of fields or None (defaults), checked against the scheme."""
    spec = get_arch(arch)
    if config is None:
        config = make_config(arch, num_landmarks=scheme.num_points)
    elif isinstance(config, dict):
        config = config_from_dict(arch, config)
    elif not isinstance(config, spec.config_cls):
        raise TypeError(f"architecture {arch!r} expects a {spec.config_cls.__name__}, got {type(config).__name__}")
    if config.num_landmarks != scheme.num_points:
        raise ValueError(
            f"config.num_landmarks = {config.num_landmarks} but scheme {scheme.name} has {scheme.num_points} "
            f"points; set num_landmarks={scheme.num_points} or choose the matching scheme"
        )
    return config


class _Trainer:
    """The state of one training run: network, optimiser, counters and history (see :func:`train`)."""

    def __init__(self, arch: str, config: Any, data, out_dir, cfg: TrainConfig, log: Callable[[str], None]):
        self.arch, self.cfg, self.log = arch, cfg, log
        self.scheme = get_scheme(cfg.scheme)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path, self.best_path = self.out_dir / CHECKPOINT_NAME, self.out_dir / BEST_NAME
        self.device = resolve_device(cfg.device)
        self.config = _resolve_config(arch, config, self.scheme)
        self.loss_name = cfg.loss or get_arch(arch).loss
        loss_kwargs = {"sigma": cfg.heatmap_sigma} if self.loss_name in ("heatmap_mse", "awing") else {}
        if self.loss_name == "heatmap_mse":
            loss_kwargs["foreground_weight"] = cfg.heatmap_foreground_weight
        self.loss_fn = make_loss(self.loss_name, **loss_kwargs)
        self.data = _as_train_data(data, cfg)
        self.n_train = len(self.data.train)
        if self.n_train == 0:
            raise ValueError("the training set is empty")
        self.drop_last = self.n_train > cfg.batch_size
        self.steps_per_epoch = self.n_train // cfg.batch_size if self.drop_last else 1
        torch.manual_seed(cfg.seed)
        self.net = get_arch(arch).net_cls(self.config).to(self.device)
        self.optimizer = _make_optimizer(self.net.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(cfg, cfg.epochs * self.steps_per_epoch)
        )
        self.step, self.epochs_done, self.epoch_step = 0, 0, 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.metrics: dict = {}

    # ---- checkpoints
    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` (same architecture, config and scheme, or a clear error)."""
        existing = load_training_checkpoint(self.ckpt_path, resumable=True)
        if existing["arch"] != self.arch or existing["scheme"] != self.scheme.name:
            raise ValueError(
                f"{self.ckpt_path} holds a {existing['arch']} / {existing['scheme']} run, not {self.arch} / "
                f"{self.scheme.name}; use another --out folder or --no-resume to overwrite it"
            )
        diff = _config_diff(existing["config"], dataclasses.asdict(self.config))
        if diff:
            raise ValueError(
                f"{self.ckpt_path} was trained with a different {type(self.config).__name__}:\n  "
                + "\n  ".join(diff)
                + "\nrepeat the original --set options, use another --out folder, or --no-resume to start afresh"
            )
        self.net.load_state_dict(existing["state_dict"])
        self.optimizer.load_state_dict(existing["optimizer"])
        self.scheduler.load_state_dict(existing["scheduler"])
        self.step, self.epochs_done = int(existing["step"]), int(existing["epoch"])
        self.epoch_step = int(existing.get("epoch_step", 0))
        self.history, self.best = list(existing.get("history", [])), existing.get("best")
        self.metrics = existing.get("metrics", {})
        _set_rng_state(existing["rng"])
        self.log(
            f"resuming {self.arch} from {self.ckpt_path}: epoch {self.epochs_done} + {self.epoch_step} steps, step {self.step}"
        )
        if self.epoch_step >= self.steps_per_epoch:  # the training set shrank since; count the epoch as done
            self.epochs_done, self.epoch_step = self.epochs_done + 1, 0

    def checkpoint(self) -> dict:
        ck = make_checkpoint(self.arch, dataclasses.asdict(self.config), self.net.state_dict(), scheme=self.scheme.name)
        ck.update(
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(), epoch=self.epochs_done,
            epoch_step=self.epoch_step, step=self.step, metrics=self.metrics, best=self.best, history=self.history,
            loss=self.loss_name, train_config=dataclasses.asdict(self.cfg), rng=_rng_state(), wflwv_version=__version__,
        )  # fmt: skip
        return ck

    def save(self, best: bool = False) -> None:
        ck = self.checkpoint()
        save_checkpoint(self.ckpt_path, ck)
        if best:
            save_checkpoint(self.best_path, ck)
        summary = {"arch": self.arch, "scheme": self.scheme.name, "loss": self.loss_name,
                   "config": dataclasses.asdict(self.config), "train_config": dataclasses.asdict(self.cfg),
                   "history": self.history, "best": self.best}  # fmt: skip
        _write_metrics(self.out_dir, summary)

    # ---- one epoch
    def run_epoch(self, epoch: int) -> tuple[float, int, bool]:
        """Train until the epoch ends or ``max_steps``; returns ``(summed loss, batches, stop)``."""
        cfg = self.cfg
        if hasattr(self.data.train, "set_epoch"):
            self.data.train.set_epoch(epoch)
        loader = DataLoader(
            self.data.train, batch_size=cfg.batch_size,
            sampler=EpochSampler(self.n_train, cfg.seed, epoch, self.epoch_step * cfg.batch_size),
            drop_last=self.drop_last, num_workers=cfg.workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        self.net.train()
        bar = tqdm(total=self.steps_per_epoch, initial=self.epoch_step, disable=not cfg.progress, leave=False,
                   desc=f"{self.arch} epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)  # fmt: skip
        loss_sum, loss_n, updating = 0.0, 0, False
        try:
            for batch in loader:
                batch = _to_device(batch, self.device)
                loss = self.loss_fn(self.net(imagenet_normalise(batch["image"])), batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged: loss is {loss.item()} at step {self.step + 1} (epoch {epoch + 1}); "
                        "lower --lr or clip gradients (--train-opt grad_clip=1.0), then resume from the last checkpoint"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                updating = True
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.epoch_step += 1
                updating = False
                loss_sum += float(loss.detach())
                loss_n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4g}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
                if cfg.max_steps and self.step >= cfg.max_steps:
                    return loss_sum, loss_n, True
        except KeyboardInterrupt:
            if not updating:
                save_checkpoint(self.ckpt_path, self.checkpoint())
                self.log(f"interrupted: saved {self.ckpt_path} at step {self.step}; run again to resume")
            raise
        finally:
            bar.close()
        return loss_sum, loss_n, False

    def end_epoch(self, epoch: int, loss_sum: float, loss_n: int, seconds: float, stop: bool) -> None:
        """Record the epoch, validate when due, and write the checkpoints and metrics."""
        cfg = self.cfg
        complete = self.epoch_step >= self.steps_per_epoch
        if complete:
            self.epochs_done, self.epoch_step = self.epochs_done + 1, 0
        record = {
            "epoch": epoch + 1, "complete": complete, "step": self.step,
            "train_loss": loss_sum / loss_n if loss_n else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "val": None,
        }  # fmt: skip
        finished = stop or self.epochs_done >= cfg.epochs
        if self.data.val is not None and (finished or (complete and self.epochs_done % cfg.val_every == 0)):
            val_bs = cfg.val_batch_size or cfg.batch_size
            self.metrics = evaluate(
                self.net, self.data.val, self.scheme.name, self.device, val_bs, cfg.fr_threshold, cfg.workers
            )
            record["val"] = self.metrics
        self.history.append(record)
        self.log(f"{self.arch} epoch {epoch + 1}{'' if complete else ' (partial)'}: step {self.step}, "
                 f"train loss {record['train_loss']:.5g}, lr {record['lr']:.3g}")  # fmt: skip
        improved = False
        if record["val"] is not None:
            self.log(format_table(self.metrics, cfg.fr_threshold))
            full = self.metrics.get("full", {}).get("nme", float("nan"))
            if math.isfinite(full) and (self.best is None or full < self.best["nme"]):
                self.best = {"epoch": epoch + 1, "step": self.step, "nme": full, "metrics": self.metrics}
                improved = True
        self.save(best=improved)


def train(
    arch: str,
    config: Any,
    data: str | os.PathLike | TrainData | tuple,
    out_dir: str | os.PathLike,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a registered architecture (:mod:`wflwv.models.archs`).

    Args:
        arch: architecture name.
        config: its config dataclass, a dict of fields, or None for the defaults; ``num_landmarks`` must match
            the scheme of ``train_config`` (None -> set from the scheme).
        data: a WFLW folder (train split augmented, test split for validation), a :class:`TrainData`, or a
            ``(train, val)`` pair of datasets.
        out_dir: where checkpoints and metrics go (created).
        train_config: optimisation settings (:class:`TrainConfig` defaults when None).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (it must be the same architecture,
            config and scheme); False starts afresh and overwrites it.
        log: where to print progress messages (default: ``tqdm.write``).
    Returns:
        a :class:`TrainResult` with the trained network (the last state, not the best).
    """
    cfg = train_config or TrainConfig()
    run = _Trainer(arch, config, data, out_dir, cfg, log or tqdm.write)
    if resume and run.ckpt_path.exists():
        run.resume()
    stop = bool(cfg.max_steps and run.step >= cfg.max_steps)
    if stop:
        run.log(f"nothing to do: {run.step} steps already done (max_steps = {cfg.max_steps})")
    while not stop and run.epochs_done < cfg.epochs:
        epoch, t0 = run.epochs_done, time.time()
        loss_sum, loss_n, stop = run.run_epoch(epoch)
        run.end_epoch(epoch, loss_sum, loss_n, time.time() - t0, stop)
    if run.best is not None:
        run.log(f"best full-set NME {run.best['nme']:.3f}% at epoch {run.best['epoch']} ({run.best_path})")
    return TrainResult(
        net=run.net, config=run.config, out_dir=run.out_dir, checkpoint=run.ckpt_path,
        best_checkpoint=run.best_path if run.best_path.exists() else None,
        epoch=run.epochs_done, step=run.step, history=run.history, best=run.best,
    )  # fmt: skip
