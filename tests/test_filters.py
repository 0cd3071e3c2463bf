"""Tests of wflwv.filters: conformance, filter properties, streaming/offline agreement, parser, FilteredModel."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import savgol_filter

from wflwv.filters import (
    FILTERS,
    FilteredModel,
    FilterError,
    FilterSetting,
    apply_filter,
    make_filter,
    one_euro,
    parse_filter_option,
    parse_filter_options,
    savgol,
)
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
CAUSAL = {"ema": {"alpha": 0.3}, "sg-causal": {"window": 7, "order": 2}, "one-euro": {"min_cutoff": 1.0, "beta": 0.05}}
ALL = {**CAUSAL, "sg": {"window": 7, "order": 2}}


def _noisy(shape=(60, 4, 2), seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(shape[0])[:, None, None]
    return 100 + 5 * np.sin(t / 7.0 + rng.uniform(0, 6, size=shape[1:])) + rng.normal(scale=1.5, size=shape)


# ----------------------------------------------------------------------------------------------- One Euro


def _one_euro_vector():
    path = REFERENCE / "one-euro" / "ground_truth.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {k: np.array([float(r[k]) for r in rows]) for k in ("timestamp", "noisy", "filtered")}
    return cols["timestamp"], cols["noisy"], cols["filtered"]


def test_one_euro_conformance_vector_with_timestamps():
    t, noisy, expected = _one_euro_vector()
    out = one_euro(noisy, min_cutoff=1.0, beta=0.1, d_cutoff=1.0, timestamps=t)
    assert out[0] == noisy[0]  # the first sample passes unchanged
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


def test_one_euro_conformance_vector_through_registry_at_120fps():
    _, noisy, expected = _one_euro_vector()
    lm = np.stack([noisy, -noisy], axis=-1)[:, None, :]  # (T, 1, 2)
    out = apply_filter("one-euro", lm, 120.0, min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out[:, 0, 1], -expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("min_cutoff", [0.5, 2.0])
def test_one_euro_cutoffs_in_hz_ramp_lag_same_in_seconds(min_cutoff):
    speed = 30.0  # pixels per second
    lags = []
    for fps in (24.0, 60.0):
        t = np.arange(int(6 * fps)) / fps
        x = np.stack([speed * t, -speed * t], axis=-1)[:, None, :]  # (T, 1, 2)
        y = apply_filter("one-euro", x, fps, min_cutoff=min_cutoff, beta=0.0)
        lags.append((x[-1, 0, 0] - y[-1, 0, 0]) / speed)
    tau = 1.0 / (2 * math.pi * min_cutoff)
    np.testing.assert_allclose(lags, [tau, tau], rtol=1e-6)


def test_one_euro_same_motion_at_24_and_60_fps():
    def motion(t):
        return np.stack([40 * np.sin(2 * np.pi * 0.7 * t) + 15 * t, 20 * np.cos(2 * np.pi * 0.3 * t)], axis=-1)

    outs = {}
    for fps, every in ((24, 2), (60, 5)):  # both sampled at t = 0, 1/12, 2/12, ... s
        t = np.arange(4 * fps + 1) / fps
        y = apply_filter("one-euro", motion(t)[:, None, :], fps, min_cutoff=1.0, beta=0.0)
        outs[fps] = (motion(t)[::every, None, :], y[::every])
    x24, y24 = outs[24]
    _, y60 = outs[60]
    dev = np.abs(x24 - y24).max()  # how far the filter moves the signal (tens of pixels)
    assert dev > 5
    # the two discretisations of the same continuous low-pass agree to a few percent of that
    assert np.abs(y24 - y60).max() < 0.05 * dev
    # interpreting the cutoff per frame instead of in Hz would make them differ grossly
    y60_wrong_rate = apply_filter("one-euro", motion(np.arange(4 * 60 + 1) / 60)[:, None, :], 24, beta=0.0)[::5]
    assert np.abs(y24 - y60_wrong_rate).max() > 0.2 * dev


def test_one_euro_timestamps_equal_fps_and_follow_irregular_rate():
    x = _noisy((50, 3, 2))
    fps = 25.0
    a = apply_filter("one-euro", x, fps)
    b = apply_filter("one-euro", x, 99.0, timestamps=np.arange(50) / fps + 3.0)  # timestamps override fps
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    ts = np.cumsum(np.r_[0.0, np.full(24, 0.04), np.full(25, 0.02)])
    online = make_filter("one-euro").online(fps)
    stepped = np.stack([online.step(x[i], t=ts[i]) for i in range(50)])
    np.testing.assert_allclose(apply_filter("one-euro", x, fps, timestamps=ts), stepped, rtol=0, atol=0)
    assert not np.allclose(stepped, a)
    with pytest.raises(FilterError, match="strictly increasing"):
        apply_filter("one-euro", x[:3], fps, timestamps=[0.0, 0.1, 0.1])


# ----------------------------------------------------------------------------------------------- EMA / SG


@pytest.mark.parametrize("name", list(ALL))
def test_constant_input_passes_unchanged(name):
    x = np.broadcast_to(np.array([[12.5, -3.0], [400.0, 250.25]]), (40, 2, 2))
    np.testing.assert_allclose(apply_filter(name, x, 30.0, **ALL[name]), x, rtol=0, atol=1e-9)
    # short clips too (shorter than the SG window)
    np.testing.assert_allclose(apply_filter(name, x[:3], 30.0, **ALL[name]), x[:3], rtol=0, atol=1e-9)


def test_ema_recursion():
    x = _noisy((20, 2, 2))
    y = apply_filter("ema", x, 30.0, alpha=0.25)
    np.testing.assert_array_equal(y[0], x[0])
    np.testing.assert_allclose(y[1:], 0.25 * x[1:] + 0.75 * y[:-1], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(apply_filter("ema", x, 30.0, alpha=1.0), x)


@pytest.mark.parametrize("window,order", [(5, 2), (7, 3), (9, 2), (11, 4), (3, 0)])
def test_centred_sg_passes_polynomials_including_edges(window, order):
    rng = np.random.default_rng(window * 10 + order)
    t = np.arange(30, dtype=float)
    coeffs = rng.normal(size=(order + 1, 3, 2)) * (0.3 ** np.arange(order + 1))[:, None, None]
    x = sum(coeffs[p] * t[:, None, None] ** p for p in range(order + 1))  # (T, 3, 2), degree `order`
    y = savgol(x, window, order)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-7 * max(1.0, np.abs(x).max()))
    # clip shorter than the window: one fit over the whole clip, still exact for the polynomial
    short = x[: max(window - 2, 1)]
    np.testing.assert_allclose(savgol(short, window, order), short, rtol=0, atol=1e-7 * max(1.0, np.abs(x).max()))


def test_centred_sg_matches_scipy_interp_mode_and_smooths():
    x = _noisy((45, 3, 2))
    for window, order in [(5, 2), (9, 2), (9, 3), (15, 1)]:
        np.testing.assert_allclose(
            savgol(x, window, order), savgol_filter(x, window, order, axis=0, mode="interp"), rtol=0, atol=1e-9
        )
    # a degree-3 signal is NOT kept by order 1: the filter really does something
    t = np.arange(20.0)
    cubic = (0.02 * t**3)[:, None, None] * np.ones((1, 1, 2))
    assert np.abs(savgol(cubic, 7, 1) - cubic).max() > 0.1


def test_causal_sg_passes_polynomials_and_documented_start():
    t = np.arange(25, dtype=float)
    x = np.stack([3 - 0.5 * t + 0.07 * t**2, 1 + 2 * t], axis=-1)[:, None, :]  # degree 2
    y = apply_filter("sg-causal", x, 30.0, window=7, order=2)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-8)
    # start of a clip: the first order + 1 frames are interpolated, i.e. returned unchanged
    noise = _noisy((10, 2, 2))
    out = apply_filter("sg-causal", noise, 30.0, window=7, order=2)
    np.testing.assert_allclose(out[:3], noise[:3], rtol=0, atol=1e-9)
    # frame 3 is a degree-2 fit to 4 frames evaluated at the newest one
    fit = np.polyval(np.polyfit(np.arange(4.0), noise[:4, 1, 0], 2), 3.0)
    assert out[3, 1, 0] == pytest.approx(fit, abs=1e-9)
    # from frame window-1 on: degree-2 fit to the last 7 frames
    fit = np.polyval(np.polyfit(np.arange(7.0), noise[2:9, 0, 1], 2), 6.0)
    assert out[8, 0, 1] == pytest.approx(fit, abs=1e-9)


# ------------------------------------------------------------------------------ causality, streaming, noise


@pytest.mark.parametrize("name", list(CAUSAL))
def test_causal_filters_never_read_future_frames(name):
    x = _noisy((40, 3, 2), seed=1)
    ref = apply_filter(name, x, 30.0, **CAUSAL[name])
    rng = np.random.default_rng(5)
    for t in (0, 1, 5, 20, 38):
        pert = x.copy()
        pert[t + 1 :] += rng.normal(scale=50.0, size=pert[t + 1 :].shape)
        out = apply_filter(name, pert, 30.0, **CAUSAL[name])
        np.testing.assert_array_equal(out[: t + 1], ref[: t + 1])
        assert not np.allclose(out[t + 1 :], ref[t + 1 :])


def test_centred_sg_does_read_future_frames_and_cannot_run_online():
    x = _noisy((40, 3, 2))
    pert = x.copy()
    pert[21] += 10.0
    assert not np.allclose(savgol(pert, 7, 2)[20], savgol(x, 7, 2)[20])
    with pytest.raises(FilterError, match="future frames"):
        make_filter("sg").online(30.0)


@pytest.mark.parametrize("name", list(CAUSAL))
def test_streaming_equals_whole_clip_and_reset(name):
    x = _noisy((35, 5, 2), seed=2)
    setting = make_filter(name, **CAUSAL[name])
    whole = setting.apply(x, 25.0)
    online = setting.online(25.0)
    first = np.stack([online.step(x[i]) for i in range(len(x))])
    np.testing.assert_array_equal(first, whole)
    online.reset()  # a new clip starts from scratch
    other = x[::-1] + 7.0
    second = np.stack([online.step(other[i]) for i in range(len(other))])
    np.testing.assert_array_equal(second, setting.apply(other, 25.0))
    # a copied state continues independently
    online.reset()
    for i in range(10):
        online.step(x[i])
    twin = online.copy()
    np.testing.assert_array_equal(online.step(x[10]), whole[10])
    np.testing.assert_array_equal(twin.step(x[10]), whole[10])


@pytest.mark.parametrize("name", list(ALL))
def test_filters_reduce_frame_to_frame_jitter_of_iid_noise(name):
    rng = np.random.default_rng(3)
    x = 50.0 + rng.normal(size=(300, 6, 2))
    y = apply_filter(name, x, 30.0, **ALL[name])
    ratio = np.mean(np.diff(y, axis=0) ** 2) / np.mean(np.diff(x, axis=0) ** 2)
    assert ratio < 0.7


@pytest.mark.parametrize("name", list(ALL))
def test_vectorised_equals_per_landmark(name):
    x = _noisy((30, 5, 2), seed=4)
    full = apply_filter(name, x, 30.0, **ALL[name])
    for k in range(x.shape[1]):
        for c in range(2):
            single = apply_filter(name, x[:, k : k + 1, c : c + 1], 30.0, **ALL[name])
            np.testing.assert_allclose(full[:, k, c], single[:, 0, 0], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------- registry, parser


def test_registry_specs_and_validation_errors():
    assert set(FILTERS) == {"ema", "sg", "sg-causal", "one-euro"}
    assert {n for n, s in FILTERS.items() if s.causal} == {"ema", "sg-causal", "one-euro"}
    for spec in FILTERS.values():
        assert spec.describe_params()
        FilterSetting(spec.name, spec.defaults())  # defaults are valid
    with pytest.raises(FilterError, match="ema, sg, sg-causal, one-euro"):
        make_filter("kalman")
    with pytest.raises(FilterError, match="accepted: min_cutoff, beta, d_cutoff"):
        make_filter("one-euro", mincutoff=1.0)
    with pytest.raises(FilterError, match=r"\(0, 1\]"):
        make_filter("ema", alpha=0.0)
    with pytest.raises(FilterError, match="odd"):
        make_filter("sg", window=8)
    with pytest.raises(FilterError, match="smaller than window"):
        make_filter("sg-causal", window=3, order=3)
    with pytest.raises(FilterError, match="integer"):
        make_filter("sg", window=7.5)
    with pytest.raises(FilterError, match="must be"):
        make_filter("ema", alpha="0.3")
    assert make_filter("sg", window=7.0).params["window"] == 7  # integral floats become ints
    assert make_filter("ONE_EURO").name == "one-euro"


def test_setting_label_slug_and_equality():
    s = FilterSetting("ema", {"alpha": 0.2})
    assert s.label == "ema(alpha=0.2)"
    assert s.slug == "ema_alpha-0.2"
    assert s == make_filter("ema", alpha=0.2) and hash(s) == hash(make_filter("ema", alpha=0.2))
    oe = make_filter("one-euro", beta=0.1, min_cutoff=1)  # order and int/float spelling do not matter
    assert oe.label == "one-euro(min_cutoff=1.0,beta=0.1,d_cutoff=1.0)"
    assert oe.slug == "one-euro_min_cutoff-1.0_beta-0.1_d_cutoff-1.0"
    for setting in (s, oe, make_filter("sg", window=5, order=3), make_filter("one-euro", beta=1e-5)):
        assert all(ch.isalnum() or ch in "._-" for ch in setting.slug)
        assert parse_filter_option(setting.option) == [setting]
        assert parse_filter_option(setting.label) == [setting]


def test_parse_filter_option_cases():
    (oe,) = parse_filter_option("one-euro:min_cutoff=1.0,beta=0.1")
    assert oe.params == {"min_cutoff": 1.0, "beta": 0.1, "d_cutoff": 1.0}
    sweep = parse_filter_option("ema:alpha=0.2|0.4|0.6|0.8")
    assert [x.params["alpha"] for x in sweep] == [0.2, 0.4, 0.6, 0.8]
    sg = parse_filter_option("sg:window=5|9,order=2")
    assert [(x.params["window"], x.params["order"]) for x in sg] == [(5, 2), (9, 2)]
    assert isinstance(sg[0].params["window"], int)
    grid = parse_filter_option(" sg-causal : window = 5|9 , order = 1|2 ")
    assert [(x.params["window"], x.params["order"]) for x in grid] == [(5, 1), (5, 2), (9, 1), (9, 2)]
    assert parse_filter_option("ema") == [make_filter("ema")]
    assert len(parse_filter_options(["ema:alpha=0.2|0.4", "ema:alpha=0.4", "sg"])) == 3


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("ema:", "nothing follows"),
        ("ema:alpha", "PARAM=VALUE"),
        ("ema:alpha=", "no value"),
        ("ema:alpha=0.2|", "empty value"),
        ("ema:alpha=abc", "not a number"),
        ("ema:alpha=0.2,,", "empty parameter"),
        ("ema:alpha=0.2,alpha=0.3", "twice"),
        ("ema:alpha=nan", "finite"),
        ("ema:alpha=1.5", r"\(0, 1\]"),
        ("ema:gamma=0.3", "accepted: alpha"),
        ("median:window=3", "Available filters"),
        ("none", "unfiltered"),
        ("sg:window=3|9,order=4", "combination window=3,order=4"),
        (":alpha=0.2", "name is missing"),
    ],
)
def test_parse_filter_option_errors(text, match):
    with pytest.raises(FilterError, match=match):
        parse_filter_option(text)


def test_syntax_errors_show_expected_syntax():
    with pytest.raises(FilterError) as info:
        parse_filter_option("ema:alpha")
    assert "NAME[:PARAM=VALUE" in str(info.value) and "ema:alpha=0.2|0.4|0.6|0.8" in str(info.value)


# ------------------------------------------------------------------------------------------- FilteredModel


def _affine(clip: str, i: int) -> np.ndarray:
    """A crop-to-frame affine that changes every frame (scale, small rotation, translation)."""
    seed = sum(map(ord, clip))
    s = 1.5 + 0.1 * math.sin(0.3 * i + seed)
    a = 0.05 * math.cos(0.2 * i + seed)
    return np.array([[s * math.cos(a), -s * math.sin(a), 300 + 2 * i], [s * math.sin(a), s * math.cos(a), 150 - i]])


def _frame_traj(clip: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, clip)))
    t = np.arange(n)[:, None, None]
    return 500 + 30 * np.sin(t / 5.0 + rng.uniform(0, 6, size=(3, 2))) + rng.normal(scale=2.0, size=(n, 3, 2))


class _ReplayModel(LandmarkModel):
    """Returns a known frame-pixel trajectory in crop pixels; its state is the number of frames seen."""

    scheme = "wflw98"
    name = "replay"

    def __init__(self, trajs):
        self.trajs = trajs

    def predict(self, images, states, frames):
        out = []
        for state, info in zip(states, frames):
            expected = None if info.frame_index == 0 else info.frame_index
            assert state == expected, f"inner state {state!r} at frame {info.frame_index}"
            pts = self.trajs[info.video_id][info.frame_index]
            m = np.asarray(info.crop_to_frame)
            out.append((pts - m[:, 2]) @ np.linalg.inv(m[:, :2]).T)
        new_states = [info.frame_index + 1 for info in frames]
        lm = torch.tensor(np.stack(out), dtype=torch.float64)
        return ModelOutput(landmarks=lm, states=new_states, stats={"solver_iters": torch.ones(len(frames))})


def _info(clip, i, n, fps):
    return FrameInfo(video_id=clip, frame_index=i, num_frames=n, fps=fps, crop_to_frame=_affine(clip, i))


def _to_frame(lm, clip, i):
    m = _affine(clip, i)
    return lm @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("option", ["one-euro:min_cutoff=1.0,beta=0.05", "ema:alpha=0.3", "sg-causal:window=5"])
def test_filtered_model_matches_apply_filter_in_frame_coordinates(option):
    n, fps = 20, 25.0
    trajs = {"clipA": _frame_traj("clipA", n)}
    model = FilteredModel(_ReplayModel(trajs), option)
    assert model.scheme == "wflw98" and option.split(":")[0] in model.name
    state = None
    got = []
    for i in range(n):
        out = model.predict(torch.zeros(1, 3, 4, 4), [state], [_info("clipA", i, n, fps)])
        (state,) = out.states
        assert out.stats_numpy()["solver_iters"].tolist() == [1.0]
        got.append(_to_frame(out.landmarks_numpy()[0], "clipA", i))
    expected = apply_filter(parse_filter_option(option)[0], trajs["clipA"], fps)
    np.testing.assert_allclose(np.stack(got), expected, rtol=0, atol=1e-9)
    assert not np.allclose(expected, trajs["clipA"])  # the filter did something


def test_filtered_model_batches_clips_with_different_states():
    setting = make_filter("one-euro", min_cutoff=0.8, beta=0.02)
    clips = {"clipA": (16, 25.0), "clipB": (10, 60.0)}
    trajs = {c: _frame_traj(c, n) for c, (n, _) in clips.items()}
    model = FilteredModel(_ReplayModel(trajs), setting)
    # clip B starts 4 frames after clip A, so the batch mixes a fresh state with a running one
    states = {"clipA": None, "clipB": None}
    got = {c: [] for c in clips}
    for step in range(16):
        batch = [("clipA", step)] + ([("clipB", step - 4)] if 0 <= step - 4 < clips["clipB"][0] else [])
        frames = [_info(c, i, clips[c][0], clips[c][1]) for c, i in batch]
        out = model.predict(torch.zeros(len(batch), 3, 4, 4), [states[c] for c, _ in batch], frames)
        for j, (c, i) in enumerate(batch):
            states[c] = out.states[j]
            got[c].append(_to_frame(out.landmarks_numpy()[j], c, i))
    for c, (_, fps) in clips.items():
        np.testing.assert_allclose(np.stack(got[c]), setting.apply(trajs[c], fps), rtol=0, atol=1e-9)


def test_filtered_model_states_are_not_mutated_and_sg_is_refused():
    n, fps = 8, 30.0
    trajs = {"c": _frame_traj("c", n)}
    model = FilteredModel(_ReplayModel(trajs), make_filter("ema", alpha=0.4))
    state = None
    for i in range(4):
        state = model.predict(torch.zeros(1, 3, 4, 4), [state], [_info("c", i, n, fps)]).states[0]
    a = model.predict(torch.zeros(1, 3, 4, 4), [state], [_info("c", 4, n, fps)]).landmarks_numpy()
    b = model.predict(torch.zeros(1, 3, 4, 4), [state], [_info("c", 4, n, fps)]).landmarks_numpy()
    np.testing.assert_array_equal(a, b)  # re-running from a saved state gives the same numbers
    with pytest.raises(FilterError, match="future frames"):
        FilteredModel(_ReplayModel(trajs), "sg:window=5,order=2")
    with pytest.raises(FilterError, match="gives 2"):
        FilteredModel(_ReplayModel(trajs), "ema:alpha=0.2|0.4")
    # the centred filter still works as post-processing of the same trajectory
    assert apply_filter("sg", trajs["c"], fps, window=5, order=2).shape == (n, 3, 2)
