"""`wflwv build`: shot cuts, tracking, windows, the dlib68 oracle member, and whole builds (synthetic videos with
sidecar boxes, and a real face: matplotlib's sample portrait of Grace Hopper, moved around to make a video)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from faces import needs_dlib, portrait

from wflwv.baselines.dlib68 import dlib_predictor_path
from wflwv.benchmark.harness import run_benchmark
from wflwv.build import oracle as O
from wflwv.build import pipeline as B
from wflwv.build.config import SIDECAR_SUFFIX
from wflwv.build.detect import box_iou, landmarks_box, nms, square_box, track_faces
from wflwv.build.publish import _select
from wflwv.build.scenes import WindowCriteria, cut_clips, detect_cuts, diagnose_window, find_windows
from wflwv.models import create_model, list_models
from wflwv.protocol.layout import WFLWVDataset
from wflwv.protocol.video import iter_frames, probe_video
from wflwv.protocol.video import write_video as encode_video
from wflwv.testing import synthetic_clip

BITS = 8


def stamp(frame: np.ndarray, i: int) -> np.ndarray:
    """Write ``i`` as a barcode in the bottom 14 rows (away from the face)."""
    h, w = frame.shape[:2]
    bw = w // BITS
    for b in range(BITS):
        frame[h - 14 :, b * bw : (b + 1) * bw] = 255 if (i >> b) & 1 else 0
    return frame


def read_stamp(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    bw = w // BITS
    return sum(1 << b for b in range(BITS) if frame[h - 11 : h - 3, b * bw + 3 : (b + 1) * bw - 3].mean() > 128)


def face_video_frames(n: int) -> list[np.ndarray]:
    """A real face moving smoothly (translation and a slight zoom), frame index stamped at the bottom."""
    small = cv2.resize(portrait(), (256, 300), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(n):
        a = 2 * np.pi * t / max(n, 1)
        s = 1.0 + 0.04 * np.sin(a)
        m = np.array([[s, 0, -16 + 6 * np.sin(a)], [0, s, -40 + 3 * np.cos(a)]])
        frames.append(stamp(cv2.warpAffine(small, m, (224, 208), borderMode=cv2.BORDER_REFLECT), t))
    return frames


def dlib_reference(frames: list[np.ndarray]) -> np.ndarray:
    """dlib's own pipeline on the full frames (HOG detector rectangle + shape predictor): (T, 68, 2)."""
    import dlib

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_predictor_path()))
    out = []
    for f in frames:
        rgb = np.ascontiguousarray(f[..., ::-1])
        rects = det(rgb, 0)
        assert len(rects) == 1
        out.append([[p.x, p.y] for p in sp(rgb, rects[0]).parts()])
    return np.asarray(out, dtype=np.float64)


def nme(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean point error of (T, 68, 2) a against b, over b's outer-eye-corner distance."""
    io = np.linalg.norm(b[:, 36] - b[:, 45], axis=1)
    return np.linalg.norm(a - b, axis=2).mean(axis=1) / io


# ------------------------------------------------------------------------------------------------ shot cuts
def test_scene_cut_detected_on_synthetic_video_with_a_cut(tmp_path):
    f1, _, _ = synthetic_clip(18, seed=1, motion=2.0, fps=10)
    f2, _, _ = synthetic_clip(14, seed=2, motion=2.0, fps=10)
    path = tmp_path / "cut.mp4"
    assert encode_video(path, f1 + f2, 10.0) == 32
    cuts, dist = detect_cuts(iter_frames(path))
    assert cuts == [18]
    assert dist[18] > 0.35 and np.delete(dist, 18).max() < 0.1  # a clear margin on both sides
    # a single moving shot has no cut; a shot whose every frame changes a lot is not cut everywhere
    assert detect_cuts(f1)[0] == []
    flashing = [f if i % 2 else 255 - f for i, f in enumerate(f1)]
    assert len(detect_cuts(flashing)[0]) <= 1


# ------------------------------------------------------------------------------------------------ tracking
def _box(cx, cy, s=40.0, score=1.0):
    return np.array([[cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2, score]])


def test_box_helpers():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0.0]])
    kept = nms(np.array([[0, 0, 10, 10, 0.5], [1, 0, 11, 10, 0.9], [50, 50, 60, 60, 0.1]]), 0.3)
    np.testing.assert_allclose(kept[:, 4], [0.9, 0.1])
    np.testing.assert_allclose(square_box(np.array([0, 0, 10, 4.0])), [0, -3, 10, 7])
    np.testing.assert_allclose(landmarks_box(np.array([[[1, 5], [3, 2], [2, 9]]], float)), [[1, 2, 3, 9]])


