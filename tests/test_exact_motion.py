"""Exact-motion clips (wflwv.build.exact_motion): exact labels, faithful rendering, presets, degradation, hard clips."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from wflwv.build import exact_motion as em
from wflwv.schemes import template_shape

FRAME = (128, 96)  # small frames keep the file fast


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def face_still():
    """A 200 x 200 textured still with a drawn face and its 98 template landmarks (face side ~90 px)."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.normal(0, 25, (10, 10)).astype(np.float32), (200, 200), interpolation=cv2.INTER_CUBIC)
    img = np.clip(np.array([110, 130, 100], np.float32) + base[:, :, None], 0, 255).astype(np.uint8)
    pts = template_shape("wflw98") * 110 + [45, 38]
    cv2.ellipse(img, (100, 103), (48, 55), 0, 0, 360, (150, 170, 210), -1)
    for p in pts:
        cv2.circle(img, (int(round(p[0])), int(round(p[1]))), 1, (40, 40, 120), -1)
    return img, pts


def blob_still(points: np.ndarray, size: tuple[int, int], sigma: float = 1.6) -> np.ndarray:
    """Black BGR still with a Gaussian blob of peak 250 centred at each (sub-pixel) point."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in points:
        img += 250.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(np.rint(img), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def centroid(frame: np.ndarray, at: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of the first channel in a square window around ``at``."""
    x0, y0 = int(round(at[0])) - radius, int(round(at[1])) - radius
    win = frame[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
    return np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array(
        [
            [scale * math.cos(a), -scale * math.sin(a), tx],
            [scale * math.sin(a), scale * math.cos(a), ty],
            [0.0, 0.0, 1.0],
        ]
    )


def moments(frame: np.ndarray, at: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and 2 x 2 intensity covariance of the first channel in a window around ``at``."""
    x0, y0 = int(round(at[0])) - radius, int(round(at[1])) - radius
    win = frame[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
    w = win / win.sum()
    c = np.array([(w * xs).sum(), (w * ys).sum()])
    dx, dy = xs - c[0], ys - c[1]
    cov = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]])
    return c, cov


# ---------------------------------------------------------------------------------------------------------------
# labels


def test_labels_are_the_motion_applied_to_the_still_labels(face_still):
    img, pts = face_still
    clip = em.synthesise_clip(
        img,
        pts,
        num_frames=24,
        fps=12,
        frame_size=FRAME,
        motion="natural",
        degrade=em.DegradeConfig(),
        hard=em.HardConfig(),
        seed=7,
    )
    T, K = 24, len(pts)
    assert len(clip.frames) == T and clip.frames[0].shape == (FRAME[1], FRAME[0], 3)
    assert clip.frames[0].dtype == np.uint8
    assert clip.landmarks.shape == (T, K, 2) and clip.motion.shape == (T, 3, 3) and clip.boxes.shape == (T, 4)
    # independent computation, one point at a time, perspective division included
    expected = np.empty((T, K, 2))
    for t in range(T):
        for k in range(K):
            h = clip.motion[t] @ np.array([pts[k, 0], pts[k, 1], 1.0])
            expected[t, k] = h[:2] / h[2]
    np.testing.assert_allclose(clip.landmarks, expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(clip.boxes[:, :2], expected.min(axis=1), atol=1e-9, rtol=0)
    np.testing.assert_allclose(clip.boxes[:, 2:], expected.max(axis=1), atol=1e-9, rtol=0)
    # the motion really is perspective here (natural preset: yaw / pitch), but only mildly
    assert np.abs(clip.motion[:, 2, :2]).max() > 0
    assert np.abs(clip.motion[:, 2, :2]).max() < 2e-3
    # params: JSON, and enough to re-derive the motion and the labels
    params = json.loads(json.dumps(clip.params))
    assert params["seed"] == 7 and params["num_frames"] == T
    np.testing.assert_array_equal(em.motion_from_params(params), clip.motion)
    rederived = em.apply_motion(np.array(params["still_landmarks"]), em.motion_from_params(params))
    np.testing.assert_allclose(rederived, clip.landmarks, atol=1e-9, rtol=0)


def test_apply_motion_accepts_affine_and_single_matrices():
    pts = np.array([[1.0, 2.0], [-3.5, 0.25]])
    m = similarity(20.0, 1.3, 4.0, -2.0)
    out = em.apply_motion(pts, np.stack([m, m])[:, :2])
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[1], em.apply_motion(pts, m), atol=1e-12)
    np.testing.assert_allclose(out[0], pts @ m[:2, :2].T + m[:2, 2], atol=1e-12)


def test_prepare_still_keeps_labels_exact():
    pts = np.array([[30.3, 40.7], [70.6, 42.2], [50.1, 60.4], [36.8, 80.9], [66.2, 79.5]])
    img = blob_still(pts, (100, 100), sigma=1.2)
    # the face is near the border: the crop pads (margin 1 -> side 3 x ~40 px); then shrink the face to <= 24 px
    still, new = em.prepare_still(img, pts, margin=1.0)
    assert still.shape[0] == still.shape[1] >= 3 * 40
    np.testing.assert_allclose(new - pts, np.broadcast_to(new[0] - pts[0], pts.shape), atol=1e-12)  # a shift
    for p in new:
        assert np.linalg.norm(centroid(still, p, 5) - p) < 0.05
    small, new_small, transform = em.prepare_still(img, pts, margin=1.0, max_face_side=24, return_transform=True)
    np.testing.assert_allclose(new_small, em.apply_motion(pts, transform), atol=1e-12)
    side = max(np.ptp(new_small[:, 0]), np.ptp(new_small[:, 1]))
    assert side <= 24.5


# ---------------------------------------------------------------------------------------------------------------
# rendering


BLOBS = np.array([[60.3, 55.8], [100.65, 52.2], [80.15, 80.45], [58.9, 108.35], [103.4, 106.7]])


@pytest.mark.parametrize(
    "matrix",
    [
        similarity(0.0, 1.0, 3.37, -5.81),
        similarity(7.0, 1.12, -12.3, -18.6),
        similarity(-11.0, 0.83, 9.2, 1.45),
        similarity(4.0, 0.5, 22.7, 19.1),  # shrinking: the anti-aliasing pre-blur is on
    ],
    ids=["shift", "rot-zoom-in", "rot-zoom-out", "half-size"],
)
@pytest.mark.parametrize("interpolation, tolerance", [("linear", 0.05), ("lanczos", 0.03)])
def test_rendered_frame_moves_as_the_matrix_says(matrix, interpolation, tolerance):
    still = blob_still(BLOBS, (160, 160))
    frame = em.render_frame(still, matrix, (150, 140), (0, 0, 0), interpolation=interpolation)
    assert frame.dtype == np.uint8 and frame.shape == (140, 150, 3)
    target = em.apply_motion(BLOBS, matrix)
    errors = [np.linalg.norm(centroid(frame, p, 7) - p) for p in target]
    assert max(errors) < tolerance, errors


def test_rendered_frame_follows_a_mild_perspective():
    m = similarity(5.0, 1.05, -6.0, -4.0)
    m[2, :2] = (6e-4, -4e-4)
    still = blob_still(BLOBS, (160, 160))
    frame = em.render_frame(still, m, (150, 140), (0, 0, 0))
    errors = [np.linalg.norm(centroid(frame, p, 7) - p) for p in em.apply_motion(BLOBS, m)]
    assert max(errors) < 0.05, errors


def test_clip_frames_show_their_labels():
    """A clean synthesised clip: each blob's centroid sits on its label, frame after frame (similarity motion)."""
    still = blob_still(BLOBS, (160, 160))
    clip = em.synthesise_clip(
        still,
        BLOBS,
        num_frames=20,
        fps=10,
        frame_size=(200, 150),
        motion="slow",
        degrade=None,
        hard=None,
        seed=3,
        background=(0, 0, 0),
    )
    assert np.abs(clip.motion[:, 2, :2]).max() > 0  # slow has a little yaw / pitch: perspective included
    errors = [np.linalg.norm(centroid(clip.frames[t], p, 7) - p) for t in range(20) for p in clip.landmarks[t]]
    assert max(errors) < 0.05, max(errors)


def test_backdrop_covers_the_frame_without_seams(face_still):
    img, pts = face_still
    still, lm = em.prepare_still(img, pts, margin=0.3)  # a tight still: the frame sees far beyond it
    mats = em.sample_motion(
        "zoom",
        8,
        8,
        1,
        still_size=still.shape[1::-1],
        face_box=em.boxes_from_landmarks(lm[None])[0],
        frame_size=(240, 120),
        zoom_sweep=0.5,
    )
    bg = em.make_backdrop(still, mats, (240, 120), rng=0, face_box=em.boxes_from_landmarks(lm[None])[0])
    for m in mats:
        frame = em.render_frame(still, m, (240, 120), bg)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64)
        assert grey.min() > 20  # no black holes: the canvas covers the whole view
        # no seam: neighbouring pixels never jump much more than inside the still itself
        jumps = max(np.abs(np.diff(grey, axis=0)).max(), np.abs(np.diff(grey, axis=1)).max())
        assert jumps < 120


# ---------------------------------------------------------------------------------------------------------------
# motion presets


def _track(preset, seconds=10.0, fps=30.0, seed=0, **kw):
    return em.sample_motion_track(
        preset,
        int(seconds * fps),
        fps,
        seed,
        still_size=(300, 300),
        face_box=(100, 100, 200, 200),
        frame_size=(640, 480),
        **kw,
    )


def test_static_preset_is_a_sub_pixel_random_walk():
    tr = _track("static")
    steps = np.linalg.norm(np.diff(tr.face_centre, axis=0), axis=1)
    assert steps.max() < 0.6 and 0.01 < np.median(steps) < 0.2
    assert 0.05 < tr.face_centre.std(axis=0).min() and np.ptp(tr.face_centre, axis=0).max() < 4.0  # it moves, a bit
    assert np.abs(tr.roll_deg).max() < 0.2 and np.abs(tr.log_zoom).max() < 0.005
    assert not tr.yaw_deg.any() and not tr.pitch_deg.any()
    np.testing.assert_allclose(tr.face_centre.mean(axis=0), (319.5, 239.5), atol=1e-6)  # centred on average
    np.testing.assert_allclose(tr.face_side, 0.40 * 480, rtol=0.01)


def test_slow_preset_is_smooth_and_natural_has_nods_and_fast_turns():
    slow, natural, static = _track("slow", 20.0), _track("natural", 20.0, seed=2), _track("static", 20.0)

    def roughness(track):  # rms of the second difference of the face centre over rms of the first
        c = track.face_centre
        return np.sqrt((np.diff(c, 2, axis=0) ** 2).mean()) / np.sqrt((np.diff(c, axis=0) ** 2).mean())

    assert roughness(slow) < 0.05 < 1.0 < roughness(static)
    slow_yaw_speed = np.abs(np.diff(slow.yaw_deg)).max() * 30
    nat_yaw_speed = np.abs(np.diff(natural.yaw_deg)).max() * 30
    assert slow_yaw_speed < 10.0 and nat_yaw_speed > 30.0  # deg / s: fast turns only in natural
    kinds = [e["kind"] for e in natural.events]
    assert "nod" in kinds and "turn" in kinds

    def band_rms(x):  # rms (degrees) of the 1.1-2.6 Hz band, Hann-windowed
        w = np.hanning(len(x))
        spec = np.fft.rfft((x - x.mean()) * w)
        f = np.fft.rfftfreq(len(x), 1 / 30)
        return np.sqrt(2 * (np.abs(spec[(f > 1.1) & (f < 2.6)]) ** 2).sum() / (w**2).sum() / len(x))

    # nods really oscillate the pitch in their band (1.2-2.5 Hz); slow has nothing there
    assert band_rms(natural.pitch_deg) > 0.2 > 0.01 > band_rms(slow.pitch_deg)
    # zoom sweeps in and out
    zoom = _track("zoom", 10.0, seed=4)
    assert np.ptp(zoom.log_zoom) > 0.3


def test_presets_stay_in_frame_and_do_not_depend_on_fps():
    for name in em.MOTION_PRESETS:
        for seed in range(3):
            tr = _track(name, 10.0, seed=seed)
            half = tr.face_side[:, None] / 2
            assert (tr.face_centre - half > 0).all() and (tr.face_centre[:, 0] + half[:, 0] < 640).all()
            assert (tr.face_centre[:, 1] + half[:, 0] < 480).all()
    a, b = _track("natural", 6.0, fps=30.0, seed=5), _track("natural", 6.0, fps=15.0, seed=5)
    np.testing.assert_allclose(a.yaw_deg[::2], b.yaw_deg, atol=1e-9)
    np.testing.assert_allclose(a.pitch_deg[::2], b.pitch_deg, atol=1e-9)
    assert a.events == b.events


def test_motion_is_deterministic_and_overridable():
    kw = dict(still_size=(300, 300), face_box=(100, 100, 200, 200), frame_size=(320, 240))
    a = em.sample_motion("natural", 50, 25, np.random.default_rng(3), **kw)
    b = em.sample_motion("natural", 50, 25, np.random.default_rng(3), **kw)
    c = em.sample_motion("natural", 50, 25, np.random.default_rng(4), **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    flat = em.sample_motion(
        "natural", 50, 25, 3, yaw_deg=0, pitch_deg=0, nod_rate_hz=0, shake_rate_hz=0, turn_rate_hz=0, **kw
    )
    assert not flat[:, 2, :2].any()  # pure similarities
    with pytest.raises(ValueError):
        em.sample_motion("natural", 5, 25, 0, no_such_field=1, **kw)
    with pytest.raises(ValueError):
        em.sample_motion("wobbly", 5, 25, 0, **kw)


# ---------------------------------------------------------------------------------------------------------------
# degradation


def test_motion_blur_follows_the_motion():
    still = blob_still(np.array([[40.0, 40.0]]), (80, 80), sigma=1.2)
    for step in ([6.0, 0.0], [0.0, 5.0], [4.0, 4.0]):
        motion = np.stack([similarity(0, 1, 20 + step[0] * t, 20 + step[1] * t) for t in range(5)])
        sharp = em.render_frame(still, motion[2], (120, 120), (0, 0, 0))
        blurred = em.render_motion_blurred(still, motion, 2, (120, 120), (0, 0, 0), exposure=1.0)
        target = em.apply_motion(np.array([[40.0, 40.0]]), motion[2])[0]
        c0, cov0 = moments(sharp, target, 10)
        c1, cov1 = moments(blurred, target, 10)
        # centred exposure: the streak stays centred on the label
        assert np.linalg.norm(c1 - target) < 0.1
        evals, evecs = np.linalg.eigh(cov1 - cov0)  # what the blur added
        axis = evecs[:, 1]
        cosine = abs(axis @ np.array(step)) / np.linalg.norm(step)
        assert cosine > 0.99  # the streak is along the motion
        length_sq = float(np.dot(step, step))
        assert evals[1] == pytest.approx(length_sq / 12, rel=0.25)  # a box of the frame step's length
        assert evals[0] < 0.3  # across it, only bilinear sampling's own smoothing (<= 0.25 px^2)


def test_clip_motion_blur_and_degradation_are_wired(face_still):
    still = blob_still(np.array([[30.0, 30.0], [50.0, 30.0], [40.0, 50.0]]), (80, 80))
    pts = np.array([[30.0, 30.0], [50.0, 30.0], [40.0, 50.0]])
    motion = np.stack([similarity(0, 1, 10 + 5 * t, 20) for t in range(6)])
    clean = em.DegradeConfig(exposure=1.0, gain_drift=0, gamma_drift=0, colour_drift=0, read_noise=0, shot_noise=0)
    clip = em.synthesise_clip(
        still, pts, num_frames=6, fps=10, frame_size=(100, 80), motion=motion, degrade=clean, background=(0, 0, 0)
    )
    _, cov = moments(clip.frames[3], clip.landmarks[3, 2], 9)
    assert cov[0, 0] > cov[1, 1] + 1.5  # blurred along x only
    assert clip.params["motion"] == "explicit"
    with pytest.raises(ValueError):
        em.motion_from_params(clip.params)
    # sensor noise: the std on flat grey is what the config says
    grey = [np.full((60, 80, 3), 128, np.uint8)] * 3
    cfg = em.DegradeConfig(gain_drift=0, gamma_drift=0, colour_drift=0, read_noise=2.0, shot_noise=4.0)
    out = em.degrade(grey, cfg, 10, 0)
    expected = math.sqrt(2.0**2 + 4.0**2 * 128 / 255)
    assert np.std(np.stack(out).astype(float)) == pytest.approx(expected, rel=0.1)
    np.testing.assert_array_equal(np.stack(out), np.stack(em.degrade(grey, cfg, 10, 0)))


def test_clips_are_deterministic(face_still):
    img, pts = face_still
    kw = dict(
        num_frames=12, fps=10, frame_size=FRAME, motion="natural", degrade=em.DegradeConfig(), hard=em.HardConfig()
    )
    a, b = em.synthesise_clip(img, pts, seed=11, **kw), em.synthesise_clip(img, pts, seed=11, **kw)
    c = em.synthesise_clip(img, pts, seed=12, **kw)
    np.testing.assert_array_equal(np.stack(a.frames), np.stack(b.frames))
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.params == b.params
    assert np.abs(a.landmarks - c.landmarks).max() > 0.1
    assert not np.array_equal(np.stack(a.frames), np.stack(c.frames))


# ---------------------------------------------------------------------------------------------------------------
# hard clips


def test_occluders_cover_the_face_in_hard_clips_only(face_still):
    img, pts = face_still
    only_occluders = em.HardConfig(blur_rate_hz=0, low_light_rate_hz=0, exit_rate_hz=0, occluder_rate_hz=0.5)
    kw = dict(num_frames=40, fps=10, frame_size=FRAME, motion="natural", degrade=None, seed=5)
    hard = em.synthesise_clip(img, pts, hard=only_occluders, **kw)
    easy = em.synthesise_clip(img, pts, hard=None, **kw)
    np.testing.assert_array_equal(hard.motion, easy.motion)  # same seed, same motion: only the occluders differ
    assert len(hard.params["events"]["occluders"]) >= 1
    covered = np.flatnonzero(hard.occlusion > 0.02)
    assert len(covered) >= 2 and hard.occluded.any()
    assert not easy.occlusion.any() and not easy.occluded.any()
    # the occluder is really drawn over the face: frames differ inside the face box where it is covered
    t = covered[np.argmax(hard.occlusion[covered])]
    x1, y1, x2, y2 = np.round(hard.boxes[t]).astype(int)
    diff = np.abs(hard.frames[t][y1:y2, x1:x2].astype(int) - easy.frames[t][y1:y2, x1:x2].astype(int)).max(axis=2)
    assert (diff > 4).mean() > 0.5 * hard.occlusion[t]


def test_hard_episodes_darken_and_blur(face_still):
    img, pts = face_still
    cfg = em.HardConfig(occluder_rate_hz=0, exit_rate_hz=0, blur_rate_hz=0.2, low_light_rate_hz=0.2)
    kw = dict(num_frames=50, fps=10, frame_size=FRAME, motion="static", degrade=None, seed=2)
    hard, easy = em.synthesise_clip(img, pts, hard=cfg, **kw), em.synthesise_clip(img, pts, hard=None, **kw)
    ev = hard.params["events"]
    assert ev["low_light"] and ev["blur"]
    dark = ev["low_light"][0]
    t = int((dark["start_s"] + dark["ramp_s"] + dark["hold_s"] / 2) * 10)
    assert hard.frames[t].mean() < 0.5 * easy.frames[t].mean()
    b = ev["blur"][0]
    t = int((b["start_s"] + b["ramp_s"] + b["hold_s"] / 2) * 10)
    sharp = lambda f: cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    if hard.frames[t].mean() > 0.8 * easy.frames[t].mean():  # not also in a dark episode
        assert sharp(hard.frames[t]) < 0.5 * sharp(easy.frames[t])


def test_partial_exit_only_when_enabled(face_still):
    img, pts = face_still
    W, H = FRAME
    exits = em.HardConfig(occluder_rate_hz=0, blur_rate_hz=0, low_light_rate_hz=0, exit_rate_hz=0.2)
    for seed in (1, 2):
        kw = dict(num_frames=40, fps=10, frame_size=FRAME, motion="natural", degrade=None, seed=seed)
        hard = em.synthesise_clip(img, pts, hard=exits, **kw)
        easy = em.synthesise_clip(img, pts, hard=None, **kw)
        outside = lambda lm: (lm[..., 0] < -0.5) | (lm[..., 0] > W - 0.5) | (lm[..., 1] < -0.5) | (lm[..., 1] > H - 0.5)
        assert [e["kind"] for e in hard.params["events"]["motion"]].count("exit") >= 1
        assert outside(hard.landmarks).any(axis=1).sum() >= 3  # several frames with landmarks out of the frame
        assert outside(hard.landmarks).mean(axis=1).max() < 0.7  # partly, not entirely
        assert not outside(easy.landmarks).any()
