"""Landmark schemes: point counts, NME normalisers, flip permutations, named groups.

Two schemes are built in:

``wflw98``
    The 98-point WFLW layout (also used by WFLW-V). Jaw 0-32, brows 33-50, nose 51-59, eyes 60-75,
    mouth 76-95, pupils 96-97.
``ibug68``
    The 68-point iBUG / 300-W layout. Jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.

"Left" and "right" always mean *image* left and right (the subject's right side is on the image's left),
which is the convention of both annotation protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LandmarkScheme",
    "SCHEMES",
    "get_scheme",
    "scheme_for_num_points",
    "WFLW98_TO_IBUG68",
    "convert_landmarks",
    "template_shape",
]


@dataclass(frozen=True)
class LandmarkScheme:
    """Everything the toolkit needs to know about one landmark layout.

    Attributes:
        name: registry key (``"wflw98"`` or ``"ibug68"``).
        num_points: K, the number of landmarks.
        eye_corners: the pair of outer eye-corner indices whose distance is the inter-ocular normaliser.
        pupils: for each eye, the indices whose mean is the pupil (a single index when annotated).
        flip: permutation ``p`` such that the horizontal mirror of shape ``s`` is ``mirror(s)[p]``.
        groups: fine-grained named groups (left/right kept apart), used for flipping checks and drawing.
        regions: coarse groups for metric breakdowns (jaw, brows, nose, eyes, mouth, pupils).
        edges: polylines (lists of indices) for drawing a face outline.
    """

    name: str
    num_points: int
    eye_corners: tuple[int, int]
    pupils: tuple[tuple[int, ...], tuple[int, ...]]
    flip: tuple[int, ...]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    edges: tuple[tuple[int, ...], ...] = ()

    def flip_index(self) -> np.ndarray:
        """The flip permutation as an index array of shape (K,)."""
        return np.asarray(self.flip, dtype=np.int64)

    def mirror(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror landmarks horizontally in an image of the given width and relabel left/right.

        Args:
            points: (..., K, 2) pixel coordinates (pixel centres at integers).
            width: image width in pixels; x maps to ``width - 1 - x``.
        Returns:
            (..., K, 2) mirrored landmarks, re-ordered by :attr:`flip`.
        """
        points = np.asarray(points, dtype=np.float64)
        out = points.copy()
        out[..., 0] = (width - 1) - points[..., 0]
        return out[..., self.flip_index(), :]


def _range(a: int, b: int) -> tuple[int, ...]:
    """Inclusive integer range as a tuple."""
    return tuple(range(a, b + 1))


def _polylines(*runs: tuple[int, int, bool]) -> tuple[tuple[int, ...], ...]:
    """Drawing polylines from inclusive index runs ``(first, last, closed)``; a closed run returns to its start."""
    return tuple(_range(a, b) + ((a,) if closed else ()) for a, b, closed in runs)


#: fine group -> coarse region of the metric breakdowns (left and right merged)
_REGION_OF = {"left_brow": "brows", "right_brow": "brows", "left_eye": "eyes", "right_eye": "eyes",
              "left_pupil": "pupils", "right_pupil": "pupils"}  # fmt: skip


def _regions(groups: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name, idx in groups.items():
        region = _REGION_OF.get(name, name)
        out[region] = out.get(region, ()) + idx
    return out


def _perm_from_pairs(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _wflw98() -> LandmarkScheme:
    pairs = [(i, 32 - i) for i in range(16)]  # jaw
    pairs += [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42)]  # upper brow edges
    pairs += [(38, 50), (39, 49), (40, 48), (41, 47)]  # lower brow edges
    pairs += [(55, 59), (56, 58)]  # nostrils
    pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]  # eyes
    pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]  # outer lip
    pairs += [(88, 92), (89, 91), (93, 95)]  # inner lip
    pairs += [(96, 97)]  # pupils
    groups = {
        "jaw": _range(0, 32),
        "left_brow": _range(33, 41),
        "right_brow": _range(42, 50),
        "nose": _range(51, 59),
        "left_eye": _range(60, 67),
        "right_eye": _range(68, 75),
        "mouth": _range(76, 95),
        "left_pupil": (96,),
        "right_pupil": (97,),
    }
    edges = _polylines((0, 32, False), (33, 41, True), (42, 50, True), (51, 54, False), (55, 59, False),
                       (60, 67, True), (68, 75, True), (76, 87, True), (88, 95, True))  # fmt: skip
    return LandmarkScheme(
        name="wflw98",
        num_points=98,
        eye_corners=(60, 72),
        pupils=((96,), (97,)),
        flip=_perm_from_pairs(98, pairs),
        groups=groups,
        regions=_regions(groups),
        edges=edges,
    )


