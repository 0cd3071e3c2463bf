"""Tests for wflwv.benchmark.metrics: reference values of the released evaluation code + properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wflwv.benchmark import metrics as M
from wflwv.schemes import get_scheme, template_shape

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "metrics"


def _clip(n_frames=12, scheme="wflw98", seed=0, size=200.0):
    """A moving, slightly deforming synthetic face clip in pixels: (N, K, 2)."""
    rng = np.random.default_rng(seed)
    base = template_shape(scheme) * size
    drift = np.cumsum(rng.normal(0, 2.0, size=(n_frames, 1, 2)), axis=0)
    scale = 1.0 + 0.05 * np.sin(np.arange(n_frames) / 3.0)[:, None, None]
    wobble = rng.normal(0, 0.5, size=(n_frames,) + base.shape)
    return base[None] * scale + drift + 100.0 + wobble


def _naive_nmf(pred, gt):
    """The released NMF written with explicit loops, as an independent check of the vectorised code."""
    n, k, _ = gt.shape
    frame_terms = []
    for f in range(1, n):
        w = gt[f, :, 0].max() - gt[f, :, 0].min()
        h = gt[f, :, 1].max() - gt[f, :, 1].min()
        s = np.sqrt(w * h / 256.0**2)
        acc = 0.0
        for lm in range(k):
            d = (gt[f, lm] - pred[f, lm]) - (gt[f - 1, lm] - pred[f - 1, lm])
            acc += (100.0 * np.hypot(d[0], d[1]) / s) ** 2
        frame_terms.append(acc / k)
    return float(np.sqrt(np.mean(frame_terms)))


def _eq11_nmf(pred, gt):
    """The paper's Eq. 11 taken literally: d1^2 = face (box) area, 1/N in front of the sum over n = 2..N."""
    n, k, _ = gt.shape
    total = 0.0
    for f in range(1, n):
        w = gt[f, :, 0].max() - gt[f, :, 0].min()
        h = gt[f, :, 1].max() - gt[f, :, 1].min()
        d1_sq = w * h
        r_now, r_prev = gt[f] - pred[f], gt[f - 1] - pred[f - 1]
        total += np.sum(np.sum((r_now - r_prev) ** 2, axis=1) / d1_sq) / k
    return float(np.sqrt(total / n))


# ------------------------------------------------------------------------------------------------
# reference values


@pytest.fixture(scope="module")
def reference():
    expected = json.loads((REFERENCE / "expected.json").read_text())
    with np.load(REFERENCE / "metric_case.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return expected, arrays


def _reference_values(arrays):
    gt, nmes = arrays["gt"], arrays["nmes"]
    fr10, auc10 = M.ced_fr_auc(nmes, 0.10)
    fr08, auc08 = M.ced_fr_auc(nmes, 0.08)
    return {
        "nme_pred": M.nme_video(arrays["pred"], gt),
        "nmf_pred": M.nmf_video(arrays["pred"], gt),
        "nme_flicker": M.nme_video(arrays["pred_flicker"], gt),
        "nmf_flicker": M.nmf_video(arrays["pred_flicker"], gt),
        "fr_0.1": fr10,
        "auc_0.1": auc10,
        "fr_0.08": fr08,
        "auc_0.08": auc08,
        "mean_nme_list": M.split_aggregate(nmes),
    }


def test_reproduces_every_expected_value(reference):
    expected, arrays = reference
    ours = _reference_values(arrays)
    assert set(expected) <= set(ours), f"expected.json has values this test does not check: {set(expected) - set(ours)}"
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6, rel=0), key


def test_reference_nmf_matches_naive_and_eq11_relation(reference):
    _, arrays = reference
    gt = arrays["gt"]
    n = gt.shape[0]
    for key in ("pred", "pred_flicker"):
        pred = arrays[key]
        ours = M.nmf_video(pred, gt)
        assert ours == pytest.approx(_naive_nmf(pred, gt), rel=1e-12)
        assert ours == pytest.approx(25600 * np.sqrt(n / (n - 1)) * _eq11_nmf(pred, gt), rel=1e-12)