def test_tracking_links_moving_faces_and_bridges_short_gaps():
    dets = []
    for t in range(40):
        d = [_box(50 + 2 * t, 60)]  # face A moves right
        if 10 <= t < 30:
            d.append(_box(200, 60 + t))  # face B from 10 to 29
        if t in (15, 16, 17):
            d = d[1:]  # A missed for three frames
        if t == 35:
            d.append(_box(400, 400, 20, 0.3))  # a one-frame false positive
        dets.append(np.concatenate(d) if d else np.zeros((0, 5)))
    tracks = track_faces(dets, iou_threshold=0.3, max_gap=4)
    a = [t for t in tracks if t.first == 0]
    assert len(a) == 1 and a[0].last == 39 and a[0].hits == 37
    assert a[0].max_gap_in(0, 40) == 3 and a[0].hits_in(10, 20) == 7
    box = a[0].box_series(16, 17)[0]  # interpolated inside the gap
    np.testing.assert_allclose((box[0] + box[2]) / 2, 50 + 2 * 16)
    b = [t for t in tracks if t.first == 10]
    assert len(b) == 1 and b[0].last == 29 and b[0].hits == 20
    # a cut ends every track; a gap longer than max_gap too
    tracks = track_faces(dets, cuts=[20], max_gap=4)
    assert sorted((t.first, t.last) for t in tracks if t.hits > 1) == [(0, 19), (10, 19), (20, 29), (20, 39)]
    assert len([t for t in track_faces(dets, max_gap=2) if t.hits > 1 and t.first == 0]) == 1
    assert max(t.last for t in track_faces(dets, max_gap=2) if t.first == 0) == 14

    crit = WindowCriteria(min_track_hits=5, min_coverage=0.5, max_gap=4, min_face=10)
    tracks = track_faces(dets, max_gap=4)
    wins, _ = find_windows(40, tracks, [], 8, crit)
    assert [(w.start, w.stop) for w in wins] == [(0, 8), (30, 38)]  # face B excludes frames 10-29
    assert wins[0].boxes.shape == (8, 4)
    assert diagnose_window(5, 15, tracks, [], crit)[1].startswith("2 faces")
    assert diagnose_window(0, 8, tracks, [4], crit)[1] == "shot cut (frame 4)"
    assert "too small" in diagnose_window(0, 8, tracks, [], WindowCriteria(min_face=100))[1]
    assert diagnose_window(0, 8, [], [], crit)[1] == "no face detected"
    wins, reasons = find_windows(40, tracks, [], 8, crit, max_windows=1)
    assert len(wins) == 1
    wins, reasons = find_windows(40, [], [], 8, crit)
    assert not wins and reasons == ["no face detected"]


def test_cut_clips_writes_exact_spans(tmp_path):
    src = tmp_path / "src.mp4"
    encode_video(src, [stamp(np.full((64, 96, 3), 90, np.uint8), i) for i in range(30)], 10.0)
    counts = cut_clips(src, [(20, 28, tmp_path / "b.mp4"), (3, 9, tmp_path / "a.mp4")], 10.0)
    assert counts == [8, 6]
    assert [read_stamp(f) for f in iter_frames(tmp_path / "a.mp4")] == list(range(3, 9))
    assert [read_stamp(f) for f in iter_frames(tmp_path / "b.mp4")] == list(range(20, 28))


