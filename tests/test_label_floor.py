"""Exact-motion datasets from labelled stills (`wflwv build --stills`) and the label-flicker floor
(wflwv.build.floor): .pts files, discovery, the clip plan, exact labels end to end, the benchmark's answers on
exact labels (oracle, perturbed oracle, shipped models), the floor's measure, and its place in build / bench."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from faces import needs_dlib, portrait

from wflwv.benchmark.harness import run_benchmark
from wflwv.benchmark.metrics import nmf_video
from wflwv.build import exact_motion as em
from wflwv.build import floor as F
from wflwv.build import stills as S
from wflwv.build.config import BuildError
from wflwv.models import create_model
from wflwv.protocol.crop import crop_square
from wflwv.protocol.layout import WFLWVDataset, write_dataset_info
from wflwv.protocol.wflw import WFLWSample, write_annotations
from wflwv.schemes import WFLW98_TO_IBUG68
from wflwv.testing import render_synthetic_face

IBUG = list(WFLW98_TO_IBUG68)


@contextlib.contextmanager
def click_output():
    """Capture what click.echo writes to standard output."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def _cli(*args: str):
    from wflwv.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def _pts_folder(root: Path, n: int = 3, size: int = 200, seed: int = 0) -> Path:
    """``n`` cartoon faces as PNG with 68-point .pts files beside them (1-based, as 300-W)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lm, _ = render_synthetic_face(rng, size)
        cv2.imwrite(str(root / f"face{i}.png"), img)
        S.write_pts(root / f"face{i}.pts", lm[IBUG])
    return root


def _expected_jitter_nmf(boxes: np.ndarray, gt: np.ndarray, sigma: float) -> float:
    """NMF of ground truth plus i.i.d. N(0, sigma^2) crop-pixel noise per coordinate, mapped to the frame.

    The protocol crop maps frame -> crop by a scale ``256 / side_t`` (no rotation), so frame-pixel noise has std
    ``c_t sigma`` with ``c_t = side_t / 256``. The residual step of a landmark between frames t-1 and t then has
    E||dr||^2 = 2 sigma^2 (c_t^2 + c_{t-1}^2) (two coordinates), and the released per-landmark flicker is
    e = 100 ||dr|| / s_t with s_t = sqrt(w_t h_t) / 256 (ground-truth box of frame t). NMF = sqrt(mean e^2), so
    E[NMF^2] = mean_t 2e4 sigma^2 (c_t^2 + c_{t-1}^2) / s_t^2.
    """
    c = np.array([crop_square(b)[2] for b in boxes]) / 256.0
    ext = gt.max(axis=1) - gt.min(axis=1)
    s = np.sqrt(ext[:, 0] * ext[:, 1]) / 256.0
    return math.sqrt(np.mean(2e4 * sigma**2 * (c[1:] ** 2 + c[:-1] ** 2) / s[1:] ** 2))


# ------------------------------------------------------------------------------------------------ .pts files
def test_pts_round_trip_and_origin(tmp_path):
    pts = np.array([[10.25, 20.5], [0.0, 0.0], [99.125, 3.75]])
    S.write_pts(tmp_path / "a.pts", pts)
    text = (tmp_path / "a.pts").read_text()
    assert text.startswith("version: 1\nn_points: 3\n{\n11.250000 21.500000\n") and text.rstrip().endswith("}")
    np.testing.assert_allclose(S.read_pts(tmp_path / "a.pts"), pts, atol=1e-6)  # 1-based in the file
    np.testing.assert_allclose(S.read_pts(tmp_path / "a.pts", origin=0), pts + 1, atol=1e-6)
    # headers are optional, blank lines are skipped
    (tmp_path / "b.pts").write_text("{\n1 2\n\n3 4\n}\n")
    np.testing.assert_allclose(S.read_pts(tmp_path / "b.pts", origin=0), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nn_points: 2\n1 2\n", "no '{' line"),
        ("{\n1 2\nthree 4\n}\n", "line 3: expected 'x y'"),
        ("{\n1 2\n3 4\n", "not closed"),
        ("n_points: 3\n{\n1 2\n3 4\n}\n", "n_points says 3 but 2"),
        ("{\n1 nan\n}\n", "line 2: non-finite"),
        ("{\n}\n", "no points"),
        ("n_points: x\n{\n1 2\n}\n", "n_points must be an integer"),
    ],
)
def test_pts_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(S.PtsFormatError, match=message) as err:
        S.read_pts(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.pts"):
        S.read_pts(tmp_path / "missing.pts")


# ------------------------------------------------------------------------------------------------ discovery, plan
def test_discovery_of_pts_folders_records_problems_per_still(tmp_path):
    root = _pts_folder(tmp_path / "s", n=3)
    sub = root / "more dir"
    sub.mkdir()
    cv2.imwrite(str(sub / "x.png"), np.zeros((50, 50, 3), np.uint8))  # an image without labels
    (root / "face2.pts").write_text("{\n1 2\n}\n")  # wrong point count
    items = S.discover_stills(root)
    by_id = {it.still_id: it for it in items}
    assert sorted(by_id) == ["face0", "face1", "face2", "more_dir_x"]
    assert by_id["face0"].label_source == "pts" and not by_id["face0"].problem
    assert len(by_id["face0"].landmarks) == 68
    assert "1 landmarks, but the other stills have 68" in by_id["face2"].problem
    assert "no .pts file beside it" in by_id["more_dir_x"].problem and "--labels oracle" in by_id["more_dir_x"].problem
    # no .pts at all: the oracle labels them; --labels pts then refuses
    bare = tmp_path / "bare"
    bare.mkdir()
    cv2.imwrite(str(bare / "a.jpg"), np.zeros((50, 50, 3), np.uint8))
    assert [(it.still_id, it.label_source, it.landmarks) for it in S.discover_stills(bare)] == [("a", "oracle", None)]
    with pytest.raises(BuildError, match="no image has a .pts file"):
        S.discover_stills(bare, "pts")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no images"):
        S.discover_stills(tmp_path / "empty")


def test_discovery_of_wflw_lists(tmp_path):
    rng = np.random.default_rng(1)
    images = tmp_path / "WFLW_images" / "12--Group"
    images.mkdir(parents=True)
    samples = []
    for i in range(2):
        img, lm, box = render_synthetic_face(rng, 120)
        cv2.imwrite(str(images / f"g{i}.jpg"), img)
        samples.append(WFLWSample(lm, box, (0,) * 6, f"12--Group/g{i}.jpg"))
    samples.append(WFLWSample(samples[0].landmarks + 1, samples[0].box, (0,) * 6, "12--Group/g0.jpg"))  # 2nd face
    samples.append(WFLWSample(samples[0].landmarks, samples[0].box, (0,) * 6, "12--Group/gone.jpg"))
    ann = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_test.txt"
    write_annotations(ann, samples)
    for source in (tmp_path, ann):  # the WFLW folder, or the list itself
        items = {it.still_id: it for it in S.discover_stills(source)}
        assert sorted(items) == ["12--Group_g0_f0", "12--Group_g0_f1", "12--Group_g1_f0", "12--Group_gone_f0"]
        assert items["12--Group_g0_f1"].label_source == "wflw" and len(items["12--Group_g0_f1"].landmarks) == 98
        np.testing.assert_allclose(items["12--Group_g0_f1"].landmarks, samples[0].landmarks + 1, atol=1e-5)
        assert "not found" in items["12--Group_gone_f0"].problem
    with pytest.raises(BuildError, match="WFLW annotation list"):
        S.discover_stills(images / "g0.jpg")


def test_plan_assigns_presets_in_turn_hard_groups_and_stable_seeds(tmp_path):
    items = [S.StillItem(f"s{i}", "x", "x", [[0, 0]] * 68, "pts") for i in range(4)]
    items.append(S.StillItem("bad", "x", "x", None, "pts", problem="no labels"))
    cfg = S.StillsConfig(stills=tmp_path, out=tmp_path / "o", clips_per_still=2, motions=["static", "slow"])
    jobs = S._plan(cfg, items)
    clips = [c for j in jobs for c in j["clips"]]
    assert [j["item"]["still_id"] for j in jobs] == ["s0", "s1", "s2", "s3"]  # the bad still has no job
    assert [c["clip_id"] for c in clips[:3]] == ["s0_0", "s0_1", "s1_0"]
    assert [c["preset"] for c in clips] == ["static", "slow"] * 4
    assert [c["hard"] for c in clips] == [False, False, True, True] * 2  # every preset gets hard and easy clips
    assert len({c["seed"] for c in clips}) == 8
    again = S._plan(cfg, items[::-1][1:][::-1])
    assert [c["seed"] for j in again for c in j["clips"]] == [c["seed"] for c in clips]
    for f, n_hard in ((0.0, 0), (1.0, 8), (0.25, 2)):
        cfg.hard_fraction = f
        assert sum(c["hard"] for j in S._plan(cfg, items) for c in j["clips"]) == n_hard


def test_stills_config_rejects_bad_options(tmp_path):
    base = {"stills": tmp_path, "out": tmp_path / "o"}
    for kw, msg in (({"hard_fraction": 1.5}, "hard-fraction"), ({"num_frames": 1}, "--frames"),
                    ({"motions": ["wobble"]}, "unknown motion preset"), ({"detector": "sidecar"}, "sidecar"),
                    ({"degrade_args": {"nosuch": 1}}, "nosuch"), ({"interpolation": "cubic"}, "interpolation")):  # fmt: skip
        with pytest.raises(BuildError, match=msg):
            S.StillsConfig(**base, **kw).check()


# ------------------------------------------------------------------------------------------------ the floor's measure
def test_nmf_against_motion_ignores_a_constant_bias_and_measures_jitter():
    rng = np.random.default_rng(0)
    still_lm = em.prepare_still(np.zeros((200, 200, 3), np.uint8), rng.uniform(60, 140, (68, 2)))[1]
    motion = em.sample_motion("slow", 60, 25.0, 3, still_size=(300, 300), face_box=(60, 60, 140, 140),
                              frame_size=(320, 240))  # fmt: skip
    truth = em.apply_motion(still_lm, motion)
    bias = rng.normal(0, 3.0, still_lm.shape)  # a constant error in still coordinates moves with the face
    biased = em.apply_motion(still_lm + bias, motion)
    nmf, ref = F.nmf_against_motion(biased, motion)
    assert nmf == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(ref, biased, atol=1e-8)
    assert nmf_video(biased, truth) > 0.5  # against the truth, the biased labels do flicker a little (scale/roll)
    sigma = 0.3  # frame-pixel jitter on top: the floor is the jitter, bias or not
    noisy = biased + rng.normal(0, sigma, biased.shape)
    ext = truth.max(axis=1) - truth.min(axis=1)
    expected = math.sqrt(np.mean(1e4 * 4 * sigma**2 / (ext[1:, 0] * ext[1:, 1] / 256**2)))
    assert F.nmf_against_motion(noisy, motion)[0] == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="motion"):
        F.nmf_against_motion(noisy, motion[:-1])


class _TruthOracle:
    """A stand-in oracle that knows the exact labels of the clip being labelled (captured from the synthesis) and
    adds seeded i.i.d. crop-pixel jitter: its floor is known in closed form."""

    scheme = "ibug68"
    name = "truth"

    def __init__(self, sigma: float):
        self.sigma, self.truth, self.calls = sigma, {}, 0

    def predict(self, images, states, frames):
        from wflwv.models.api import ModelOutput
        from wflwv.protocol.crop import apply_affine, invert_affine

        out = []
        for f in frames:
            self.calls += 1
            pts = apply_affine(self.truth[f.video_id][f.frame_index], invert_affine(f.crop_to_frame))
            rng = np.random.default_rng([f.frame_index, len(f.video_id), self.calls % 2])
            out.append(pts + rng.normal(0, self.sigma, pts.shape))
        return ModelOutput(np.stack(out), [None] * len(frames))


@pytest.mark.slow
def test_measured_floor_is_the_oracle_jitter_and_resumes(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    img, lm, _ = render_synthetic_face(rng, 220)
    real = em.synthesise_clip
    oracle = _TruthOracle(sigma=0.0)
    made = []

    def capture(*a, **k):
        clip = real(*a, **k)
        made.append(clip)
        oracle.truth[f"floor-{(len(made) - 1) // 2:02d}-{('static', 'slow')[(len(made) - 1) % 2]}"] = clip.landmarks
        return clip

    monkeypatch.setattr(F.em, "synthesise_clip", capture)
    settings = F.FloorSettings(stills=1, num_frames=12, fps=25.0)
    info = {"members": ["truth"], "tta": "", "passes": 2}
    still = F.FloorStill(img, lm[IBUG], "face@0", 25.0)
    res = F.measure_label_floor([still], oracle, oracle, oracle_info=info, settings=settings, work=tmp_path / "w0",
                                progress=False)  # fmt: skip
    floor = res.label_floor()
    assert floor["nmf"] < 1e-6 and floor["clips"] == 2 and set(floor) >= {"nmf_static", "nmf_slow", "method", "oracle"}
    assert floor["oracle"] == {"members": ["truth"], "tta": "", "passes": 2}
    # with jitter, the floor is what the jitter predicts (computed on the boxes the final pass cropped with)
    made.clear()
    oracle.sigma = 1.5
    res = F.measure_label_floor([still], oracle, oracle, oracle_info=info, settings=settings, work=tmp_path / "w1",
                                progress=False)  # fmt: skip
    for row, clip in zip(res.clips, made):
        from wflwv.build.detect import landmarks_box, square_box

        boxes = square_box(landmarks_box(clip.landmarks))  # the final boxes are within a pixel of these
        assert row["nmf"] == pytest.approx(_expected_jitter_nmf(boxes, clip.landmarks, 1.5), rel=0.15)
    # a second run reuses every record; another oracle identity measures again
    calls = oracle.calls
    again = F.measure_label_floor([still], oracle, oracle, oracle_info=info, settings=settings, work=tmp_path / "w1",
                                  progress=False)  # fmt: skip
    assert oracle.calls == calls and again.label_floor()["nmf"] == res.label_floor()["nmf"]
    F.measure_label_floor([still], oracle, oracle, oracle_info={**info, "tta": "flip"}, settings=settings,
                          work=tmp_path / "w1", progress=False)  # fmt: skip
    assert oracle.calls > calls


def test_floor_records_format_and_compare():
    settings = F.FloorSettings()
    rows = [{"preset": "static", "nmf": 40.0, "source": "a@1"}, {"preset": "slow", "nmf": 50.0, "source": "a@1"}]
    d = F.label_floor_dict(rows, {"members": ["dlib68"], "tta": "flip", "passes": 2}, settings)
    assert (d["nmf"], d["nmf_static"], d["nmf_slow"], d["clips"]) == (45.0, 40.0, 50.0, 2)
    assert "exact-motion clips of 1 real frame" in d["method"]
    text = F.format_floor(d)
    assert "NMF 45.0" in text and "static 40.0" in text and "dlib68" in text
    assert "NMF 0" in F.format_floor(F.EXACT_MOTION_FLOOR) and "not measured" in F.format_floor(None)
    assert F.floor_dominates(80.0, d) and not F.floor_dominates(95.0, d) and not F.floor_dominates(5.0, None)
    assert not F.floor_dominates(1.0, F.EXACT_MOTION_FLOOR)
    with pytest.raises(F.FloorError):
        F.label_floor_dict([], {}, settings)
    with pytest.raises(ValueError, match="unknown floor preset"):
        F.FloorSettings(presets=("shaky",))


def test_bench_summary_carries_the_dataset_floor(synth_copy, tmp_path):
    floor = {"nmf": 44.0, "nmf_static": 40.0, "nmf_slow": 48.0, "clips": 6, "method": "test",
             "oracle": {"members": ["dlib68"], "tta": "flip", "passes": 2}}  # fmt: skip
    write_dataset_info(synth_copy, label_floor=floor)
    summary = run_benchmark(create_model("oracle"), synth_copy, tmp_path / "run", progress=False)
    assert summary["label_floor"] == floor
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["label_floor"] == floor
    # what `wflwv bench` prints under its table
    from wflwv.cli.bench import _print_summary

    summary["sets"]["none"]["splits"]["all"]["nmf"] = 60.0
    with click_output() as out:
        _print_summary(summary, tmp_path / "run")
    assert "label floor: NMF 44.0 (static 40.0, slow 48.0" in out.getvalue()
    assert "NMF within 2x the floor (none)" in out.getvalue()


# ------------------------------------------------------------------------------------------------ acceptance: stills
@pytest.fixture(scope="module")
def pts_dataset(tmp_path_factory):
    """`wflwv build --stills` on 3 images with .pts files: static and natural clips, 2 per still, hard and easy."""
    root = tmp_path_factory.mktemp("stills")
    src = _pts_folder(root / "in", n=3)
    out = root / "ds"
    args = ["build", "--stills", src, "--out", out, "--frames", 16, "--size", "256x192", "--motion", "static",
            "--motion", "natural", "--clips-per-still", 2, "--seed", 5, "--quiet"]  # fmt: skip
    res = _cli(*args)
    return src, out, args, res.output


@pytest.mark.slow
def test_stills_dataset_labels_are_the_motion_applied_to_the_still_labels(pts_dataset):
    src, out, _, output = pts_dataset
    assert "clips: 6 (hard 2, easy 4)" in output
    ds = WFLWVDataset(out)
    info = ds.info
    assert ds.scheme.name == "ibug68" and info["label_floor"] == {"nmf": 0.0, "method": "exact-motion"}
    assert json.loads((out / "build.json").read_text())["label_floor"] == info["label_floor"]
    assert sorted(ds.ids("hard") + ds.ids("easy")) == sorted(ds.all_ids()) and len(ds.all_ids()) == 6
    for cid in ds.all_ids():
        clip = ds.load(cid)
        motion = np.load(out / "motion" / f"{cid}.npy")
        meta = info["exact_motion"]["clips"][cid]
        still_labels = S.read_pts(src / Path(meta["still"]["image"]).with_suffix(".pts"))
        assert motion.shape == (16, 3, 3) and np.allclose(motion[:, 2, 2], 1.0)
        assert np.abs(em.apply_motion(still_labels, motion) - clip.landmarks).max() < 1e-3
        # the recorded parameters re-draw the motion (from the cropped still, then the crop's transform)
        redrawn = em.motion_from_params(meta["params"]) @ np.asarray(meta["still"]["prepare_transform"])
        np.testing.assert_allclose(redrawn / redrawn[:, 2:3, 2:3], motion, atol=1e-9)
        assert meta["split"] == ds.split_of(cid)
        assert (meta["params"]["hard"] is not None) == (meta["split"] == "hard")
        np.testing.assert_allclose(clip.boxes[:, 2] - clip.boxes[:, 0], clip.boxes[:, 3] - clip.boxes[:, 1])
    man = pd.read_csv(out / "manifest.csv")
    assert (man["status"] == "kept").all() and set(man["preset"]) == {"static", "natural"}
    assert set(man.groupby("preset")["split"].agg(lambda s: tuple(sorted(set(s))))) == {("easy", "hard")}


@pytest.mark.slow
def test_audit_of_an_exact_motion_dataset_is_zero_without_measuring(pts_dataset, tmp_path):
    import shutil

    _, out, _, _ = pts_dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    write_dataset_info(copy, label_floor=None)
    assert F.audit_label_floor(copy, members=["no-such-model"]) == {"nmf": 0.0, "method": "exact-motion"}
    assert WFLWVDataset(copy).info["label_floor"] == {"nmf": 0.0, "method": "exact-motion"}


@pytest.mark.slow
def test_oracle_scores_zero_on_exact_motion_clips(pts_dataset, tmp_path):
    _, out, _, _ = pts_dataset
    res = _cli("bench", "--model", "oracle", "--data", out, "--out", tmp_path / "run", "--quiet")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    agg = summary["sets"]["none"]["splits"]["all"]
    assert (
        agg["videos"] == 6 and agg["nme"] == pytest.approx(0.0, abs=1e-9) and agg["nmf"] == pytest.approx(0.0, abs=1e-9)
    )
    assert summary["label_floor"]["method"] == "exact-motion" and "exact-motion labels" in res.output


@pytest.mark.slow
def test_perturbed_oracle_scores_the_nmf_its_jitter_predicts(pts_dataset, tmp_path):
    _, out, _, _ = pts_dataset
    sigma = 1.5
    _cli("bench", "--model", "perturbed-oracle", "--model-arg", f"jitter={sigma}", "--data", out, "--out",
         tmp_path / "run", "--quiet")  # fmt: skip
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    ds = WFLWVDataset(out)
    per_clip = [_expected_jitter_nmf(ds.load(c).boxes, ds.load(c).landmarks, sigma) for c in ds.all_ids()]
    # mean of per-video NMFs, as the harness aggregates; 6 clips x 15 transitions x 68 points: ~1 % sampling spread
    assert summary["sets"]["none"]["splits"]["all"]["nmf"] == pytest.approx(np.mean(per_clip), rel=0.04)
    assert np.mean(per_clip) > 100  # far from zero: the test can fail


@pytest.mark.slow
def test_stills_build_is_deterministic_resumable_and_drops_stale_clips(pts_dataset, tmp_path):
    src, out, args, _ = pts_dataset
    again = tmp_path / "again"
    _cli(*[again if a == out else a for a in args])
    for cid in WFLWVDataset(out).all_ids():
        for sub in ("landmarks", "motion", "bboxes"):
            np.testing.assert_array_equal(np.load(out / sub / f"{cid}.npy"), np.load(again / sub / f"{cid}.npy"))
    from wflwv.protocol.video import iter_frames

    a = list(iter_frames(out / "videos" / "face1_1.mp4"))
    b = list(iter_frames(again / "videos" / "face1_1.mp4"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 16
    # a re-run skips every finished clip; fewer clips per still removes the others
    stamp = {p.name: p.stat().st_mtime_ns for p in (again / "videos").glob("*.mp4")}
    res = _cli(*[again if a == out else a for a in args])
    assert "resumed from earlier runs: 3 stills" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (again / "videos").glob("*.mp4")} == stamp
    i = args.index("--clips-per-still")
    fewer = [again if a == out else a for a in args[:i] + ["--clips-per-still", 1] + args[i + 2 :]]
    res = _cli(*fewer)
    assert sorted(WFLWVDataset(again).all_ids()) == ["face0_0", "face1_0", "face2_0"]
    assert not (again / "videos" / "face0_1.mp4").exists() and not (again / "motion" / "face0_1.npy").exists()
    # face0_0 keeps its preset and split (static, easy), so it is not made again; the others' plans changed
    assert (again / "videos" / "face0_0.mp4").stat().st_mtime_ns == stamp["face0_0.mp4"]
    assert WFLWVDataset(again).info["exact_motion"]["clips"]["face1_0"]["preset"] == "natural"


@pytest.mark.slow
def test_a_bad_still_is_recorded_not_fatal(tmp_path):
    src = _pts_folder(tmp_path / "in", n=2)
    (src / "face1.png").write_bytes(b"not an image")
    s = S.build_from_stills(S.StillsConfig(stills=src, out=tmp_path / "ds", num_frames=4, frame_size=(128, 96),
                                           motions=["static"], progress=False))  # fmt: skip
    assert s.counts["clips"] == 1 and s.counts["stills_failed"] == 1
    man = pd.read_csv(tmp_path / "ds" / "manifest.csv").set_index("still_id")
    assert man.loc["face1", "status"] == "failed" and "cannot be read as an image" in man.loc["face1", "reason"]
    assert "face1.png" in man.loc["face1", "reason"]
    # nothing usable at all: a clear error, nothing written
    (src / "face0.pts").write_text("{\n1 2\n")
    with pytest.raises(BuildError, match="no usable still.*not closed"):
        S.build_from_stills(S.StillsConfig(stills=src, out=tmp_path / "x", max_stills=1, progress=False))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ real faces (dlib)
@pytest.fixture(scope="module")
def portrait_static(tmp_path_factory):
    """A static exact-motion clip of a real face labelled once by the oracle (`--labels oracle`)."""
    needs_dlib()
    root = tmp_path_factory.mktemp("portrait")
    (root / "in").mkdir()
    cv2.imwrite(str(root / "in" / "hopper.png"), cv2.resize(portrait(), (256, 300), interpolation=cv2.INTER_AREA))
    _cli("build", "--stills", root / "in", "--labels", "oracle", "--member", "dlib68", "--tta", "flip", "--out", root / "ds", "--frames", 16,
         "--size", "320x240", "--motion", "static", "--hard-fraction", 0, "--no-degrade", "--quiet")  # fmt: skip
    return root / "ds"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "ldeq"])
def test_shipped_model_nmf_on_a_static_clip_is_its_nmf_against_the_exact_labels(portrait_static, tmp_path, name):
    ds = WFLWVDataset(portrait_static)
    assert ds.info["exact_motion"]["label_sources"] == ["oracle"] and ds.info["oracle"]["members"] == ["dlib68"]
    cid = ds.all_ids()[0]
    meta = ds.info["exact_motion"]["clips"][cid]
    exact = em.apply_motion(np.asarray(meta["still"]["landmarks"]), np.load(portrait_static / "motion" / f"{cid}.npy"))
    summary = run_benchmark(create_model(name), ds, tmp_path / "run", progress=False)
    from wflwv.benchmark.results import RunDir

    pred = RunDir(tmp_path / "run").load_predictions(cid)["landmarks"]
    nmf = summary["sets"]["none"]["splits"]["all"]["nmf"]
    assert nmf == pytest.approx(nmf_video(pred, exact), rel=1e-9) and nmf > 1.0
    # on a static clip the model's own constant bias does not move: the floor-style measure (its mean label
    # carried by the warp) gives the same number
    motion = np.load(portrait_static / "motion" / f"{cid}.npy")
    assert F.nmf_against_motion(pred, motion)[0] == pytest.approx(nmf, rel=0.1)


@pytest.fixture(scope="module")
def face_build(tmp_path_factory):
    """`wflwv build --local` on a short real-face video (the portrait moving), with a small label floor."""
    needs_dlib()
    from wflwv.protocol.video import write_video

    root = tmp_path_factory.mktemp("facebuild")
    small = cv2.resize(portrait(), (256, 300), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(30):
        a = 2 * np.pi * t / 30
        m = np.array([[1.0, 0, -16 + 5 * np.sin(a)], [0, 1.0, -40 + 3 * np.cos(a)]])
        frames.append(cv2.warpAffine(small, m, (224, 208), borderMode=cv2.BORDER_REFLECT))
    write_video(root / "hopper.mp4", frames, 10.0)
    out = root / "ds"
    res = _cli("build", "--local", root / "hopper.mp4", "--out", out, "--window", 3.0, "--member", "dlib68", "--tta", "none",
               "--floor-stills", 1, "--floor-frames", 8, "--previews", 0, "--quiet")  # fmt: skip
    return out, res.output


@pytest.mark.slow
def test_build_records_the_label_floor_everywhere(face_build, tmp_path):
    out, output = face_build
    floor = WFLWVDataset(out).info["label_floor"]
    assert set(floor) >= {"nmf", "nmf_static", "nmf_slow", "clips", "method", "oracle"}
    assert floor["clips"] == 2 and floor["oracle"] == {
        "members": ["dlib68"],
        "tta": "",
        "passes": 2,
        "combine": "robust",
    }
    assert 1.0 < floor["nmf"] < 500 and "label floor: NMF" in output
    assert json.loads((out / "build.json").read_text())["label_floor"] == floor
    man = pd.read_parquet(out / "manifest.parquet")
    rows = man[man["status"] == "floor"]
    assert sorted(rows["floor_preset"]) == ["slow", "static"] and (rows["source_id"] == "hopper").all()
    assert np.mean(rows["floor_nmf"].astype(float)) == pytest.approx(floor["nmf"])
    assert (man["status"] == "kept").sum() == 1
    summary = run_benchmark(create_model("oracle"), out, tmp_path / "run", progress=False)
    assert summary["label_floor"] == floor


@pytest.mark.slow
def test_audit_measures_an_existing_dataset_with_its_recorded_oracle(face_build, tmp_path):
    import shutil

    out, _ = face_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".build"))
    write_dataset_info(copy, label_floor=None)
    res = _cli("build", "--audit", copy, "--floor-stills", 1, "--floor-frames", 8, "--quiet")
    floor = WFLWVDataset(copy).info["label_floor"]
    assert "label floor: NMF" in res.output and floor["oracle"]["tta"] == "" and floor["clips"] == 2
    # the same frames, oracle and settings as the build's own measurement
    assert floor["nmf"] == pytest.approx(WFLWVDataset(out).info["label_floor"]["nmf"], rel=1e-6)
    # no oracle recorded and none given: a clear error
    info = json.loads((copy / "dataset.json").read_text())
    info.pop("oracle")
    (copy / "dataset.json").write_text(json.dumps(info))
    from wflwv.cli import cli

    bad = CliRunner().invoke(cli, ["build", "--audit", str(copy), "--quiet"])
    assert bad.exit_code != 0 and "records no oracle" in bad.output


def test_build_command_checks_its_modes(tmp_path):
    from wflwv.cli import cli
    from wflwv.cli.build_modes import parse_size

    run = CliRunner().invoke
    (tmp_path / "in").mkdir()
    for args, message in (
        (["build", "--local", str(tmp_path)], "--out is required"),
        (
            ["build", "--stills", str(tmp_path / "in"), "--audit", str(tmp_path), "--out", str(tmp_path / "o")],
            "not both",
        ),
        (
            ["build", "--stills", str(tmp_path / "in"), "--local", str(tmp_path), "--out", str(tmp_path / "o")],
            "cannot be combined",
        ),
        (["build", "--stills", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--size", "big"], "WIDTHxHEIGHT"),
        (["build", "--stills", str(tmp_path / "in"), "--out", str(tmp_path / "o")], "no images"),
        (["build", "--audit", str(tmp_path)], "not a WFLW-V dataset"),
    ):
        res = run(cli, args)
        assert res.exit_code != 0 and message in res.output, (args, res.output)
    assert parse_size("320x240") == (320, 240)