def test_reference_nme_per_frame_is_fraction(reference):
    _, arrays = reference
    per_frame = M.nme_per_frame(arrays["pred"], arrays["gt"])
    assert per_frame.shape == (arrays["gt"].shape[0],)
    assert per_frame.mean() * 100 == pytest.approx(M.nme_video(arrays["pred"], arrays["gt"]), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# NME properties


def test_nme_zero_for_perfect_prediction():
    gt = _clip()
    assert M.nme_video(gt.copy(), gt) == 0.0
    np.testing.assert_array_equal(M.nme_per_frame(gt.copy(), gt), np.zeros(len(gt)))


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_nme_equals_uniform_error_size(fraction):
    gt = _clip(n_frames=7)
    d0 = M.inter_ocular(gt)
    rng = np.random.default_rng(1)
    angles = rng.uniform(0, 2 * np.pi, size=gt.shape[:2])
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    pred = gt + fraction * d0[:, None, None] * unit  # every point off by `fraction` of the inter-ocular distance
    np.testing.assert_allclose(M.nme_per_frame(pred, gt), fraction, rtol=1e-12)
    assert M.nme_video(pred, gt) == pytest.approx(100 * fraction, rel=1e-12)


def test_nme_scales_linearly_with_error():
    gt = _clip(n_frames=5)
    err = np.random.default_rng(2).normal(0, 3.0, size=gt.shape)
    base = M.nme_per_frame(gt + err, gt)
    for k in (0.5, 2.0, 7.0):
        np.testing.assert_allclose(M.nme_per_frame(gt + k * err, gt), k * base, rtol=1e-12)


def test_nme_invariant_to_joint_similarity_transform():
    gt = _clip(n_frames=5)
    pred = gt + np.random.default_rng(3).normal(0, 2.0, size=gt.shape)
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    move = lambda x: 2.5 * x @ rot.T + np.array([40.0, -13.0])  # noqa: E731
    for norm in M.NORMALISERS:
        if norm == "box-diagonal":
            continue  # an axis-aligned box is not rotation invariant
        np.testing.assert_allclose(
            M.nme_per_frame(move(pred), move(gt), norm=norm), M.nme_per_frame(pred, gt, norm=norm), rtol=1e-10
        )


# ------------------------------------------------------------------------------------------------
# normalisers


def _hand_made_gt():
    """Two frames with known normalisers: eye corners, pupils and the bounding box set by hand."""
    gt = np.zeros((2, 98, 2))
    gt[:, :, 0] = 50.0  # everything inside the box [10, 110] x [20, 70] (frame 0), doubled for frame 1
    gt[:, :, 1] = 40.0
    gt[0, 0] = (10.0, 20.0)
    gt[0, 1] = (110.0, 70.0)
    gt[0, 60], gt[0, 72] = (30.0, 40.0), (90.0, 40.0)  # 60 apart
    gt[0, 96], gt[0, 97] = (40.0, 37.0), (80.0, 40.0)  # 40 x 3 -> 5 * sqrt(65)
    gt[1] = gt[0] * 2.0
    return gt


def test_normaliser_values():
    gt = _hand_made_gt()
    np.testing.assert_allclose(M.normaliser(gt), [60.0, 120.0])
    np.testing.assert_allclose(M.normaliser(gt, "wflw98", "inter-ocular"), [60.0, 120.0])
    np.testing.assert_allclose(M.normaliser(gt, kind="inter-pupil"), [np.hypot(40, 3), 2 * np.hypot(40, 3)])
    np.testing.assert_allclose(M.normaliser(gt, kind="box-diagonal"), [np.hypot(100, 50), 2 * np.hypot(100, 50)])
    np.testing.assert_allclose(M.inter_ocular(gt), [60.0, 120.0])
    np.testing.assert_allclose(M.box_diagonal(gt), [np.hypot(100, 50), 2 * np.hypot(100, 50)])


def test_inter_pupil_ibug68_uses_eye_centres():
    gt = template_shape("ibug68")[None] * 100.0
    centre_l = gt[0, 36:42].mean(axis=0)
    centre_r = gt[0, 42:48].mean(axis=0)
    assert M.inter_pupil(gt, "ibug68")[0] == pytest.approx(np.linalg.norm(centre_l - centre_r))
    assert M.inter_ocular(gt, "ibug68")[0] == pytest.approx(np.linalg.norm(gt[0, 36] - gt[0, 45]))


def test_nme_normaliser_choice_changes_scale_only():
    gt = _clip(n_frames=6)
    pred = gt + np.random.default_rng(4).normal(0, 2.0, size=gt.shape)
    io = M.nme_per_frame(pred, gt, norm="inter-ocular")
    for kind in ("inter-pupil", "box-diagonal"):
        other = M.nme_per_frame(pred, gt, norm=kind)
        np.testing.assert_allclose(other * M.normaliser(gt, kind=kind), io * M.inter_ocular(gt), rtol=1e-12)
    # the template's eye corners are further apart than its pupils, and its box diagonal is the largest
    assert np.all(M.nme_per_frame(pred, gt, norm="inter-pupil") > io)
    assert np.all(M.nme_per_frame(pred, gt, norm="box-diagonal") < io)


def test_unknown_normaliser_lists_choices():
    with pytest.raises(ValueError, match="inter-ocular.*inter-pupil.*box-diagonal"):
        M.normaliser(_clip(2), kind="bbox")


def test_zero_normaliser_names_frames():
    gt = _clip(n_frames=6)
    gt[3, 72] = gt[3, 60]
    gt[5, 72] = gt[5, 60]
    with pytest.raises(ValueError, match=r"inter-ocular.*frames \[3, 5\]"):
        M.inter_ocular(gt)
    with pytest.raises(ValueError, match=r"frames \[3, 5\]"):
        M.nme_video(gt.copy(), gt)
    flat = _clip(n_frames=3)
    flat[1, :, 1] = 7.0  # zero height -> zero box area, but a non-zero diagonal
    assert np.all(M.box_diagonal(flat) > 0)
    with pytest.raises(ValueError, match=r"zero area at frames \[1\]"):
        M.nmf_video(flat.copy(), flat)


# ------------------------------------------------------------------------------------------------
# NMF properties


def test_nmf_zero_for_perfect_prediction():
    gt = _clip()
    assert M.nmf_video(gt.copy(), gt) == 0.0
    np.testing.assert_array_equal(M.nmf_per_frame(gt.copy(), gt), np.zeros(len(gt) - 1))
    np.testing.assert_array_equal(M.nmf_per_landmark(gt.copy(), gt), np.zeros(gt.shape[1]))


def test_nmf_ignores_constant_residual_offset():
    gt = _clip()
    rng = np.random.default_rng(5)
    offset = rng.normal(0, 10.0, size=gt.shape[1:])  # a fixed error per landmark, the same in every frame
    assert M.nmf_video(gt + offset, gt) == pytest.approx(0.0, abs=1e-9)
    pred = gt + rng.normal(0, 1.0, size=gt.shape)
    assert M.nmf_video(pred + offset, gt) == pytest.approx(M.nmf_video(pred, gt), rel=1e-9)
    # ... while the NME does see the offset
    assert M.nme_video(pred + offset, gt) > 2 * M.nme_video(pred, gt)


def test_nmf_grows_with_jitter_amplitude():
    gt = _clip(n_frames=20)
    noise = np.random.default_rng(6).normal(size=gt.shape)
    amps = [0.1, 0.5, 1.0, 3.0]
    values = [M.nmf_video(gt + a * noise, gt) for a in amps]
    assert all(a < b for a, b in zip(values, values[1:]))
    np.testing.assert_allclose(values, np.array(amps) * values[2], rtol=1e-10)  # exactly linear in amplitude


def test_nmf_matches_naive_loop_and_eq11_relation():
    gt = _clip(n_frames=9, seed=7)
    pred = gt + np.random.default_rng(8).normal(0, 2.0, size=gt.shape)
    ours = M.nmf_video(pred, gt)
    assert ours == pytest.approx(_naive_nmf(pred, gt), rel=1e-12)
    assert ours == pytest.approx(25600 * np.sqrt(9 / 8) * _eq11_nmf(pred, gt), rel=1e-12)


def test_nmf_uses_later_frame_box_and_face_size():
    gt = _clip(n_frames=3)
    pred = gt.copy()
    pred[2, 0] += (3.0, 4.0)  # one landmark moves by 5 px in the last frame only
    w, h = np.ptp(gt[2], axis=0)
    e = 100 * 5.0 / np.sqrt(w * h / 256**2)
    k = gt.shape[1]
    np.testing.assert_allclose(M.nmf_per_frame(pred, gt), [0.0, e / np.sqrt(k)], rtol=1e-12)
    # a face twice as large in pixels, with errors twice as large, flickers the same amount
    assert M.nmf_video(2 * pred, 2 * gt) == pytest.approx(M.nmf_video(pred, gt), rel=1e-12)


def test_nmf_breakdowns_are_consistent():
    gt = _clip(n_frames=10, seed=9)
    pred = gt + np.random.default_rng(10).normal(0, 1.5, size=gt.shape)
    total = M.nmf_video(pred, gt)
    per_frame = M.nmf_per_frame(pred, gt)
    per_lm = M.nmf_per_landmark(pred, gt)
    assert per_frame.shape == (9,) and per_lm.shape == (98,)
    assert np.sqrt(np.mean(per_frame**2)) == pytest.approx(total, rel=1e-12)
    assert np.sqrt(np.mean(per_lm**2)) == pytest.approx(total, rel=1e-12)
    assert M.nmf_video(pred, gt, landmarks=[5]) == pytest.approx(per_lm[5], rel=1e-12)
    # a landmark subset keeps the face size of ALL landmarks: it equals the RMS of the per-landmark values
    subset = [60, 61, 72, 96]
    assert M.nmf_video(pred, gt, landmarks=subset) == pytest.approx(np.sqrt(np.mean(per_lm[subset] ** 2)))
    mask = np.zeros(98, dtype=bool)
    mask[subset] = True
    assert M.nmf_video(pred, gt, landmarks=mask) == pytest.approx(M.nmf_video(pred, gt, landmarks=subset))
    np.testing.assert_allclose(
        M.nmf_per_frame(pred, gt, landmarks=subset),
        np.sqrt(np.mean([M.nmf_per_frame(pred, gt, landmarks=[s]) ** 2 for s in subset], axis=0)),
    )


def test_nmf_groups_cover_regions_and_recombine():
    scheme = get_scheme("wflw98")
    gt = _clip(n_frames=8, seed=11)
    pred = gt + np.random.default_rng(12).normal(0, 1.0, size=gt.shape)
    pred[:, 60:76] += np.random.default_rng(13).normal(0, 6.0, size=(8, 16, 2))  # flickering eyes
    groups = M.nmf_groups(pred, gt, scheme)
    assert list(groups) == list(scheme.regions)
    assert max(groups, key=groups.get) == "eyes"
    for name, idx in scheme.regions.items():
        assert groups[name] == pytest.approx(M.nmf_video(pred, gt, landmarks=list(idx)), rel=1e-12)
    # the regions partition the 98 points, so the size-weighted mean of squares gives the total back
    sizes = {n: len(i) for n, i in scheme.regions.items()}
    combined = np.sqrt(sum(sizes[n] * groups[n] ** 2 for n in groups) / sum(sizes.values()))
    assert combined == pytest.approx(M.nmf_video(pred, gt), rel=1e-12)
    gt68, pred68 = gt[:, :68], pred[:, :68]
    assert set(M.nmf_groups(pred68, gt68, "ibug68")) == set(get_scheme("ibug68").regions)


# ------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "shape_pred, shape_gt, match",
    [
        ((5, 98), (5, 98), r"\(N, K, 2\)"),
        ((5, 98, 3), (5, 98, 3), r"\(N, K, 2\)"),
        ((98, 2), (98, 2), r"\(N, K, 2\)"),
        ((5, 98, 2), (6, 98, 2), "same shape"),
        ((0, 98, 2), (0, 98, 2), "empty"),
    ],
)
def test_bad_shapes_raise(shape_pred, shape_gt, match):
    pred, gt = np.ones(shape_pred), np.ones(shape_gt)
    with pytest.raises(ValueError, match=match):
        M.nme_video(pred, gt)
    with pytest.raises(ValueError, match=match):
        M.nmf_video(pred, gt)


