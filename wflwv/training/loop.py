"""The training loop shared by every architecture, with resumable checkpoints and WFLW validation.

:func:`train` builds the network from :data:`wflwv.training.archs.ARCHS`, trains it on augmented WFLW crops,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wflwv.models.api import imagenet_normalise, resolve_device
from wflwv.schemes import get_scheme
from wflwv.training.augment import AugmentConfig

__all__ = [
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "METRICS_JSON",
    "METRICS_CSV",
    "TABLE_COLUMNS",
    "train",
    "evaluate",
    "predict",
    "format_table",
    "resolve_device",
    "load_training_checkpoint",
    "load_trained_net",
    "EpochSampler",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
#: subset -> column title, in the order of the paper's tables 1 and 2
TABLE_COLUMNS: dict[str, str] = {
    "full": "Full",
    "pose": "Pose",
    "expression": "Exp.",
    "illumination": "Illum.",
    "makeup": "Mu.",
    "occlusion": "Occ.",
    "blur": "Blur",
}


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
    crop coordinates (as :class:`wflwv.dataset.wflw.WFLWStillDataset` yields). A ``set_epoch(e)`` method, if
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
        "numpy": [np_state[0], np_state[1].astype(np.int64).tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
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


def load_training_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                             resumable: bool = False) -> dict:
    """Read a checkpoint written by :func:`train`.

    Loading goes through :func:`wflwv.models.checkpoints.load_checkpoint` (``weights_only=True`` with its
    allow-list); this only adds the check that the file is a toolkit checkpoint with the training keys.

    Args:
        path: ``checkpoint.pt`` / ``best.pt`` of a training run.
        map_location: where tensors go.
        resumable: also require what resuming needs (optimizer, scheduler, step counter, RNG states).
    Returns:
        the checkpoint dict (with the ``"format"`` key the loader adds).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): unreadable, unsafe, or not a wflwv training checkpoint.
    """
    from wflwv.models.checkpoints import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path, map_location=map_location)
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


def load_trained_net(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a training checkpoint, load its weights, move it to ``device`` in eval mode.

    Returns:
        ``(net, checkpoint)``.
    """
    from wflwv.models.checkpoints import load_state_dict_strict
    from wflwv.training.archs import build_net

    ckpt = load_training_checkpoint(path)
    net, _, _ = build_net(ckpt["arch"], ckpt["config"])
    load_state_dict_strict(net, ckpt["state_dict"], source=str(path))
    return net.to(resolve_device(device)).eval(), ckpt


