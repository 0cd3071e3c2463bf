"""``wflwv build``: make a dataset in the official WFLW-V layout from YouTube ranges, search results or local videos."""

from __future__ import annotations

from pathlib import Path

import click

from wflwv.build.acquire import DownloadOptions
from wflwv.build.config import DEFAULT_COMBINE, DEFAULT_MEMBERS, DEFAULT_TTA
from wflwv.build.oracle import parse_member
from wflwv.build.pipeline import BuildConfig, BuildError, build_dataset, format_summary
from wflwv.cli.build_modes import build_mode_options, run_build_mode
from wflwv.io import FolderLockedError
from wflwv.models import check_model_name

__all__ = ["build", "parse_rate"]

#: options of the command that configure downloads (:class:`~wflwv.build.acquire.DownloadOptions`)
_DOWNLOAD_OPTIONS = ("rate_limit", "sleep", "retries", "max_height", "search_seconds", "url_template")


def parse_rate(text: str | None) -> float | None:
    """``"2M"``, ``"500K"``, ``"1.5M"`` or plain bytes per second -> bytes per second (None for empty/``0``)."""
    if text is None or str(text).strip() in ("", "0", "none"):
        return None
    t = str(text).strip().upper().removesuffix("/S").removesuffix("B")
    mult = {"K": 1024.0, "M": 1024.0**2, "G": 1024.0**3}
    try:
        if t and t[-1] in mult:
            value = float(t[:-1]) * mult[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a rate; use bytes per second such as 500K or 2M", param_hint="--rate-limit"
        ) from None
    if value <= 0:
        raise click.BadParameter("the rate limit must be positive", param_hint="--rate-limit")
    return value