def test_wrong_scheme_size_raises():
    gt = _clip(n_frames=3)[:, :68]
    with pytest.raises(ValueError, match="68 landmarks but scheme 'wflw98' has 98"):
        M.nme_video(gt.copy(), gt)
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        M.nme_video(gt.copy(), gt, scheme="aflw19")
    assert M.nme_video(gt.copy(), gt, scheme="ibug68") == 0.0


def test_nan_predictions_raise_with_frames():
    gt = _clip(n_frames=8)
    pred = gt.copy()
    pred[2, 10, 0] = np.nan
    pred[5, 0, 1] = np.inf
    for fn in (M.nme_video, M.nme_per_frame, M.nmf_video, M.nmf_per_landmark, M.nmf_groups):
        with pytest.raises(M.NonFinitePredictionError, match=r"^predictions contain NaN/inf at frames \[2, 5\]$"):
            fn(pred, gt)
    try:
        M.nmf_video(pred, gt)
    except ValueError as err:  # the harness can catch it as a plain ValueError too
        assert err.frames == [2, 5]


def test_nan_ground_truth_raises():
    gt = _clip(n_frames=4)
    pred = gt.copy()
    gt[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"ground truth contains NaN/inf at frames \[1\]"):
        M.nme_video(pred, gt)
    with pytest.raises(ValueError, match=r"ground truth contains NaN/inf at frames \[1\]"):
        M.nmf_video(pred, gt)


