"""The extra modes and options of ``wflwv build``: exact-motion datasets from labelled stills (``--stills``), the
label-flicker floor of an existing dataset (``--audit``), and the floor options of an ordinary build.

Kept apart from :mod:`wflwv.cli.build` so that the video build's options stay readable: :func:`build_mode_options`
adds the options, :func:`run_build_mode` runs ``--stills`` / ``--audit`` (and removes their options otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from wflwv.build.config import DEFAULT_MEMBERS, BuildError
from wflwv.build.exact_motion import INTERPOLATIONS, MOTION_PRESETS
from wflwv.build.floor import FloorError, FloorSettings, audit_label_floor, format_floor
from wflwv.build.stills import LABEL_SOURCES, StillsConfig, build_from_stills, format_stills_summary
from wflwv.cli.common import parse_kv
from wflwv.io import FolderLockedError

__all__ = ["build_mode_options", "run_build_mode", "parse_size"]

#: options only the --stills mode reads (removed before an ordinary build's configuration is made)
_STILLS_ONLY = ("stills", "audit", "labels", "wflw_split", "images", "pts_origin", "max_stills", "clips_per_still",
                "frames", "fps", "size", "motions", "motion_args", "degrade", "degrade_args", "hard_fraction",
                "hard_args", "crf", "seed", "margin", "interpolation")  # fmt: skip


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``."""
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = None
    if not sep or size is None or min(size) < 32:
        raise click.BadParameter(f"{text!r} is not a frame size; use WIDTHxHEIGHT, e.g. 640x480", param_hint="--size")
    return size


_OPTIONS = [
    click.option("--stills", type=click.Path(exists=True, path_type=Path), default=None,
                 help="Make an exact-motion dataset from still images instead of videos: a folder of images with "
                      "iBUG .pts files beside them, a WFLW folder or annotation list, or unlabelled images (--labels oracle)."),
    click.option("--audit", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                 help="Measure the label-flicker floor of an existing dataset (its oracle from its dataset.json, or "
                      "--member/--tta/--passes) and write it into its dataset.json."),
    click.option("--labels", type=click.Choice(LABEL_SOURCES), default="auto", show_default=True,
                 help="[--stills] Where the stills' labels come from: a WFLW list, .pts files, or the oracle."),
    click.option("--wflw-split", type=click.Choice(["test", "train"]), default="test", show_default=True,
                 help="[--stills] WFLW annotation list used when --stills is a WFLW folder."),
    click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                 help="[--stills] Folder the paths of a WFLW list are relative to (default: found beside the list)."),
    click.option("--pts-origin", type=float, default=1.0, show_default=True,
                 help="[--stills] Coordinate of the top-left pixel centre in .pts files (1 for 300-W's 1-based files)."),
    click.option("--max-stills", type=click.IntRange(min=0), default=0, show_default=True,
                 help="[--stills] Use only the first N stills (by ID); 0 = all."),
    click.option("--clips-per-still", type=click.IntRange(min=1), default=1, show_default=True,
                 help="[--stills] Clips made from each still (each with its own motion)."),
    click.option("--frames", type=click.IntRange(min=2), default=125, show_default=True,
                 help="[--stills] Frames per clip."),
    click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
                 help="[--stills] Frame rate of the clips."),
    click.option("--size", default="640x480", show_default=True, help="[--stills] Frame size WIDTHxHEIGHT."),
    click.option("--motion", "motions", multiple=True, type=click.Choice(sorted(MOTION_PRESETS)),
                 help="[--stills] Motion preset, repeatable (clips take them in turn). Default: natural."),
    click.option("--motion-arg", "motion_args", multiple=True, metavar="KEY=VALUE",
                 help="[--stills] Override a motion field for every preset (e.g. face_size=0.3); repeatable."),
    click.option("--degrade/--no-degrade", default=True, show_default=True,
                 help="[--stills] Camera degradation: motion blur, lighting drift, sensor noise."),
    click.option("--degrade-arg", "degrade_args", multiple=True, metavar="KEY=VALUE",
                 help="[--stills] Override a degradation field (e.g. read_noise=3); repeatable."),
    click.option("--hard-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="[--stills] Share of clips made hard (occluders, heavy blur, low light, partial exits); the rest are clean."),
    click.option("--hard-arg", "hard_args", multiple=True, metavar="KEY=VALUE",
                 help="[--stills] Override a hard-clip field (e.g. occluder_rate_hz=0.5); repeatable."),
    click.option("--crf", type=click.IntRange(0, 51), default=17, show_default=True,
                 help="[--stills] H.264 quality of the clips (0 lossless, 17 visually lossless, 23 ffmpeg's default)."),
    click.option("--seed", type=int, default=0, show_default=True, help="[--stills] Seed; the same seed gives the same clips."),
    click.option("--margin", type=click.FloatRange(min=0), default=1.0, show_default=True,
                 help="[--stills] Context kept around the face, in face sides (the rest of the frame is synthesised)."),
    click.option("--interpolation", type=click.Choice(sorted(INTERPOLATIONS)), default="linear", show_default=True,
                 help="[--stills] Warp kernel: linear (~0.01 px rms sub-pixel error) or lanczos (about half that, ~2x the synthesis time)."),
    click.option("--floor-stills", type=click.IntRange(min=0), default=3, show_default=True,
                 help="Label-flicker floor: real frames of the data moved by known warps (static and slow) and labelled "
                      "like the clips; 0 = do not measure."),
    click.option("--floor-frames", type=click.IntRange(min=3), default=40, show_default=True,
                 help="Frames per label-floor clip."),
]  # fmt: skip


