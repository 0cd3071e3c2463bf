"""Oracle ensembles: average the heatmaps of many models over test-time-augmented crops.

:class:`OracleEnsemble` runs every member on every test-time-augmentation (TTA) variant of the crop, maps each
prediction back to the original crop, averages the (non-negative, unit-mass) heatmaps and reads the landmarks
out of the average (:func:`wflwv.baselines.heatmaps.heatmap_readout`), as the paper's WFLW-V oracle does. Members
that output only points contribute Gaussian heatmaps around them (``sigma`` in cells of the output heatmap).

TTA variants (all relative to the crop centre ``c = (127.5, 127.5)``, the centre of a 256-pixel crop whose pixel
centres are integers):

* ``"flip"``: the mirrored crop (``x -> 255 - x``); predictions are mirrored back and relabelled with the
  landmark scheme's flip permutation (:attr:`wflwv.schemes.LandmarkScheme.flip`).
* ``"shift"`` / ``"shift:D"``: the crop content moved by ``D`` pixels (default 8) left, right, up and down.
* ``"scale"`` / ``"scale:A,B,..."``: the content zoomed by each factor about the centre (default 0.9 and 1.1).
* ``"rotate"`` / ``"rotate:DEG"``: the content rotated by +-DEG degrees about the centre (default 3).
* ``"jitter:N[/shift=S][/scale=Z][/rotate=R][/flip]"``: N sub-pixel perturbations (fractional shifts, small zooms
  and rotations spread evenly, :func:`jitter_variants`) so that members with quantised or step-like outputs
  dither and their average becomes a smooth, sub-pixel function of the face's position.

With ``combine="robust"`` (or ``"mean"``) the votes are not turned into heatmaps: each member's votes give a
robust location and a spread, and the members are combined with inverse-spread weights and Hampel's redescending
weights against outliers (:mod:`wflwv.baselines.robust`).

The un-augmented crop is always included. Augmented crops are resampled bilinearly with zero padding; a
member's heatmaps are brought back to the original crop by bicubic resampling on the output grid (accurate to
about 0.2 crop pixels; a landmark pushed out of an augmented crop by a zoom or shift votes less accurately).

Outputs: landmarks (N, K, 2) crop pixels; heatmaps (N, K, S, S) the averaged maps (each sums to 1; None unless
``combine="heatmap"``);
``stats["ensemble_var"]`` (N,), the per-frame mean over landmarks of the per-landmark variance of all votes
(every member on every TTA variant, mapped back to the crop): ``var(x) + var(y)`` in crop pixels squared. The
full (N, K) per-landmark variance of the last batch is kept in :attr:`OracleEnsemble.last_landmark_var`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wflwv.baselines.heatmaps import (
    DEFAULT_SIGMA,
    HEATMAP_SIZE,
    heatmap_readout,
    normalise_heatmaps,
    points_to_heatmaps,
)
from wflwv.baselines.robust import combine_members, robust_location
from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.registry import create_model
from wflwv.schemes import get_scheme

__all__ = [
    "COMBINE_MODES",
    "TTAVariant",
    "jitter_variants",
    "parse_tta",
    "warp_images",
    "warp_heatmaps",
    "OracleEnsemble",
    "build_member",
    "make_oracle",
]
COMBINE_MODES = ("heatmap", "robust", "mean")
#: default smallest robust scale of the members' disagreement, crop pixels (see wflwv.baselines.robust)
ROBUST_MIN_SCALE = 3.0

_CENTRE = (CROP_SIZE - 1) / 2.0
_DEFAULT_SHIFT = 8.0
_DEFAULT_SCALES = (0.9, 1.1)
_DEFAULT_ROTATE = 3.0


@dataclass(frozen=True)
class TTAVariant:
    """One test-time augmentation of the crop.

    Attributes:
        name: label, e.g. ``"identity"``, ``"flip"``, ``"shift(8,0)"``, ``"scale(1.1)"``, ``"rotate(3)"``.
        flip: mirror horizontally (applied first).
        scale: zoom factor about the crop centre (> 1 enlarges the face).
        shift: (dx, dy) crop pixels by which the content moves.
        rotate: in-plane rotation of the content about the crop centre, degrees (positive = clockwise on screen).
        blur: standard deviation (crop pixels) of a Gaussian blur applied after the warp (0 = none).
    """

    name: str
    flip: bool = False
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    rotate: float = 0.0
    blur: float = 0.0

    def matrix(self) -> np.ndarray:
        """(3, 3) affine matrix taking original crop pixels to augmented crop pixels."""
        c = _CENTRE
        a = np.radians(self.rotate)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        lin = self.scale * rot @ np.diag([-1.0 if self.flip else 1.0, 1.0])
        m = np.eye(3)
        m[:2, :2] = lin
        m[:2, 2] = np.array([c + self.shift[0], c + self.shift[1]]) - lin @ np.array([c, c])
        return m


def _halton(index: int, base: int) -> float:
    """The ``index``-th (1-based) element of the van der Corput sequence in ``base``: evenly spread in [0, 1)."""
    f, r = 1.0, 0.0
    while index > 0:
        f /= base
        r += f * (index % base)
        index //= base
    return r


#: defaults of ``jitter``: half-ranges of the uniform shift (crop pixels), log-zoom and rotation (degrees), and the
#: Gaussian blur (crop pixels) applied to every jittered crop
JITTER_DEFAULTS = {"shift": 1.0, "scale": 0.02, "rotate": 1.0, "blur": 0.0}


def jitter_variants(
    count: int,
    shift: float = JITTER_DEFAULTS["shift"],
    scale: float = JITTER_DEFAULTS["scale"],
    rotate: float = JITTER_DEFAULTS["rotate"],
    flip: bool = False,
    blur: float = JITTER_DEFAULTS["blur"],
) -> list[TTAVariant]:
    """``count`` small sub-pixel perturbations of the crop, spread evenly (a Halton sequence, no randomness).

    Variant ``i`` shifts the content by ``(u, v)`` with ``u, v`` in ``[-shift, shift]`` crop pixels, zooms by
    ``exp(w)`` with ``w`` in ``[-scale, scale]`` and rotates by ``r`` in ``[-rotate, rotate]`` degrees; ``(u, v, w, r)``
    are the Halton points in bases 2, 3, 5, 7 mapped onto those ranges, so every fraction of a pixel is visited
    evenly. A member whose output is quantised (dlib returns whole pixels of an enlarged crop) or depends on its input
    in steps (regression trees compare pixel pairs) answers each variant a little differently, and the average over
    the variants is a smooth, sub-pixel function of where the face is. ``flip``: every second variant is mirrored too.
    ``blur``: every variant is also blurred (Gaussian, crop pixels), which makes members less sensitive to pixel noise
    such as video coding noise.
    """
    if count < 1:
        raise ValueError(f"jitter needs at least one variant, got {count}")
    if shift < 0 or scale < 0 or rotate < 0 or blur < 0:
        raise ValueError("jitter ranges must be >= 0")
    out = []
    for i in range(1, count + 1):
        u, v, w, r = (2 * _halton(i, b) - 1 for b in (2, 3, 5, 7))
        mirrored = flip and i % 2 == 0
        z = float(np.exp(w * scale))
        out.append(
            TTAVariant(
                f"jitter{i}({u * shift:+.3f},{v * shift:+.3f},x{z:.4f},{r * rotate:+.2f}deg{',flip' if mirrored else ''})",
                flip=mirrored,
                scale=z,
                shift=(u * shift, v * shift),
                rotate=r * rotate,
                blur=float(blur),
            )
        )
    return out


_TTA_HELP = (
    "use 'flip', 'shift[:D]' (pixels), 'scale[:A/B]' (zoom factors), 'rotate[:DEG]' or "
    "'jitter:N[/shift=S][/scale=Z][/rotate=R][/blur=B][/flip]'"
)


def _parse_jitter(arg: str) -> list[TTAVariant]:
    parts = [p.strip() for p in arg.split("/") if p.strip()]
    if not parts:
        raise ValueError
    count = int(parts[0])
    opts: dict[str, Any] = dict(JITTER_DEFAULTS)
    flip = False
    for part in parts[1:]:
        key, eq, val = part.partition("=")
        if key == "flip" and not eq:
            flip = True
        elif key in opts and eq:
            opts[key] = float(val)
        else:
            raise ValueError
    return jitter_variants(count, opts["shift"], opts["scale"], opts["rotate"], flip, opts["blur"])


def parse_tta(specs: Sequence[str] | str | None) -> list[TTAVariant]:
    """Expand test-time augmentation names into variants. The identity comes first and is always present.

    * ``flip``: the mirrored crop (landmarks relabelled with the scheme's flip permutation).
    * ``shift`` / ``shift:D``: content moved by ``D`` crop pixels (default 8) left, right, up and down (4 variants).
    * ``scale`` / ``scale:A/B/...``: content zoomed by each factor about the centre (default 0.9 and 1.1).
    * ``rotate`` / ``rotate:DEG``: content rotated by ``+DEG`` and ``-DEG`` degrees (default 3; 2 variants).
    * ``jitter:N`` / ``jitter:N/shift=S/scale=Z/rotate=R/flip``: ``N`` sub-pixel perturbations spread evenly over
      shifts in ``[-S, S]`` crop pixels (default 1), zooms in ``[e^-Z, e^Z]`` (default 0.02) and rotations in
      ``[-R, R]`` degrees (default 1); ``/flip`` mirrors every second one (:func:`jitter_variants`).

    A comma-separated string is accepted too (``"flip,shift"``); values inside one name are then separated by ``/``
    (``"flip,scale:0.9/1.1,jitter:16/shift=0.5"``); ``scale:0.85,1.15`` works in a list.
    """
    if specs is None:
        specs = []
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    variants = [TTAVariant("identity")]
    for raw in specs:
        spec = raw.strip().lower()
        name, _, arg = spec.partition(":")
        try:
            if name in ("", "none", "identity"):
                continue
            if name == "flip" and not arg:
                variants.append(TTAVariant("flip", flip=True))
            elif name == "shift":
                d = float(arg) if arg else _DEFAULT_SHIFT
                for dx, dy in ((d, 0.0), (-d, 0.0), (0.0, d), (0.0, -d)):
                    variants.append(TTAVariant(f"shift({dx:g},{dy:g})", shift=(dx, dy)))
            elif name == "scale":
                factors = [float(a) for a in arg.replace("/", ",").split(",")] if arg else list(_DEFAULT_SCALES)
                if any(f <= 0 for f in factors):
                    raise ValueError
                variants += [TTAVariant(f"scale({f:g})", scale=f) for f in factors]
            elif name == "rotate":
                deg = float(arg) if arg else _DEFAULT_ROTATE
                variants += [TTAVariant(f"rotate({d:g})", rotate=d) for d in (deg, -deg)]
            elif name == "jitter":
                variants += _parse_jitter(arg)
            else:
                raise KeyError
        except KeyError:
            raise ValueError(f"unknown test-time augmentation {raw!r}; {_TTA_HELP}") from None
        except ValueError:
            raise ValueError(
                f"bad test-time augmentation {raw!r}: shifts, scales and angles need numbers, scales > 0, "
                f"jitter a count >= 1 and known keys ({_TTA_HELP})"
            ) from None
    return variants


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images (``sigma`` pixels, kernel +-3 sigma, edges replicated)."""
    if sigma <= 0:
        return images
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (r, r, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, r, r), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _apply(m: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    """Apply a (3, 3) affine matrix to (..., 2) points."""
    mt = torch.as_tensor(m[:2], dtype=pts.dtype, device=pts.device)
    return pts @ mt[:, :2].T + mt[:, 2]


def warp_images(images: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """The augmented crops: ``out(q) = images(matrix^-1 q)`` in crop pixels (bilinear, zeros outside).

    Args:
        images: (N, C, H, W).
        matrix: (3, 3) original -> augmented pixel map.
    Returns:
        (N, C, H, W).
    """
    if np.allclose(matrix, np.eye(3)):
        return images
    n, _, h, w = images.shape
    inv = np.linalg.inv(matrix)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    src = _apply(inv, torch.stack([xs, ys], dim=-1))  # (H, W, 2) source pixel for each output pixel
    # align_corners=False: pixel x <-> normalised (2x + 1) / size - 1
    grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], dim=-1)
    grid = grid.to(images.dtype).to(images.device).expand(n, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_heatmaps(
    heatmaps: torch.Tensor, matrix: np.ndarray, out_size: int = HEATMAP_SIZE, crop_size: int = CROP_SIZE
) -> torch.Tensor:
    """Bring heatmaps predicted on an augmented crop back onto the original crop's heatmap grid.

    Heatmap cell ``(i, j)`` of an ``(H, W)`` map stands for crop pixel ``(j * crop / W, i * crop / H)``.

    Args:
        heatmaps: (N, K, H, W) maps over the augmented crop.
        matrix: (3, 3) original -> augmented crop-pixel map.
        out_size: side S of the output grid.
    Returns:
        (N, K, S, S) non-negative maps over the original crop (bicubic resampling, zeros outside).
    """
    n, k, h, w = heatmaps.shape
    if (h, w) == (out_size, out_size) and np.allclose(matrix, np.eye(3)):
        return torch.clamp(heatmaps, min=0)
    cell = torch.arange(out_size, dtype=torch.float64) * (crop_size / out_size)
    ys, xs = torch.meshgrid(cell, cell, indexing="ij")
    aug = _apply(matrix, torch.stack([xs, ys], dim=-1))  # augmented crop pixels
    cx, cy = aug[..., 0] * (w / crop_size), aug[..., 1] * (h / crop_size)  # member heatmap cells
    # align_corners=True: cell index c <-> normalised 2c / (size - 1) - 1
    grid = torch.stack([2 * cx / max(w - 1, 1) - 1, 2 * cy / max(h - 1, 1) - 1], dim=-1)
    grid = grid.to(heatmaps.dtype).to(heatmaps.device).expand(n, out_size, out_size, 2)
    out = F.grid_sample(heatmaps, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
    return torch.clamp(out, min=0)


class OracleEnsemble(LandmarkModel):
    """Heatmap-averaging ensemble of landmark models with test-time augmentation (the paper's oracle recipe)."""

    def __init__(
        self,
        members: Sequence[LandmarkModel],
        tta: Sequence[str] | str | None = ("flip",),
        sigma: float = DEFAULT_SIGMA,
        heatmap_size: int = HEATMAP_SIZE,
        flip_index: Sequence[int] | None = None,
        combine: str = "heatmap",
        member_weights: str | Sequence[float] | None = None,
        outlier_scale: float = ROBUST_MIN_SCALE,
    ):
        """
        Args:
            members: the models to combine; they must agree on the landmark scheme (and on K).
            tta: test-time augmentations (see :func:`parse_tta`); the identity is always used.
            combine: how the votes become one landmark: ``"heatmap"`` (average the heatmaps of all votes, read the
                peak out; point members vote with Gaussians), ``"robust"`` (per member a robust mean of its votes
                and their spread, then the spread-weighted Hampel mean across members,
                :mod:`wflwv.baselines.robust`) or ``"mean"`` (the plain mean of all votes).
            member_weights: for ``combine="robust"``: None (equal), ``"spread"`` (per frame and landmark, inverse
                of each member's spread over its variants: see :mod:`wflwv.baselines.robust` for why this flickers
                more) or one number per member.
            outlier_scale: for ``combine="robust"``: the smallest robust scale (crop pixels) of the members'
                disagreement; members closer than twice this to the consensus keep their full weight.
            sigma: width (cells of the output heatmap) of the Gaussians drawn for point-only members.
            heatmap_size: side of the averaged heatmap grid (64 = the baselines' resolution).
            flip_index: flip permutation (K,) to use instead of the scheme's (needed for a custom K).
        """
        members = list(members)
        if not members:
            raise ValueError("an OracleEnsemble needs at least one member model")
        for m in members:
            if not hasattr(m, "predict"):
                raise TypeError(f"ensemble members must be LandmarkModels, got {type(m).__name__}")
        schemes = {m.scheme for m in members if m.scheme is not None}
        if len(schemes) > 1:
            raise ValueError(
                f"ensemble members disagree on the landmark scheme ({', '.join(sorted(schemes))}); "
                "use members of one scheme"
            )
        self.members = members
        self.scheme = schemes.pop() if schemes else None
        self.tta_specs = [tta] if isinstance(tta, str) else list(tta or [])
        self.variants = parse_tta(tta)
        if sigma <= 0 or heatmap_size < 3:
            raise ValueError("sigma must be > 0 and heatmap_size >= 3")
        self.sigma = float(sigma)
        self.heatmap_size = int(heatmap_size)
        self.flip_index = None if flip_index is None else np.asarray(flip_index, dtype=np.int64)
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown combination {combine!r}; use one of {', '.join(COMBINE_MODES)}")
        self.combine = combine
        if isinstance(member_weights, str):
            if member_weights != "spread":
                raise ValueError(f"member_weights must be None, 'spread' or numbers, got {member_weights!r}")
        elif member_weights is not None:
            member_weights = [float(w) for w in member_weights]
            if len(member_weights) != len(members) or min(member_weights) < 0 or not sum(member_weights) > 0:
                raise ValueError(f"member_weights needs {len(members)} non-negative numbers, not all 0")
        self.member_weights = member_weights
        if outlier_scale <= 0:
            raise ValueError(f"outlier_scale must be > 0, got {outlier_scale}")
        self.outlier_scale = float(outlier_scale)
        #: (M, N, K) weights of the members in the last batch's robust combination (None for other modes)
        self.last_member_weights: np.ndarray | None = None
        #: (N, K) per-landmark variance of all votes of the last batch, crop pixels squared
        self.last_landmark_var: np.ndarray | None = None
        #: (V, N, K, 2) every vote (member-major, then TTA variant) of the last batch, in original crop pixels
        self.last_votes: np.ndarray | None = None

    @property
    def stateful(self) -> bool:
        """Stateless when every member is (then the harness may batch a clip's frames)."""
        return any(getattr(m, "stateful", True) for m in self.members)

    @property
    def batch_invariant(self) -> bool:
        """Exactly invariant when every member is (the averaging itself is per sample)."""
        return all(getattr(m, "batch_invariant", False) for m in self.members)

    # ------------------------------------------------------------------------------------------ helpers
    def to(self, device: str | torch.device) -> OracleEnsemble:
        self.device = torch.device(device)
        for m in self.members:
            m.to(device)
        return self

    def _inverse_flip(self, k: int) -> np.ndarray:
        perm = self.flip_index
        if perm is None:
            if self.scheme is None:
                raise ValueError(
                    "flip test-time augmentation needs the landmark scheme's flip permutation: the members do not "
                    "declare a scheme, so pass flip_index=... to OracleEnsemble"
                )
            perm = get_scheme(self.scheme).flip_index()
        if len(perm) != k or sorted(perm.tolist()) != list(range(k)):
            raise ValueError(f"the flip permutation must be a permutation of range({k}), got {perm.tolist()}")
        return np.argsort(perm)

    @staticmethod
    def _frames_for(frames: Sequence[FrameInfo], matrix: np.ndarray) -> list[FrameInfo]:
        """FrameInfo of the augmented crops (their crop -> frame map composed with augmented -> original)."""
        if np.allclose(matrix, np.eye(3)):
            return list(frames)
        inv = np.linalg.inv(matrix)
        out = []
        for f in frames:
            c2f = np.vstack([np.asarray(f.crop_to_frame, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
            out.append(dataclasses.replace(f, crop_to_frame=(c2f @ inv)[:2]))
        return out

    # ------------------------------------------------------------------------------------------ predict
    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """Ensemble prediction for (N, 3, 256, 256) crops; see the module docstring for the outputs."""
        n = images.shape[0]
        if images.shape[-1] != CROP_SIZE or images.shape[-2] != CROP_SIZE:
            raise ValueError(f"the ensemble expects {CROP_SIZE} x {CROP_SIZE} crops, got {tuple(images.shape)}")
        states = list(states) if states is not None else [None] * n
        if len(states) != n:
            raise ValueError(f"got {len(states)} states for {n} images")
        s = self.heatmap_size
        n_var = len(self.variants)
        new_states = [[[None] * n_var for _ in self.members] for _ in range(n)]
        use_heatmaps = self.combine == "heatmap"
        heatmap_sum = None
        votes: list[list[torch.Tensor]] = [[] for _ in self.members]  # [member][variant] (N, K, 2)
        k_seen = None
        for vi, variant in enumerate(self.variants):
            m = variant.matrix()
            aug_cpu = gaussian_blur(warp_images(images, m), variant.blur)  # once per variant, shared by the members
            aug_frames = self._frames_for(frames, m)
            for mi, member in enumerate(self.members):
                member_states = [None if st is None else st[mi][vi] for st in states]
                out = member.predict(aug_cpu.to(member.device), member_states, aug_frames)
                for i in range(n):
                    new_states[i][mi][vi] = out.states[i]
                pts = torch.as_tensor(out.landmarks_numpy(), dtype=torch.float64)  # (N, K, 2) augmented crop
                k = pts.shape[1]
                if k_seen is not None and k != k_seen:
                    raise ValueError(f"ensemble members disagree on the number of landmarks ({k_seen} vs {k})")
                k_seen = k
                pts = _apply(np.linalg.inv(m), pts)  # back to original crop pixels
                hm = None
                if use_heatmaps and out.heatmaps is not None:
                    hm = torch.as_tensor(out.heatmaps).detach().to("cpu", torch.float32)
                    if hm.ndim != 4 or hm.shape[:2] != (n, k):
                        raise ValueError(
                            f"member {mi} ({member.name or type(member).__name__}) returned heatmaps of shape "
                            f"{tuple(hm.shape)}, expected ({n}, {k}, H, W)"
                        )
                    hm = warp_heatmaps(hm, m, s)
                if variant.flip:
                    inv = torch.as_tensor(self._inverse_flip(k))
                    pts = pts[:, inv]
                    hm = None if hm is None else hm[:, inv]
                votes[mi].append(pts)
                if not use_heatmaps:
                    continue
                # heatmap arithmetic in float32 (the votes stay float64): float64 maps cost twice the time for
                # no gain at the readout's accuracy
                hm_points = points_to_heatmaps(pts.float(), s, self.sigma)
                if hm is None:
                    hm = hm_points
                else:
                    # a map with no positive mass (e.g. the face zoomed out of view) falls back to a Gaussian
                    empty = hm.sum(dim=(-2, -1), keepdim=True) <= 0
                    hm = torch.where(empty, hm_points, hm)
                hm = normalise_heatmaps(hm)
                heatmap_sum = hm if heatmap_sum is None else heatmap_sum + hm
        all_votes = torch.stack([v for member_votes in votes for v in member_votes])  # (V, N, K, 2) member-major
        mean_hm = None
        self.last_member_weights = None
        if use_heatmaps:
            mean_hm = (heatmap_sum / len(all_votes)).float()
            landmarks = (heatmap_readout(mean_hm) * CROP_SIZE).numpy()  # (N, K, 2) crop pixels
        elif self.combine == "mean":
            landmarks = all_votes.mean(dim=0).numpy()
        else:
            per_member = [robust_location(torch.stack(v).numpy()) for v in votes]
            prior = None
            if self.member_weights != "spread":
                prior = np.ones(len(self.members)) if self.member_weights is None else np.array(self.member_weights)
            landmarks, weights = combine_members(
                np.stack([loc for loc, _ in per_member]),
                np.stack([spr for _, spr in per_member]),
                min_scale=self.outlier_scale,
                prior=prior,
            )
            self.last_member_weights = weights
        variance = all_votes.var(dim=0, unbiased=False).sum(dim=-1)  # (N, K)
        self.last_landmark_var = variance.numpy()
        self.last_votes = all_votes.numpy()
        return ModelOutput(
            landmarks=np.asarray(landmarks, dtype=np.float64),
            states=new_states,
            stats={"ensemble_var": variance.mean(dim=1).numpy()},
            heatmaps=mean_hm,
        )

    def config(self) -> dict[str, Any]:
        return {
            "members": [{"name": m.name or type(m).__name__, "config": m.config()} for m in self.members],
            "tta": self.tta_specs,
            "variants": [v.name for v in self.variants],
            "sigma": self.sigma,
            "heatmap_size": self.heatmap_size,
            "combine": self.combine,
            "member_weights": self.member_weights,
            "outlier_scale": self.outlier_scale,
        }


MemberSpec = Any  # LandmarkModel | str | (name, weights) | (name, weights, kwargs)


def build_member(spec: MemberSpec) -> LandmarkModel:
    """A model from a spec: a LandmarkModel (passed through), a name, ``(name, weights)`` or ``(name, weights, kwargs)``."""
    if isinstance(spec, LandmarkModel) or hasattr(spec, "predict"):
        return spec
    if isinstance(spec, str):
        return create_model(spec)
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
        name, weights = spec[0], spec[1] if len(spec) > 1 else None
        kwargs = dict(spec[2]) if len(spec) > 2 else {}
        if weights is not None:
            kwargs["weights"] = str(weights)
        return create_model(name, **kwargs)
    raise TypeError(
        f"cannot build an ensemble member from {spec!r}: use a LandmarkModel, a model name, "
        "(name, weights) or (name, weights, kwargs)"
    )


def make_oracle(
    members: Sequence[MemberSpec],
    tta: Sequence[str] | str | None = ("flip", "shift", "scale"),
    device: str = "cpu",
    sigma: float = DEFAULT_SIGMA,
    heatmap_size: int = HEATMAP_SIZE,
    flip_index: Sequence[int] | None = None,
    combine: str = "heatmap",
) -> OracleEnsemble:
    """Build an :class:`OracleEnsemble` from model specs (``combine``: see :class:`OracleEnsemble`).

    Example: ``make_oracle([("hrnet", "hrnet.pt"), ("unet", "unet.pt"), ("hrformer", None, {"size": "tiny"})],
    tta=["flip", "shift", "scale"])``. A ``None`` weight builds the model without ``weights=`` (randomly
    initialised for the baselines).
    """
    ens = OracleEnsemble([build_member(s) for s in members], tta, sigma, heatmap_size, flip_index, combine)
    return ens.to(device)


def oracle_ensemble_model(
    members: str | Sequence[MemberSpec],
    tta: str | Sequence[str] = "flip",
    sigma: float = DEFAULT_SIGMA,
    heatmap_size: int = HEATMAP_SIZE,
    combine: str = "heatmap",
):
    """Heatmap-averaging ensemble with test-time augmentation (members="hrnet=a.pt,unet=b.pt", tta="flip,shift").

    Args:
        members: a list of specs (see :func:`make_oracle`) or a comma-separated string of ``name=weights`` /
            ``name`` entries.
        tta: list or comma-separated string of ``flip``, ``shift[:D]``, ``scale[:A/B]``.
    """
    if isinstance(members, str):
        specs: list[MemberSpec] = []
        for item in (s.strip() for s in members.split(",")):
            if not item:
                continue
            name, _, weights = item.partition("=")
            specs.append((name.strip(), weights.strip() or None))
        members = specs
    if not members:
        raise ValueError("oracle-ensemble needs members, e.g. members='hrnet=hrnet.pt,unet=unet.pt'")
    return make_oracle(members, tta, "cpu", sigma, heatmap_size, combine=combine)