def test_long_frame_lists_are_shortened():
    gt = _clip(n_frames=40)
    pred = gt.copy()
    pred[:, 0] = np.nan
    with pytest.raises(M.NonFinitePredictionError, match=r"\(40 frames in total\)") as info:
        M.nme_video(pred, gt)
    assert info.value.frames == list(range(40))


def test_nmf_needs_two_frames():
    gt = _clip(n_frames=1)
    for fn in (M.nmf_video, M.nmf_per_frame, M.nmf_per_landmark):
        with pytest.raises(ValueError, match="at least 2 frames"):
            fn(gt.copy(), gt)
    assert M.nme_video(gt.copy(), gt) == 0.0  # NME is fine with one frame


def test_bad_landmark_subsets_raise():
    gt = _clip(n_frames=3)
    with pytest.raises(ValueError, match="out of range"):
        M.nmf_video(gt.copy(), gt, landmarks=[0, 98])
    with pytest.raises(ValueError, match="empty"):
        M.nmf_video(gt.copy(), gt, landmarks=[])
    with pytest.raises(ValueError, match="integers"):
        M.nmf_video(gt.copy(), gt, landmarks=[0.5])
    with pytest.raises(ValueError, match=r"mask must have shape \(98,\)"):
        M.nmf_video(gt.copy(), gt, landmarks=np.ones(68, dtype=bool))


