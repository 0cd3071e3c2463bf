"""Tests for wflwv.schemes: flip permutations, groups, template face, WFLW-98 -> iBUG-68 mapping."""

from __future__ import annotations

import numpy as np
import pytest

from wflwv.schemes import (
    SCHEMES,
    WFLW98_TO_IBUG68,
    LandmarkScheme,
    convert_landmarks,
    get_scheme,
    scheme_for_num_points,
    template_shape,
)

SCHEME_NAMES = ["wflw98", "ibug68"]


def _partner(group: str) -> str:
    """Name of the mirrored group: left_* <-> right_*, anything else maps to itself."""
    if group.startswith("left_"):
        return "right_" + group[len("left_") :]
    if group.startswith("right_"):
        return "left_" + group[len("right_") :]
    return group


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_flip_is_an_involutive_permutation(name):
    s = get_scheme(name)
    f = s.flip_index()
    assert f.shape == (s.num_points,)
    assert sorted(f.tolist()) == list(range(s.num_points))
    np.testing.assert_array_equal(f[f], np.arange(s.num_points))
    assert not np.array_equal(f, np.arange(s.num_points))  # it does swap something


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_flip_maps_groups_to_their_mirror(name):
    s = get_scheme(name)
    f = s.flip_index()
    for group, idx in s.groups.items():
        partner = _partner(group)
        assert partner in s.groups, f"{name}: group {group!r} has no mirror group {partner!r}"
        assert sorted(f[list(idx)].tolist()) == sorted(s.groups[partner]), group
    for left, right in (("left_brow", "right_brow"), ("left_eye", "right_eye")):
        assert set(f[list(s.groups[left])].tolist()) == set(s.groups[right])
    assert set(f[list(s.groups["jaw"])].tolist()) == set(s.groups["jaw"])
    assert set(f[list(s.groups["nose"])].tolist()) == set(s.groups["nose"])
    assert set(f[list(s.groups["mouth"])].tolist()) == set(s.groups["mouth"])
    left_pupil, right_pupil = s.pupils
    assert set(f[list(left_pupil)].tolist()) == set(right_pupil)
    a, b = s.eye_corners
    assert (f[a], f[b]) == (b, a)


def test_wflw98_pupil_groups_swap():
    s = get_scheme("wflw98")
    f = s.flip_index()
    assert f[list(s.groups["left_pupil"])].tolist() == list(s.groups["right_pupil"])
    assert s.pupils == ((96,), (97,))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_groups_and_regions_partition_the_points(name):
    s = get_scheme(name)
    for kind, parts in (("groups", s.groups), ("regions", s.regions)):
        everything = sorted(i for idx in parts.values() for i in idx)
        assert everything == list(range(s.num_points)), f"{name}.{kind} do not partition 0..{s.num_points - 1}"
    for edge in s.edges:
        assert all(0 <= i < s.num_points for i in edge)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_template_is_mirror_symmetric(name):
    s = get_scheme(name)
    t = template_shape(name)
    assert t.shape == (s.num_points, 2)
    assert np.all((t >= 0) & (t <= 1))
    # unit coordinates: width 2 makes mirror() map x -> 1 - x, i.e. reflect about x = 0.5
    np.testing.assert_allclose(s.mirror(t, width=2.0), t, atol=1e-12)
    a, b = s.eye_corners
    assert t[a, 0] < 0.5 < t[b, 0]  # "left" means image left


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_mirror_twice_is_identity_and_batches(name):
    s = get_scheme(name)
    pts = np.random.default_rng(0).uniform(0, 300, size=(4, s.num_points, 2))
    once = s.mirror(pts, width=320)
    np.testing.assert_allclose(s.mirror(once, width=320), pts)
    np.testing.assert_allclose(once[1], s.mirror(pts[1], width=320))
    np.testing.assert_allclose(once[..., 0], (319 - pts[..., 0])[:, s.flip_index()])


def test_wflw98_to_ibug68_is_injective_and_in_range():
    m = np.asarray(WFLW98_TO_IBUG68)
    assert m.shape == (68,)
    assert len(set(m.tolist())) == 68
    assert m.min() >= 0 and m.max() < 98


def test_wflw98_to_ibug68_maps_eye_corners_and_groups():
    w, i = get_scheme("wflw98"), get_scheme("ibug68")
    m = np.asarray(WFLW98_TO_IBUG68)
    assert tuple(m[list(i.eye_corners)]) == w.eye_corners == (60, 72)
    assert i.eye_corners == (36, 45)
    for group, idx in i.groups.items():
        assert set(m[list(idx)].tolist()) <= set(w.groups[group]), group


def test_conversion_commutes_with_flipping():
    w, i = get_scheme("wflw98"), get_scheme("ibug68")
    m = np.asarray(WFLW98_TO_IBUG68)
    np.testing.assert_array_equal(m[i.flip_index()], w.flip_index()[m])
    pts = np.random.default_rng(1).uniform(0, 256, size=(3, 98, 2))
    convert_then_flip = i.mirror(convert_landmarks(pts, "wflw98", "ibug68"), width=256)
    flip_then_convert = convert_landmarks(w.mirror(pts, width=256), "wflw98", "ibug68")
    np.testing.assert_allclose(convert_then_flip, flip_then_convert)


def test_template_conversion_consistent():
    np.testing.assert_array_equal(
        convert_landmarks(template_shape("wflw98"), "wflw98", "ibug68"), template_shape("ibug68")
    )


def test_get_scheme_errors_list_names():
    with pytest.raises(ValueError, match="unknown landmark scheme 'aflw19'.*ibug68.*wflw98"):
        get_scheme("aflw19")
    s = get_scheme("wflw98")
    assert get_scheme(s) is s
    assert isinstance(s, LandmarkScheme) and set(SCHEMES) == {"wflw98", "ibug68"}


def test_scheme_for_num_points():
    assert scheme_for_num_points(98).name == "wflw98"
    assert scheme_for_num_points(68).name == "ibug68"
    with pytest.raises(ValueError, match="no landmark scheme has 19 points.*wflw98 \\(98\\).*ibug68 \\(68\\)"):
        scheme_for_num_points(19)


def test_convert_landmarks_errors_and_identity():
    pts68 = np.zeros((2, 68, 2))
    with pytest.raises(ValueError, match="cannot convert ibug68 landmarks to wflw98"):
        convert_landmarks(pts68, "ibug68", "wflw98")
    with pytest.raises(ValueError, match="landmarks have 68 points but scheme 'wflw98' has 98"):
        convert_landmarks(pts68, "wflw98", "ibug68")
    pts98 = np.random.default_rng(2).normal(size=(98, 2))
    np.testing.assert_array_equal(convert_landmarks(pts98, "wflw98", "wflw98"), pts98)
    out = convert_landmarks(pts98, "wflw98", "ibug68")
    assert out.shape == (68, 2)
    np.testing.assert_array_equal(out[36], pts98[60])
    np.testing.assert_array_equal(out[45], pts98[72])
