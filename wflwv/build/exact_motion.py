"""Exact-motion clips: a video clip made from one labelled still image, with labels exact by construction.

The motion is synthesised, so the ground truth of every frame is known exactly: frame ``t`` is the still warped by a
homography ``motion[t]`` (still pixels -> frame pixels) and its landmarks are the still's labels mapped by the same
homography (perspective division included). Nothing in the rendering (anti-aliasing, motion blur, occluders,
noise, lighting) moves a label; all of it only makes the picture harder to read, as real video is.

Conventions (the toolkit's): images are BGR ``uint8`` arrays ``(H, W, 3)``; points are ``(K, 2)`` arrays of
``(x, y)`` pixel coordinates with pixel *centres* at integers (so the image spans ``[-0.5, W - 0.5]``); sizes are
``(width, height)``; times are in seconds, rates in Hz, angles in degrees, so a preset looks the same at any fps.
"Face side" is ``max(w, h)`` of the landmarks' bounding box; many amplitudes are given in face sides so that a
preset looks the same at any resolution.

The pieces, each usable alone:

* :func:`prepare_still` crops / pads a labelled image around its face with a margin (and optionally shrinks it).
* :func:`sample_motion` (:func:`sample_motion_track` for the per-frame pose parameters and events) draws the
  ``(T, 3, 3)`` homographies of a :class:`MotionConfig` / :data:`MOTION_PRESETS` preset.
* :func:`make_backdrop`, :func:`render_frame`, :func:`subframe_matrices`, :func:`render_motion_blurred` render
  frames; :class:`Degrader` / :func:`degrade` add sensor noise and lighting drift (:class:`DegradeConfig`).
* :class:`HardConfig` adds the ambiguity of a "hard" clip: occluders, blur and low-light episodes, partial exits.
* :func:`synthesise_clip` does all of it and returns an :class:`ExactClip`; :func:`apply_motion` maps labels;
  :func:`motion_from_params` re-derives a clip's motion from its recorded parameters.

Compression (JPEG / H.264 softness and blocking) is deliberately *not* done here: the caller encodes the frames
with the CRF of its choice.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
from scipy.signal import lfilter

__all__ = [
    "GENERATOR_VERSION",
    "MotionConfig",
    "MOTION_PRESETS",
    "MotionTrack",
    "resolve_motion",
    "sample_motion",
    "sample_motion_track",
    "motion_from_params",
    "apply_motion",
    "boxes_from_landmarks",
    "prepare_still",
    "Backdrop",
    "make_backdrop",
    "render_frame",
    "INTERPOLATIONS",
    "subframe_matrices",
    "render_motion_blurred",
    "DegradeConfig",
    "Degrader",
    "degrade",
    "HardConfig",
    "ExactClip",
    "synthesise_clip",
]

#: bumped whenever a change of this module would change the clip generated for a given seed and configuration
GENERATOR_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# small helpers


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _child_rngs(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` independent generators drawn from ``rng`` (each part of a recipe gets its own stream, so changing one
    part, e.g. adding exits, leaves the random draws of the others untouched)."""
    seeds = rng.integers(0, 2**63 - 1, size=n)
    return [np.random.default_rng(int(s)) for s in seeds]


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    """C1 ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    lo, hi = float(bounds[0]), float(bounds[1])
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def _smooth_noise(times: np.ndarray, duration: float, tau: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth (C2) zero-mean random signal with standard deviation ~1 and correlation time ``tau`` seconds.

    It is a uniform cubic B-spline whose coefficients (one every ``tau`` seconds) are i.i.d. normal. The number of
    random draws depends only on ``duration / tau``, never on how densely ``times`` samples it, so the same
    generator state gives the same curve at any fps.

    Args:
        times: (N,) sample times in seconds, within ``[0, duration]``.
        duration: length of the signal in seconds.
        tau: knot spacing (correlation time) in seconds, > 0.
    Returns:
        (N,) float64 values.
    """
    n_knots = int(math.floor(max(duration, 0.0) / tau)) + 5
    coef = rng.standard_normal(n_knots)
    u = np.asarray(times, dtype=np.float64) / tau
    i = np.clip(np.floor(u).astype(np.int64), 0, n_knots - 4)
    f = u - i
    f2, f3 = f * f, f * f * f
    w0 = (1.0 - f) ** 3 / 6.0
    w1 = (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0
    w2 = (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0
    w3 = f3 / 6.0
    value = w0 * coef[i] + w1 * coef[i + 1] + w2 * coef[i + 2] + w3 * coef[i + 3]
    # the variance of a unit B-spline sum is sum(w^2), between 0.46 (mid-knot) and 0.5 (at a knot)
    return value / math.sqrt(0.48)


def _ou(n: int, dt: float, std: float, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Ornstein-Uhlenbeck random walk: stationary standard deviation ``std``, mean-reversion time ``tau`` seconds.

    Exact discretisation at step ``dt``: ``x[k+1] = a x[k] + std sqrt(1 - a^2) n``, ``a = exp(-dt / tau)``; the
    per-step change has standard deviation ``std * sqrt(2 (1 - a))`` (about ``std * sqrt(2 dt / tau)``).
    """
    draws = rng.standard_normal(max(n, 1))
    if std <= 0 or n == 0:
        return np.zeros(n)
    a = math.exp(-dt / tau)
    drive = draws * (std * math.sqrt(1.0 - a * a))
    drive[0] = draws[0] * std
    return lfilter([1.0], [1.0, -a], drive)[:n]


def _episode_envelope(times: np.ndarray, start: float, ramp_in: float, hold: float, ramp_out: float) -> np.ndarray:
    """Trapezoid with smooth (C1) ramps: 0 before ``start``, 1 during ``hold``, back to 0 after ``ramp_out``."""
    rise = _smoothstep((times - start) / max(ramp_in, 1e-9))
    fall = _smoothstep((times - start - ramp_in - hold) / max(ramp_out, 1e-9))
    return rise * (1.0 - fall)


def _stratified_starts(rng: np.random.Generator, count: int, duration: float, length: float) -> list[float]:
    """``count`` start times, one in each of ``count`` equal slots of the clip, each event of ``length`` seconds
    fitting in its slot when it can (so events of one kind neither pile up nor overlap)."""
    starts = []
    slot = duration / max(count, 1)
    for k in range(count):
        room = max(slot - length, 0.0)
        starts.append(k * slot + float(rng.uniform(0.0, room)) if room > 0 else k * slot)
    return starts


def _event_count(rng: np.random.Generator, rate_hz: float, duration: float, at_least_one: bool) -> int:
    if rate_hz <= 0:
        return 0
    n = int(rng.poisson(rate_hz * duration))
    return max(n, 1) if at_least_one else n


def _jsonable(value: Any) -> Any:
    """Plain JSON types (tuples become lists, numpy scalars / arrays become Python numbers / lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _to_float_bgr(image: np.ndarray) -> np.ndarray:
    """BGR float32 copy of a uint8 / float image (grey images are expanded to 3 channels)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image (H, W, 3), got shape {image.shape}")
    return image.astype(np.float32, copy=True)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _normalise_h(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) homographies scaled so that ``m[..., 2, 2] == 1``; (..., 2, 3) affine matrices are completed."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] == (2, 3):
        bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), m.shape[:-2] + (1, 3))
        m = np.concatenate([m, bottom], axis=-2)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) or (..., 2, 3) matrices, got shape {m.shape}")
    return m / m[..., 2:3, 2:3]


def _map_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply one homography (3, 3) to (N, 2) points."""
    h = pts @ m[:2, :2].T + m[:2, 2]
    w = pts @ m[2, :2] + m[2, 2]
    return h / w[:, None]


def _local_scale(m: np.ndarray, point: np.ndarray) -> float:
    """sqrt(|det J|) of homography ``m`` at ``point`` (x, y): how much lengths near the point are scaled."""
    h = m @ np.array([point[0], point[1], 1.0])
    mapped = h[:2] / h[2]
    jac = (m[:2, :2] - np.outer(mapped, m[2, :2])) / h[2]
    return math.sqrt(abs(np.linalg.det(jac)))


# ----------------------------------------------------------------------------------------------------------------
# labels


def apply_motion(points: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Map still-image points through per-frame motion matrices (perspective division included).

    Args:
        points: (K, 2) still-pixel coordinates.
        motion: (T, 3, 3) homographies or (T, 2, 3) affine matrices, still pixels -> frame pixels; a single
            (3, 3) / (2, 3) matrix is accepted too.
    Returns:
        (T, K, 2) float64 frame-pixel coordinates ((K, 2) for a single matrix).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (K, 2), got shape {pts.shape}")
    m = np.asarray(motion, dtype=np.float64)
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.shape[-2:] == (2, 3):
        num = np.einsum("tij,kj->tki", m[:, :, :2], pts) + m[:, None, :, 2]
        out = num
    elif m.shape[-2:] == (3, 3):
        num = np.einsum("tij,kj->tki", m[:, :2, :2], pts) + m[:, None, :2, 2]
        den = np.einsum("tj,kj->tk", m[:, 2, :2], pts) + m[:, None, 2, 2]
        out = num / den[..., None]
    else:
        raise ValueError(f"motion must be (T, 3, 3) or (T, 2, 3), got shape {m.shape}")
    return out[0] if single else out


def boxes_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Bounding boxes of landmarks.

    Args:
        landmarks: (T, K, 2) points.
    Returns:
        (T, 4) float64 ``x1, y1, x2, y2``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.concatenate([lm.min(axis=1), lm.max(axis=1)], axis=1)


def _face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    pts = np.asarray(points, dtype=np.float64)
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


# ----------------------------------------------------------------------------------------------------------------
# motion


@dataclass
class MotionConfig:
    """How the face moves in an exact-motion clip (still pixels -> frame pixels, one homography per frame).

    A frame's matrix is ``T(frame centre + shift) . s R(roll) . P(yaw, pitch) . T(-still face centre)``:

    * ``shift``: slow drift (smooth noise, face sides) + a sub-pixel Ornstein-Uhlenbeck walk (frame pixels),
      re-centred so the face is centred on average, then softly limited so the face box stays in the frame.
    * ``s``: ``face_size * frame height / still face side`` times ``exp(log-zoom)`` (slow noise, periodic sweep,
      OU jitter). ``R(roll)``: in-plane rotation, positive = clockwise on screen.
    * ``P(yaw, pitch)``: out-of-plane head rotation, *approximated* by a planar face seen by a pinhole camera
      ``camera_distance`` face sides away, rotating about a pivot ``pivot`` = (below, behind) the face centre (the
      neck). This gives the foreshortening, the keystone and the sideways / vertical shift of a turn or nod, but no
      parallax inside the face (the nose does not move over the cheek) and no self-occlusion, so it is only
      faithful for a few degrees. The bottom row of the matrix stays small: about ``sin(angle) / (camera_distance
      * face side)`` per still pixel (3e-4 for 15 deg at 5 face sides of 170 px).

    Time-based parameters are in seconds / Hz; angles in degrees; "face sides" are the face box side in the frame.
    Events (nods, shakes, fast turns, exits) are drawn as Poisson counts over the clip's duration.
    """

    name: str = "custom"
    face_size: float = 0.40  # face box side / frame height at zoom 1
    # translation
    drift_amp: float = 0.0  # std of the slow horizontal drift, face sides
    drift_y_ratio: float = 0.6  # vertical drift std = drift_amp * this
    drift_tau_s: float = 3.0  # correlation time of the drift
    walk_px: float = 0.0  # stationary std of the OU random walk of the face position, frame pixels (per axis)
    walk_tau_s: float = 1.5  # mean-reversion time of the OU walk (and of the roll / zoom jitter)
    # in-plane rotation and zoom
    roll_deg: float = 0.0  # std of the slow roll
    roll_tau_s: float = 4.0
    jitter_roll_deg: float = 0.0  # std of an OU roll jitter (tripod / breathing)
    zoom_amp: float = 0.0  # std of the slow log-zoom (0.04 ~ +-4 %)
    zoom_tau_s: float = 5.0
    jitter_zoom: float = 0.0  # std of an OU log-zoom jitter
    zoom_sweep: float = 0.0  # amplitude of a sinusoidal log-zoom (0.28: x1.32 .. x0.76)
    zoom_period_s: tuple[float, float] = (5.0, 8.0)  # its period is drawn in this range
    # out-of-plane rotation (planar approximation, see above)
    yaw_deg: float = 0.0  # std of slow yaw (looking left / right)
    pitch_deg: float = 0.0  # std of slow pitch (looking up / down)
    pose_tau_s: float = 3.0
    nod_rate_hz: float = 0.0  # nods per second: damped pitch oscillations
    shake_rate_hz: float = 0.0  # head shakes per second: damped yaw oscillations
    gesture_amp_deg: tuple[float, float] = (2.0, 6.0)  # their amplitude
    gesture_freq_hz: tuple[float, float] = (1.2, 2.5)  # their frequency
    gesture_decay_s: tuple[float, float] = (0.5, 1.2)  # their exponential decay time
    turn_rate_hz: float = 0.0  # fast head turns per second (a quick yaw, a hold, a slower return)
    turn_amp_deg: tuple[float, float] = (8.0, 18.0)
    turn_time_s: tuple[float, float] = (0.15, 0.35)  # duration of the fast part
    turn_hold_s: tuple[float, float] = (0.3, 1.2)
    camera_distance: float = 5.0  # camera to face, in face sides (perspective strength)
    pivot: tuple[float, float] = (0.45, 0.8)  # rotation pivot below and behind the face centre, face sides
    # staying in frame
    recentre: bool = True  # subtract the clip-mean face position so the face is centred on average
    keep_in_frame: bool = True  # softly limit the face centre so that the face box stays inside the frame
    # partial exits (set by HardConfig): the face is pushed partly out of the frame for a while
    exit_count: int = 0
    exit_depth: tuple[float, float] = (0.2, 0.45)  # share of the face side pushed beyond the frame border
    exit_ramp_s: tuple[float, float] = (0.4, 0.8)
    exit_hold_s: tuple[float, float] = (0.5, 1.5)


#: the built-in motion presets
MOTION_PRESETS: dict[str, MotionConfig] = {
    # a tripod and a still sitter: sub-pixel OU walk of the position (per-frame steps ~0.07 px per axis at 30 fps,
    # std 0.4 px per axis overall), tiny roll (0.02 deg) and scale (0.05 %) jitter, nothing else
    "static": MotionConfig(
        name="static",
        walk_px=0.4,
        walk_tau_s=1.5,
        jitter_roll_deg=0.02,
        jitter_zoom=0.0005,
    ),
    # slow and smooth: drift of a few % of the face, a couple of degrees of roll / yaw / pitch, a few % of zoom,
    # all with correlation times of 4-6 s; no jitter, no events (C2-smooth trajectories)
    "slow": MotionConfig(
        name="slow",
        drift_amp=0.06,
        drift_tau_s=4.0,
        roll_deg=2.0,
        roll_tau_s=5.0,
        zoom_amp=0.04,
        zoom_tau_s=6.0,
        yaw_deg=3.0,
        pitch_deg=2.0,
        pose_tau_s=4.0,
    ),
    # natural head motion: low-pass drift, slow pose changes, a nod every ~5 s, a shake every ~8 s, a fast turn
    # every ~8 s, mild zoom and a faint tremor
    "natural": MotionConfig(
        name="natural",
        drift_amp=0.10,
        drift_tau_s=2.5,
        walk_px=0.2,
        roll_deg=3.0,
        roll_tau_s=3.0,
        zoom_amp=0.04,
        zoom_tau_s=4.0,
        yaw_deg=4.0,
        pitch_deg=3.0,
        pose_tau_s=2.0,
        nod_rate_hz=0.2,
        shake_rate_hz=0.12,
        turn_rate_hz=0.12,
    ),
    # slow zoom in and out (x0.76 .. x1.32 over a 5-8 s period) with a little drift and roll
    "zoom": MotionConfig(
        name="zoom",
        zoom_sweep=0.28,
        zoom_period_s=(5.0, 8.0),
        drift_amp=0.03,
        drift_tau_s=4.0,
        roll_deg=1.0,
        roll_tau_s=5.0,
        walk_px=0.1,
    ),
}


def resolve_motion(preset: MotionConfig | str | dict, **overrides: Any) -> MotionConfig:
    """A :class:`MotionConfig` from a preset name, a config or a dict of its fields, with fields overridden.

    Raises:
        ValueError: unknown preset or field name.
    """
    if isinstance(preset, MotionConfig):
        cfg = preset
    elif isinstance(preset, str):
        if preset not in MOTION_PRESETS:
            raise ValueError(f"unknown motion preset {preset!r}; available: {', '.join(MOTION_PRESETS)}")
        cfg = MOTION_PRESETS[preset]
    elif isinstance(preset, dict):
        cfg = MotionConfig(**preset)
    else:
        raise TypeError(f"motion must be a preset name, a MotionConfig or a dict, got {type(preset).__name__}")
    names = {f.name for f in fields(MotionConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown MotionConfig field(s): {', '.join(unknown)}")
    return replace(cfg, **overrides) if overrides else replace(cfg)


@dataclass
class MotionTrack:
    """The motion of a clip with the pose parameters it was built from.

    Attributes:
        matrices: (T, 3, 3) float64 homographies, still pixels -> frame pixels, ``[2, 2] == 1``.
        times: (T,) frame times in seconds (``t / fps``).
        shift: (T, 2) final translation of the face centre from the frame centre, frame pixels.
        roll_deg, log_zoom, yaw_deg, pitch_deg: (T,) the pose parameters.
        face_centre: (T, 2) the still's face-box centre mapped into the frame.
        face_side: (T,) the face side in the frame (still face side times the local scale at the face centre).
        events: nods, shakes, turns and exits with their parameters (JSON-serialisable dicts).
    """

    matrices: np.ndarray
    times: np.ndarray
    shift: np.ndarray
    roll_deg: np.ndarray
    log_zoom: np.ndarray
    yaw_deg: np.ndarray
    pitch_deg: np.ndarray
    face_centre: np.ndarray
    face_side: np.ndarray
    events: list[dict] = field(default_factory=list)


def _pose_homography(yaw_deg: float, pitch_deg: float, distance: float, below: float, behind: float) -> np.ndarray:
    """Homography of a planar face (z = distance, face-centred pixel coordinates, y down) rotated by yaw (about the
    vertical axis) and pitch (about the horizontal axis) around the pivot (0, below, distance + behind), seen by a
    pinhole camera at the origin with focal length ``distance`` (so that no rotation is the identity)."""
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rot = rot_y @ rot_x
    pivot = np.array([0.0, below, distance + behind])
    # a face point (x, y, distance) = diag(1, 1, distance) @ (x, y, 1); rotated about the pivot
    m = rot @ np.diag([1.0, 1.0, distance])
    m[:, 2] += pivot - rot @ pivot
    h = np.diag([distance, distance, 1.0]) @ m
    return h / h[2, 2]


def _soft_limit(u: np.ndarray, room: np.ndarray, knee: float = 0.6) -> np.ndarray:
    """Identity for |u| <= knee * room, then a tanh knee that never exceeds ``room`` (C1); 0 where room <= 0."""
    u = np.asarray(u, dtype=np.float64)
    room = np.maximum(np.asarray(room, dtype=np.float64), 0.0)
    a = knee * room
    span = np.maximum(room - a, 1e-9)
    over = np.abs(u) - a
    limited = np.sign(u) * (a + span * np.tanh(np.maximum(over, 0.0) / span))
    out = np.where(over > 0, limited, u)
    return np.where(room > 0, out, 0.0)


def sample_motion_track(
    preset: MotionConfig | str | dict,
    num_frames: int,
    fps: float,
    rng: np.random.Generator | int | None,
    *,
    still_size: tuple[int, int],
    face_box: Sequence[float],
    frame_size: tuple[int, int],
    **overrides: Any,
) -> MotionTrack:
    """Draw the motion of a clip, with its pose parameters and events. See :func:`sample_motion`."""
    cfg = resolve_motion(preset, **overrides)
    rng = _as_rng(rng)
    T = int(num_frames)
    if T < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    W, H = int(frame_size[0]), int(frame_size[1])
    sw, sh = int(still_size[0]), int(still_size[1])
    x1, y1, x2, y2 = (float(v) for v in face_box)
    side_still = max(x2 - x1, y2 - y1)
    if not side_still > 0:
        raise ValueError(f"degenerate face box {tuple(face_box)}")
    if x2 < -0.5 or y2 < -0.5 or x1 > sw - 0.5 or y1 > sh - 0.5:
        raise ValueError(f"face box {tuple(face_box)} lies outside the still ({sw} x {sh})")
    c_still = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0])
    c_frame = np.array([(W - 1) / 2.0, (H - 1) / 2.0])
    duration = T / fps
    t = np.arange(T) / fps
    side0 = cfg.face_size * H  # face side in the frame at zoom 1
    s0 = side0 / side_still

    # independent streams: smooth signals, events, exits, jitter walks (fps changes only the last one's draws)
    r_smooth, r_events, r_exit, r_walk = _child_rngs(rng, 4)

    shift = np.zeros((T, 2))
    shift[:, 0] = cfg.drift_amp * side0 * _smooth_noise(t, duration, cfg.drift_tau_s, r_smooth)
    shift[:, 1] = cfg.drift_amp * cfg.drift_y_ratio * side0 * _smooth_noise(t, duration, cfg.drift_tau_s, r_smooth)
    roll = cfg.roll_deg * _smooth_noise(t, duration, cfg.roll_tau_s, r_smooth)
    log_zoom = cfg.zoom_amp * _smooth_noise(t, duration, cfg.zoom_tau_s, r_smooth)
    yaw = cfg.yaw_deg * _smooth_noise(t, duration, cfg.pose_tau_s, r_smooth)
    pitch = cfg.pitch_deg * _smooth_noise(t, duration, cfg.pose_tau_s, r_smooth)
    sweep_period = _uniform(r_smooth, cfg.zoom_period_s)
    sweep_phase = float(r_smooth.uniform(0.0, 2.0 * math.pi))
    if cfg.zoom_sweep:
        log_zoom = log_zoom + cfg.zoom_sweep * np.sin(2.0 * math.pi * t / sweep_period + sweep_phase)

    events: list[dict] = []
    if cfg.zoom_sweep:
        events.append(
            {"kind": "zoom_sweep", "amplitude": cfg.zoom_sweep, "period_s": sweep_period, "phase": sweep_phase}
        )

    # nods (pitch) and shakes (yaw): damped oscillations with a smooth onset (zero velocity at the start)
    for kind, target in (("nod", pitch), ("shake", yaw)):
        rate = cfg.nod_rate_hz if kind == "nod" else cfg.shake_rate_hz
        for _ in range(int(r_events.poisson(max(rate, 0.0) * duration))):
            start = float(r_events.uniform(-0.5, duration))
            amp = _uniform(r_events, cfg.gesture_amp_deg) * (1.0 if r_events.random() < 0.5 else -1.0)
            freq = _uniform(r_events, cfg.gesture_freq_hz)
            decay = _uniform(r_events, cfg.gesture_decay_s)
            u = np.maximum(t - start, 0.0)
            onset = 1.0 - np.exp(-u * freq * 4.0)
            target += amp * np.sin(2.0 * math.pi * freq * u) * np.exp(-u / decay) * onset
            events.append({"kind": kind, "start_s": start, "amplitude_deg": amp, "freq_hz": freq, "decay_s": decay})
    # fast turns: a quick yaw (with a little pitch), a hold, a slower return
    for _ in range(int(r_events.poisson(max(cfg.turn_rate_hz, 0.0) * duration))):
        start = float(r_events.uniform(-0.2, duration))
        amp = _uniform(r_events, cfg.turn_amp_deg) * (1.0 if r_events.random() < 0.5 else -1.0)
        rise = _uniform(r_events, cfg.turn_time_s)
        hold = _uniform(r_events, cfg.turn_hold_s)
        back = rise * float(r_events.uniform(1.5, 3.0))
        tilt = float(r_events.uniform(-0.15, 0.15))
        profile = _episode_envelope(t, start, rise, hold, back)
        yaw += amp * profile
        pitch += tilt * abs(amp) * profile
        events.append(
            {
                "kind": "turn",
                "start_s": start,
                "amplitude_deg": amp,
                "rise_s": rise,
                "hold_s": hold,
                "return_s": back,
                "pitch_ratio": tilt,
            }
        )

    # exits: parameters drawn now, applied after the in-frame limit
    exits = []
    for _ in range(max(int(cfg.exit_count), 0)):
        ramp_in, hold, ramp_out = (
            _uniform(r_exit, cfg.exit_ramp_s),
            _uniform(r_exit, cfg.exit_hold_s),
            _uniform(r_exit, cfg.exit_ramp_s),
        )
        side_name = str(r_exit.choice(["left", "right", "top", "bottom"], p=[0.35, 0.35, 0.15, 0.15]))
        depth = _uniform(r_exit, cfg.exit_depth)
        exits.append([ramp_in, hold, ramp_out, side_name, depth])
    if exits:
        lengths = [sum(e[:3]) for e in exits]
        slot = duration / len(exits)
        for e, length in zip(exits, lengths):
            if length > slot:  # squeeze an episode that does not fit its slot
                for j in range(3):
                    e[j] *= slot / length
        starts = _stratified_starts(r_exit, len(exits), duration, min(max(lengths), slot))

    # jitter walks (their number of draws depends on the number of frames, so they come last)
    dt = 1.0 / fps
    shift[:, 0] += _ou(T, dt, cfg.walk_px, cfg.walk_tau_s, r_walk)
    shift[:, 1] += _ou(T, dt, cfg.walk_px, cfg.walk_tau_s, r_walk)
    roll = roll + _ou(T, dt, cfg.jitter_roll_deg, cfg.walk_tau_s, r_walk)
    log_zoom = log_zoom + _ou(T, dt, cfg.jitter_zoom, cfg.walk_tau_s, r_walk)

    # matrices before the final translation corrections
    distance = cfg.camera_distance * side_still
    below, behind = cfg.pivot[0] * side_still, cfg.pivot[1] * side_still
    mats = np.empty((T, 3, 3))
    to_face = _translation(-c_still[0], -c_still[1])
    for k in range(T):
        pose = _pose_homography(yaw[k], pitch[k], distance, below, behind)
        s = s0 * math.exp(log_zoom[k])
        c, sn = math.cos(math.radians(roll[k])), math.sin(math.radians(roll[k]))
        sim = np.array([[s * c, -s * sn, 0.0], [s * sn, s * c, 0.0], [0.0, 0.0, 1.0]])
        place = _translation(c_frame[0] + shift[k, 0], c_frame[1] + shift[k, 1])
        mats[k] = _normalise_h(place @ sim @ pose @ to_face)

    centre, side = _centres_and_sides(mats, c_still, side_still)
    offset = centre - c_frame
    correction = np.zeros((T, 2))
    if cfg.recentre:
        correction -= offset.mean(axis=0)
    if cfg.keep_in_frame:
        u = offset + correction
        # half the box, 10 % slack for roll / perspective, and 2 % of the frame height as a border
        slack = 0.55 * side + 0.02 * H
        limited = np.stack([_soft_limit(u[:, 0], W / 2.0 - slack), _soft_limit(u[:, 1], H / 2.0 - slack)], axis=1)
        correction += limited - u
    for e, start in zip(exits, starts if exits else []):
        ramp_in, hold, ramp_out, side_name, depth = e
        env = _episode_envelope(t, start, ramp_in, hold, ramp_out)
        current = centre + correction
        axis = 0 if side_name in ("left", "right") else 1
        extent = W if axis == 0 else H
        if side_name in ("left", "top"):
            target = side / 2.0 - 0.5 - depth * side
        else:
            target = extent - 0.5 - side / 2.0 + depth * side
        correction[:, axis] += env * (target - current[:, axis])
        events.append(
            {
                "kind": "exit",
                "start_s": start,
                "ramp_in_s": ramp_in,
                "hold_s": hold,
                "ramp_out_s": ramp_out,
                "side": side_name,
                "depth": depth,
            }
        )
    for k in range(T):
        mats[k] = _translation(correction[k, 0], correction[k, 1]) @ mats[k]
    centre = centre + correction
    return MotionTrack(
        matrices=mats,
        times=t,
        shift=centre - c_frame,
        roll_deg=roll,
        log_zoom=log_zoom,
        yaw_deg=yaw,
        pitch_deg=pitch,
        face_centre=centre,
        face_side=side,
        events=_jsonable(events),
    )


def _centres_and_sides(mats: np.ndarray, c_still: np.ndarray, side_still: float) -> tuple[np.ndarray, np.ndarray]:
    h = mats @ np.array([c_still[0], c_still[1], 1.0])
    centre = h[:, :2] / h[:, 2:3]
    jac = (mats[:, :2, :2] - centre[:, :, None] * mats[:, 2, None, :2]) / h[:, 2, None, None]
    scale = np.sqrt(np.abs(np.linalg.det(jac)))
    return centre, side_still * scale


def sample_motion(
    preset: MotionConfig | str | dict,
    num_frames: int,
    fps: float,
    rng: np.random.Generator | int | None,
    *,
    still_size: tuple[int, int],
    face_box: Sequence[float],
    frame_size: tuple[int, int],
    **overrides: Any,
) -> np.ndarray:
    """Draw the per-frame motion of a clip: homographies from still pixels to frame pixels.

    The face (the still's ``face_box``) is placed at ``face_size`` x frame height, centred in the frame on average,
    and moves as the preset says (see :class:`MotionConfig` and :data:`MOTION_PRESETS`); it stays inside the frame
    (soft limit) unless exits are asked for. Deterministic for a given ``rng`` state; the smooth parts and the
    events do not depend on ``fps`` (a clip at 30 fps passes through the same poses as at 15 fps).

    Args:
        preset: preset name (``static``, ``slow``, ``natural``, ``zoom``), :class:`MotionConfig` or dict.
        num_frames: T.
        fps: frames per second.
        rng: numpy Generator (or seed).
        still_size: (width, height) of the still.
        face_box: the still's face box ``x1, y1, x2, y2`` in still pixels (the landmarks' bounding box).
        frame_size: (width, height) of the frames.
        **overrides: :class:`MotionConfig` fields replacing the preset's.
    Returns:
        (T, 3, 3) float64, ``[2, 2] == 1``; pure similarities when yaw, pitch and their events are all zero.
    """
    return sample_motion_track(
        preset, num_frames, fps, rng, still_size=still_size, face_box=face_box, frame_size=frame_size, **overrides
    ).matrices


# ----------------------------------------------------------------------------------------------------------------
# the still and its background


def _extend_image(
    image: np.ndarray,
    pads: tuple[int, int, int, int],
    *,
    blur: float,
    contrast: float,
    ramp: float,
    texture: float,
    rng: np.random.Generator,
    face_box: Sequence[float] | None = None,
) -> np.ndarray:
    """Extend a float BGR image by ``pads`` = (left, top, right, bottom) pixels with a plausible background.

    Inside the image nothing changes. Outside, the mirror image of the still (``BORDER_REFLECT_101``, continuous at
    the edge) fades, over ``ramp`` x the image's longer side, into a background made of the still's own borders:
    the same mirror image blurred by ``blur`` x the longer side, its contrast scaled by ``contrast`` around the
    mean border colour, plus a low-frequency grey texture of amplitude ``texture`` grey levels so that the far
    background is not flat. With ``face_box``, the head (the landmarks' box grown by half a face side on every
    side, which takes in most of the forehead, hair and ears) is first inpainted away from the source of the
    mirror images, so that no ghost of the face appears beside it.
    """
    left, top, right, bottom = (max(int(p), 0) for p in pads)
    h, w = image.shape[:2]
    if left == top == right == bottom == 0:
        return image.copy()
    source = image if face_box is None else _without_face(image, face_box)
    ref = cv2.copyMakeBorder(source, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    Hc, Wc = ref.shape[:2]
    longer = max(h, w)
    sigma = max(blur * longer, 0.5)
    k = max(1, int(sigma // 3))
    small = cv2.resize(ref, (max(Wc // k, 1), max(Hc // k, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / k, borderType=cv2.BORDER_REFLECT_101)
    blurred = cv2.resize(small, (Wc, Hc), interpolation=cv2.INTER_LINEAR)
    ring = max(2, int(0.03 * longer))
    border = np.concatenate(
        [
            image[:ring].reshape(-1, 3),
            image[-ring:].reshape(-1, 3),
            image[:, :ring].reshape(-1, 3),
            image[:, -ring:].reshape(-1, 3),
        ]
    )
    mean = border.mean(axis=0).astype(np.float32)
    background = mean + contrast * (blurred - mean)
    if texture > 0:
        cell = max(4, int(0.05 * longer))
        coarse = rng.standard_normal((Hc // cell + 2, Wc // cell + 2)).astype(np.float32)
        tex = cv2.resize(coarse, ((Wc // cell + 2) * cell, (Hc // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
        background = background + texture * tex[:Hc, :Wc, None]
    ys = np.arange(Hc, dtype=np.float32)[:, None] - top
    xs = np.arange(Wc, dtype=np.float32)[None, :] - left
    dx = np.maximum(np.maximum(-xs, xs - (w - 1)), 0.0)
    dy = np.maximum(np.maximum(-ys, ys - (h - 1)), 0.0)
    dist = np.sqrt(dx * dx + dy * dy)
    weight = _smoothstep(dist / max(ramp * longer, 1.0)).astype(np.float32)[:, :, None]
    out = (1.0 - weight) * ref + weight * background
    out[top : top + h, left : left + w] = image
    return out


def _without_face(image: np.ndarray, face_box: Sequence[float]) -> np.ndarray:
    """The image with its face box (grown by half a face side) inpainted from the surroundings (at reduced
    resolution)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face_box)
    grow = 0.5 * max(x2 - x1, y2 - y1)
    bx0, by0 = max(int(math.floor(x1 - grow)), 0), max(int(math.floor(y1 - grow)), 0)
    bx1, by1 = min(int(math.ceil(x2 + grow)), w - 1), min(int(math.ceil(y2 + grow)), h - 1)
    if bx1 < bx0 or by1 < by0:
        return image
    k = max(1, int(max(h, w) // 160))
    small = cv2.resize(
        np.clip(image, 0, 255).astype(np.uint8), (max(w // k, 1), max(h // k, 1)), interpolation=cv2.INTER_AREA
    )
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[by0 // k : by1 // k + 1, bx0 // k : bx1 // k + 1] = 255
    filled = cv2.inpaint(small, mask, 5, cv2.INPAINT_TELEA)
    filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    out = image.copy()
    out[by0 : by1 + 1, bx0 : bx1 + 1] = filled[by0 : by1 + 1, bx0 : bx1 + 1]
    return out


def prepare_still(
    image: np.ndarray,
    landmarks: np.ndarray,
    margin: float = 1.0,
    *,
    max_face_side: float | None = None,
    return_transform: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop (or pad) a labelled image to a square around its face, with room for the motion.

    The square is centred on the landmarks' bounding box and has side ``(1 + 2 * margin) * face side`` (face side
    = max(box width, box height)): ``margin`` face sides of context on each side. Where the square leaves the
    image, the image is extended with the same mirrored-and-blurred background as the frames (see
    :func:`make_backdrop`). With ``max_face_side``, a larger face is shrunk (area interpolation) so that its side
    is at most that many pixels, which keeps later rendering cheap. The landmarks follow exactly: a crop is a
    shift, and a resize from ``n`` to ``m`` pixels maps ``x`` to ``(x + 0.5) * m / n - 0.5``.

    Args:
        image: BGR uint8 (H, W, 3) (grey (H, W) is accepted).
        landmarks: (K, 2) pixel coordinates in ``image``.
        margin: context on each side of the face, in face sides.
        max_face_side: optional upper bound of the face side in the output, pixels.
        return_transform: also return the (3, 3) matrix mapping ``image`` pixels to output pixels.
    Returns:
        ``(still, landmarks)``: BGR uint8 (S, S, 3) and (K, 2) float64; plus the matrix with ``return_transform``.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise ValueError(f"landmarks must be finite (K, 2), got shape {pts.shape}")
    img = _to_float_bgr(image)
    h, w = img.shape[:2]
    x1, y1, x2, y2 = _face_box(pts)
    side = max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError("degenerate landmarks: zero-size face box")
    size = int(math.ceil(side * (1.0 + 2.0 * margin)))
    x0 = int(round((x1 + x2) / 2.0 - (size - 1) / 2.0))
    y0 = int(round((y1 + y2) / 2.0 - (size - 1) / 2.0))
    pads = (max(-x0, 0), max(-y0, 0), max(x0 + size - w, 0), max(y0 + size - h, 0))
    if any(pads):
        img = _extend_image(
            img,
            pads,
            blur=0.04,
            contrast=0.6,
            ramp=0.08,
            texture=0.0,
            rng=np.random.default_rng(0),
            face_box=(x1, y1, x2, y2),
        )
    cx, cy = x0 + pads[0], y0 + pads[1]
    crop = img[cy : cy + size, cx : cx + size]
    transform = _translation(-x0, -y0)
    if max_face_side is not None and side > max_face_side:
        out = max(int(round(size * max_face_side / side)), 1)
        crop = cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA)
        f = out / size
        transform = np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]]) @ transform
    new_pts = apply_motion(pts, transform)
    still = _to_uint8(crop)
    return (still, new_pts, transform) if return_transform else (still, new_pts)


@dataclass
class Backdrop:
    """The still on a larger canvas whose surroundings are a plausible background (see :func:`make_backdrop`).

    Attributes:
        image: (Hc, Wc, 3) float32 BGR canvas; still pixel (x, y) is canvas pixel (x + offset[0], y + offset[1]).
        offset: (ox, oy) integer position of the still's pixel (0, 0) on the canvas.
        still_shape: (h, w) of the still it was made from.
        params: how it was made (JSON-serialisable).
    """

    image: np.ndarray
    offset: tuple[int, int]
    still_shape: tuple[int, int]
    params: dict = field(default_factory=dict)
    _blurred: dict = field(default_factory=dict, repr=False)

    def still_to_canvas(self) -> np.ndarray:
        """(3, 3) translation from still pixels to canvas pixels."""
        return _translation(self.offset[0], self.offset[1])

    def blurred(self, sigma: float) -> np.ndarray:
        """The canvas pre-blurred for anti-aliasing (Gaussian, ``sigma`` rounded to 0.1 px; cached)."""
        key = round(sigma * 10.0) / 10.0
        if key <= 0:
            return self.image
        if key not in self._blurred:
            if len(self._blurred) > 24:
                self._blurred.clear()
            self._blurred[key] = cv2.GaussianBlur(self.image, (0, 0), key, borderType=cv2.BORDER_REPLICATE)
        return self._blurred[key]


def make_backdrop(
    still_bgr: np.ndarray,
    motion: np.ndarray | None,
    frame_size: tuple[int, int],
    *,
    pad: int | None = None,
    blur: float = 0.04,
    contrast: float = 0.6,
    ramp: float = 0.08,
    texture: float = 4.0,
    max_pad: float = 2.0,
    rng: np.random.Generator | int | None = None,
    face_box: Sequence[float] | None = None,
) -> Backdrop:
    """Put the still on a canvas large enough for every frame of ``motion``, with a plausible background.

    Background method: a camera moving over the still (the warp moves the still *and* its surroundings together,
    as a handheld camera over a flat scene would), so the surroundings are built once, in still coordinates: the
    still's mirror image at its edge (no seam), fading over ``ramp`` x the still's longer side into the still's
    own borders blurred by ``blur`` x the longer side, at ``contrast`` around the mean border colour, with a faint
    low-frequency texture (``texture`` grey levels). With ``face_box`` the face is inpainted away from the
    source of these mirror images first (no ghost face beside the face). Beyond the canvas (never reached unless
    capped by ``max_pad``) the canvas edge is replicated.

    Args:
        still_bgr: BGR (h, w, 3).
        motion: (T, 3, 3) still -> frame matrices; the canvas covers every frame's view of the still (plus a
            margin). None: a fixed ``pad``.
        frame_size: (width, height) of the frames.
        pad: padding on each side, pixels, when ``motion`` is None (default: half the still's longer side).
        blur, contrast, ramp, texture: see above.
        max_pad: cap of the padding on each side, in still longer sides.
        rng: for the texture (deterministic for a given state).
        face_box: the still's face box ``x1, y1, x2, y2`` (recommended).
    Returns:
        :class:`Backdrop`.
    """
    still = _to_float_bgr(still_bgr)
    h, w = still.shape[:2]
    longer = max(h, w)
    cap = int(max_pad * longer)
    if motion is None:
        p = int(longer // 2 if pad is None else pad)
        pads = (p, p, p, p)
    else:
        mats = _normalise_h(np.asarray(motion, dtype=np.float64).reshape(-1, *np.shape(motion)[-2:]))
        W, H = frame_size
        corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]])
        lo = np.array([np.inf, np.inf])
        hi = -lo
        min_scale = np.inf
        for m in mats:
            inv = np.linalg.inv(m)
            pre = _map_points(inv, corners)
            lo, hi = np.minimum(lo, pre.min(axis=0)), np.maximum(hi, pre.max(axis=0))
            min_scale = min(min_scale, _local_scale(m, _map_points(inv, corners.mean(axis=0, keepdims=True))[0]))
        # margin: 4 % of the view (sub-frame motion, perspective) plus the anti-aliasing kernel
        margin = 0.04 * float(np.max(hi - lo)) + 4.0 * _aa_sigma(min_scale) + 8.0
        pads = (
            int(np.clip(math.ceil(-lo[0] + margin), 0, cap)),
            int(np.clip(math.ceil(-lo[1] + margin), 0, cap)),
            int(np.clip(math.ceil(hi[0] - (w - 1) + margin), 0, cap)),
            int(np.clip(math.ceil(hi[1] - (h - 1) + margin), 0, cap)),
        )
    canvas = _extend_image(
        still, pads, blur=blur, contrast=contrast, ramp=ramp, texture=texture, rng=_as_rng(rng), face_box=face_box
    )
    params = {
        "method": "mirror of the still (face inpainted) fading into its blurred low-contrast borders",
        "pads_ltrb": list(pads),
        "blur": blur,
        "contrast": contrast,
        "ramp": ramp,
        "texture": texture,
        "face_inpainted": face_box is not None,
    }
    return Backdrop(image=canvas.astype(np.float32), offset=(pads[0], pads[1]), still_shape=(h, w), params=params)


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _aa_sigma(scale: float) -> float:
    """Gaussian pre-blur (source pixels) before shrinking by ``scale``: 0.5 sqrt(1 / scale^2 - 1), continuous
    in the scale (no jump while zooming); below 0.2 px (scale > 0.93) it is skipped."""
    if not scale < 1.0:
        return 0.0
    sigma = 0.5 * math.sqrt(1.0 / (scale * scale) - 1.0)
    return sigma if sigma >= 0.2 else 0.0


#: sampling kernels of :func:`render_frame`: bilinear (fast) or Lanczos-4 (about half the sub-pixel bias, ~10x cost)
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}


def _interp_flag(name: str) -> int:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; use one of {', '.join(INTERPOLATIONS)}") from None


def _warp(
    src: np.ndarray, m: np.ndarray, frame_size: tuple[int, int], border: int, value: Any, interp: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Warp ``src`` by the homography ``m`` (src pixels -> frame pixels), pixel centres at integers."""
    W, H = int(frame_size[0]), int(frame_size[1])
    inv = np.linalg.inv(m)
    inv = inv / inv[2, 2]
    flags = interp | cv2.WARP_INVERSE_MAP
    if abs(inv[2, 0]) < 1e-14 and abs(inv[2, 1]) < 1e-14:
        return cv2.warpAffine(src, inv[:2], (W, H), flags=flags, borderMode=border, borderValue=value)
    return cv2.warpPerspective(src, inv, (W, H), flags=flags, borderMode=border, borderValue=value)


def _render_float(
    still: np.ndarray,
    matrix: np.ndarray,
    frame_size: tuple[int, int],
    background: Backdrop | Sequence[float] | float | str | None,
    interpolation: str = "linear",
) -> np.ndarray:
    """Float32 render of one frame (see :func:`render_frame`)."""
    interp = _interp_flag(interpolation)
    m = _normalise_h(matrix)
    W, H = frame_size
    centre = np.array([[(W - 1) / 2.0, (H - 1) / 2.0]])
    scale = _local_scale(m, _map_points(np.linalg.inv(m), centre)[0])
    sigma = _aa_sigma(scale)
    if isinstance(background, Backdrop):
        if tuple(background.still_shape) != tuple(np.shape(still)[:2]):
            raise ValueError("the backdrop was made from a still of another size")
        src = background.blurred(sigma)
        return _warp(src, m @ np.linalg.inv(background.still_to_canvas()), frame_size, cv2.BORDER_REPLICATE, 0, interp)
    src = (
        still
        if (isinstance(still, np.ndarray) and still.dtype == np.float32 and still.ndim == 3)
        else _to_float_bgr(still)
    )
    if sigma > 0:
        src = cv2.GaussianBlur(src, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    if background is None or (isinstance(background, str) and background == "reflect"):
        return _warp(src, m, frame_size, cv2.BORDER_REFLECT_101, 0, interp)
    if isinstance(background, str):
        raise ValueError(f"unknown background {background!r}: use a Backdrop, 'reflect', None or a colour")
    colour = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,))
    return _warp(src, m, frame_size, cv2.BORDER_CONSTANT, tuple(float(c) for c in colour) + (0.0,), interp)


def render_frame(
    still_bgr: np.ndarray,
    matrix: np.ndarray,
    frame_size: tuple[int, int],
    background: Backdrop | Sequence[float] | float | str | None = None,
    interpolation: str = "linear",
) -> np.ndarray:
    """Render one frame: the still warped by a homography.

    Sampling with pixel centres at integers (OpenCV's convention), so a point at still pixel ``p`` lands at frame
    pixel ``matrix @ p``. What remains is the sampling kernel's own sub-pixel bias plus OpenCV's 1/32-pixel
    coordinate quantisation: measured on Gaussian dots (sigma 1-1.6 px) under random similarities, the dots'
    centroids sit 0.015-0.026 px rms (0.04-0.07 px max) from the mapped points with ``"linear"`` (bilinear) and
    0.007-0.009 px rms (0.02 px max) with ``"lanczos"`` (Lanczos-4, about 10x slower).

    When the warp shrinks (local scale ``s`` at the frame centre < 0.93), the source is first blurred with a
    Gaussian of ``0.5 sqrt(1/s^2 - 1)`` source pixels (symmetric, so it moves no point), which keeps shrinking free
    of aliasing and varies smoothly with a zoom.

    Args:
        still_bgr: BGR (h, w, 3) uint8 (or float in grey levels).
        matrix: (3, 3) homography or (2, 3) affine, still pixels -> frame pixels.
        frame_size: (width, height).
        background: what shows where the still does not cover the frame: a :class:`Backdrop` made from this still
            (see :func:`make_backdrop`), ``None`` / ``"reflect"`` (mirror of the still), or a BGR colour.
        interpolation: ``"linear"`` or ``"lanczos"`` (see above).
    Returns:
        BGR uint8 (height, width, 3).
    """
    return _to_uint8(_render_float(still_bgr, matrix, frame_size, background, interpolation))


def subframe_matrices(
    motion: np.ndarray,
    t: int,
    exposure: float,
    frame_size: tuple[int, int],
    *,
    step_px: float = 0.5,
    max_samples: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """Matrices along the true motion path during frame ``t``'s exposure, for motion blur.

    The shutter is open for ``exposure`` (a fraction of the frame interval) centred on the frame time, so for
    steady motion the blurred image stays centred on the frame's label. Between frames the path is the linear
    interpolation of the normalised matrices of neighbouring frames (for similarities this interpolation stays a
    similarity; each point moves along the straight segment between its positions), extrapolated at the clip's
    ends. The number of samples grows with the distance the image moves (one sample per ``step_px`` frame pixels,
    midpoint rule, at most ``max_samples``), so a still frame costs one render.

    Args:
        motion: (T, 3, 3) still -> frame matrices.
        t: frame index.
        exposure: shutter-open fraction of the frame interval, in [0, 1]; 0 gives just ``motion[t]``.
        frame_size: (width, height), to measure the motion at the frame's corners.
    Returns:
        ``(matrices (n, 3, 3), times (n,))``, times in frame units (``t`` +- ``exposure / 2``).
    """
    mats = _normalise_h(motion)
    T = len(mats)
    cur = mats[t]
    if exposure <= 0 or T < 2:
        return cur[None].copy(), np.array([float(t)])
    prev = mats[t - 1] if t > 0 else 2.0 * cur - mats[t + 1]
    nxt = mats[t + 1] if t < T - 1 else 2.0 * cur - mats[t - 1]
    half = min(float(exposure), 1.0) / 2.0

    def at(offset: float) -> np.ndarray:
        return (1.0 + offset) * cur - offset * prev if offset < 0 else (1.0 - offset) * cur + offset * nxt

    W, H = frame_size
    probe = np.array([[0.0, 0.0], [W - 1.0, 0.0], [0.0, H - 1.0], [W - 1.0, H - 1.0], [(W - 1) / 2, (H - 1) / 2]])
    pre = _map_points(np.linalg.inv(cur), probe)
    path = (
        np.linalg.norm(_map_points(at(-half), pre) - probe, axis=1).max()
        + np.linalg.norm(_map_points(at(half), pre) - probe, axis=1).max()
    )
    n = int(np.clip(math.ceil(path / max(step_px, 1e-3)), 1, max(int(max_samples), 1)))
    offsets = -half + (np.arange(n) + 0.5) * (2.0 * half / n)
    return np.stack([at(o) for o in offsets]), t + offsets


def render_motion_blurred(
    still_bgr: np.ndarray,
    motion: np.ndarray,
    t: int,
    frame_size: tuple[int, int],
    background: Backdrop | Sequence[float] | float | str | None = None,
    *,
    exposure: float = 0.5,
    step_px: float = 0.5,
    max_samples: int = 12,
    interpolation: str = "linear",
) -> np.ndarray:
    """Frame ``t`` with motion blur: the mean of renders along the exposure path (:func:`subframe_matrices`).

    Returns:
        BGR uint8 (height, width, 3).
    """
    still = still_bgr if isinstance(background, Backdrop) else _to_float_bgr(still_bgr)
    mats, _ = subframe_matrices(motion, t, exposure, frame_size, step_px=step_px, max_samples=max_samples)
    acc = np.zeros((frame_size[1], frame_size[0], 3), np.float32)
    for m in mats:
        acc += _render_float(still, m, frame_size, background, interpolation)
    return _to_uint8(acc / len(mats))


# ----------------------------------------------------------------------------------------------------------------
# degradation


@dataclass
class DegradeConfig:
    """How a rendered clip is degraded the way a camera degrades video (compression is left to the encoder).

    * Motion blur: the shutter is open for ``exposure`` of the frame interval, centred on the frame time; the
      frame is the mean of renders along the true motion path (:func:`subframe_matrices`).
    * Lighting: slow drifts (smooth noise, correlation ``lighting_tau_s``) of the gain (log std ``gain_drift``),
      the gamma (log std ``gamma_drift``) and the white balance (log blue/red ratio std ``colour_drift``,
      i.e. colour temperature).
    * Sensor noise, last: per pixel and channel, Gaussian with variance ``read_noise^2 + shot_noise^2 * I / 255``
      (``I`` the grey level, so ``shot_noise`` is the shot-noise std at white).
    """

    exposure: float = 0.5  # shutter-open fraction of the frame interval; 0 = no motion blur
    blur_step_px: float = 0.5  # one sub-frame render per this many pixels of motion during the exposure
    blur_max_samples: int = 12
    gain_drift: float = 0.06
    gamma_drift: float = 0.05
    colour_drift: float = 0.03
    lighting_tau_s: float = 4.0
    read_noise: float = 1.5  # grey levels
    shot_noise: float = 2.5  # grey levels at white


class Degrader:
    """Per-frame degradation of a clip, deterministic for a given generator state.

    The lighting tracks are drawn at construction; the noise of frame ``t`` is drawn when :meth:`apply` is called,
    so frames must be degraded in order (``degrade`` does that) for a reproducible result.

    Args:
        config: :class:`DegradeConfig`, or None for no camera degradation (the episode arrays still apply).
        num_frames: T.
        fps: frames per second.
        rng: numpy Generator or seed.
        extra_blur_px: optional (T,) Gaussian defocus blur, frame pixels (heavy-blur episodes).
        light_gain: optional (T,) multiplicative light level in (0, 1] (low-light episodes).
        extra_noise: optional (T,) additional noise std, grey levels (low-light episodes: the camera's gain).
    """

    def __init__(
        self,
        config: DegradeConfig | None,
        num_frames: int,
        fps: float,
        rng: np.random.Generator | int | None,
        *,
        extra_blur_px: np.ndarray | None = None,
        light_gain: np.ndarray | None = None,
        extra_noise: np.ndarray | None = None,
    ):
        self.config = config
        self.num_frames = T = int(num_frames)
        self.rng = _as_rng(rng)
        t = np.arange(T) / fps
        duration = T / fps
        r_light, self._r_noise = _child_rngs(self.rng, 2)
        if config is not None:
            tau = config.lighting_tau_s
            self.log_gain = config.gain_drift * _smooth_noise(t, duration, tau, r_light)
            self.log_gamma = config.gamma_drift * _smooth_noise(t, duration, tau, r_light)
            self.log_colour = config.colour_drift * _smooth_noise(t, duration, tau, r_light)
        else:
            self.log_gain = self.log_gamma = self.log_colour = np.zeros(T)
        self.extra_blur_px = np.zeros(T) if extra_blur_px is None else np.asarray(extra_blur_px, float)
        self.light_gain = np.ones(T) if light_gain is None else np.asarray(light_gain, float)
        self.extra_noise = np.zeros(T) if extra_noise is None else np.asarray(extra_noise, float)

    @property
    def exposure(self) -> float:
        return 0.0 if self.config is None else float(self.config.exposure)

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        """Degrade frame ``t`` (BGR, uint8 or float grey levels) and return BGR uint8."""
        img = np.asarray(frame, dtype=np.float32)
        sigma = float(self.extra_blur_px[t])
        if sigma >= 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        gamma = math.exp(self.log_gamma[t])
        c = self.log_colour[t]
        gains = math.exp(self.log_gain[t]) * self.light_gain[t] * np.array([math.exp(c), 1.0, math.exp(-c)])
        if gamma != 1.0 or np.any(gains != 1.0):
            x = np.clip(img / 255.0, 0.0, 1.0)
            if gamma != 1.0:
                x = x ** np.float32(gamma)
            img = x * (255.0 * gains).astype(np.float32)
        read_sq = float(self.extra_noise[t] ** 2)
        shot_sq = 0.0
        if self.config is not None:
            read_sq += self.config.read_noise**2
            shot_sq = self.config.shot_noise**2 / 255.0
        if read_sq > 0 or shot_sq > 0:
            noise = self._r_noise.standard_normal(img.shape, dtype=np.float32)
            img = img + np.sqrt(np.float32(read_sq) + np.float32(shot_sq) * np.maximum(img, 0.0)) * noise
        return _to_uint8(img)


def degrade(
    frames: Sequence[np.ndarray],
    config: DegradeConfig | None,
    fps: float,
    rng: np.random.Generator | int | None,
    **episodes: np.ndarray,
) -> list[np.ndarray]:
    """Degrade a list of rendered frames in order (lighting drift, sensor noise, optional episode arrays).

    Motion blur is not done here: it needs the motion and happens while rendering (:func:`render_motion_blurred`).

    Args:
        frames: T BGR frames (uint8 or float).
        config: :class:`DegradeConfig` (None: only the episodes).
        fps: frames per second (the lighting drifts are in seconds).
        rng: numpy Generator or seed.
        **episodes: ``extra_blur_px``, ``light_gain``, ``extra_noise`` (T,) arrays, see :class:`Degrader`.
    Returns:
        T BGR uint8 frames.
    """
    deg = Degrader(config, len(frames), fps, rng, **episodes)
    return [deg.apply(f, t) for t, f in enumerate(frames)]


# ----------------------------------------------------------------------------------------------------------------
# hard clips: occluders and episodes


@dataclass
class HardConfig:
    """The ambiguity of a "hard" clip, the sources of flicker in the paper. Rates are events per second (0 turns a
    kind off); with ``at_least_one`` every enabled kind happens at least once per clip. Sizes in face sides.

    * Occluders: hands (skin-toned, palm + fingers + thumb + forearm, shaded and creased) or objects (ellipses /
      random polygons textured with coloured noise or with a patch of the still away from the face), crossing the
      face (two face sides in ``occluder_crossing_s``) on a path at most ``occluder_offset`` face sides from its
      centre, so they cover part of it. Drawn after the warp, in front of the face, motion-blurred with it;
      the labels of covered points do not change.
    * Heavy-blur episodes: Gaussian defocus of ``blur_sigma`` face sides, ramped in and out.
    * Low-light episodes: the light falls to ``dark_gain`` and noise of ``dark_noise`` grey levels is added (the
      camera's gain), ramped in and out.
    * Partial exits: the motion pushes the face ``MotionConfig.exit_depth`` of its side out of the frame.
    """

    at_least_one: bool = True
    occluder_rate_hz: float = 0.3
    hand_fraction: float = 0.5  # share of occluders that are hands
    hand_size: tuple[float, float] = (0.8, 1.1)  # hand length, wrist to fingertip (a hand is about a face long)
    object_size: tuple[float, float] = (0.35, 0.7)  # object diameter
    occluder_crossing_s: tuple[float, float] = (0.5, 2.0)
    occluder_offset: float = 0.3  # largest distance of the path from the face centre
    blur_rate_hz: float = 0.12
    blur_sigma: tuple[float, float] = (0.012, 0.03)
    blur_duration_s: tuple[float, float] = (0.5, 1.5)
    low_light_rate_hz: float = 0.1
    dark_gain: tuple[float, float] = (0.15, 0.35)
    dark_noise: tuple[float, float] = (6.0, 14.0)
    low_light_duration_s: tuple[float, float] = (1.0, 2.5)
    exit_rate_hz: float = 0.1
    episode_ramp_s: float = 0.3


_SKIN_BGR = np.array(
    [
        [188, 205, 238],
        [160, 185, 228],
        [130, 160, 208],
        [105, 135, 185],
        [80, 105, 150],
        [58, 78, 112],
    ],
    dtype=np.float32,
)


def _lowpass_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-ish std smooth noise of the given shape with features ~``cell`` pixels."""
    h, w = shape
    cell = max(cell, 1.0)
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)[:h, :w]


def _hand_sprite(length: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A hand raised with fingers up and its forearm going down: (rgb (h, w, 3) premultiplied, alpha (h, w),
    anchor (x, y) = palm centre in sprite pixels, description)."""
    L = float(length)
    ss = 3  # supersampling for anti-aliased edges
    w, h = int(math.ceil(1.4 * L)) + 2, int(math.ceil(3.8 * L)) + 2
    mask = np.zeros((h * ss, w * ss), np.uint8)
    crease = np.zeros_like(mask)
    palm = np.array([w / 2.0, 0.95 * L])
    side = 1.0 if rng.random() < 0.5 else -1.0

    def S(p):  # sprite pixel centre -> supersampled integer coordinates
        return int(round((p[0] + 0.5) * ss - 0.5)), int(round((p[1] + 0.5) * ss - 0.5))

    def ellipse(img, centre, half_len, half_wid, angle_deg, value, thickness=-1):
        cv2.ellipse(
            img,
            S(centre),
            (max(int(half_len * ss), 1), max(int(half_wid * ss), 1)),
            angle_deg,
            0,
            360,
            value,
            thickness,
        )

    ellipse(mask, palm, 0.22 * L, 0.26 * L, 0.0, 255)
    spread = rng.uniform(0.6, 1.3)
    lengths = np.array([0.36, 0.44, 0.46, 0.40]) * L * rng.uniform(0.9, 1.1, 4)
    bases = np.array([-0.16, -0.055, 0.055, 0.16]) * L
    for base_x, flen, ang in zip(bases, lengths, np.array([-12.0, -4.0, 4.0, 12.0]) * spread):
        a = math.radians(ang)
        direction = np.array([math.sin(a), -math.cos(a)])
        base = palm + np.array([base_x, -0.17 * L])
        centre = base + direction * flen / 2.0
        angle = math.degrees(math.atan2(direction[1], direction[0]))
        ellipse(mask, centre, flen / 2.0 + 0.03 * L, 0.062 * L, angle, 255)
        ellipse(crease, centre, flen / 2.0 + 0.03 * L, 0.062 * L, angle, 255, max(1, int(0.015 * L * ss)))
    a = math.radians(side * rng.uniform(45.0, 65.0))
    direction = np.array([math.sin(a), -math.cos(a)])
    thumb = palm + np.array([side * 0.18 * L, 0.05 * L]) + direction * 0.2 * L
    ellipse(mask, thumb, 0.2 * L, 0.075 * L, math.degrees(math.atan2(direction[1], direction[0])), 255)
    arm = np.array(
        [
            [palm[0] - 0.17 * L, palm[1] + 0.12 * L],
            [palm[0] + 0.17 * L, palm[1] + 0.12 * L],
            [palm[0] + 0.24 * L, h],
            [palm[0] - 0.24 * L, h],
        ]
    )
    cv2.fillPoly(mask, [np.array([S(p) for p in arm], np.int32)], 255)
    alpha = cv2.resize(mask.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    creases = cv2.resize(crease.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    inside = (alpha > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    shade = 0.72 + 0.28 * _smoothstep(dist / max(0.12 * L, 1.0))
    tone = _SKIN_BGR[rng.integers(len(_SKIN_BGR))] * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    lum = 1.0 + 0.06 * _lowpass_noise((h, w), 0.08 * L, rng) + 0.02 * rng.standard_normal((h, w)).astype(np.float32)
    rgb = tone[None, None, :] * (shade * lum * (1.0 - 0.18 * creases))[:, :, None]
    rgb = np.clip(rgb, 0, 255).astype(np.float32)
    return rgb * alpha[:, :, None], alpha, palm, {"tone_bgr": tone.tolist(), "thumb_side": side}


def _object_sprite(
    diameter: float,
    rng: np.random.Generator,
    still: np.ndarray,
    still_face_box: Sequence[float],
    still_scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """An ellipse or a random star-shaped polygon textured with coloured noise or a patch of the still."""
    D = float(diameter)
    size = int(math.ceil(1.1 * D)) + 2
    ss = 3
    mask = np.zeros((size * ss, size * ss), np.uint8)
    centre_ss = ((size * ss) - 1) / 2.0
    if rng.random() < 0.5:
        shape = "ellipse"
        axes = (max(int(D / 2 * rng.uniform(0.6, 1.0) * ss), 1), max(int(D / 2 * rng.uniform(0.3, 0.8) * ss), 1))
        cv2.ellipse(
            mask, (int(round(centre_ss)), int(round(centre_ss))), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1
        )
    else:
        shape = "polygon"
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.55, 1.0, n) * D / 2 * ss
        poly = np.stack([centre_ss + rad * np.cos(ang), centre_ss + rad * np.sin(ang)], axis=1)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    alpha = cv2.resize(mask.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)
    texture = "noise"
    rgb = None
    if rng.random() < 0.5:
        patch = _still_patch(still, still_face_box, max(D / max(still_scale, 1e-6), 8.0), rng)
        if patch is not None:
            rgb = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
            texture = "still patch"
    if rgb is None:
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 200), rng.uniform(70, 230)]]], np.float32)
        base = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        lum = 1.0 + 0.18 * _lowpass_noise((size, size), 0.15 * D, rng)
        stripes = 1.0 + 0.12 * np.sin(np.arange(size)[:, None] * rng.uniform(0.2, 0.8) + rng.uniform(0, 6))
        rgb = base[None, None, :] * (lum * stripes)[:, :, None]
    inside = (alpha > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    shade = 0.8 + 0.2 * _smoothstep(dist / max(0.1 * D, 1.0))
    rgb = np.clip(rgb * shade[:, :, None], 0, 255).astype(np.float32)
    anchor = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return rgb * alpha[:, :, None], alpha, anchor, {"shape": shape, "texture": texture}


def _still_patch(still: np.ndarray, face_box: Sequence[float], side: float, rng: np.random.Generator):
    """A square patch of the still that does not touch the (dilated) face box, or None."""
    h, w = still.shape[:2]
    side = int(min(side, h / 2, w / 2))
    if side < 8:
        return None
    x1, y1, x2, y2 = face_box
    pad = 0.1 * max(x2 - x1, y2 - y1)
    for _ in range(20):
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        if x0 + side < x1 - pad or x0 > x2 + pad or y0 + side < y1 - pad or y0 > y2 + pad:
            return still[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    return None


class _Occluder:
    """One occluder: a sprite moving across the face on a path relative to the (moving) face."""

    def __init__(self, rgb, alpha, anchor, t_mid, crossing_frames, direction, offset, angle, spin, info):
        self.rgb, self.alpha, self.anchor = rgb, alpha, anchor
        self.t_mid = t_mid  # frame index (float) at which it passes the face centre
        self.crossing = crossing_frames  # frames to move two face sides
        self.direction = direction  # unit vector of the motion, frame pixels
        self.offset = offset  # signed distance of the path from the face centre, face sides
        self.angle, self.spin = angle, spin  # degrees, degrees per frame
        h, w = alpha.shape
        self.rgba = np.concatenate([rgb, alpha[:, :, None]], axis=2).astype(np.float32)
        self.corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
        self.radius = float(np.linalg.norm(self.corners - anchor, axis=1).max()) + 2.0
        self.info = info

    def affine(self, tau: float, centre: np.ndarray, side: float) -> np.ndarray:
        """(2, 3) sprite pixels -> frame pixels at fractional frame time ``tau``."""
        perp = np.array([-self.direction[1], self.direction[0]])
        along = 2.0 * (tau - self.t_mid) / self.crossing
        pos = centre + side * (along * self.direction + self.offset * perp)
        a = math.radians(self.angle + self.spin * (tau - self.t_mid))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return np.concatenate([rot, (pos - rot @ self.anchor)[:, None]], axis=1)

    def warp(self, affine: np.ndarray, frame_size: tuple[int, int], pad: int = 0) -> tuple[int, int, np.ndarray] | None:
        """The sprite warped into the frame: ``(x0, y0, rgba)`` with ``rgba`` (h, w, 4) float32 (premultiplied
        colour, alpha) covering frame pixels ``[x0, x0 + w) x [y0, y0 + h)`` (its bounding box grown by ``pad``
        pixels); None when it is outside the frame."""
        W, H = frame_size
        corners = self.corners @ affine[:, :2].T + affine[:, 2]
        x0, y0 = (max(int(math.floor(v)) - 1 - pad, 0) for v in corners.min(axis=0))
        x1, y1 = (int(math.ceil(v)) + 1 + pad for v in corners.max(axis=0))
        x1, y1 = min(x1, W - 1), min(y1, H - 1)
        if x1 < x0 or y1 < y0:
            return None
        m = affine.copy()
        m[:, 2] -= (x0, y0)
        rgba = cv2.warpAffine(
            self.rgba,
            m,
            (x1 - x0 + 1, y1 - y0 + 1),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0, 0),
        )
        return x0, y0, rgba


def _line_kernel(d: np.ndarray, ss: int = 4) -> np.ndarray:
    """Normalised motion-blur kernel: an anti-aliased segment from -d/2 to +d/2 around the kernel's centre pixel."""
    half = int(math.ceil(max(abs(d[0]), abs(d[1])) / 2.0)) + 1
    k = 2 * half + 1
    img = np.zeros((k * ss, k * ss), np.float32)
    c = (half + 0.5) * ss - 0.5
    a = (int(round(c - d[0] / 2 * ss)), int(round(c - d[1] / 2 * ss)))
    b = (int(round(c + d[0] / 2 * ss)), int(round(c + d[1] / 2 * ss)))
    cv2.line(img, a, b, 1.0, max(1, ss // 2))
    kernel = cv2.resize(img, (k, k), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def _occluder_layer(
    occluders: list[_Occluder],
    t: int,
    exposure: float,
    centres: np.ndarray,
    sides: np.ndarray,
    frame_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray] | None:
    """The occluders at frame ``t`` composited over each other (later ones in front), each motion-blurred along
    its own displacement during the exposure (a straight segment: their spin during one exposure is
    negligible): ``(colour (H, W, 3) premultiplied, alpha (H, W))`` float32, or None when none is in the frame."""
    W, H = frame_size
    centre, side = centres[t], float(sides[t])
    pieces = []
    for occ in occluders:
        d = np.zeros(2)
        if exposure > 0:
            half = exposure / 2.0
            a0 = occ.affine(t - half, _interp_rows(centres, t - half), float(_interp_rows(sides, t - half)))
            a1 = occ.affine(t + half, _interp_rows(centres, t + half), float(_interp_rows(sides, t + half)))
            d = (a1[:, :2] @ occ.anchor + a1[:, 2]) - (a0[:, :2] @ occ.anchor + a0[:, 2])
        reach = int(math.ceil(np.abs(d).max() / 2.0)) + 1
        piece = occ.warp(occ.affine(float(t), centre, side), frame_size, pad=reach)
        if piece is None:
            continue
        x0, y0, rgba = piece
        if np.hypot(*d) > 0.75:
            rgba = cv2.filter2D(rgba, -1, _line_kernel(d), borderType=cv2.BORDER_CONSTANT)
        pieces.append((x0, y0, rgba))
    if not pieces:
        return None
    colour, alpha = np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32)
    for x0, y0, rgba in pieces:
        h, w = rgba.shape[:2]
        a = rgba[:, :, 3]
        colour[y0 : y0 + h, x0 : x0 + w] *= (1.0 - a)[:, :, None]
        colour[y0 : y0 + h, x0 : x0 + w] += rgba[:, :, :3]
        alpha[y0 : y0 + h, x0 : x0 + w] *= 1.0 - a
        alpha[y0 : y0 + h, x0 : x0 + w] += a
    return colour, alpha


def _interp_rows(values: np.ndarray, tau: float) -> np.ndarray:
    """Linear interpolation of per-frame rows at fractional frame time ``tau`` (clamped at the ends)."""
    T = len(values)
    tau = min(max(tau, 0.0), T - 1.0)
    i = min(int(math.floor(tau)), T - 2) if T > 1 else 0
    f = tau - i
    return values[i] if T == 1 else (1.0 - f) * values[i] + f * values[i + 1]


def _plan_hard(
    hard: HardConfig,
    T: int,
    fps: float,
    rng: np.random.Generator,
    still: np.ndarray,
    still_box,
    still_scale: float,
    face_side: np.ndarray,
) -> tuple[list[_Occluder], dict[str, np.ndarray], dict[str, list]]:
    """Occluders and per-frame episode arrays of a hard clip (in a fixed draw order)."""
    duration = T / fps
    t = np.arange(T) / fps
    r_occ, r_blur, r_dark = _child_rngs(rng, 3)
    events: dict[str, list] = {"occluders": [], "blur": [], "low_light": []}

    occluders = []
    n_occ = _event_count(r_occ, hard.occluder_rate_hz, duration, hard.at_least_one)
    slot = duration / max(n_occ, 1)
    for k in range(n_occ):
        t_mid = (k + float(r_occ.uniform(0.2, 0.8))) * slot
        crossing = _uniform(r_occ, hard.occluder_crossing_s)
        kind = "hand" if r_occ.random() < hard.hand_fraction else "object"
        side_mid = float(face_side[min(int(t_mid * fps), T - 1)])
        size = _uniform(r_occ, hard.hand_size if kind == "hand" else hard.object_size) * side_mid
        sign = 1.0 if r_occ.random() < 0.5 else -1.0
        if kind == "hand":
            heading = math.radians(float(r_occ.uniform(-30.0, 30.0)))
            direction = np.array([sign * math.cos(heading), math.sin(heading)])
            angle, spin = float(r_occ.uniform(-25.0, 25.0)), float(r_occ.uniform(-30.0, 30.0))
            rgb, alpha, anchor, info = _hand_sprite(size, r_occ)
        else:
            heading = float(r_occ.uniform(0.0, 2.0 * math.pi))
            direction = np.array([math.cos(heading), math.sin(heading)])
            angle, spin = float(r_occ.uniform(0.0, 360.0)), float(r_occ.uniform(-90.0, 90.0))
            rgb, alpha, anchor, info = _object_sprite(size, r_occ, still, still_box, still_scale)
        offset = float(r_occ.uniform(-hard.occluder_offset, hard.occluder_offset))
        occluders.append(
            _Occluder(rgb, alpha, anchor, t_mid * fps, crossing * fps, direction, offset, angle, spin / fps, info)
        )
        events["occluders"].append(
            {
                "kind": kind,
                "mid_s": t_mid,
                "crossing_s": crossing,
                "size_px": size,
                "direction": direction.tolist(),
                "offset": offset,
                "angle_deg": angle,
                "spin_deg_s": spin,
                **info,
            }
        )

    ramp = hard.episode_ramp_s
    extra_blur = np.zeros(T)
    n_blur = _event_count(r_blur, hard.blur_rate_hz, duration, hard.at_least_one)
    lengths = [_uniform(r_blur, hard.blur_duration_s) for _ in range(n_blur)]
    for start, hold in zip(_stratified_starts(r_blur, n_blur, duration, max(lengths, default=0) + 2 * ramp), lengths):
        sigma = _uniform(r_blur, hard.blur_sigma)
        env = _episode_envelope(t, start, ramp, hold, ramp)
        extra_blur = np.maximum(extra_blur, env * sigma * face_side)
        events["blur"].append({"start_s": start, "hold_s": hold, "ramp_s": ramp, "sigma_face_sides": sigma})

    light_gain = np.ones(T)
    extra_noise_sq = np.zeros(T)
    n_dark = _event_count(r_dark, hard.low_light_rate_hz, duration, hard.at_least_one)
    lengths = [_uniform(r_dark, hard.low_light_duration_s) for _ in range(n_dark)]
    for start, hold in zip(_stratified_starts(r_dark, n_dark, duration, max(lengths, default=0) + 2 * ramp), lengths):
        gain, noise = _uniform(r_dark, hard.dark_gain), _uniform(r_dark, hard.dark_noise)
        env = _episode_envelope(t, start, ramp, hold, ramp)
        light_gain *= 1.0 - env * (1.0 - gain)
        extra_noise_sq += (env * noise) ** 2
        events["low_light"].append({"start_s": start, "hold_s": hold, "ramp_s": ramp, "gain": gain, "noise": noise})
    arrays = {"extra_blur_px": extra_blur, "light_gain": light_gain, "extra_noise": np.sqrt(extra_noise_sq)}
    return occluders, arrays, events


# ----------------------------------------------------------------------------------------------------------------
# the entry point


@dataclass
class ExactClip:
    """A synthesised clip with exact labels.

    Attributes:
        frames: T BGR uint8 frames (height, width, 3).
        landmarks: (T, K, 2) float64, ``apply_motion(still_landmarks, motion)``, frame pixels.
        boxes: (T, 4) float64, the landmarks' bounding boxes ``x1, y1, x2, y2``.
        motion: (T, 3, 3) float64, still pixels -> frame pixels, ``[2, 2] == 1``.
        params: JSON-serialisable generation parameters (seed, configurations, still labels, events).
        occlusion: (T,) share of each frame's landmark box covered by occluders (coverage > 0.5).
        occluded: (T, K) bool, landmarks inside the frame under an occluder (coverage > 0.5).
    """

    frames: list[np.ndarray]
    landmarks: np.ndarray
    boxes: np.ndarray
    motion: np.ndarray
    params: dict
    occlusion: np.ndarray
    occluded: np.ndarray


def _seed_streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("motion", "render", "degrade", "hard")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def synthesise_clip(
    still_bgr: np.ndarray,
    landmarks: np.ndarray,
    *,
    num_frames: int,
    fps: float,
    frame_size: tuple[int, int],
    motion: MotionConfig | str | dict | np.ndarray = "natural",
    degrade: DegradeConfig | None = None,
    hard: HardConfig | None = None,
    seed: int = 0,
    background: str | Sequence[float] = "extend",
    interpolation: str = "linear",
) -> ExactClip:
    """Make a clip with exact labels from one labelled still.

    The still should have context around the face (see :func:`prepare_still`); the background beyond it is
    synthesised (:func:`make_backdrop`). Frame ``t`` = render of the still by ``motion[t]`` (motion-blurred along
    the path when ``degrade.exposure`` > 0, occluders composited in front when ``hard`` asks), then lighting and
    noise (``degrade``) and the hard episodes. Labels: ``landmarks[t] = apply_motion(landmarks, motion)[t]``.

    Args:
        still_bgr: BGR uint8 (h, w, 3).
        landmarks: (K, 2) still pixel coordinates.
        num_frames: T.
        fps: frames per second.
        frame_size: (width, height) of the frames.
        motion: preset name, :class:`MotionConfig`, dict, or an explicit (T, 3, 3) / (T, 2, 3) array.
        degrade: :class:`DegradeConfig`, or None for clean renders (no blur, noise or lighting change).
        hard: :class:`HardConfig` for a hard clip, None for an easy one (no occluders, episodes or exits; exits
            need a sampled motion, so an explicit ``motion`` array gets none).
        seed: everything random derives from ``numpy.random.SeedSequence(seed)`` (independent streams for the
            motion, the background, the degradation and the hard events).
        background: ``"extend"`` (synthesised surroundings, :func:`make_backdrop`), ``"reflect"`` or a BGR colour.
        interpolation: sampling kernel of the warp, ``"linear"`` or ``"lanczos"`` (see :func:`render_frame`).
    Returns:
        :class:`ExactClip`.
    """
    T = int(num_frames)
    W, H = int(frame_size[0]), int(frame_size[1])
    _interp_flag(interpolation)
    still_u8 = np.asarray(still_bgr)
    still = _to_float_bgr(still_u8)
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite (K, 2), got shape {lm.shape}")
    sh, sw = still.shape[:2]
    box = _face_box(lm)
    streams = _seed_streams(seed)

    hard_rngs = _child_rngs(streams["hard"], 2) if hard is not None else None
    explicit = isinstance(motion, np.ndarray)
    events: dict[str, Any] = {}
    if explicit:
        mats = _normalise_h(motion)
        if len(mats) != T:
            raise ValueError(f"motion has {len(mats)} matrices for {T} frames")
        mcfg = None
    else:
        mcfg = resolve_motion(motion)
        if hard is not None:
            n_exit = _event_count(hard_rngs[0], hard.exit_rate_hz, T / fps, hard.at_least_one)
            mcfg = replace(mcfg, exit_count=n_exit)
        track = sample_motion_track(
            mcfg, T, fps, streams["motion"], still_size=(sw, sh), face_box=box, frame_size=(W, H)
        )
        mats = track.matrices
        events["motion"] = track.events
    labels = apply_motion(lm, mats)
    boxes = boxes_from_landmarks(labels)
    side_still = max(box[2] - box[0], box[3] - box[1])
    centres, sides = _centres_and_sides(mats, np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), side_still)

    if isinstance(background, str) and background == "extend":
        bg: Any = make_backdrop(still, mats, (W, H), rng=streams["render"], face_box=box)
        bg_params = bg.params
    else:
        bg = background
        bg_params = {
            "method": background if isinstance(background, str) else "constant",
            "colour": None if isinstance(background, str) else _jsonable(list(np.atleast_1d(background))),
        }

    occluders: list[_Occluder] = []
    arrays: dict[str, np.ndarray] = {}
    if hard is not None:
        occluders, arrays, hard_events = _plan_hard(
            hard, T, fps, hard_rngs[1], still, box, float(np.median(sides)) / side_still, sides
        )
        events.update(hard_events)
    degrader = Degrader(degrade, T, fps, streams["degrade"], **arrays)
    exposure = degrader.exposure
    step = degrade.blur_step_px if degrade is not None else 0.5
    max_samples = degrade.blur_max_samples if degrade is not None else 1

    frames: list[np.ndarray] = []
    occlusion = np.zeros(T)
    occluded = np.zeros((T, len(lm)), dtype=bool)
    reach = float(np.hypot(W, H))
    for t in range(T):
        sub_mats, _ = subframe_matrices(mats, t, exposure, (W, H), step_px=step, max_samples=max_samples)
        acc = np.zeros((H, W, 3), np.float32)
        for m in sub_mats:
            acc += _render_float(still, m, (W, H), bg, interpolation)
        acc /= len(sub_mats)
        active = [o for o in occluders if (abs(t - o.t_mid) * 2.0 / o.crossing - 1.0) * sides[t] <= reach + o.radius]
        layer = _occluder_layer(active, t, exposure, centres, sides, (W, H)) if active else None
        if layer is not None:
            colour, cover = layer
            acc *= 1.0 - cover[:, :, None]
            acc += colour
            x1, y1, x2, y2 = boxes[t]
            bx0, by0 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
            bx1, by1 = min(int(math.ceil(x2)), W - 1), min(int(math.ceil(y2)), H - 1)
            if bx1 >= bx0 and by1 >= by0:
                occlusion[t] = float((cover[by0 : by1 + 1, bx0 : bx1 + 1] > 0.5).mean())
            px = np.rint(labels[t]).astype(np.int64)
            inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
            occluded[t, inside] = cover[px[inside, 1], px[inside, 0]] > 0.5
        frames.append(degrader.apply(acc, t))

    params = {
        "generator": "wflwv.build.exact_motion",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "rng": "numpy.random.SeedSequence(seed).spawn(4) -> motion, render, degrade, hard (PCG64)",
        "num_frames": T,
        "fps": float(fps),
        "frame_size": [W, H],
        "still_size": [sw, sh],
        "still_sha1": hashlib.sha1(np.ascontiguousarray(still_u8).tobytes()).hexdigest(),
        "still_landmarks": lm.tolist(),
        "face_box": list(box),
        "label_rule": "landmarks[t] = (m[:2,:2] @ p + m[:2,2]) / (m[2,:2] @ p + m[2,2]), m = motion[t], "
        "p = still_landmarks (pixel centres at integers)",
        "motion": "explicit" if explicit else asdict(mcfg),
        "degrade": None if degrade is None else asdict(degrade),
        "hard": None if hard is None else asdict(hard),
        "background": bg_params,
        "interpolation": interpolation,
        "events": events,
    }
    return ExactClip(
        frames=frames,
        landmarks=labels,
        boxes=boxes,
        motion=mats,
        params=_jsonable(params),
        occlusion=occlusion,
        occluded=occluded,
    )


def motion_from_params(params: dict) -> np.ndarray:
    """Re-draw a clip's motion from its recorded ``params`` (as :func:`synthesise_clip` wrote them).

    Returns:
        (T, 3, 3) float64, identical to the clip's ``motion`` (same seed, configuration and generator version).
    Raises:
        ValueError: the motion was given explicitly, or the generator version differs.
    """
    if params.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"params were written by generator version {params.get('version')}, this is version {GENERATOR_VERSION}"
        )
    if params["motion"] == "explicit":
        raise ValueError("this clip's motion was given explicitly: read it from its motion file")
    streams = _seed_streams(params["seed"])
    return sample_motion(
        MotionConfig(**params["motion"]),
        params["num_frames"],
        params["fps"],
        streams["motion"],
        still_size=tuple(params["still_size"]),
        face_box=params["face_box"],
        frame_size=tuple(params["frame_size"]),
    )