# ------------------------------------------------------------------------------------------------
# CED / FR / AUC


def test_ced_thresholds_are_exact():
    t, ced = M.ced_curve([0.05], threshold=0.10, step=1e-4)
    assert t.shape == (1001,) and t[0] == 0.0 and t[-1] == 0.10
    assert t[500] == pytest.approx(0.05, abs=1e-15)
    t, _ = M.ced_curve([0.05], threshold=0.08, step=1e-4)
    assert t.shape == (801,) and t[-1] == 0.08
    # 11 * 0.03 is 0.32999999999999996 in floating point: the last cut-off must still be exactly 0.33,
    # so that an NME of exactly 0.33 is not counted as a failure
    t, ced = M.ced_curve([0.33], threshold=0.33, step=0.03)
    assert t.shape == (12,) and t[-1] == 0.33 and ced[-1] == 1.0
    assert M.ced_fr_auc([0.33], threshold=0.33, step=0.03)[0] == 0.0


def test_fr_auc_extremes_and_boundary():
    assert M.ced_fr_auc(np.zeros(10)) == pytest.approx((0.0, 1.0))
    assert M.ced_fr_auc(np.full(10, 0.5)) == pytest.approx((1.0, 0.0))
    # an NME exactly at the cut-off is not a failure (CED uses <=)
    fr, _ = M.ced_fr_auc([0.10, 0.08, 0.02], threshold=0.10)
    assert fr == 0.0
    fr, _ = M.ced_fr_auc([0.10, 0.08, 0.02], threshold=0.08)
    assert fr == pytest.approx(1 / 3)


