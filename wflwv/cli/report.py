"""``wflwv report``: figures, tables, trajectories, an overlay video and an HTML page from bench run folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from wflwv.reports import ReportError, build_report, parse_labels

__all__ = ["report"]


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Report folder (index.html, figures, tables, videos). The default sits in the current folder, beside the "
    "runs/ folder that `wflwv bench` writes into by default; files in it are replaced.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="RUN=NAME",
    help="Display name of a run (RUN: its folder as given, or its folder name); repeatable.",
)
@click.option(
    "--baseline",
    default=None,
    metavar="NAME",
    help="Row the tables compare against: a run label, or 'LABEL + FILTER' (default: the first run).",
)
@click.option(
    "--video",
    "videos",
    multiple=True,
    metavar="ID",
    help="Clip for the trajectory plot and overlay video; repeatable (default: the clip whose NMF differs most between the runs, reference models such as oracle and mean-shape left out).",
)
@click.option(
    "--landmark",
    "landmarks",
    multiple=True,
    type=int,
    metavar="L",
    help="Landmark index for the trajectory plot; repeatable (default: the most flickering one).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset folder for ground truth and videos (default: the one recorded in the runs).",
)
@click.option("--no-video", is_flag=True, help="Skip the overlay video.")
@click.option("--quiet", is_flag=True, help="No progress messages (warnings are still shown).")
def report(run_dirs, out, labels, baseline, videos, landmarks, data, no_video, quiet):
    """Compare bench runs: NME-vs-NMF figures, tables, flicker maps, trajectories, an overlay video and index.html.

    RUN_DIRS are `wflwv bench` output folders; nothing is re-run. Without --out the report goes to ./report/
    (so `wflwv report runs/*` never picks it up as a run).
    """

    def log(msg: str) -> None:
        if msg.startswith("warning:"):
            click.secho(msg, err=True, fg="yellow")
        elif not quiet:
            click.echo(msg, err=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # matplotlib layout chatter; our own warnings go through log
            result = build_report(
                run_dirs,
                out,
                labels=parse_labels(labels),
                baseline=baseline,
                videos=videos,
                landmarks=landmarks,
                data=data,
                overlay=not no_video,
                log=log,
            )
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {result.index}")
