"""Exact-motion rendering: sub-pixel accuracy and cost of the two warp kernels (``--interpolation``).

* accuracy: a still of Gaussian dots (sigma 1.3 px) is warped by random similarities (scale 0.7-1.4, any angle,
  any sub-pixel shift); each dot's intensity centroid in the frame is compared with the dot's centre mapped by the
  matrix. What remains is the kernel's own sub-pixel bias (plus OpenCV's 1/32-pixel coordinate quantisation).
  The last column turns the rms error into the NMF it would add to a perfect model on a ``--face`` px face if it
  were independent from frame to frame (the worst case: NMF = 100 * 2 * rms / (face / 256)).
* cost: milliseconds per frame of :func:`wflwv.build.exact_motion.synthesise_clip` (natural preset, with and
  without camera degradation, whose motion blur renders several sub-frames when the face moves fast), at
  ``--size``; H.264 encoding is not included.

Usage::

    python benchmarks/exact_motion_render.py
    python benchmarks/exact_motion_render.py --size 1280x720 --frames 50

Timings are indicative on a loaded machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wflwv.build import exact_motion as em  # noqa: E402
from wflwv.testing import render_synthetic_face  # noqa: E402


def dot_errors(interpolation: str, trials: int, rng: np.random.Generator) -> np.ndarray:
    """Centroid errors (px) of warped Gaussian dots."""
    size, sigma = 160, 1.3
    grid = np.stack(np.meshgrid(np.arange(30, 131, 20), np.arange(30, 131, 20)), -1).reshape(-1, 2).astype(float)
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    errs = []
    for _ in range(trials):
        pts = grid + rng.uniform(-0.5, 0.5, grid.shape)
        img = np.zeros((size, size))
        for x, y in pts:
            img += 250 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
        still = np.repeat(np.clip(np.rint(img), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        s, a = rng.uniform(0.7, 1.4), rng.uniform(0, 2 * math.pi)
        m = np.array([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0], [0, 0, 1]])
        m[:2, 2] = np.array([120.0, 120.0]) - m[:2, :2] @ [80.0, 80.0] + rng.uniform(-0.5, 0.5, 2)
        frame = em.render_frame(still, m, (240, 240), background=(0, 0, 0), interpolation=interpolation)
        for p in em.apply_motion(pts, m):
            r = 5
            x0, y0 = int(round(p[0])) - r, int(round(p[1])) - r
            win = frame[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1, 0].astype(float)
            wy, wx = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
            c = np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()
            errs.append(c - p)
    return np.asarray(errs)


def ms_per_frame(interpolation: str, degrade: bool, size: tuple[int, int], frames: int) -> float:
    rng = np.random.default_rng(0)
    img, lm, _ = render_synthetic_face(rng, 400)
    still, pts = em.prepare_still(img, lm, 1.0)
    t = time.perf_counter()
    em.synthesise_clip(still, pts, num_frames=frames, fps=25.0, frame_size=size, motion="natural",
                       degrade=em.DegradeConfig() if degrade else None, seed=1, interpolation=interpolation)  # fmt: skip
    return 1000 * (time.perf_counter() - t) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="random similarities for the accuracy test")
    ap.add_argument("--frames", type=int, default=25, help="frames per timed clip")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--face", type=float, default=192.0, help="face side (px) for the NMF column")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    header = (
        f"{'kernel':<8} {'rms px':>7} {'max px':>7} {'ms/frame clean':>15} {'ms/frame degraded':>18} {'NMF-equiv':>10}"
    )
    print(header)
    print("-" * len(header))
    for interp in ("linear", "lanczos"):
        e = dot_errors(interp, args.trials, np.random.default_rng(1))
        rms = float(np.sqrt((e**2).sum(axis=1).mean() / 2))  # per coordinate
        worst = float(np.abs(e).max())
        clean = ms_per_frame(interp, False, (w, h), args.frames)
        degraded = ms_per_frame(interp, True, (w, h), args.frames)
        nmf = 100 * 2 * rms / (args.face / 256)
        print(f"{interp:<8} {rms:7.4f} {worst:7.4f} {clean:15.1f} {degraded:18.1f} {nmf:10.2f}")


if __name__ == "__main__":
    main()