def test_auc_of_uniform_nmes():
    # NMEs spread evenly over [0, X]: the CED is the diagonal and the AUC is 1/2
    nmes = (np.arange(1000) + 0.5) / 1000 * 0.1
    fr, auc = M.ced_fr_auc(nmes, threshold=0.1)
    assert fr == 0.0
    assert auc == pytest.approx(0.5, abs=2e-3)
    # one single NME at X/4: CED is a step there, AUC is the 3/4 of the range above it
    _, auc = M.ced_fr_auc([0.025], threshold=0.1)
    assert auc == pytest.approx(0.75, abs=2e-3)


def test_ced_validation():
    with pytest.raises(ValueError, match="whole multiple"):
        M.ced_fr_auc([0.1], threshold=0.1, step=0.03)
    with pytest.raises(ValueError, match="positive"):
        M.ced_fr_auc([0.1], threshold=0.0)
    with pytest.raises(ValueError, match="NaN/inf at positions \\[1\\]"):
        M.ced_fr_auc([0.1, np.nan])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        M.ced_fr_auc([])


# ------------------------------------------------------------------------------------------------
# aggregation


def test_split_aggregate():
    assert M.split_aggregate([1.0, 2.0, np.nan, 6.0]) == pytest.approx(3.0)
    assert M.split_aggregate({"a": 1.0, "b": np.nan, "c": 2.0}) == pytest.approx(1.5)
    assert M.split_aggregate(np.array([4.0])) == 4.0
    assert np.isnan(M.split_aggregate([np.nan, np.nan]))
    assert np.isnan(M.split_aggregate([]))
    with pytest.raises(ValueError, match="inf"):
        M.split_aggregate([1.0, np.inf])
    with pytest.raises(ValueError, match="1-D"):
        M.split_aggregate(np.ones((2, 2)))


def test_split_aggregate_weighs_videos_equally():
    short = _clip(n_frames=3, seed=20)
    long = _clip(n_frames=30, seed=21)
    e_short = M.nme_video(short + 5.0, short)
    e_long = M.nme_video(long + 0.5, long)
    pooled = np.concatenate([M.nme_per_frame(short + 5.0, short), M.nme_per_frame(long + 0.5, long)]).mean() * 100
    assert M.split_aggregate([e_short, e_long]) == pytest.approx((e_short + e_long) / 2)
    assert M.split_aggregate([e_short, e_long]) != pytest.approx(pooled)
