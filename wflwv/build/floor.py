"""The label-flicker floor: how much a dataset's labels flicker by themselves.

NMF scores how the residual ``labels - prediction`` changes from one frame to the next. When the labels come from
an oracle, they flicker too, and a model that followed the face perfectly would still score the oracle's own
flicker. This module measures that floor the only way it can be measured, on clips whose true motion is known:

1. take a few real frames (from the dataset's own videos) with a face;
2. move each by a known warp (:mod:`wflwv.build.exact_motion`, presets ``static`` - a sub-pixel random walk - and
   ``slow`` - smooth drift, roll, zoom and a little yaw / pitch) at the face's own size, and encode the frames
   with H.264, as real video is;
3. label every clip exactly as `wflwv build` labels real clips (same members, test-time augmentation and passes:
   :func:`wflwv.build.oracle.label_as_build`);
4. map the oracle's labels of every frame back into the still through the inverse warp, average them (the
   oracle's *mean label*), carry that mean forward through the warp of every frame, and compute the NMF of the
   oracle's labels against it (:func:`nmf_against_motion`).

The reference in 4. moves exactly as the face does and differs from the truth only by the oracle's constant bias,
so the bias costs nothing (NMF measures change of the residual): what remains is the oracle's frame-to-frame
jitter. Datasets made from labelled stills (`wflwv build --stills`) have exact labels, so their floor is 0 by
construction (:data:`EXACT_MOTION_FLOOR`).

Where the floor goes: ``dataset.json``, ``build.json`` and the manifest of a build under the key ``label_floor``
(:func:`label_floor_dict`): ``{"nmf", "nmf_static", "nmf_slow", "clips", "method", "oracle": {members, tta,
passes}, ...}``; `wflwv bench` copies it into ``summary.json``.

Entry points: :func:`measure_label_floor` (any frames, any oracle), :func:`dataset_floor_stills` (frames from a
dataset's videos), :func:`build_label_floor` (the step of `wflwv build`) and :func:`audit_label_floor`
(`wflwv build --audit DIR`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wflwv.benchmark.metrics import nmf_video
from wflwv.build import exact_motion as em
from wflwv.build.config import config_hash
from wflwv.build.detect import landmarks_box, square_box
from wflwv.build.oracle import build_oracle_pair, label_as_build
from wflwv.io import atomic_path, folder_lock, read_json, save_npy, write_json
from wflwv.protocol.floor import EXACT_MOTION_FLOOR, FLOOR_KEY, floor_dominates, format_floor  # the record
from wflwv.protocol.layout import WFLWVDataset, write_dataset_info
from wflwv.protocol.video import iter_frames, probe_video, write_video

__all__ = [
    "FLOOR_KEY",
    "EXACT_MOTION_FLOOR",
    "FloorError",
    "FloorStill",
    "FloorSettings",
    "FloorResult",
    "FloorClip",
    "make_floor_clip",
    "nmf_against_motion",
    "measure_label_floor",
    "dataset_floor_stills",
    "label_floor_dict",
    "write_label_floor",
    "build_label_floor",
    "audit_label_floor",
    "format_floor",
    "floor_dominates",
]

#: bump when a change here changes the measured floor of the same data and oracle (cached clips are redone)
FLOOR_VERSION = 1


class FloorError(RuntimeError):
    """The floor cannot be measured (no usable frame, no oracle recorded, every clip failed)."""


@dataclass
class FloorStill:
    """A real frame to move. ``landmarks`` only place the face (any constant error in them costs nothing)."""

    image: np.ndarray  # BGR uint8 (H, W, 3)
    landmarks: np.ndarray  # (K, 2) frame pixels
    source: str = ""  # where it comes from, e.g. "CLIP_ID@frame"
    fps: float = 25.0  # frame rate of its video (the clips are made at this rate unless settings say otherwise)


@dataclass
class FloorSettings:
    """How the floor clips are made.

    The face keeps its pixel size (no zoom beyond what a preset does), so the oracle sees it at the resolution
    the dataset has; the frame is ``face side / face_size`` pixels high, 4:3.
    """

    stills: int = 3  # real frames taken from the data (each is moved once per preset)
    presets: tuple[str, ...] = ("static", "slow")
    num_frames: int = 40
    fps: float | None = None  # None: the frame rate of each still's video
    crf: int = 17  # H.264 quality of the clips (17: visually lossless, as `wflwv build` cuts its clips)
    margin: float = 1.0  # context kept around the face in the still, face sides
    face_size: float = 0.4  # face side / frame height
    interpolation: str = "linear"  # warp kernel (see exact_motion.render_frame)
    seed: int = 0
    box_smooth: int = 5
    batch_size: int = 16

    def __post_init__(self):
        self.presets = tuple(self.presets)
        unknown = [p for p in self.presets if p not in em.MOTION_PRESETS]
        if unknown:
            raise ValueError(f"unknown floor preset(s) {unknown}; available: {', '.join(em.MOTION_PRESETS)}")
        if self.stills < 1 or self.num_frames < 3:
            raise ValueError(f"the floor needs >= 1 still and >= 3 frames, got {self.stills} and {self.num_frames}")


@dataclass
class FloorResult:
    """Per-clip floor measurements and what produced them. ``clips`` rows: ``clip_id, source, preset, seed,
    frames, fps, face_side_px, nmf, nmf_vs_given, status, reason``."""

    clips: list[dict]
    oracle: dict
    settings: FloorSettings
    failures: list[dict] = field(default_factory=list)

    def label_floor(self) -> dict:
        return label_floor_dict(self.clips, self.oracle, self.settings)


# ------------------------------------------------------------------------------------------------ the measure
def nmf_against_motion(labels: np.ndarray, motion: np.ndarray) -> tuple[float, np.ndarray]:
    """NMF of per-frame labels of a moving still against their own mean carried by the known motion.

    Args:
        labels: (T, K, 2) frame pixels (e.g. an oracle's labels of an exact-motion clip).
        motion: (T, 3, 3) homographies still pixels -> frame pixels (the clip's exact motion).
    Returns:
        ``(nmf, reference)``: the NMF (released scale, :func:`wflwv.benchmark.metrics.nmf_video`) of ``labels``
        against ``reference`` (T, K, 2) = the mean over frames of the labels mapped into the still, mapped into
        every frame. A constant error of the labels (in still coordinates) moves with the face and costs nothing.
    """
    lab = np.asarray(labels, dtype=np.float64)
    mats = np.asarray(motion, dtype=np.float64)
    if lab.ndim != 3 or lab.shape[2] != 2 or mats.shape != (len(lab), 3, 3):
        raise ValueError(f"labels must be (T, K, 2) and motion (T, 3, 3), got {lab.shape} and {mats.shape}")
    inverse = np.linalg.inv(mats)
    in_still = np.stack([em.apply_motion(lab[t], inverse[t]) for t in range(len(lab))])
    reference = em.apply_motion(in_still.mean(axis=0), mats)
    return nmf_video(lab, reference), reference


def _clip_seed(seed: int, index: int, preset: str) -> int:
    digest = hashlib.sha256(f"{seed}:{index}:{preset}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _even(v: float) -> int:
    return max(2 * int(math.ceil(v / 2.0)), 16)


def _oracle_identity(oracle_info: dict) -> dict:
    """The recorded oracle: ``{members, tta, passes}`` (tta as the comma string of the build, '' for none)."""
    tta = oracle_info.get("tta") or ""
    if not isinstance(tta, str):
        tta = ",".join(tta)
    out = {
        "members": [str(m) for m in oracle_info.get("members", [])],
        "tta": tta,
        "passes": int(oracle_info.get("passes", 2)),
    }
    combine = oracle_info.get("combine") or "heatmap"
    if combine != "heatmap":  # records of heatmap oracles keep the key (and resume key) they had before
        out["combine"] = combine
    return out


def measure_label_floor(
    stills: Sequence[FloorStill],
    oracle: Any,
    box_oracle: Any = None,
    *,
    oracle_info: dict,
    settings: FloorSettings | None = None,
    work: str | Path,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FloorResult:
    """Measure the label-flicker floor of ``oracle`` on exact-motion clips made from ``stills``.

    Every still is moved once per preset; the clip (H.264, ``WORK/floor-III-PRESET.mp4``), its motion and its
    record (``.json``, written last) stay in ``work``, and a clip with a record made with the same still, settings
    and oracle is not made or labelled again.

    Args:
        stills: real frames with a face (:class:`FloorStill`).
        oracle, box_oracle: the oracles of :func:`wflwv.build.oracle.build_oracle_pair` (``box_oracle`` None:
            ``oracle`` for every pass).
        oracle_info: ``{"members": [...], "tta": "...", "passes": n}`` - what the oracle is (recorded, and part of
            the resume key); ``passes`` is used for labelling.
        settings: :class:`FloorSettings`.
        work: folder for the clips and records.
    Raises:
        FloorError: no stills, or every clip failed (the reasons are in the message).
    """
    settings = settings or FloorSettings()
    if not stills:
        raise FloorError("no frame to measure the label floor on")
    ident = _oracle_identity(oracle_info)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    jobs = [(i, s, p) for i, s in enumerate(stills) for p in settings.presets]
    # what one clip depends on (not how many stills or which presets there are)
    per_clip = {k: v for k, v in asdict(settings).items() if k not in ("stills", "presets")}
    rows, failures = [], []
    bar = tqdm(jobs, desc="label floor", unit="clip", disable=not progress, leave=True)
    for i, still, preset in bar:
        cid = f"floor-{i:02d}-{preset}"
        seed = _clip_seed(settings.seed, i, preset)
        image = np.ascontiguousarray(still.image)
        key = config_hash(["floor", FLOOR_VERSION, em.GENERATOR_VERSION, hashlib.sha1(image.tobytes()).hexdigest(),
                           np.round(np.asarray(still.landmarks, np.float64), 4).tolist(), per_clip, preset,
                           seed, ident, still.fps])  # fmt: skip
        rec_path = work / f"{cid}.json"
        if rec_path.is_file():
            done = read_json(rec_path)
            if done.get("key") == key and done.get("status") == "ok":
                rows.append(done)
                continue
        try:
            row = _floor_clip(cid, still, preset, seed, oracle, box_oracle, ident["passes"], settings, work)
        except Exception as exc:  # one bad frame must not lose the others
            failures.append(
                {"clip_id": cid, "source": still.source, "preset": preset, "reason": f"{type(exc).__name__}: {exc}"}
            )
            say(f"label floor: {cid} ({still.source}) failed: {type(exc).__name__}: {exc}")
            continue
        row["key"] = key
        write_json(rec_path, row)
        rows.append(row)
    if not rows:
        why = "; ".join(f"{f['clip_id']}: {f['reason']}" for f in failures[:3])
        raise FloorError(f"every label-floor clip failed ({why})")
    return FloorResult(rows, ident, settings, failures)


@dataclass
class FloorClip:
    """An exact-motion clip made for the floor: the H.264 video, its exact motion and where the face is."""

    video: Path
    motion: np.ndarray  # (T, 3, 3) still pixels -> frame pixels
    landmarks: np.ndarray  # (T, K, 2) the still's landmarks carried by the motion (frame pixels)
    fps: float
    frame_size: tuple[int, int]
    face_side: float  # face box side in the still (= in the frame at zoom 1), pixels


def make_floor_clip(still: FloorStill, preset: str, seed: int, settings: FloorSettings, video: Path) -> FloorClip:
    """Move ``still`` by the motion ``preset`` (face kept at its pixel size) and encode it to ``video`` (H.264 at
    ``settings.crf``; the motion goes beside it as ``.motion.npy``)."""
    image, lm = np.asarray(still.image), np.asarray(still.landmarks, dtype=np.float64)
    prepared, pts = em.prepare_still(image, lm, settings.margin)
    x1, y1, x2, y2 = landmarks_box(pts[None])[0]
    side = max(x2 - x1, y2 - y1)
    height = _even(side / settings.face_size)
    width = _even(height * 4 / 3)
    fps = float(settings.fps or still.fps or 25.0)
    # the face keeps its size: zoom 1 maps one still pixel to one frame pixel
    motion = em.resolve_motion(preset, face_size=side / height)
    clip = em.synthesise_clip(prepared, pts, num_frames=settings.num_frames, fps=fps, frame_size=(width, height),
                              motion=motion, degrade=None, hard=None, seed=seed, interpolation=settings.interpolation)  # fmt: skip
    video = Path(video)
    write_video(video, clip.frames, fps, crf=settings.crf)
    save_npy(video.with_suffix(".motion.npy"), clip.motion)
    return FloorClip(video, clip.motion, clip.landmarks, fps, (width, height), float(side))


def _floor_clip(cid, still, preset, seed, oracle, box_oracle, passes, settings, work: Path) -> dict:
    clip = make_floor_clip(still, preset, seed, settings, work / f"{cid}.mp4")
    boxes = square_box(landmarks_box(clip.landmarks))  # exact boxes; the box passes re-derive them anyway
    res = label_as_build(oracle, box_oracle, clip.video, boxes, cid, clip.fps, passes, settings.box_smooth,
                         settings.batch_size)  # fmt: skip
    if not np.isfinite(res.landmarks).all():
        raise ValueError("the oracle returned non-finite landmarks")
    nmf, _ = nmf_against_motion(res.landmarks, clip.motion)
    nmf_given = nmf_video(res.landmarks, clip.landmarks)
    return {"clip_id": cid, "source": still.source, "preset": preset, "seed": seed, "frames": settings.num_frames,
            "fps": clip.fps, "frame_size": list(clip.frame_size), "face_side_px": clip.face_side, "nmf": float(nmf),
            "nmf_vs_given": float(nmf_given), "status": "ok", "reason": ""}  # fmt: skip


def label_floor_dict(rows: Sequence[dict], oracle: dict, settings: FloorSettings) -> dict:
    """The ``label_floor`` record: mean NMF over clips overall and per preset, with how it was measured."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if not ok:
        raise FloorError("no measured label-floor clip")
    out: dict[str, Any] = {"nmf": float(np.mean([r["nmf"] for r in ok]))}
    for preset in settings.presets:
        vals = [r["nmf"] for r in ok if r["preset"] == preset]
        out[f"nmf_{preset}"] = float(np.mean(vals)) if vals else None
    out.update(
        clips=len(ok),
        method=(
            f"exact-motion clips of {len({r['source'] for r in ok})} real frame(s) of the data ({', '.join(settings.presets)} "
            f"presets, {settings.num_frames} frames, H.264 crf {settings.crf}), labelled as the build labels; NMF of the "
            "oracle's labels against its own mean label carried by the known warp"
        ),
        oracle=dict(oracle),
        frames=settings.num_frames,
        crf=settings.crf,
    )
    return out


# ------------------------------------------------------------------------------------------------ datasets
def dataset_floor_stills(root: str | Path, count: int) -> list[FloorStill]:
    """``count`` frames of a dataset's own videos with their labels, spread over its clips (middle frames when
    there are enough clips, else several evenly spaced frames per clip).

    Raises:
        FloorError: the dataset has no clip.
    """
    ds = WFLWVDataset(root)
    ids = sorted(ds.all_ids())
    if not ids:
        raise FloorError(f"{ds.root}: no clip to take label-floor frames from")
    per_clip = max(1, math.ceil(count / len(ids)))
    picks: list[tuple[str, float]] = []
    clip_order = [ids[int(j)] for j in np.unique(np.linspace(0, len(ids) - 1, min(count, len(ids))).round())]
    for cid in clip_order:
        for j in range(per_clip):
            picks.append((cid, (j + 1) / (per_clip + 1)))
    picks = picks[:count]
    out = []
    for cid, where in picks:
        clip = ds.load(cid)
        t = min(int(where * clip.num_frames), clip.num_frames - 1)
        frame = next(iter_frames(clip.video_path, t, t + 1), None)
        if frame is None:
            raise FloorError(f"{clip.video_path}: frame {t} could not be decoded")
        out.append(FloorStill(frame, clip.landmarks[t], f"{cid}@{t}", probe_video(clip.video_path).fps))
    return out


def write_label_floor(root: str | Path, floor: dict, result: FloorResult | None = None) -> None:
    """Record ``floor`` in ``ROOT/dataset.json`` and, with the per-clip ``result``, as ``status = floor`` rows of
    ``ROOT/manifest.parquet`` / ``manifest.csv`` when the dataset has a manifest (earlier floor rows replaced)."""
    root = Path(root)
    write_dataset_info(root, **{FLOOR_KEY: floor})
    man = root / "manifest.parquet"
    if result is None or not man.is_file():
        return
    df = pd.read_parquet(man)
    if "status" in df:
        df = df[df["status"] != "floor"]
    o = result.oracle
    source_of = dict(zip(df["clip_id"], df["source_id"])) if {"clip_id", "source_id"} <= set(df.columns) else {}
    rows = pd.DataFrame(
        [
            {
                "clip_id": r["clip_id"],
                "status": "floor",
                "reason": "",
                "source_id": source_of.get(r["source"].split("@")[0], ""),
                "num_frames": r["frames"],
                "fps": r["fps"],
                "floor_preset": r["preset"],
                "floor_nmf": r["nmf"],
                "floor_source": r["source"],
                "oracle_members": ",".join(o["members"]),
                "oracle_tta": o["tta"] or "none",
                "oracle_passes": o["passes"],
            }  # fmt: skip
            for r in result.clips
        ]
    )
    df = pd.concat([df, rows], ignore_index=True)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    with atomic_path(man) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(root / "manifest.csv") as tmp:
        df.to_csv(tmp, index=False)


def build_label_floor(config, oracle: Any = None, log: Callable[[str], None] | None = None) -> dict | None:
    """The floor step of `wflwv build`: frames of the published clips, the build's oracle and settings.

    Args:
        config: the :class:`~wflwv.build.config.BuildConfig` (``floor_stills`` frames, ``floor_frames`` per clip;
            0 stills = no floor).
        oracle: the injected oracle of the build, if any (used for every pass, as the build does).
    Returns:
        The ``label_floor`` record (also written to ``dataset.json`` and the manifest), or None when skipped.
    """
    say = log or (lambda msg: None)
    if getattr(config, "floor_stills", 0) <= 0:
        return None
    root = Path(config.out)
    if not (root / "landmarks").is_dir() or not any((root / "landmarks").glob("*.npy")):
        say("label floor: no published clip to measure it on")
        return None
    settings = FloorSettings(stills=config.floor_stills, num_frames=config.floor_frames, box_smooth=config.box_smooth,
                             batch_size=config.batch_size)  # fmt: skip
    info = {"members": list(config.members), "tta": config.tta, "passes": config.passes, "combine": config.combine}
    pair = (
        (oracle, oracle)
        if oracle is not None
        else build_oracle_pair(config.members, config.tta, config.passes, config.device, config.combine)
    )
    try:
        stills = dataset_floor_stills(root, settings.stills)
        result = measure_label_floor(stills, pair[0], pair[1], oracle_info=info, settings=settings,
                                     work=Path(config.work) / "floor", progress=config.progress, log=say)  # fmt: skip
    except Exception as exc:  # the dataset is built; a floor that cannot be measured must not undo that
        say(f"label floor: not measured ({type(exc).__name__}: {exc}); `wflwv build --audit {root}` retries it")
        return None
    floor = result.label_floor()
    write_label_floor(root, floor, result)
    say(format_floor(floor))
    return floor


def audit_label_floor(
    root: str | Path,
    *,
    members: Sequence[str] | None = None,
    tta: str | None = None,
    passes: int | None = None,
    combine: str | None = None,
    settings: FloorSettings | None = None,
    device: str = "cpu",
    oracle: Any = None,
    work: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """`wflwv build --audit DIR`: measure the floor of an existing dataset and write it into its ``dataset.json``.

    The oracle is the one recorded in ``dataset.json`` (``oracle: {members, tta, passes}``, as `wflwv build`
    writes it), each part replaced by the argument when given. An exact-motion dataset gets
    :data:`EXACT_MOTION_FLOOR` without measuring.

    Raises:
        FloorError: no oracle recorded and none given, or no clip to take frames from.
        FolderLockedError: a build is writing into ``root``.
    """
    root = Path(root)
    ds = WFLWVDataset(root)
    info = ds.info
    if info.get("exact_motion"):
        floor = dict(EXACT_MOTION_FLOOR)
        with folder_lock(root, command="wflwv build", other="to audit the dataset once it is written"):
            write_label_floor(root, floor)
        return floor
    recorded = info.get("oracle") or {}
    if not (members or recorded.get("members")):
        raise FloorError(
            f"{root / 'dataset.json'} records no oracle: pass the one the labels were made with "
            "(--member NAME, --tta, --passes)"
        )
    ident = {
        "members": list(members) if members else list(recorded["members"]),
        "tta": tta if tta is not None else recorded.get("tta", ""),
        "passes": int(passes if passes is not None else recorded.get("passes", 2)),
        "combine": combine or recorded.get("combine") or "heatmap",
    }
    settings = settings or FloorSettings(box_smooth=int(recorded.get("box_smooth", 5)))
    pair = (
        (oracle, oracle)
        if oracle is not None
        else build_oracle_pair(ident["members"], ident["tta"], ident["passes"], device, ident["combine"])
    )
    work = Path(work) if work is not None else root / ".build" / "floor"
    with folder_lock(root, command="wflwv build", other="to audit the dataset once it is written"):
        stills = dataset_floor_stills(root, settings.stills)
        result = measure_label_floor(stills, pair[0], pair[1], oracle_info=ident, settings=settings, work=work,
                                     progress=progress, log=log)  # fmt: skip
        floor = result.label_floor()
        write_label_floor(root, floor, result)
    return floor