# --------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(net: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 16,
            workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net`` (eval mode) over ``dataset``.

    Returns:
        ``(pred, gt)``: (N, K, 2) float64 crop pixels each (unit keypoints x 256).
    """
    from wflwv.models.api import CROP_SIZE

    was_training = net.training
    net.eval()
    preds, gts = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    try:
        for batch in loader:
            out = net(imagenet_normalise(batch["image"].to(device)))
            kp = out["keypoints"] if isinstance(out, dict) else out
            preds.append(kp.detach().to("cpu", torch.float64).numpy() * CROP_SIZE)
            gts.append(batch["keypoints"].to(torch.float64).numpy() * CROP_SIZE)
    finally:
        net.train(was_training)
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    if pred.shape != gt.shape:
        raise ValueError(f"the network predicts keypoints of shape {pred.shape[1:]} but the data has {gt.shape[1:]}")
    return pred, gt


def evaluate(
    net: torch.nn.Module,
    dataset: Dataset,
    scheme: str = "wflw98",
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    threshold: float = 0.1,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """NME / FR / AUC of ``net`` on ``dataset``, per WFLW subset.

    NMEs use the inter-ocular normaliser of ``scheme`` (crop-pixel errors; the crop is a similarity of the
    image, so this equals the NME in image pixels).

    Returns:
        subset -> ``{"nme": percent, "fr": percent, "auc": fraction, "count": n}`` for ``"full"`` and every
        subset of ``dataset.subset_masks()`` (NaN values for an empty subset).
    """
    from wflwv.benchmark.metrics import ced_fr_auc, nme_per_frame

    device = resolve_device(device)
    pred, gt = predict(net, dataset, device, batch_size, workers)
    nmes = nme_per_frame(pred, gt, get_scheme(scheme))
    masks = dataset.subset_masks() if hasattr(dataset, "subset_masks") else {"full": np.ones(len(nmes), bool)}
    out = {}
    for name, mask in masks.items():
        sel = nmes[np.asarray(mask, dtype=bool)]
        if sel.size == 0:
            out[name] = {"nme": float("nan"), "fr": float("nan"), "auc": float("nan"), "count": 0}
            continue
        fr, auc = ced_fr_auc(sel, threshold)
        out[name] = {"nme": float(sel.mean() * 100), "fr": fr * 100, "auc": auc, "count": int(sel.size)}
    return out


def format_table(metrics: dict[str, dict[str, float]], threshold: float = 0.1) -> str:
    """Metrics (as :func:`evaluate` returns) as a text table: rows NME (%), FR (%), AUC; columns subsets."""
    cols = [s for s in TABLE_COLUMNS if s in metrics] + [s for s in metrics if s not in TABLE_COLUMNS]
    x = f"{threshold * 100:g}"
    head = ["Metric"] + [TABLE_COLUMNS.get(s, s) for s in cols]
    rows = [head]
    for key, label, fmt in (("nme", "NME (%)", "{:.2f}"), ("fr", f"FR_{x} (%)", "{:.2f}"), ("auc", f"AUC_{x}", "{:.3f}")):
        row = [label]
        for s in cols:
            v = metrics[s].get(key, float("nan"))
            row.append(fmt.format(v) if v is not None and math.isfinite(v) else "-")
        rows.append(row)
    row = ["Images"] + [str(int(metrics[s].get("count", 0))) for s in cols]
    rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def _write_metrics(out_dir: Path, summary: dict) -> None:
    from wflwv.io import atomic_path, write_json

    write_json(out_dir / METRICS_JSON, summary)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "step", "complete", "train_loss", "lr", "subset", "nme", "fr", "auc", "count"])
    for rec in summary["history"]:
        for subset, m in (rec.get("val") or {}).items():
            w.writerow([rec["epoch"], rec["step"], int(rec["complete"]), rec["train_loss"], rec["lr"], subset,
                        m["nme"], m["fr"], m["auc"], m["count"]])
    with atomic_path(out_dir / METRICS_CSV) as tmp:
        tmp.write_text(buf.getvalue())


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _config_diff(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in keys
            if _canonical(saved.get(k)) != _canonical(now.get(k))]


# --------------------------------------------------------------------------------------------------
# the loop


def _as_train_data(data, cfg: TrainConfig) -> TrainData:
    if isinstance(data, TrainData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return TrainData(train=data[0], val=data[1])
    if isinstance(data, (str, os.PathLike)):
        from wflwv.dataset.wflw import WFLWStillDataset

        return TrainData(
            train=WFLWStillDataset(data, "train", scheme=cfg.scheme, augment=cfg.augment, seed=cfg.seed),
            val=WFLWStillDataset(data, "test", scheme=cfg.scheme, augment=None),
        )
    raise TypeError(f"data must be a WFLW folder, a TrainData or a (train, val) pair of datasets; got {type(data).__name__}")


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
    """Train architecture ``arch`` (a key of :data:`wflwv.training.archs.ARCHS`).

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
    from tqdm.auto import tqdm

    import wflwv
    from wflwv.models.checkpoints import save_checkpoint
    from wflwv.training.archs import resolve_arch
    from wflwv.training.losses import make_loss

    cfg = train_config or TrainConfig()
    log = log or tqdm.write
    scheme = get_scheme(cfg.scheme)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path = out_dir / CHECKPOINT_NAME, out_dir / BEST_NAME
    device = resolve_device(cfg.device)

    spec = resolve_arch(arch)
    if config is None:
        config = dataclasses.replace(spec.config_cls(), num_landmarks=scheme.num_points)
    elif isinstance(config, dict):
        from wflwv.training.archs import config_from_dict

        config = config_from_dict(spec.config_cls, config)
    elif not isinstance(config, spec.config_cls):
        raise TypeError(f"architecture {arch!r} expects a {spec.config_cls.__name__}, got {type(config).__name__}")
    if config.num_landmarks != scheme.num_points:
        raise ValueError(
            f"config.num_landmarks = {config.num_landmarks} but scheme {scheme.name} has {scheme.num_points} "
            f"points; set num_landmarks={scheme.num_points} or choose the matching scheme"
        )
    loss_name = cfg.loss or spec.default_loss
    loss_kwargs = {"sigma": cfg.heatmap_sigma} if loss_name in ("heatmap_mse", "awing") else {}
    if loss_name == "heatmap_mse":
        loss_kwargs["foreground_weight"] = cfg.heatmap_foreground_weight
    loss_fn = make_loss(loss_name, **loss_kwargs)
    data = _as_train_data(data, cfg)
    n_train = len(data.train)
    if n_train == 0:
        raise ValueError("the training set is empty")
    drop_last = n_train > cfg.batch_size
    steps_per_epoch = n_train // cfg.batch_size if drop_last else 1
    total_steps = cfg.epochs * steps_per_epoch

    existing = load_training_checkpoint(ckpt_path, resumable=True) if (resume and ckpt_path.exists()) else None
    if existing is not None:
        if existing["arch"] != arch or existing["scheme"] != scheme.name:
            raise ValueError(
                f"{ckpt_path} holds a {existing['arch']} / {existing['scheme']} run, not {arch} / {scheme.name}; "
                "use another --out folder or --no-resume to overwrite it"
            )
        diff = _config_diff(existing["config"], dataclasses.asdict(config))
        if diff:
            raise ValueError(
                f"{ckpt_path} was trained with a different {type(config).__name__}:\n  " + "\n  ".join(diff)
                + "\nrepeat the original --set options, use another --out folder, or --no-resume to start afresh"
            )
    torch.manual_seed(cfg.seed)
    net = spec.net_cls(config).to(device)
    optimizer = _make_optimizer(net.parameters(), cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg, total_steps))

    step, epochs_done, epoch_step = 0, 0, 0
    history: list[dict] = []
    best: dict | None = None
    metrics: dict = {}
    if existing is not None:
        net.load_state_dict(existing["state_dict"])
        optimizer.load_state_dict(existing["optimizer"])
        scheduler.load_state_dict(existing["scheduler"])
        step, epochs_done = int(existing["step"]), int(existing["epoch"])
        epoch_step = int(existing.get("epoch_step", 0))
        history, best = list(existing.get("history", [])), existing.get("best")
        metrics = existing.get("metrics", {})
        _set_rng_state(existing["rng"])
        log(f"resuming {arch} from {ckpt_path}: epoch {epochs_done} + {epoch_step} steps, step {step}")
        if epoch_step >= steps_per_epoch:  # the training set shrank since; count the epoch as done
            epochs_done, epoch_step = epochs_done + 1, 0

    def checkpoint() -> dict:
        return {
            "arch": arch,
            "config": dataclasses.asdict(config),
            "scheme": scheme.name,
            "state_dict": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epochs_done,
            "epoch_step": epoch_step,
            "step": step,
            "metrics": metrics,
            "best": best,
            "history": history,
            "loss": loss_name,
            "train_config": dataclasses.asdict(cfg),
            "rng": _rng_state(),
            "wflwv_version": wflwv.__version__,
        }

    def summary() -> dict:
        return {"arch": arch, "scheme": scheme.name, "loss": loss_name, "config": dataclasses.asdict(config),
                "train_config": dataclasses.asdict(cfg), "history": history, "best": best}

    val_bs = cfg.val_batch_size or cfg.batch_size
    stop = bool(cfg.max_steps and step >= cfg.max_steps)
    if stop:
        log(f"nothing to do: {step} steps already done (max_steps = {cfg.max_steps})")
    while not stop and epochs_done < cfg.epochs:
        epoch = epochs_done
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        skip = epoch_step * cfg.batch_size
        loader = DataLoader(
            data.train, batch_size=cfg.batch_size, sampler=EpochSampler(n_train, cfg.seed, epoch, skip),
            drop_last=drop_last, num_workers=cfg.workers, pin_memory=device.type == "cuda",
        )
        net.train()
        bar = tqdm(total=steps_per_epoch, initial=epoch_step, disable=not cfg.progress, leave=False,
                   desc=f"{arch} epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
        loss_sum, loss_n, t0 = 0.0, 0, time.time()
        updating = False
        try:
            for batch in loader:
                batch = _to_device(batch, device)
                output = net(imagenet_normalise(batch["image"]))
                loss = loss_fn(output, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged: loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}); "
                        "lower --lr or clip gradients (--train-opt grad_clip=1.0), then resume from the last checkpoint"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                updating = True
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                epoch_step += 1
                updating = False
                loss_sum += float(loss.detach())
                loss_n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4g}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
                if cfg.max_steps and step >= cfg.max_steps:
                    stop = True
                    break
        except KeyboardInterrupt:
            bar.close()
            if not updating:
                save_checkpoint(ckpt_path, checkpoint())
                log(f"interrupted: saved {ckpt_path} at step {step}; run again to resume")
            raise
        bar.close()
        complete = epoch_step >= steps_per_epoch
        if complete:
            epochs_done, epoch_step = epochs_done + 1, 0
        record = {
            "epoch": epoch + 1,
            "complete": complete,
            "step": step,
            "train_loss": loss_sum / loss_n if loss_n else float("nan"),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.time() - t0,
            "val": None,
        }
        finished = stop or epochs_done >= cfg.epochs
        if data.val is not None and (finished or (complete and epochs_done % cfg.val_every == 0)):
            metrics = evaluate(net, data.val, scheme.name, device, val_bs, cfg.fr_threshold, cfg.workers)
            record["val"] = metrics
        history.append(record)
        log(f"{arch} epoch {epoch + 1}{'' if complete else ' (partial)'}: step {step}, "
            f"train loss {record['train_loss']:.5g}, lr {record['lr']:.3g}")
        if record["val"] is not None:
            log(format_table(metrics, cfg.fr_threshold))
            full = metrics.get("full", {}).get("nme", float("nan"))
            if math.isfinite(full) and (best is None or full < best["nme"]):
                best = {"epoch": epoch + 1, "step": step, "nme": full, "metrics": metrics}
                ckpt = checkpoint()
                save_checkpoint(ckpt_path, ckpt)
                save_checkpoint(best_path, ckpt)
                _write_metrics(out_dir, summary())
                continue
        save_checkpoint(ckpt_path, checkpoint())
        _write_metrics(out_dir, summary())

    if best is not None:
        log(f"best full-set NME {best['nme']:.3f}% at epoch {best['epoch']} ({best_path})")
    return TrainResult(
        net=net, config=config, out_dir=out_dir, checkpoint=ckpt_path,
        best_checkpoint=best_path if best_path.exists() else None,
        epoch=epochs_done, step=step, history=history, best=best,
    )
