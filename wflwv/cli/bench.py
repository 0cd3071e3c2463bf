"""``wflwv bench``: score a model on NME / NMF per clip and per split, optionally with temporal filters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click

from wflwv.benchmark.cluster import ClusterError, import_ray
from wflwv.benchmark.engines import RayEngine
from wflwv.benchmark.harness import DEFAULT_FRAME_BATCH, PRECISIONS, BenchError, RunLockedError, run_benchmark
from wflwv.cli.common import BATCH_VIDEOS, demo_data, parse_kv
from wflwv.filters import parse_filter_options
from wflwv.models import check_model_name, create_model
from wflwv.protocol.floor import floor_dominates, format_floor
from wflwv.protocol.layout import DatasetError

__all__ = ["bench"]


def _default_out(model: str, args: dict[str, Any], data: str, precision: str = "fp32", exact: bool = True) -> Path:
    key = [model, args, str(Path(data).resolve())] + ([precision] if precision != "fp32" else [])
    key += [] if exact else ["batched"]
    tag = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{model}-{tag}"


def _print_summary(summary: dict[str, Any], out: Path, show: list[str] | None = None) -> None:
    """The per-split table of the result sets ``show`` (default: all), labels never cut, and a note on the sets
    of earlier calls that the folder holds but the table leaves out."""
    labels = [label for label in summary["sets"] if show is None or label in show]
    width = max([len("result set")] + [len(label) for label in labels])
    header = (
        f"{'result set':<{width}} {'split':<5} {'videos':>6} {'failed':>6} {'NME %':>8} {'NMF':>9} {'FR@0.1':>7} "
        f"{'AUC@0.1':>8}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for label in labels:
        for split, agg in summary["sets"][label]["splits"].items():

            def f(key, fmt, agg=agg):
                v = agg.get(key)
                return format(v, fmt) if isinstance(v, (int, float)) and v == v else "-"

            click.echo(
                f"{label:<{width}} {split:<5} {agg['videos']:>6} {agg['failed']:>6} {f('nme', '8.4f'):>8} "
                f"{f('nmf', '9.3f'):>9} {f('fr_0.1', '7.4f'):>7} {f('auc_0.1', '8.4f'):>8}"
            )
    hidden = [label for label in summary["sets"] if label not in labels]
    if hidden:
        click.echo(
            f"({len(hidden)} filter setting{'s' * (len(hidden) > 1)} from earlier calls into {out} not shown: "
            f"{', '.join(hidden[:3])}{', ...' if len(hidden) > 3 else ''}; --all-sets shows them)"
        )
    stats = {
        k[len("stat_") : -len("_mean")]: v
        for k, v in summary["sets"]["none"]["splits"]["all"].items()
        if k.startswith("stat_") and k.endswith("_mean") and v is not None
    }
    if stats:
        click.echo("model statistics, mean per frame: " + ", ".join(f"{k} {v:.3g}" for k, v in stats.items()))
    floor = summary.get("label_floor")
    if floor:
        click.echo(format_floor(floor))
        near = [lb for lb in labels if floor_dominates(summary["sets"][lb]["splits"]["all"].get("nmf"), floor)]
        if near:
            click.echo(
                f"  NMF within 2x the floor ({', '.join(near)}): the labels' own flicker is a large part of it (docs/label-floor.md)"
            )
    click.echo(f"\nresults: {out}/per_video.csv, {out}/per_video.parquet, {out}/summary.json")


def _engine(workers, address, cpus, gpus) -> RayEngine | None:
    """The Ray engine the options ask for, or None (in-process)."""
    if workers is None and address is None:
        for value, name in ((cpus, "--cpus-per-worker"), (gpus, "--gpus-per-worker")):
            if value is not None:
                raise click.BadParameter("only with --workers or --ray-address", param_hint=name)
        return None
    try:
        import_ray()  # a clear message before any work when Ray is missing
        return RayEngine(workers, address, 1.0 if cpus is None else cpus, 0.0 if gpus is None else gpus)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("bench")
@click.option("--model", "model_name", required=True, help="Registered model name (see `wflwv models`).")
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Argument for the model factory; repeatable (e.g. weights=ckpt.pt).",
)
@click.option("--rwr", is_flag=True, help="Recurrence without Recurrence: same as --model-arg rwr=true (LDEQ).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset folder in the official WFLW-V layout. Default: the demo dataset (fetched and built on first use).",
)
@click.option(
    "--split", default="all", show_default=True, help="hard, easy, all, or a file with one video ID per line."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: runs/<model>-<hash of model, args and data>). Re-running into it resumes.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-videos",
    default="auto",
    show_default=True,
    type=BATCH_VIDEOS,
    help="Clips processed together (frame t of each in one batch); does not change results in exact mode. auto: on "
    "a CPU two per thread (at most 8), their samples spread over the cores; on a GPU 1.",
)
@click.option(
    "--frame-batch",
    default=DEFAULT_FRAME_BATCH,
    show_default=True,
    type=click.IntRange(min=1),
    help="Frames per model call for per-frame (stateless) models; does not change results. Stateful models "
    "(LDEQ + RwR) always take one frame per clip per call.",
)
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default="fp32",
    show_default=True,
    help="Run the model under torch.autocast: bf16 (CUDA, or CPUs with native bf16), fp16 (CUDA). Changes the "
    "numbers (a different run); benchmarks/throughput.py prints by how much.",
)
@click.option(
    "--exact/--batched",
    default=True,
    show_default=True,
    help="--exact: on a CPU, every frame of a network is computed alone on one-threaded kernels, frames spread "
    "over the cores, so no number depends on --batch-videos, --frame-batch, --workers or the thread count. "
    "--batched: one call per batch on torch's threads (faster at large frame batches; numbers equal up to float "
    "rounding; a different run).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Run the model on N Ray workers (a local Ray unless --ray-address). Needs pip install 'wflwv[ray]'.",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="Run on an existing Ray cluster: auto (the one `ray start` made here), HOST:PORT or ray://HOST:PORT. "
    "The dataset must be at the same path on every node (docs/cluster.md).",
)
@click.option(
    "--cpus-per-worker",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Ray CPUs per worker, also its torch threads  [default: 1].",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="Ray GPUs per worker (0.5 = two workers share a GPU)  [default: 0].",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="SPEC",
    help="Temporal filter on the predictions, e.g. one-euro:min_cutoff=1.0,beta=0.1 or a sweep ema:alpha=0.2|0.4; repeatable.",
)
@click.option(
    "--norm",
    type=click.Choice(["inter-ocular", "inter-pupil", "box-diagonal"]),
    default="inter-ocular",
    show_default=True,
    help="NME normaliser.",
)
@click.option("--overwrite", is_flag=True, help="Discard results of a different configuration found in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--all-sets",
    is_flag=True,
    help="Print every result set in --out, including filter settings of earlier calls (default: this call's).",
)
def bench(
    model_name,
    model_args,
    rwr,
    data,
    split,
    out,
    device,
    batch_videos,
    frame_batch,
    precision,
    exact,
    workers,
    ray_address,
    cpus_per_worker,
    gpus_per_worker,
    filters,
    norm,
    overwrite,
    quiet,
    all_sets,
):
    """Score a model on NME and NMF, per clip and per split (hard / easy / all).

    Writes per-video results (CSV and parquet), the predictions, and summary.json with provenance to --out.
    With --workers / --ray-address the model runs on Ray workers; the results are the same.
    """
    engine = _engine(workers, ray_address, cpus_per_worker, gpus_per_worker)
    try:
        check_model_name(model_name)  # before anything is fetched or built
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--model") from None
    args = parse_kv(model_args)
    if rwr:
        args["rwr"] = True
    try:
        settings = parse_filter_options(filters) if filters else []
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    if data is None:
        data = demo_data()
    if out is None:
        out = _default_out(model_name, args, str(data), precision, exact)
    try:
        model = create_model(model_name, **args)
    except (KeyError, TypeError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)) from None
    try:
        summary = run_benchmark(
            model,
            data,
            out,
            split=split,
            device=device,
            batch_videos=batch_videos,
            frame_batch=frame_batch,
            precision=precision,
            exact=exact,
            filters=settings,
            norm=norm,
            model_spec={"name": model_name, "args": args},
            progress=not quiet,
            overwrite=overwrite,
            engine=engine,
        )
    except (BenchError, DatasetError, RunLockedError, ClusterError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(summary, out, show=None if all_sets else ["none"] + [st.label for st in settings])
    failed = summary["sets"]["none"]["splits"]["all"]["failed"]
    if failed:
        click.echo(f"{failed} clip(s) failed; their reasons are in the 'error' column of per_video.csv", err=True)
