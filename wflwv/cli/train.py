"""``wflwv train``: train a landmark network on WFLW still images (see :func:`wflwv.training.train`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from wflwv.config import apply_overrides
from wflwv.models.archs import ARCHS, make_config
from wflwv.schemes import get_scheme
from wflwv.training import AugmentConfig, TrainConfig
from wflwv.training import train as run_train

__all__ = ["train"]


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


@click.command("train")
@click.option("--arch", required=True, help=f"Architecture to train: {', '.join(sorted(ARCHS))}.")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="WFLW folder (holding WFLW_annotations/ and WFLW_images/, or the list_98pt_rect_attr_*.txt files directly).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: checkpoint.pt (latest, resumable), best.pt, metrics.json, metrics.csv.",
)
@click.option("--epochs", type=int, default=60, show_default=True, help="Passes over the training set.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Images per optimizer step.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw"]), default="adam", show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step", "constant"]),
    default="cosine",
    show_default=True,
    help="Learning-rate schedule over all epochs (step: x0.1 at 50% and 75%).",
)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if available), cpu, cuda or cuda:N.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a field of the architecture's config, e.g. --set cell_base_width=64 (repeatable).",
)
@click.option(
    "--loss",
    type=click.Choice(["keypoint_mse", "heatmap_mse", "awing"]),
    default=None,
    help="Loss (default: keypoint_mse for ldeq, heatmap_mse for heatmap models).",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from OUT/checkpoint.pt if it exists (--no-resume starts afresh and overwrites it).",
)
@click.option(
    "--max-steps",
    type=int,
    default=0,
    show_default=True,
    help="Stop after this many optimizer steps in total, across resumes (0 = run all epochs).",
)
@click.option("--workers", type=int, default=None, help="Data-loader worker processes [default: min(4, CPUs - 1)].")
@click.option(
    "--scheme",
    type=click.Choice(["wflw98", "ibug68"]),
    default="wflw98",
    show_default=True,
    help="Landmark scheme to train (ibug68 converts the WFLW points).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation, order and augmentation.")
@click.option("--val-every", type=int, default=1, show_default=True, help="Validate every N epochs (and at the end).")
@click.option(
    "--aug",
    "aug_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an augmentation parameter, e.g. --aug rotation_deg=20 (repeatable).",
)
@click.option("--no-augment", is_flag=True, help="Train on plain crops (no augmentation).")
@click.option(
    "--train-opt",
    "train_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any other training setting, e.g. --train-opt grad_clip=1.0 --train-opt warmup_steps=500.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def train(
    arch,
    data_dir,
    out_dir,
    epochs,
    batch_size,
    lr,
    optimizer,
    weight_decay,
    schedule,
    device,
    overrides,
    loss,
    resume,
    max_steps,
    workers,
    scheme,
    seed,
    val_every,
    aug_overrides,
    no_augment,
    train_overrides,
    progress,
):
    """Train a landmark network on WFLW and validate it on the WFLW test subsets after every epoch.

    Checkpoints are written atomically after every epoch; running the same command again resumes.
    """
    try:
        augment = AugmentConfig.disabled() if no_augment else AugmentConfig()
        augment = apply_overrides(augment, aug_overrides)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            weight_decay=weight_decay,
            schedule=schedule,
            max_steps=max_steps,
            loss=loss or "",
            scheme=scheme,
            device=device,
            workers=_default_workers() if workers is None else workers,
            seed=seed,
            val_every=val_every,
            progress=progress,
            augment=augment,
        )
        cfg = apply_overrides(cfg, train_overrides)
        config = make_config(arch, overrides, num_landmarks=get_scheme(scheme).num_points)
    except (ValueError, ImportError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        result = run_train(arch, config, data_dir, out_dir, cfg, resume=resume, log=click.echo)
    except (ValueError, ImportError, FileNotFoundError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"done: {result.epoch} epochs, {result.step} steps; latest checkpoint {result.checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint {result.best_checkpoint} (full-set NME {result.best['nme']:.3f}%)")