def test_split_selection_and_box_smoothing():
    scores = {"a": 5.0, "b": 1.0, "c": 3.0, "d": 4.0, "e": 2.0}
    assert _select(scores, 2, 2) == (["a", "d"], ["b", "e"])
    assert _select(scores, None, None) == (["a", "d"], ["b", "e", "c"])
    assert _select(scores, 4, 4) == (["a", "d", "c", "e"], ["b"])  # never overlapping
    assert _select(scores, 0, 1) == ([], ["b"])
    t = np.arange(10.0)[:, None]
    boxes = np.hstack([t, t, t + 20, t + 20])  # steady motion: unchanged
    np.testing.assert_allclose(O.smooth_boxes(boxes, 5), boxes)
    noisy = boxes + np.array([1, -1, 1, -1, 1, -1, 1, -1, 1, -1.0])[:, None]
    assert np.abs(O.smooth_boxes(noisy, 5)[2:-2] - boxes[2:-2]).max() < 0.21


# ------------------------------------------------------------------------------------------------ real face
def test_haar_and_hog_find_the_real_face():
    needs_dlib()
    from wflwv.build.detect import HaarDetector, HogDetector

    frame = face_video_frames(1)[0]
    ref = square_box(landmarks_box(dlib_reference([frame])))
    for det in (HaarDetector(), HogDetector()):
        found = det.detect(frame)
        assert found.shape == (1, 5), det.name
        assert box_iou(found, ref)[0, 0] > 0.6, det.name  # calibrated to the landmark square
    assert HaarDetector().detect(np.full((120, 160, 3), 128, np.uint8)).shape == (0, 5)


def test_dlib68_member_on_a_real_face():
    needs_dlib()
    assert "dlib68" in list_models()
    model = create_model("dlib68")
    assert model.scheme == "ibug68"
    frames = face_video_frames(3)
    ref = dlib_reference(frames)
    import torch

    from wflwv.protocol.crop import apply_affine, crop_matrix, invert_affine, warp_crop

    ms = [crop_matrix(square_box(landmarks_box(r))) for r in ref]
    crops = np.stack([warp_crop(f, m)[..., ::-1] for f, m in zip(frames, ms)])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    out = model.predict(x, [None] * 3, [None] * 3).landmarks_numpy()
    assert out.shape == (3, 68, 2)
    again = np.concatenate([model.predict(x[i : i + 1], [None], [None]).landmarks_numpy() for i in range(3)])
    np.testing.assert_array_equal(out, again)  # deterministic, batch-independent
    frame_pts = np.stack([apply_affine(p, invert_affine(m)) for p, m in zip(out, ms)])
    assert nme(frame_pts, ref).max() < 0.03


@pytest.fixture(scope="module")
def face_site(tmp_path_factory):
    """The real-face video (60 frames, 10 fps) as a local file and on a local HTTP server as graceHopper.mp4."""
    root = tmp_path_factory.mktemp("facesite")
    frames = face_video_frames(60)
    encode_video(root / "graceHopper.mp4", frames, 10.0)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # ffmpeg closes connections early; not an error here
            pass

    srv = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow
def test_build_real_face_from_local_file(face_site, tmp_path):
    needs_dlib()
    root_site, _ = face_site
    out = tmp_path / "ds"
    cfg = B.BuildConfig(out=out, local=[root_site / "graceHopper.mp4"], window=2.0, detector="hog", members=("dlib68",), tta="flip",
                        max_clips_per_video=2, hard_k=1, easy_k=1, progress=False, floor_stills=0)  # fmt: skip
    s = B.build_dataset(cfg)
    assert s.scheme == "ibug68" and s.counts["kept"] == 2 and len(s.hard) == len(s.easy) == 1
    ds = WFLWVDataset(out)
    assert ds.scheme.name == "ibug68" and ds.ids("hard") == s.hard and ds.ids("easy") == s.easy
    for cid in ds.ids():
        clip = ds.load(cid)
        start = int(cid.rsplit("_", 1)[1])
        decoded = list(iter_frames(clip.video_path))
        assert [read_stamp(f) for f in decoded] == list(range(start, start + 20))
        # the oracle's landmarks sit where dlib's own detector + predictor put them on the same frames
        ref = dlib_reference(decoded)
        assert nme(clip.landmarks, ref).mean() < 0.03
        var = np.load(out / "variance" / f"{cid}.npy")
        assert var.shape == (20, 68) and (var >= 0).all() and var.mean() > 0
        # stored boxes are the crops the landmarks were computed on: the landmarks fill the protocol crop
        side = clip.boxes[:, 2] - clip.boxes[:, 0]
        lm_side = np.max(landmarks_box(clip.landmarks)[:, 2:] - landmarks_box(clip.landmarks)[:, :2], axis=1)
        assert np.abs(side / lm_side - 1).max() < 0.1
    man = pd.read_parquet(out / "manifest.parquet")
    assert set(man["status"]) == {"kept"} and (man["oracle_members"] == "dlib68").all()
    assert man.set_index("clip_id").loc[s.hard[0], "variance"] >= man.set_index("clip_id").loc[s.easy[0], "variance"]
    assert (out / "previews" / f"{s.hard[0]}.png").is_file()
    summary = run_benchmark(create_model("oracle"), ds, tmp_path / "bench", progress=False)
    assert summary["sets"]["none"]["splits"]["all"]["nme"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("engine", [[], ["--workers", "2", "--engine", "ray"]], ids=["in-process", "ray"])
def test_cli_build_from_ids_over_http(face_site, tmp_path, engine):
    needs_dlib()
    if engine:
        pytest.importorskip("ray")
    from click.testing import CliRunner

    from wflwv.cli.build import build

    _, base = face_site
    ids = tmp_path / "ranges.txt"
    ids.write_text("graceHopper 7 26\nmissingVid1 0 30\n")
    out = tmp_path / "ds"
    args = ["--out", str(out), "--ids", str(ids), "--url-template", base + "/{id}.mp4", "--sleep", "0", "--retries", "1",
            "--tta", "flip", "--quiet", "--previews", "0", "--floor-stills", "0", *engine]  # fmt: skip
    res = CliRunner().invoke(build, args)
    assert res.exit_code == 0, res.output
    assert "1 kept" in res.output and "HTTP Error 404" in res.output
    ds = WFLWVDataset(out)
    assert ds.all_ids() == ["graceHopper"]  # one range per video: the clip is named by the video ID
    clip = ds.load("graceHopper")
    assert [read_stamp(f) for f in iter_frames(clip.video_path)] == list(range(7, 27))
    assert probe_video(clip.video_path).fps == pytest.approx(10.0)
    man = pd.read_csv(out / "manifest.csv").set_index("source_id")
    row = man.loc["graceHopper"]
    assert (row["status"], int(row["start_frame"]), int(row["end_frame"]), int(row["num_frames"])) == (
        "kept",
        7,
        26,
        20,
    )
    assert row["url"].endswith("graceHopper.mp4") and row["retrieved"]
    assert man.loc["missingVid1", "status"] == "failed" and "404" in man.loc["missingVid1", "reason"]
    # a malformed ID is refused with its line number
    ids.write_text("graceHopper 7 26\n../../etc/x 0 3\n")
    res = CliRunner().invoke(build, args)
    assert res.exit_code != 0 and "line 2" in res.output and "malformed" in res.output


# ------------------------------------------------------------------------------------------------ synthetic builds
@pytest.fixture(scope="module")
def synth_sources(tmp_path_factory):
    """Three 10-fps synthetic videos with sidecar boxes: one shot (40 frames), two shots with a cut (20 + 20),
    and one where a second face appears at frame 10 (30 frames)."""
    root = tmp_path_factory.mktemp("synthsrc")

    def write(name, parts, extra=None):
        frames, boxes = [], []
        for seed, n in parts:
            f, b, _ = synthetic_clip(n, (192, 144), "ibug68", motion=1.5, seed=seed, fps=10)
            frames += f
            boxes.append(square_box(b))
        boxes = np.concatenate(boxes)[:, None, :]
        if extra is not None:
            boxes = np.concatenate([boxes, extra], axis=1)
        encode_video(root / f"{name}.mp4", frames, 10.0)
        np.save(root / f"{name}.mp4{SIDECAR_SUFFIX}", boxes)

    write("oneshot", [(11, 40)])
    write("twoshots", [(12, 20), (13, 20)])
    second = np.full((30, 1, 4), np.nan)
    second[10:] = [150, 10, 185, 45]
    write("twofaces", [(14, 30)], second)
    return root


def _synth_config(src: Path, out: Path, tta: str = "flip", **kw) -> B.BuildConfig:
    kw.setdefault("floor_stills", 0)  # the label floor has its own tests (test_label_floor.py)
    kw.setdefault("members", ("dlib68",))  # fast; the default oracle is built by test_ray_cli and test_robust_oracle
    return B.BuildConfig(out=out, local=[src], window=1.5, detector="sidecar", tta=tta, min_face=20, hard_k=1,
                         easy_k=2, previews=0, progress=False, **kw)  # fmt: skip


@pytest.mark.slow
def test_build_synthetic_layout_manifest_and_splits(synth_sources, tmp_path):
    needs_dlib()
    out = tmp_path / "ds"
    s = B.build_dataset(_synth_config(synth_sources, out, workers=2, engine="processes"))
    man = pd.read_parquet(out / "manifest.parquet")
    clips = man[man["clip_id"] != ""]
    assert sorted(clips["clip_id"]) == ["oneshot_000000", "oneshot_000015", "twoshots_000000", "twoshots_000021"]
    tf = man[man["source_id"] == "twofaces"].iloc[0]
    assert tf["status"] == "dropped" and "2 faces" in tf["reason"]
    assert (clips["status"] == "kept").sum() == 3
    unselected = clips[clips["status"] == "dropped"]
    assert len(unselected) == 1 and unselected.iloc[0]["reason"].startswith("not selected")
    ds = WFLWVDataset(out)
    assert sorted(ds.all_ids()) == sorted(s.hard + s.easy) and len(s.hard) == 1 and len(s.easy) == 2
    var = clips.set_index("clip_id")["variance"]
    assert var[s.hard].min() >= var[s.easy].max()
    assert s.counts["mean_variance_hard"] >= s.counts["mean_variance_easy"]
    # no window crosses the cut at frame 20 of "twoshots"
    two = clips[clips["source_id"] == "twoshots"]
    assert all(not (a < 20 <= b) for a, b in zip(two["start_frame"], two["end_frame"]))
    info = ds.info
    assert info["scheme"] == "ibug68" and info["oracle"]["members"] == ["dlib68"]
    summary = run_benchmark(create_model("oracle"), ds, tmp_path / "bench", progress=False)
    assert summary["sets"]["none"]["splits"]["all"]["nme"] == pytest.approx(0.0, abs=1e-9)
    assert "kept" in B.format_summary(s) and "2 faces" in B.format_summary(s)


class _Interrupt(BaseException):
    """Stands in for the process being killed (not an Exception, so no stage swallows it)."""


@pytest.mark.slow
def test_interrupted_build_resumes_without_redoing_finished_clips(synth_sources, tmp_path, monkeypatch):
    needs_dlib()
    out = tmp_path / "ds"
    real = O.run_oracle
    calls: list[str] = []

    def dying(oracle, video, boxes, video_id="clip", *a, **k):
        calls.append(video_id)
        if len(calls) == 5:  # 2 oracle runs per clip: the third clip dies in its first pass
            raise _Interrupt()
        return real(oracle, video, boxes, video_id, *a, **k)

    monkeypatch.setattr(O, "run_oracle", dying)
    config = functools.partial(_synth_config, synth_sources, tta="")  # no TTA: fast
    with pytest.raises(_Interrupt):
        B.build_dataset(config(out))
    done = sorted(p.stem for p in (out / ".build" / "labels").glob("*.json"))
    assert len(done) == 2 and not (out / "manifest.csv").exists()

    calls.clear()
    monkeypatch.setattr(
        O, "run_oracle", lambda *a, **k: (calls.append(a[3] if len(a) > 3 else k["video_id"]), real(*a, **k))[1]
    )
    s = B.build_dataset(config(out))
    assert s.counts["resumed_scans"] == 3 and s.counts["resumed_labels"] == 2
    assert sorted(set(calls)) == sorted(
        set(c for c in ["oneshot_000000", "oneshot_000015", "twoshots_000000", "twoshots_000021"]) - set(done)
    )
    assert len(calls) == 4  # two clips x two passes, nothing else

    # identical to an uninterrupted build
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(O, "run_oracle", real)
    s2 = B.build_dataset(config(fresh))
    assert (s.hard, s.easy) == (s2.hard, s2.easy)
    for cid in s.hard + s.easy:
        for sub in ("landmarks", "bboxes"):
            np.testing.assert_array_equal(np.load(out / sub / f"{cid}.npy"), np.load(fresh / sub / f"{cid}.npy"))

    # a third run does nothing but publish; changing the oracle relabels
    calls.clear()
    monkeypatch.setattr(O, "run_oracle", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    B.build_dataset(config(out))
    assert calls == []
    B.build_dataset(_synth_config(synth_sources, out, tta="flip"))
    assert len(calls) == 8


def test_build_rejects_bad_options(tmp_path):
    with pytest.raises(B.BuildError, match="nothing to build from"):
        B.build_dataset(B.BuildConfig(out=tmp_path / "x", progress=False))
    with pytest.raises(B.BuildError, match="sidecar"):
        B.build_dataset(B.BuildConfig(out=tmp_path / "x", ids=tmp_path / "r.txt", detector="sidecar", progress=False))
    with pytest.raises(B.BuildError, match="window"):
        B.build_dataset(B.BuildConfig(out=tmp_path / "x", local=[tmp_path], window=0, progress=False))


def test_parse_rate():
    import click

    from wflwv.cli.build import parse_rate

    assert parse_rate("500K") == 500 * 1024 and parse_rate("2M") == 2 * 1024**2 and parse_rate("1000") == 1000.0
    assert parse_rate("1.5MB/s") == 1.5 * 1024**2 and parse_rate(None) is None and parse_rate("0") is None
    with pytest.raises(click.BadParameter):
        parse_rate("fast")


@pytest.mark.slow
def test_a_registered_network_serves_as_an_oracle_member(face_site, tmp_path):
    """The shipped UNet (a wflwv heatmap model) joins dlib68 in the ensemble; heatmaps are averaged."""
    needs_dlib()
    root_site, _ = face_site
    out = tmp_path / "ds"
    cfg = B.BuildConfig(out=out, local=[root_site / "graceHopper.mp4"], window=2.0, detector="hog", tta="none",
                        members=["dlib68", "unet"], max_clips_per_video=1, hard_k=1, easy_k=0, progress=False,
                        floor_stills=0)  # fmt: skip
    s = B.build_dataset(cfg)
    assert s.counts["kept"] == 1
    man = pd.read_parquet(out / "manifest.parquet")
    assert (man["oracle_members"] == "dlib68,unet").all()
    clip = WFLWVDataset(out).load(s.hard[0])
    ref = dlib_reference(list(iter_frames(clip.video_path)))
    assert nme(clip.landmarks, ref).mean() < 0.08  # two members that mostly agree on a real face
    assert np.load(out / "variance" / f"{s.hard[0]}.npy").mean() > 0


def test_config_hash_does_not_depend_on_int_or_float_spelling(tmp_path):
    a = B.BuildConfig(out=tmp_path, local=[tmp_path], min_face=20, window=5)
    b = B.BuildConfig(out=tmp_path, local=[tmp_path], min_face=20.0, window=5.0)
    assert a.scan_key() == b.scan_key() and a.label_key() == b.label_key()