def _ibug68() -> LandmarkScheme:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip
    groups = {
        "jaw": _range(0, 16),
        "left_brow": _range(17, 21),
        "right_brow": _range(22, 26),
        "nose": _range(27, 35),
        "left_eye": _range(36, 41),
        "right_eye": _range(42, 47),
        "mouth": _range(48, 67),
    }
    edges = _polylines((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
                       (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))  # fmt: skip
    return LandmarkScheme(
        name="ibug68",
        num_points=68,
        eye_corners=(36, 45),
        pupils=(_range(36, 41), _range(42, 47)),
        flip=_perm_from_pairs(68, pairs),
        groups=groups,
        regions=_regions(groups),
        edges=edges,
    )


SCHEMES: dict[str, LandmarkScheme] = {s.name: s for s in (_wflw98(), _ibug68())}

#: For each iBUG-68 point, the WFLW-98 index it corresponds to (the usual 98 -> 68 reduction):
#: every other jaw point, the upper brow edges, all nine nose points, six of the eight points of each eye
#: (corners plus the two upper and two lower points nearest the thirds), and all twenty mouth points.
WFLW98_TO_IBUG68: tuple[int, ...] = (
    tuple(range(0, 33, 2))  # jaw 0-16
    + _range(33, 37)  # left brow 17-21
    + _range(42, 46)  # right brow 22-26
    + _range(51, 59)  # nose 27-35
    + (60, 61, 63, 64, 65, 67)  # left eye 36-41
    + (68, 69, 71, 72, 73, 75)  # right eye 42-47
    + _range(76, 95)  # mouth 48-67
)
assert len(WFLW98_TO_IBUG68) == 68


def get_scheme(name: str | LandmarkScheme) -> LandmarkScheme:
    """Look a scheme up by name (``"wflw98"`` or ``"ibug68"``); a scheme object passes through."""
    if isinstance(name, LandmarkScheme):
        return name
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown landmark scheme {name!r}; available: {', '.join(sorted(SCHEMES))}") from None


def scheme_for_num_points(k: int) -> LandmarkScheme:
    """The built-in scheme with ``k`` points (98 -> wflw98, 68 -> ibug68)."""
    for s in SCHEMES.values():
        if s.num_points == k:
            return s
    known = ", ".join(f"{s.name} ({s.num_points})" for s in SCHEMES.values())
    raise ValueError(f"no landmark scheme has {k} points; known schemes: {known}")


def convert_landmarks(points: np.ndarray, src: str | LandmarkScheme, dst: str | LandmarkScheme) -> np.ndarray:
    """Convert landmarks between schemes (identity, or WFLW-98 -> iBUG-68).

    Args:
        points: (..., K_src, 2) landmarks.
    Returns:
        (..., K_dst, 2) landmarks.
    Raises:
        ValueError: when there is no mapping (e.g. iBUG-68 -> WFLW-98 would need invented points).
    """
    src, dst = get_scheme(src), get_scheme(dst)
    points = np.asarray(points)
    if points.shape[-2] != src.num_points:
        raise ValueError(f"landmarks have {points.shape[-2]} points but scheme {src.name!r} has {src.num_points}")
    if src.name == dst.name:
        return points
    if (src.name, dst.name) == ("wflw98", "ibug68"):
        return points[..., list(WFLW98_TO_IBUG68), :]
    raise ValueError(
        f"cannot convert {src.name} landmarks to {dst.name}: only wflw98 -> ibug68 is defined "
        "(iBUG-68 has no counterpart of the other WFLW-98 points; a bench converts the ground truth instead)"
    )


def template_shape(scheme: str | LandmarkScheme = "wflw98") -> np.ndarray:
    """A symmetric, frontal face drawn from simple curves, in unit crop coordinates.

    It is placed as the WFLW-V evaluation crop places a face (box with a 1.2 margin): roughly 0.1-0.9
    horizontally, 0.25-0.9 vertically. It serves as the ``mean-shape`` model's default shape and as the
    synthetic test data's face. Mirroring it about x = 0.5 and applying the flip permutation gives it back.

    Returns:
        (K, 2) array of (x, y) in [0, 1].
    """
    scheme = get_scheme(scheme)
    pts = np.zeros((98, 2))

    def ring(n, cx, cy, hw, hh, full=True):
        # n points, starting at the left extreme, going clockwise in image coordinates (over the top first)
        k = np.arange(n)
        t = np.pi - k * (2 * np.pi / n if full else np.pi / (n - 1))
        return np.stack([cx + hw * np.cos(t), cy - hh * np.sin(t)], axis=1)

    t = np.pi - np.pi * np.arange(33) / 32
    pts[0:33] = np.stack([0.5 + 0.40 * np.cos(t), 0.42 + 0.46 * np.sin(t)], axis=1)
    bx = np.linspace(0.18, 0.44, 5)
    pts[33:38] = np.stack([bx, 0.31 - 0.04 * np.sin(np.linspace(0.3, 2.8, 5))], axis=1)
    pts[38:42] = np.stack([bx[::-1][:4] - 0.01, 0.32 - 0.02 * np.sin(np.linspace(2.6, 0.5, 4))], axis=1)
    pts[42:51] = pts[33:42] * [-1, 1] + [1, 0]
    pts[42:47] = pts[42:47][::-1]  # right brow's upper edge also runs left to right
    pts[47:51] = pts[[41, 40, 39, 38]] * [-1, 1] + [1, 0]
    pts[51:55] = np.stack([np.full(4, 0.5), np.linspace(0.40, 0.56, 4)], axis=1)
    pts[55:60] = np.stack([np.linspace(0.43, 0.57, 5), 0.60 + 0.015 * np.sin(np.linspace(0, np.pi, 5))], axis=1)
    pts[60:68] = ring(8, 0.33, 0.43, 0.08, 0.03)
    pts[68:76] = ring(8, 0.67, 0.43, 0.08, 0.03)
    pts[76:88] = ring(12, 0.5, 0.72, 0.14, 0.06)
    pts[88:96] = ring(8, 0.5, 0.72, 0.09, 0.02)
    pts[96] = (0.33, 0.43)
    pts[97] = (0.67, 0.43)
    if scheme.name == "wflw98":
        return pts
    return pts[list(WFLW98_TO_IBUG68)]