@click.command("build")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to write (official WFLW-V layout; required unless --audit). Re-running into it resumes.",
)
@click.option(
    "--ids",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File of 'VIDEO_ID START END' lines (inclusive 0-based frames, as WFLW-V's download_ranges.txt); 'VIDEO_ID' alone = whole video.",
)
@click.option(
    "--search",
    "search",
    multiple=True,
    metavar="QUERY",
    help="YouTube search restricted to Creative Commons; every result's licence is checked again. Repeatable.",
)
@click.option(
    "--max-results",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Search results examined per query.",
)
@click.option(
    "--local",
    "local",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Local video file or folder (searched recursively). Repeatable.",
)
@click.option(
    "--window",
    default=5.0,
    show_default=True,
    type=float,
    help="Clip length in seconds (ID ranges keep their own length).",
)
@click.option(
    "--max-clips-per-video",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="At most this many clips from one video (0 = no limit; 1 names clips by the video ID).",
)
@click.option(
    "--detector",
    default="hog",
    show_default=True,
    type=click.Choice(["hog", "haar", "haar+hog", "sidecar"]),
    help="Face detector: dlib HOG, OpenCV Haar (frontal + profile), both, or boxes from VIDEO.boxes.npy beside each local video.",
)
@click.option(
    "--cut-threshold",
    default=0.3,
    show_default=True,
    type=float,
    help="Shot cut when the hue-saturation histogram distance (Bhattacharyya, 0..1) between consecutive frames exceeds this (and 3x the recent median).",
)
@click.option(
    "--min-face",
    default=40.0,
    show_default=True,
    type=float,
    help="Smallest face (median side of the face square, pixels).",
)
@click.option("--oracle", "oracle", multiple=True, metavar="NAME[:WEIGHTS]", help="Oracle member (same as --member).")
@click.option(
    "--member",
    "members",
    multiple=True,
    metavar="NAME[:WEIGHTS]",
    help=f"Oracle member: any registered model, optionally with a weights file. Repeatable. Default: {'+'.join(DEFAULT_MEMBERS)}.",
)
@click.option(
    "--tta",
    default=DEFAULT_TTA,
    show_default=True,
    help="Test-time augmentations of the oracle: flip, shift[:PIXELS], scale[:A/B], rotate[:DEG], "
    "jitter:N[/shift=S/scale=Z/rotate=R/blur=B/flip] (N sub-pixel perturbations); 'none' for none.",
)
@click.option(
    "--combine",
    type=click.Choice(["heatmap", "robust", "mean"]),
    default=DEFAULT_COMBINE,
    show_default=True,
    help="How the oracle's votes become a label: heatmap averaging, a robust mean (per member, then across members with gross outliers dropped), or the plain mean.",
)
@click.option(
    "--passes",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Oracle passes; every pass after the first crops with boxes re-derived from the previous landmarks.",
)
@click.option(
    "--hard-k",
    type=click.IntRange(min=0),
    default=None,
    help="Clips with the highest oracle variance put in the hard split (default: half of the clips).",
)
@click.option(
    "--easy-k",
    type=click.IntRange(min=0),
    default=None,
    help="Clips with the lowest oracle variance put in the easy split (default: the other half).",
)
@click.option("--keep-unselected", is_flag=True, help="Also publish labelled clips that are in neither split.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Parallel workers for the scan and label stages: Ray tasks on a local Ray when Ray is installed, else "
    "processes (see --engine). The dataset written is the same.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "processes", "ray"]),
    default="auto",
    show_default=True,
    help="Where the scan and label stages run: auto = Ray with --ray-address or --workers > 1 when installed, else "
    "local processes.",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="Scan and label on an existing Ray cluster (auto, HOST:PORT, ray://HOST:PORT); OUT, --work and the "
    "sources must be at the same path on every node (docs/cluster.md).",
)
@click.option(
    "--cpus-per-worker",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Ray CPUs per task (and its torch threads).",
)
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Ray GPUs per labelling task (with --device cuda).",
)
@click.option("--device", default="cpu", show_default=True, help="Device of the oracle's torch members.")
@click.option("--rate-limit", default=None, help="Maximum download speed, bytes per second (e.g. 500K, 2M).")
@click.option(
    "--sleep",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between two videos' downloads.",
)
@click.option(
    "--retries",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Attempts per video for network errors (exponential back-off).",
)
@click.option(
    "--max-height",
    default=720,
    show_default=True,
    type=click.IntRange(min=144),
    help="Highest video resolution downloaded.",
)
@click.option(
    "--search-seconds",
    default=300.0,
    show_default=True,
    type=float,
    help="How much of a whole video is downloaded (search results, ID-only lines).",
)
@click.option(
    "--url-template",
    default="https://www.youtube.com/watch?v={id}",
    show_default=True,
    help="URL of a video ID (for a mirror or a test server).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Retry videos that failed permanently (private, removed) in an earlier run."
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Working folder for downloads and intermediate results (default: OUT/.build).",
)
@click.option(
    "--previews",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Overlay PNGs written to OUT/previews for this many clips of each split.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@build_mode_options
def build(**opts):
    """Build a WFLW-V-style dataset from YouTube clip ranges, Creative Commons search results or local videos.

    Stages: acquire -> scan (shot cuts, face detection and tracking, single-face windows) -> label (oracle ensemble
    with test-time augmentation, boxes re-derived from its landmarks) -> split by oracle variance (hard / easy) ->
    write the official layout, manifest.csv / manifest.parquet and build.json. Every stage resumes where an
    interrupted run stopped.

    \b
    Examples:
      wflwv build --out data/mine --local videos/
      wflwv build --out data/wflwv --ids download_ranges.txt --rate-limit 2M --workers 2
      wflwv build --out /shared/wflwv --ids download_ranges.txt --ray-address auto --device cuda --gpus-per-worker 1
      wflwv build --out data/cc --search "interview" --max-results 50 --hard-k 10 --easy-k 10
      wflwv build --out data/exact --stills faces/ --clips-per-still 2 --motion static --motion natural
      wflwv build --audit data/mine

    After labelling, a few frames are moved by known warps and labelled again to measure the oracle's own flicker
    (the label floor, in build.json and dataset.json). --stills makes clips with exact labels from labelled still
    images (images with .pts files, a WFLW list, or --labels oracle); --audit measures the floor of a dataset.
    """
    if run_build_mode(opts):
        return
    quiet = opts.pop("quiet")
    for spec in list(opts["oracle"]) + list(opts["members"]):  # before anything is downloaded, scanned or written
        try:
            check_model_name(parse_member(spec)[0])
        except (KeyError, ValueError) as exc:
            raise click.BadParameter(str(exc.args[0] if exc.args else exc), param_hint="--member") from None
    if "{id}" not in opts["url_template"]:
        raise click.BadParameter("must contain {id}", param_hint="--url-template")
    download = {k: opts.pop(k) for k in _DOWNLOAD_OPTIONS}
    download["rate_limit"] = parse_rate(download["rate_limit"])
    oracle = opts.pop("oracle")
    opts.update(
        search=list(opts["search"]),
        local=list(opts["local"]),
        members=list(oracle) + list(opts["members"]) or list(DEFAULT_MEMBERS),
        tta="" if opts["tta"].strip().lower() == "none" else opts["tta"],
    )
    config = BuildConfig(**opts, download=DownloadOptions(**download), progress=not quiet)
    try:
        summary = build_dataset(config, log=None if quiet else (lambda m: click.echo(m, err=True)))
    except (BuildError, ValueError, FileNotFoundError, KeyError, RuntimeError, FolderLockedError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)) from None
    click.echo(format_summary(summary))
    if not summary.counts.get("kept"):
        raise click.ClickException(
            f"the build produced no clip in {summary.out}: see the reasons above and in {summary.out / 'manifest.csv'}"
        )