def build_mode_options(fn):
    """Add the ``--stills`` / ``--audit`` / floor options to the build command."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def _given(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def run_build_mode(opts: dict[str, Any]) -> bool:
    """Run ``--stills`` or ``--audit`` from the build command's options and return True; otherwise remove the
    options an ordinary build does not take from ``opts`` (in place), check ``--out`` and return False."""
    mode = {k: opts.pop(k) for k in _STILLS_ONLY}
    members = list(opts.get("oracle") or ()) + list(opts.get("members") or ())
    quiet = bool(opts.get("quiet"))
    say = None if quiet else (lambda m: click.echo(m, err=True))
    if mode["stills"] and mode["audit"]:
        raise click.UsageError("give either --stills DIR (make a dataset) or --audit DIR (measure one), not both")
    if (mode["stills"] or mode["audit"]) and (opts.get("ids") or opts.get("search") or opts.get("local")):
        which = "--stills" if mode["stills"] else "--audit"
        raise click.UsageError(f"{which} cannot be combined with --ids / --search / --local (they build from videos)")
    if mode["audit"] is not None:
        tta = opts["tta"] if _given("tta") else None
        if tta is not None and tta.strip().lower() == "none":
            tta = ""
        settings = FloorSettings(stills=max(opts["floor_stills"], 1), num_frames=opts["floor_frames"])
        try:
            floor = audit_label_floor(mode["audit"], members=members or None, tta=tta,
                                      combine=opts["combine"] if _given("combine") else None,
                                      passes=opts["passes"] if _given("passes") else None, settings=settings,
                                      device=opts["device"], work=opts.get("work"), progress=not quiet, log=say)  # fmt: skip
        except (FloorError, BuildError, ValueError, FileNotFoundError, FolderLockedError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(format_floor(floor))
        click.echo(f"written to {mode['audit'] / 'dataset.json'} (key label_floor)")
        return True
    if opts.get("out") is None:
        raise click.UsageError("--out is required (the dataset folder to write)")
    if mode["stills"] is None:
        return False
    config = StillsConfig(
        stills=mode["stills"], out=opts["out"], labels=mode["labels"], wflw_split=mode["wflw_split"],
        images=mode["images"], pts_origin=mode["pts_origin"], max_stills=mode["max_stills"],
        clips_per_still=mode["clips_per_still"], num_frames=mode["frames"], fps=mode["fps"],
        frame_size=parse_size(mode["size"]), motions=list(mode["motions"]) or ["natural"],
        motion_args=parse_kv(mode["motion_args"], "--motion-arg"), degrade=mode["degrade"],
        degrade_args=parse_kv(mode["degrade_args"], "--degrade-arg"), hard_fraction=mode["hard_fraction"],
        hard_args=parse_kv(mode["hard_args"], "--hard-arg"), crf=mode["crf"], seed=mode["seed"],
        margin=mode["margin"], interpolation=mode["interpolation"], detector=opts["detector"],
        members=members or list(DEFAULT_MEMBERS), tta="" if opts["tta"].strip().lower() == "none" else opts["tta"],
        combine=opts["combine"],
        passes=opts["passes"], device=opts["device"], workers=opts["workers"], work=opts.get("work"),
        progress=not quiet,
    )  # fmt: skip
    try:
        summary = build_from_stills(config, log=say)
    except (BuildError, ValueError, FileNotFoundError, FolderLockedError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_stills_summary(summary))
    return True
