"""Exact-motion datasets: `wflwv build --stills DIR --out OUT` turns labelled still images into clips whose labels
are exact by construction, in the official WFLW-V layout.

Every clip is one still moved by a synthesised motion (:mod:`wflwv.build.exact_motion`): frame ``t`` is the still
warped by a known homography, its landmarks are the still's labels mapped by the same homography. Nothing else
moves a label, so NMF on these clips measures the model alone (the label floor is 0, see :mod:`wflwv.build.floor`).

Inputs (``labels="auto"`` picks the first that applies):

* ``wflw``: a WFLW annotation list (``list_98pt_rect_attr_<split>.txt``, 98 human labels per face; 68-point
  lines work too) given as the file, or a WFLW folder holding it (``wflw_split``); one still per face (line).
* ``pts``: a folder of images with an iBUG ``.pts`` file beside each (``IMG.pts`` next to ``IMG.jpg``, 68 points;
  any count works). ``.pts`` coordinates are 1-based as in 300-W (``pts_origin``; the toolkit's pixel centres
  are at integers, so 1 is subtracted).
* ``oracle``: a folder of images without labels, labelled once by the build's oracle (detector, members,
  test-time augmentation and passes as in `wflwv build`). The labels are then right up to the oracle's error,
  which is the same in every frame of a clip: NMF does not see it (it measures change of the residual).

Written to ``OUT`` (``WORK`` = ``OUT/.build``):

* ``videos/ID.mp4`` (H.264 at ``crf``), ``bboxes/ID.npy`` (the landmarks' squares), ``landmarks/ID.npy`` (exact),
  ``motion/ID.npy`` (T x 3 x 3 homographies, **still-image pixels -> frame pixels**: ``landmarks[t] =
  apply_motion(still_labels, motion[t])`` with the still's labels in the coordinates of the input image);
* ``hard_video_IDs.txt`` (clips with :class:`~wflwv.build.exact_motion.HardConfig` ambiguity: occluders, heavy
  blur, low light, partial exits) and ``easy_video_IDs.txt`` (clean clips);
* ``dataset.json``: scheme, ``label_floor`` = ``{"nmf": 0.0, "method": "exact-motion"}``, the settings, and for
  every clip its still (image, labels, label source) and generation parameters (seed and configurations, enough
  to re-draw the motion with :func:`~wflwv.build.exact_motion.motion_from_params`, see ``exact_motion.motion_rule``);
* ``manifest.csv`` / ``manifest.parquet`` (one row per clip, and per still that failed, with the reason) and
  ``build.json`` (configuration, counts, timings, provenance).

Deterministic for a seed: every clip's seed derives from ``seed``, its still's ID and its index. Resumable: a
clip's record (``WORK/stills/ID.json``) is written last and carries a hash of everything the clip depends on, so a
re-run with the same options skips finished clips and redoes only what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from wflwv.build import exact_motion as em
from wflwv.build.config import DEFAULT_COMBINE, DEFAULT_MEMBERS, DEFAULT_TTA, BuildError, config_hash
from wflwv.build.detect import landmarks_box, make_detector, square_box
from wflwv.build.oracle import build_oracle_pair
from wflwv.build.stages import error_text, run_parallel
from wflwv.io import atomic_path, folder_lock, provenance, read_json, save_npy, write_json
from wflwv.models.api import CROP_SIZE, FrameInfo
from wflwv.protocol.crop import apply_affine, crop_matrix, invert_affine, warp_crop
from wflwv.protocol.floor import EXACT_MOTION_FLOOR, FLOOR_KEY
from wflwv.protocol.layout import WFLWVDataset, write_dataset_info, write_split
from wflwv.protocol.video import write_video
from wflwv.protocol.wflw import WFLWFormatError, find_annotation_file, find_images_dir, read_annotations
from wflwv.schemes import scheme_for_num_points

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SOURCES",
    "PtsFormatError",
    "read_pts",
    "write_pts",
    "StillItem",
    "discover_stills",
    "StillsConfig",
    "StillsSummary",
    "build_from_stills",
    "format_stills_summary",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SOURCES = ("auto", "wflw", "pts", "oracle")
#: bump when a change here changes the clips made for the same options (finished clips are then made again)
STILLS_VERSION = 1
_SUBDIRS = (("videos", ".mp4"), ("bboxes", ".npy"), ("landmarks", ".npy"), ("motion", ".npy"))


# ------------------------------------------------------------------------------------------------ .pts files
class PtsFormatError(ValueError):
    """A ``.pts`` file does not follow the iBUG format; the message names the file and line."""


def read_pts(path: str | Path, origin: float = 1.0) -> np.ndarray:
    """Read an iBUG / 300-W ``.pts`` landmark file.

    Format: optional header lines (``version: 1``, ``n_points: 68``), then ``{``, one ``x y`` pair per line,
    ``}``. Coordinates are shifted by ``-origin`` into the toolkit's convention (pixel centres at integers, the
    top-left pixel at 0): 300-W's files are 1-based, hence the default.

    Returns:
        (K, 2) float64.
    Raises:
        FileNotFoundError: no such file.
        PtsFormatError: missing braces, a malformed line, non-finite numbers, or a count that differs from
            ``n_points``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .pts file not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    declared = None
    start = None
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("{"):
            start = i + 1
            break
        key, sep, value = text.partition(":")
        if sep and key.strip().lower() == "n_points":
            try:
                declared = int(value.strip())
            except ValueError:
                raise PtsFormatError(
                    f"{path}, line {i + 1}: n_points must be an integer, got {value.strip()!r}"
                ) from None
    if start is None:
        raise PtsFormatError(f"{path}: no '{{' line; an iBUG .pts file lists its points between '{{' and '}}'")
    points = []
    for i in range(start, len(lines)):
        text = lines[i].strip()
        if text.startswith("}"):
            break
        if not text:
            continue
        parts = text.split()
        try:
            x, y = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise PtsFormatError(f"{path}, line {i + 1}: expected 'x y', got {text!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PtsFormatError(f"{path}, line {i + 1}: non-finite coordinate in {text!r}")
        points.append((x, y))
    else:
        raise PtsFormatError(f"{path}: the point list is not closed by a '}}' line (truncated file?)")
    if not points:
        raise PtsFormatError(f"{path}: no points between '{{' and '}}'")
    if declared is not None and declared != len(points):
        raise PtsFormatError(f"{path}: n_points says {declared} but {len(points)} points are listed")
    return np.asarray(points, dtype=np.float64) - float(origin)


def write_pts(path: str | Path, points: np.ndarray, origin: float = 1.0) -> Path:
    """Write (K, 2) points (toolkit convention) as an iBUG ``.pts`` file (``+origin``, 1-based by default),
    atomically; :func:`read_pts` reads them back to 1e-6 px."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise ValueError(f"points must be finite (K, 2), got shape {pts.shape}")
    body = "".join(f"{x + origin:.6f} {y + origin:.6f}\n" for x, y in pts)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}}}\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ discovery
@dataclass
class StillItem:
    """One face to make clips from.

    Attributes:
        still_id: safe ID (clip IDs are ``STILL_ID_k``).
        image: path of the image.
        rel: the image's path relative to the input (recorded in dataset.json).
        landmarks: (K, 2) image pixels as nested lists, or None for a still the oracle labels.
        label_source: ``wflw``, ``pts`` or ``oracle``.
        problem: why the still cannot be used ('' when it can); such stills are recorded, not fatal.
    """

    still_id: str
    image: str
    rel: str
    landmarks: list | None
    label_source: str
    problem: str = ""


def _safe_id(text: str) -> str:
    """A clip-ID-safe version of a relative path (no extension): unsafe characters become ``_``; long names are
    shortened with a hash so that different paths keep different IDs."""
    sid = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "still"
    if len(sid) > 100:
        sid = f"{sid[:88]}_{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    return sid


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _wflw_items(ann: Path, images: Path | None) -> list[StillItem]:
    samples = read_annotations(ann)
    if not samples:
        raise BuildError(f"{ann}: the annotation list has no faces")
    if images is None:
        for parent in list(ann.parents)[:4]:
            try:
                images = find_images_dir(parent, samples)
                break
            except FileNotFoundError:
                continue
        if images is None:
            raise BuildError(
                f"{ann}: could not find the images of the list (looked in WFLW_images/ and the folders above the "
                "list); pass --images DIR"
            )
    faces: dict[str, int] = {}
    items = []
    for s in samples:
        j = faces.get(s.image_path, 0)
        faces[s.image_path] = j + 1
        sid = _safe_id(f"{Path(s.image_path).with_suffix('')}_f{j}")
        path = Path(images) / s.image_path
        problem = "" if path.is_file() else f"{path}: image listed in {ann.name} not found"
        items.append(StillItem(sid, str(path), s.image_path, s.landmarks.tolist(), "wflw", problem))
    return items


def discover_stills(
    path: str | Path,
    labels: str = "auto",
    *,
    wflw_split: str = "test",
    images: str | Path | None = None,
    pts_origin: float = 1.0,
) -> list[StillItem]:
    """Find the stills and their labels (see the module docstring for the sources), sorted by ID.

    Per-still problems (an unreadable ``.pts``, a missing image, an image without labels among labelled ones,
    a point count that differs from the others) are recorded in :attr:`StillItem.problem`, not raised.

    Raises:
        BuildError: nothing usable at ``path``, or a source that does not fit ``labels``.
    """
    if labels not in LABEL_SOURCES:
        raise BuildError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise BuildError(f"{path}: --stills path not found")
    items: list[StillItem]
    if path.is_file():
        if path.suffix.lower() != ".txt" or labels not in ("auto", "wflw"):
            raise BuildError(
                f"{path}: a file given to --stills must be a WFLW annotation list (.txt); give a folder for images "
                "with .pts files or unlabelled images"
            )
        try:
            items = _wflw_items(path, Path(images) if images else None)
        except WFLWFormatError as exc:
            raise BuildError(str(exc)) from None
    else:
        ann = None
        if labels in ("auto", "wflw"):
            try:
                ann = find_annotation_file(path, wflw_split)
            except FileNotFoundError as exc:
                if labels == "wflw":
                    raise BuildError(str(exc)) from None
        if ann is not None:
            try:
                items = _wflw_items(ann, Path(images) if images else None)
            except WFLWFormatError as exc:
                raise BuildError(str(exc)) from None
        else:
            files = _images_under(path)
            if not files:
                raise BuildError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found (searched recursively)")
            with_pts = [f for f in files if f.with_suffix(".pts").is_file()]
            if labels == "pts" and not with_pts:
                raise BuildError(
                    f"{path}: --labels pts, but no image has a .pts file beside it (IMG.pts next to IMG.jpg)"
                )
            use_pts = labels == "pts" or (labels == "auto" and bool(with_pts))
            items = []
            for f in files:
                rel = f.relative_to(path).as_posix()
                sid = _safe_id(str(Path(rel).with_suffix("")))
                if not use_pts:
                    items.append(StillItem(sid, str(f), rel, None, "oracle"))
                    continue
                pts_file = f.with_suffix(".pts")
                if not pts_file.is_file():
                    items.append(StillItem(sid, str(f), rel, None, "pts", f"{f}: no .pts file beside it ({pts_file.name}); "
                                           "label it, remove it, or use --labels oracle to label every image by the oracle"))  # fmt: skip
                    continue
                try:
                    lm = read_pts(pts_file, pts_origin)
                except (PtsFormatError, OSError) as exc:
                    items.append(StillItem(sid, str(f), rel, None, "pts", str(exc)))
                    continue
                items.append(StillItem(sid, str(f), rel, lm.tolist(), "pts"))
    # unique IDs and one landmark count
    seen: dict[str, str] = {}
    counts = [len(it.landmarks) for it in items if it.landmarks is not None and not it.problem]
    common = max(set(counts), key=counts.count) if counts else None
    for it in items:
        if it.problem:
            continue
        if it.still_id in seen:
            it.problem = f"{it.image}: its ID {it.still_id!r} is already used by {seen[it.still_id]}; rename one"
            continue
        seen[it.still_id] = it.image
        if it.landmarks is not None and len(it.landmarks) != common:
            it.problem = f"{it.image}: {len(it.landmarks)} landmarks, but the other stills have {common}"
        elif it.landmarks is not None:
            try:
                scheme_for_num_points(len(it.landmarks))
            except ValueError as exc:
                it.problem = f"{it.image}: {exc}"
    return sorted(items, key=lambda it: it.still_id)


# ------------------------------------------------------------------------------------------------ configuration
@dataclass
class StillsConfig:
    """Everything `wflwv build --stills` can be told. Paths may be str or Path."""

    stills: Path
    out: Path
    labels: str = "auto"  # auto | wflw | pts | oracle
    wflw_split: str = "test"
    images: Path | None = None  # images folder of a WFLW list (default: found beside it)
    pts_origin: float = 1.0  # .pts coordinates are 1-based (300-W); 0 for 0-based files
    max_stills: int = 0  # use the first N stills (by ID); 0 = all
    # clips
    clips_per_still: int = 1
    num_frames: int = 125
    fps: float = 25.0
    frame_size: tuple[int, int] = (640, 480)
    motions: Sequence[str] = ("natural",)  # presets, assigned in turn
    motion_args: dict = field(default_factory=dict)  # MotionConfig fields overriding every preset's
    degrade: bool = True
    degrade_args: dict = field(default_factory=dict)  # DegradeConfig fields
    hard_fraction: float = 0.5  # share of clips with HardConfig ambiguity (the hard split); the rest are clean
    hard_args: dict = field(default_factory=dict)  # HardConfig fields
    crf: int = 17
    seed: int = 0
    margin: float = 1.0  # context around the face kept from the still, face sides
    interpolation: str = "linear"  # warp kernel: linear, or lanczos (half the sub-pixel error, ~2x the time)
    # the oracle, for unlabelled images (as in wflwv build)
    detector: str = "hog"
    members: Sequence[str] = DEFAULT_MEMBERS
    tta: str = DEFAULT_TTA
    combine: str = DEFAULT_COMBINE
    passes: int = 2
    device: str = "cpu"
    # running
    workers: int = 1
    work: Path | None = None
    progress: bool = True

    def __post_init__(self):
        self.stills = Path(self.stills).expanduser()
        self.out = Path(self.out).expanduser()
        self.images = Path(self.images).expanduser() if self.images else None
        self.work = Path(self.work).expanduser() if self.work else self.out / ".build"
        self.motions = [self.motions] if isinstance(self.motions, str) else list(self.motions)
        self.members = [self.members] if isinstance(self.members, str) else list(self.members)
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))

    def check(self) -> None:
        """Raise :class:`BuildError` for inconsistent options, saying what to change."""
        if self.clips_per_still < 1:
            raise BuildError(f"--clips-per-still must be >= 1, got {self.clips_per_still}")
        if self.num_frames < 2:
            raise BuildError(f"--frames must be >= 2 (NMF needs two frames), got {self.num_frames}")
        if not self.fps > 0:
            raise BuildError(f"--fps must be positive, got {self.fps}")
        if min(self.frame_size) < 32:
            raise BuildError(f"--size must be at least 32x32, got {self.frame_size[0]}x{self.frame_size[1]}")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise BuildError(f"--hard-fraction must be in [0, 1], got {self.hard_fraction}")
        if not 0 <= self.crf <= 51:
            raise BuildError(f"--crf must be in 0..51, got {self.crf}")
        if self.interpolation not in em.INTERPOLATIONS:
            raise BuildError(
                f"--interpolation must be one of {', '.join(em.INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if not self.motions:
            raise BuildError(f"give at least one --motion preset ({', '.join(em.MOTION_PRESETS)})")
        if self.detector == "sidecar":
            raise BuildError("--detector sidecar reads boxes beside videos; stills need hog, haar or haar+hog")
        if self.workers < 1:
            raise BuildError(f"--workers must be >= 1, got {self.workers}")
        try:
            for m in self.motions:
                em.resolve_motion(m, **self.motion_args)
            em.DegradeConfig(**self.degrade_args)
            em.HardConfig(**self.hard_args)
        except (TypeError, ValueError) as exc:
            raise BuildError(f"bad exact-motion setting: {exc}") from None

    def clip_settings(self) -> dict:
        """What every clip depends on besides its still, preset, split and seed (part of the resume key)."""
        return {
            "num_frames": self.num_frames,
            "fps": self.fps,
            "frame_size": list(self.frame_size),
            "degrade": asdict(em.DegradeConfig(**self.degrade_args)) if self.degrade else None,
            "crf": self.crf,
            "margin": self.margin,
            "max_face_side": self._max_face_side(),
            "interpolation": self.interpolation,
            "pts_origin": self.pts_origin,
        }

    def _max_face_side(self) -> float:
        # the largest face a preset shows (face_size of the frame height, zoomed in by up to 1.4x): a still whose
        # face is bigger is shrunk first, which keeps rendering cheap and loses nothing the frames could show
        face = max(em.resolve_motion(m, **self.motion_args).face_size for m in self.motions)
        return round(1.4 * face * self.frame_size[1], 3)

    def oracle_info(self) -> dict:
        out = {"members": list(self.members), "tta": self.tta, "passes": self.passes, "detector": self.detector}
        if self.combine != "heatmap":
            out["combine"] = self.combine
        return out


@dataclass
class StillsSummary:
    """What a stills build did. ``rows`` is the manifest."""

    out: Path
    rows: list[dict]
    hard: list[str]
    easy: list[str]
    counts: dict[str, Any]
    scheme: str | None
    timings: dict[str, float]


# ------------------------------------------------------------------------------------------------ the plan
def _clip_seed(seed: int, still_id: str, k: int) -> int:
    digest = hashlib.sha256(f"{seed}:{still_id}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _plan(config: StillsConfig, items: Sequence[StillItem]) -> list[dict]:
    """One job per usable still with its clips: ID, preset (in turn), hard or easy, seed.

    Clip ``n`` (counting over the stills in ID order) gets preset ``motions[n % P]``; groups of ``P`` consecutive
    clips are hard or easy together, spread evenly at ``hard_fraction``, so every preset gets both kinds."""
    jobs = []
    n = 0
    p = len(config.motions)
    f = config.hard_fraction
    for it in items:
        if it.problem:
            continue
        clips = []
        for k in range(config.clips_per_still):
            g = n // p
            hard = math.floor((g + 1) * f + 1e-9) - math.floor(g * f + 1e-9) == 1
            clips.append({"clip_id": f"{it.still_id}_{k}", "k": k, "preset": config.motions[n % p], "hard": hard,
                          "seed": _clip_seed(config.seed, it.still_id, k)})  # fmt: skip
            n += 1
        jobs.append({"item": asdict(it), "clips": clips})
    return jobs


# ------------------------------------------------------------------------------------------------ one still
_STATE: dict[str, Any] = {}


def _oracle(config: StillsConfig):
    if "injected" in _STATE:
        if _STATE.get("injected_detector") is None:
            _STATE["injected_detector"] = make_detector(config.detector)
        return _STATE["injected"], _STATE["injected"], _STATE["injected_detector"]
    if "oracle" not in _STATE:
        _STATE["oracle"] = build_oracle_pair(config.members, config.tta, config.passes, config.device, config.combine)
        _STATE["detector"] = make_detector(config.detector)
    return _STATE["oracle"][0], _STATE["oracle"][1], _STATE["detector"]


def _predict_image(model, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    m = crop_matrix(box, CROP_SIZE)
    crop = np.ascontiguousarray(warp_crop(image, m, CROP_SIZE)[..., ::-1])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0)
    info = FrameInfo("still", 0, 1, 25.0, invert_affine(m))
    with torch.no_grad():
        out = model.predict(x, [None], [info])
    return apply_affine(out.landmarks_numpy()[0], invert_affine(m))


def label_image(oracle, box_oracle, detector, image: np.ndarray, passes: int) -> np.ndarray:
    """Label one image as `wflwv build` labels a frame: the largest detected face, ``passes - 1`` passes of
    ``box_oracle`` (re-deriving the box from its landmarks), a final pass of ``oracle`` (test-time augmented).

    Raises:
        ValueError: the detector finds no face.
    """
    dets = np.asarray(detector.detect(image), dtype=np.float64).reshape(-1, 5)
    if not len(dets):
        raise ValueError(f"no face found by the {getattr(detector, 'name', 'face')} detector")
    box = dets[int(np.argmax(np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])))][:4]
    pts = None
    for p in range(passes):
        model = oracle if p == passes - 1 else (box_oracle if box_oracle is not None else oracle)
        pts = _predict_image(model, image, box)
        box = square_box(landmarks_box(pts[None]))[0]
    if not np.isfinite(pts).all():
        raise ValueError("the oracle returned non-finite landmarks")
    return pts


def _clip_key(config: StillsConfig, image_sha1: str, landmarks: np.ndarray, item: dict, clip: dict) -> str:
    mcfg = em.resolve_motion(clip["preset"], **config.motion_args)
    hard = asdict(em.HardConfig(**config.hard_args)) if clip["hard"] else None
    return config_hash(["stills", STILLS_VERSION, em.GENERATOR_VERSION, image_sha1, np.round(landmarks, 6).tolist(),
                        item["label_source"], config.clip_settings(), asdict(mcfg), hard, clip["seed"]])  # fmt: skip


def _record_path(config: StillsConfig, cid: str) -> Path:
    return Path(config.work) / "stills" / f"{cid}.json"


def _done(config: StillsConfig, cid: str, key: str) -> dict | None:
    """The record of a finished clip made with ``key`` whose files are all there, else None."""
    rec_path = _record_path(config, cid)
    if not rec_path.is_file():
        return None
    rec = read_json(rec_path)
    if rec.get("key") == key and rec.get("status") == "ok":
        root = Path(config.out)
        if all((root / sub / f"{cid}{ext}").is_file() for sub, ext in _SUBDIRS):
            return rec
    return None


def make_still_clips(config: StillsConfig, job: dict) -> dict:
    """Make (or find finished) the clips of one still; returns ``{"still_id", "status", "reason", "clips": [...]}``
    with one record per finished clip. Never raises for a problem of this still."""
    item = job["item"]
    sid = item["still_id"]
    try:
        data = Path(item["image"]).read_bytes()
        sha1 = hashlib.sha1(data).hexdigest()
        labels = item["landmarks"]
        label_rec = Path(config.work) / "stills" / "labels" / f"{sid}.json"
        if labels is None:  # an unlabelled image: the oracle's labels, made once
            ident = config_hash([sha1, config.oracle_info()])
            if label_rec.is_file() and read_json(label_rec).get("key") == ident:
                labels = read_json(label_rec)["landmarks"]
        lm = None if labels is None else np.asarray(labels, dtype=np.float64)
        keys = {c["clip_id"]: _clip_key(config, sha1, lm, item, c) for c in job["clips"]} if lm is not None else {}
        finished = {cid: _done(config, cid, key) for cid, key in keys.items()}
        if keys and all(finished.values()):
            return {"still_id": sid, "status": "ok", "reason": "", "resumed": True, "clips": list(finished.values())}
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(
                f"{item['image']}: cannot be read as an image (corrupt, or not an image format OpenCV reads)"
            )
        if lm is None:
            oracle, box_oracle, detector = _oracle(config)
            lm = label_image(oracle, box_oracle, detector, image, config.passes)
            write_json(label_rec, {"key": config_hash([sha1, config.oracle_info()]), "landmarks": lm.tolist(),
                                   "oracle": config.oracle_info(), "scheme": getattr(oracle, "scheme", None)})  # fmt: skip
            keys = {c["clip_id"]: _clip_key(config, sha1, lm, item, c) for c in job["clips"]}
            finished = {cid: _done(config, cid, key) for cid, key in keys.items()}
        h, w = image.shape[:2]
        if not np.isfinite(lm).all():
            raise ValueError(f"{item['image']}: non-finite labels")
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] > w - 1 or lo[1] > h - 1:
            raise ValueError(
                f"{item['image']}: the labels lie outside the {w} x {h} image (wrong --pts-origin or image?)"
            )
        still, pts, transform = em.prepare_still(image, lm, config.margin, max_face_side=config._max_face_side(),
                                                 return_transform=True)  # fmt: skip
    except Exception as exc:
        return {"still_id": sid, "status": "failed", "reason": error_text(exc), "clips": []}
    records = []
    for c in job["clips"]:
        cid = c["clip_id"]
        if finished.get(cid):
            records.append(finished[cid])
            continue
        try:
            records.append(_make_clip(config, item, c, keys[cid], sha1, image.shape, lm, still, pts, transform))
        except Exception as exc:
            return {"still_id": sid, "status": "failed", "reason": f"clip {cid}: {error_text(exc)}", "clips": records}
    return {"still_id": sid, "status": "ok", "reason": "", "clips": records}


def _make_clip(config, item, c, key, sha1, shape, lm, still, pts, transform) -> dict:
    cid = c["clip_id"]
    root = Path(config.out)
    t0 = time.perf_counter()
    degrade = em.DegradeConfig(**config.degrade_args) if config.degrade else None
    hard = em.HardConfig(**config.hard_args) if c["hard"] else None
    motion_cfg = em.resolve_motion(c["preset"], **config.motion_args)
    clip = em.synthesise_clip(still, pts, num_frames=config.num_frames, fps=config.fps, frame_size=config.frame_size,
                              motion=motion_cfg, degrade=degrade, hard=hard, seed=c["seed"],
                              interpolation=config.interpolation)  # fmt: skip
    # motion from the input image's pixels (not the cropped still's), so the image's own labels map exactly
    motion = clip.motion @ transform
    motion = motion / motion[:, 2:3, 2:3]
    landmarks = em.apply_motion(lm, motion)
    (root / "landmarks" / f"{cid}.npy").unlink(missing_ok=True)  # incomplete until the landmarks are written again
    write_video(root / "videos" / f"{cid}.mp4", clip.frames, config.fps, crf=config.crf)
    save_npy(root / "bboxes" / f"{cid}.npy", square_box(landmarks_box(landmarks)))
    save_npy(root / "motion" / f"{cid}.npy", motion)
    save_npy(root / "landmarks" / f"{cid}.npy", landmarks)
    rec = {
        "key": key,
        "clip_id": cid,
        "still_id": item["still_id"],
        "status": "ok",
        "split": "hard" if c["hard"] else "easy",
        "preset": c["preset"],
        "seed": c["seed"],
        "still": {
            "image": item["rel"],
            "sha1": sha1,
            "size": [int(shape[1]), int(shape[0])],
            "label_source": item["label_source"],
            "landmarks": lm.tolist(),
            "prepare_transform": transform.tolist(),
        },  # fmt: skip
        "params": clip.params,
        "occluded_share": float(clip.occluded.mean()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(_record_path(config, cid), rec)
    return rec


# ------------------------------------------------------------------------------------------------ the build
def _remove_clip(root: Path, cid: str) -> None:
    for sub, ext in _SUBDIRS:
        (root / sub / f"{cid}{ext}").unlink(missing_ok=True)


def _write_manifest(root: Path, rows: list[dict]) -> None:
    cols = ["clip_id", "still_id", "status", "reason", "split", "preset", "image", "label_source", "seed",
            "num_frames", "fps", "width", "height", "crf", "occluded_share"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    numeric = ("num_frames", "width", "height", "crf", "fps", "occluded_share")
    for c in numeric[:4]:
        df[c] = pd.array(df[c], dtype="Int64")
    for c in numeric[4:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in df.columns:  # text columns (the 63-bit seeds too: exact as text in every reader)
        if c not in numeric:
            df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    with atomic_path(root / "manifest.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(root / "manifest.csv") as tmp:
        df.to_csv(tmp, index=False)


def build_from_stills(
    config: StillsConfig,
    *,
    oracle: Any = None,
    detector: Any = None,
    log: Callable[[str], None] | None = None,
) -> StillsSummary:
    """Make an exact-motion dataset from stills (see the module docstring).

    Args:
        oracle: a ready oracle LandmarkModel for unlabelled stills instead of ``config.members`` / ``config.tta``
            (used for every pass); ``detector``: a ready face detector. Injected objects run in this process.
        log: where progress messages go (default: nowhere).
    Raises:
        BuildError: bad options or no usable still (per-still problems are recorded in the manifest instead).
        FolderLockedError: another process is writing into ``config.out``.
    """
    config.check()
    say = log or (lambda msg: None)
    root = Path(config.out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    items = discover_stills(config.stills, config.labels, wflw_split=config.wflw_split, images=config.images,
                            pts_origin=config.pts_origin)  # fmt: skip
    if config.max_stills:
        items = items[: config.max_stills]
    usable = [it for it in items if not it.problem]
    say(f"stills: {len(items)} found, {len(usable)} usable ({usable[0].label_source if usable else '-'} labels)")
    if not usable:
        reasons = "; ".join(it.problem for it in items[:3])
        raise BuildError(f"no usable still in {config.stills}" + (f" ({reasons})" if reasons else ""))
    jobs = _plan(config, items)
    timings["discover"] = time.perf_counter() - t
    # one writer per output folder (a second build into it is refused, naming this one)
    with folder_lock(root, command="wflwv build", other="another --out"):
        return _make_dataset(config, items, jobs, timings, oracle, detector)


def _make_dataset(config: StillsConfig, items, jobs, timings, oracle, detector) -> StillsSummary:
    root = Path(config.out)
    t = time.perf_counter()
    _STATE.clear()
    inline = oracle is not None or detector is not None
    if oracle is not None:
        _STATE["injected"] = oracle
    if detector is not None:
        _STATE["injected_detector"] = detector
    try:
        results = run_parallel(make_still_clips, jobs, config, "stills", inline)
    finally:
        _STATE.clear()
    timings["synthesise"] = time.perf_counter() - t

    # ---- publish: drop clips of earlier runs that are no longer planned, splits, dataset.json, manifest
    t = time.perf_counter()
    planned = {c["clip_id"] for j in jobs for c in j["clips"]}
    for rec_path in (Path(config.work) / "stills").glob("*.json"):
        if rec_path.stem not in planned:
            _remove_clip(root, rec_path.stem)
            rec_path.unlink()
    records = [r for res in results for r in res["clips"]]
    made = {r["clip_id"] for r in records}
    for cid in planned - made:  # a still that failed this time: its clips are not part of the dataset
        _remove_clip(root, cid)
    hard = [r["clip_id"] for r in records if r["split"] == "hard"]
    easy = [r["clip_id"] for r in records if r["split"] == "easy"]
    write_split(root, "hard", hard)
    write_split(root, "easy", easy)
    num_points = {len(r["still"]["landmarks"]) for r in records}
    scheme = scheme_for_num_points(num_points.pop()).name if len(num_points) == 1 else None
    settings = {**config.clip_settings(), "motions": list(config.motions), "motion_args": config.motion_args,
                "hard": asdict(em.HardConfig(**config.hard_args)), "hard_fraction": config.hard_fraction,
                "clips_per_still": config.clips_per_still, "seed": config.seed}  # fmt: skip
    label_sources = sorted({r["still"]["label_source"] for r in records})
    info: dict[str, Any] = {
        "source": "wflwv build --stills",
        FLOOR_KEY: dict(EXACT_MOTION_FLOOR),
        "clips": len(records),
        "exact_motion": {
            "generator": "wflwv.build.exact_motion",
            "generator_version": em.GENERATOR_VERSION,
            "motion_rule": "motion/ID.npy[t] maps the still image's pixels (clips[ID].still.image, pixel centres at "
            "integers) to frame t's pixels: landmarks[t] = apply_motion(still.landmarks, motion[t]); "
            "motion_from_params(params) @ still.prepare_transform re-draws it (up to the scale of the matrices)",
            "label_sources": label_sources,
            "settings": settings,
            "clips": {
                r["clip_id"]: {k: r[k] for k in ("still_id", "split", "preset", "seed", "still", "params")}
                for r in sorted(records, key=lambda r: r["clip_id"])
            },  # fmt: skip
        },
    }
    if "oracle" in label_sources:
        info["oracle"] = config.oracle_info()
    if scheme:
        info["scheme"] = scheme
    write_dataset_info(root, **info)

    rows = []
    for res, job in zip(results, jobs):
        it = job["item"]
        for r in res["clips"]:
            p = r["params"]
            rows.append({"clip_id": r["clip_id"], "still_id": it["still_id"], "status": "kept", "reason": "",
                         "split": r["split"], "preset": r["preset"], "image": it["rel"],
                         "label_source": r["still"]["label_source"], "seed": r["seed"], "num_frames": p["num_frames"],
                         "fps": p["fps"], "width": p["frame_size"][0], "height": p["frame_size"][1], "crf": config.crf,
                         "occluded_share": r.get("occluded_share")})  # fmt: skip
        if res["status"] != "ok":
            rows.append({"still_id": it["still_id"], "status": "failed", "reason": res["reason"], "image": it["rel"],
                         "label_source": it["label_source"]})  # fmt: skip
    for it in items:
        if it.problem:
            rows.append({"still_id": it.still_id, "status": "failed", "reason": it.problem, "image": it.rel,
                         "label_source": it.label_source})  # fmt: skip
    _write_manifest(root, rows)
    timings["publish"] = time.perf_counter() - t
    counts = {
        "stills": len(items),
        "stills_failed": sum(r["status"] == "failed" for r in rows),
        "clips": len(records),
        "hard": len(hard),
        "easy": len(easy),
        "resumed_stills": sum(bool(res.get("resumed")) for res in results),
    }
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    write_json(root / "build.json", {"mode": "stills", "config": cfg, "counts": counts, "scheme": scheme,
                                     FLOOR_KEY: dict(EXACT_MOTION_FLOOR), "timings_s": {k: round(v, 2) for k, v in timings.items()},
                                     "provenance": provenance()})  # fmt: skip
    WFLWVDataset(root)  # the result must open as a dataset
    return StillsSummary(root, rows, hard, easy, counts, scheme, timings)


def format_stills_summary(s: StillsSummary) -> str:
    """A short human-readable report of a stills build."""
    c = s.counts
    lines = [
        f"dataset: {s.out}  (scheme {s.scheme or '?'}, exact-motion labels: label floor 0)",
        f"stills: {c['stills']} ({c['stills_failed']} failed)",
        f"clips: {c['clips']} (hard {c['hard']}, easy {c['easy']})",
    ]
    if c["resumed_stills"]:
        lines.append(f"resumed from earlier runs: {c['resumed_stills']} stills")
    failed = [r for r in s.rows if r["status"] == "failed"]
    if failed:
        lines.append("failed:")
        lines += [f"  {r['still_id']}: {r['reason']}" for r in failed[:10]]
        if len(failed) > 10:
            lines.append(f"  ... {len(failed) - 10} more in manifest.csv")
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.timings.items()))
    lines.append(f"manifest: {s.out / 'manifest.csv'}")
    return "\n".join(lines)
