"""WFLW still images: the annotation format (reader and writer) and a torch dataset of protocol crops.

Annotation format (``list_98pt_rect_attr_{train,test}.txt``), one face per line, whitespace separated:

* 196 numbers: the 98 landmarks as ``x0 y0 x1 y1 ... x97 y97`` (image pixels),
* 4 numbers: the face box ``x_min y_min x_max y_max``,
* 6 flags (0 or 1): pose, expression, illumination, make-up, occlusion, blur,
* the image path, relative to the ``WFLW_images`` folder (no whitespace in it).

The same layout with 136 coordinates (68 iBUG-68 points) is accepted too: `wflwv demo` writes its still images
that way when they are labelled by a 68-point oracle. A file holds one kind of line only.

The six flags define the test subsets of the paper's tables 1 and 2 (a face belongs to every subset whose flag
is 1); ``"full"`` is the whole split.

Where files are looked for, given a WFLW folder ``D`` (the first that exists wins):

* annotations: ``D/WFLW_annotations/list_98pt_rect_attr_train_test/``, ``D/WFLW_annotations/``,
  ``D/list_98pt_rect_attr_train_test/``, ``D/`` (file ``list_98pt_rect_attr_<split>.txt``);
* images: ``D/WFLW_images/``, then ``D/`` itself (the first annotated image must exist there).

:class:`WFLWStillDataset` crops every face as the WFLW-V evaluation does (:mod:`wflwv.dataset.crop`: square of
side 1.2 x max(w, h) around the box centre, 256 x 256) and optionally applies the training augmentations of
:mod:`wflwv.training.augment`, composed with the crop so that each image is warped only once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from wflwv.schemes import LandmarkScheme, convert_landmarks, get_scheme

__all__ = [
    "NUM_POINTS",
    "ATTRIBUTES",
    "SUBSETS",
    "SPLITS",
    "WFLWFormatError",
    "WFLWSample",
    "parse_annotation_line",
    "format_annotation_line",
    "read_annotations",
    "write_annotations",
    "annotation_filename",
    "find_annotation_file",
    "find_images_dir",
    "load_wflw",
    "subset_mask",
    "subset_masks",
    "select_subset",
    "WFLWStillDataset",
    "render_synthetic_face",
    "make_synthetic_wflw",
]

#: landmarks per WFLW face
NUM_POINTS = 98
#: attribute flags in file order; these names are also the test-subset names
ATTRIBUTES: tuple[str, ...] = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
#: every subset name, in the column order of the paper's tables ("full" = whole split)
SUBSETS: tuple[str, ...] = ("full",) + ATTRIBUTES
SPLITS: tuple[str, ...] = ("train", "test")
#: tokens per annotation line: coordinates, box, flags, path (98 points; 68-point lines have 60 fewer)
_NUM_TOKENS = 2 * NUM_POINTS + 4 + len(ATTRIBUTES) + 1
#: point counts a line may carry: WFLW-98, or iBUG-68 for sets labelled by a 68-point oracle
_POINT_COUNTS = (98, 68)

_ANNOTATION_SUBDIRS: tuple[str, ...] = (
    "WFLW_annotations/list_98pt_rect_attr_train_test",
    "WFLW_annotations",
    "list_98pt_rect_attr_train_test",
    ".",
)
_IMAGE_SUBDIRS: tuple[str, ...] = ("WFLW_images", ".")


class WFLWFormatError(ValueError):
    """An annotation line does not follow the WFLW format; the message names the file and line."""


@dataclass
class WFLWSample:
    """One annotated face.

    Attributes:
        landmarks: (98, 2) float64 image pixels (x, y); (68, 2) for iBUG-68 sets.
        box: (4,) float64 ``x_min, y_min, x_max, y_max`` in image pixels.
        attributes: six 0/1 flags in :data:`ATTRIBUTES` order.
        image_path: path of the image relative to the images folder (``/``-separated, no whitespace).
    """

    landmarks: np.ndarray
    box: np.ndarray
    attributes: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    image_path: str = ""

    def __post_init__(self):
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64)
        self.box = np.asarray(self.box, dtype=np.float64).reshape(-1)
        self.attributes = tuple(int(a) for a in self.attributes)
        if self.landmarks.ndim != 2 or self.landmarks.shape[1] != 2 or self.landmarks.shape[0] not in _POINT_COUNTS:
            raise ValueError(f"WFLW landmarks must have shape (98, 2) (or (68, 2) for iBUG-68), got {self.landmarks.shape}")
        if self.box.shape != (4,):
            raise ValueError(f"WFLW box must be 4 numbers x_min, y_min, x_max, y_max, got shape {self.box.shape}")
        if len(self.attributes) != len(ATTRIBUTES) or any(a not in (0, 1) for a in self.attributes):
            raise ValueError(
                f"WFLW attributes must be {len(ATTRIBUTES)} flags of 0/1 ({', '.join(ATTRIBUTES)}), got {self.attributes}"
            )

    @property
    def scheme(self) -> LandmarkScheme:
        """The landmark scheme of this sample (by its number of points)."""
        from wflwv.schemes import scheme_for_num_points

        return scheme_for_num_points(self.landmarks.shape[0])

    @property
    def flags(self) -> dict[str, bool]:
        """Attribute name -> flag."""
        return {name: bool(a) for name, a in zip(ATTRIBUTES, self.attributes)}

    def in_subset(self, subset: str) -> bool:
        """Whether this face belongs to ``subset`` (one of :data:`SUBSETS`)."""
        if subset == "full":
            return True
        return bool(self.attributes[_attribute_index(subset)])


def _attribute_index(subset: str) -> int:
    try:
        return ATTRIBUTES.index(subset)
    except ValueError:
        raise ValueError(f"unknown WFLW subset {subset!r}; choose one of {', '.join(SUBSETS)}") from None


# --------------------------------------------------------------------------------------------------
# one line


def parse_annotation_line(line: str, source: str = "<string>", line_no: int = 0) -> WFLWSample:
    """Parse one annotation line.

    Args:
        line: the text of the line.
        source, line_no: where it came from, for error messages.
    Raises:
        WFLWFormatError: wrong number of fields, non-numeric or non-finite numbers, flags other than 0/1.
    """
    where = f"{source}, line {line_no}"
    tokens = line.split()
    extra = 4 + len(ATTRIBUTES) + 1
    if len(tokens) - extra not in [2 * k for k in _POINT_COUNTS]:
        hint = ""
        if len(tokens) > _NUM_TOKENS:
            hint = " (does the image path contain spaces?)"
        raise WFLWFormatError(
            f"{where}: expected {_NUM_TOKENS} whitespace-separated fields (196 coordinates, 4 box values, "
            f"6 attribute flags, image path; or 136 coordinates for 68 points) but found {len(tokens)}{hint}"
        )
    k = (len(tokens) - extra) // 2
    n_num = 2 * k + 4
    try:
        numbers = np.array([float(t) for t in tokens[:n_num]], dtype=np.float64)
    except ValueError:
        bad = next(i for i, t in enumerate(tokens[:n_num]) if not _is_float(t))
        raise WFLWFormatError(f"{where}: field {bad + 1} ({tokens[bad]!r}) is not a number") from None
    if not np.all(np.isfinite(numbers)):
        bad = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise WFLWFormatError(f"{where}: field {bad + 1} ({tokens[bad]!r}) is not a finite number")
    flags = []
    for i, t in enumerate(tokens[n_num : n_num + len(ATTRIBUTES)]):
        if t not in ("0", "1"):
            raise WFLWFormatError(
                f"{where}: attribute flag {ATTRIBUTES[i]!r} (field {n_num + i + 1}) must be 0 or 1, got {t!r}"
            )
        flags.append(int(t))
    box = numbers[2 * k :]
    if box[2] < box[0] or box[3] < box[1]:
        raise WFLWFormatError(f"{where}: face box {box.tolist()} has x_max < x_min or y_max < y_min")
    return WFLWSample(
        landmarks=numbers[: 2 * k].reshape(k, 2),
        box=box,
        attributes=tuple(flags),
        image_path=tokens[-1],
    )


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def _fmt(v: float) -> str:
    """Shortest faithful text of a number (integers without a decimal point)."""
    v = float(v)
    if v.is_integer():
        return str(int(v))
    return f"{v:.6f}".rstrip("0").rstrip(".")


def format_annotation_line(sample: WFLWSample) -> str:
    """The annotation line of one sample (no trailing newline); :func:`parse_annotation_line` reads it back.

    Coordinates are written with 6 decimals (enough for any float32 pixel coordinate of real images).

    Raises:
        ValueError: non-finite numbers, or an image path that is empty or contains whitespace.
    """
    path = sample.image_path.replace(os.sep, "/")
    if not path or any(c.isspace() for c in path):
        raise ValueError(f"image path {sample.image_path!r} must be non-empty and contain no whitespace (WFLW format)")
    nums = np.concatenate([sample.landmarks.reshape(-1), sample.box])
    if not np.all(np.isfinite(nums)):
        raise ValueError(f"sample for {path!r} has NaN/inf landmarks or box; cannot write it in WFLW format")
    parts = [_fmt(v) for v in nums] + [str(a) for a in sample.attributes] + [path]
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------
# files


def read_annotations(path: str | os.PathLike) -> list[WFLWSample]:
    """Read a ``list_98pt_rect_attr_*.txt`` file (blank lines are skipped).

    Raises:
        FileNotFoundError: the file does not exist.
        WFLWFormatError: a malformed line (the message names the file and the 1-based line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WFLW annotation file not found: {path}")
    samples = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            samples.append(parse_annotation_line(line, str(path), i))
            if samples[-1].landmarks.shape != samples[0].landmarks.shape:
                raise WFLWFormatError(
                    f"{path}, line {i}: {len(samples[-1].landmarks)} landmarks where line 1 has "
                    f"{len(samples[0].landmarks)}; a file must use one landmark scheme"
                )
    return samples


def write_annotations(path: str | os.PathLike, samples: Iterable[WFLWSample]) -> Path:
    """Write samples in the WFLW annotation format (atomically: temp file + rename). Returns the path."""
    from wflwv.io import atomic_path

    path = Path(path)
    lines = [format_annotation_line(s) for s in samples]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def annotation_filename(split: str) -> str:
    """``list_98pt_rect_attr_<split>.txt``."""
    if split not in SPLITS:
        raise ValueError(f"unknown WFLW split {split!r}; choose one of {', '.join(SPLITS)}")
    return f"list_98pt_rect_attr_{split}.txt"


def find_annotation_file(wflw_dir: str | os.PathLike, split: str) -> Path:
    """Locate the annotation file of ``split`` under a WFLW folder (see the module docstring for the order).

    Raises:
        FileNotFoundError: none of the candidate locations has it (all of them are listed in the message).
    """
    root = Path(wflw_dir)
    name = annotation_filename(split)
    if not root.is_dir():
        raise FileNotFoundError(f"WFLW folder {root} does not exist (pass the folder holding WFLW_annotations/ and WFLW_images/)")
    candidates = [(root / sub / name) if sub != "." else root / name for sub in _ANNOTATION_SUBDIRS]
    for c in candidates:
        if c.is_file():
            return c
    looked = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no WFLW {split} annotations ({name}) under {root}; looked in:\n  {looked}\n"
        "Unpack WFLW_annotations.tar.gz into that folder, or put the file directly in it."
    )


def find_images_dir(wflw_dir: str | os.PathLike, samples: Sequence[WFLWSample] = ()) -> Path:
    """Locate the folder the annotated image paths are relative to.

    The first candidate (``WFLW_images/``, then the folder itself) that holds the first sample's image wins;
    without samples, the first candidate that is a folder.

    Raises:
        FileNotFoundError: no candidate holds the image (all candidates are listed in the message).
    """
    root = Path(wflw_dir)
    candidates = [root / sub if sub != "." else root for sub in _IMAGE_SUBDIRS]
    for c in candidates:
        if not c.is_dir():
            continue
        if not samples or (c / samples[0].image_path).is_file():
            return c
    looked = "\n  ".join(str(c) for c in candidates)
    first = f" image {samples[0].image_path!r}" if samples else " images"
    raise FileNotFoundError(
        f"could not find the WFLW{first} under {root}; looked in:\n  {looked}\n"
        "Unpack WFLW_images.tar.gz into that folder."
    )


def load_wflw(wflw_dir: str | os.PathLike, split: str) -> tuple[list[WFLWSample], Path]:
    """Read the annotations of ``split`` and locate the images folder.

    Returns:
        ``(samples, images_dir)``.
    """
    samples = read_annotations(find_annotation_file(wflw_dir, split))
    if not samples:
        raise ValueError(f"the WFLW {split} annotation file under {wflw_dir} has no faces")
    return samples, find_images_dir(wflw_dir, samples)


# --------------------------------------------------------------------------------------------------
# subsets


def subset_mask(samples: Sequence[WFLWSample], subset: str) -> np.ndarray:
    """(N,) bool: which samples belong to ``subset`` (one of :data:`SUBSETS`)."""
    if subset == "full":
        return np.ones(len(samples), dtype=bool)
    j = _attribute_index(subset)
    return np.array([s.attributes[j] == 1 for s in samples], dtype=bool)


def subset_masks(samples: Sequence[WFLWSample]) -> dict[str, np.ndarray]:
    """Every subset of :data:`SUBSETS` -> (N,) bool mask, in table order."""
    return {name: subset_mask(samples, name) for name in SUBSETS}


def select_subset(samples: Sequence[WFLWSample], subset: str) -> list[WFLWSample]:
    """The samples that belong to ``subset``."""
    mask = subset_mask(samples, subset)
    return [s for s, m in zip(samples, mask) if m]


# --------------------------------------------------------------------------------------------------
# torch dataset


class WFLWStillDataset(Dataset):
    """WFLW faces cropped as in the WFLW-V evaluation protocol, optionally augmented.

    Each item is a dict:

    * ``"image"``: float32 tensor (3, 256, 256), **RGB** in [0, 1] (normalise before the network),
    * ``"keypoints"``: float32 tensor (K, 2), landmarks in [0, 1] crop units (crop pixels / 256),
    * ``"index"``: the sample's index in :attr:`samples`.

    Augmentations are seeded per (seed, epoch, index), so an item is the same whichever worker loads it and
    after resuming; call :meth:`set_epoch` at the start of every epoch to draw new ones.

    Args:
        root: WFLW folder (annotations and images are found as in :func:`load_wflw`). Give either ``root``
            and ``split``, or ``samples`` and ``images_dir``.
        split: ``"train"`` or ``"test"``.
        samples, images_dir: annotations already in memory, and the folder their image paths are relative to.
        scheme: landmark scheme of the targets (``"ibug68"`` converts the 98 WFLW points).
        augment: :class:`wflwv.training.augment.AugmentConfig`, or None for plain crops (evaluation).
        seed: base seed of the augmentations.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        samples: Sequence[WFLWSample] | None = None,
        images_dir: str | os.PathLike | None = None,
        scheme: str | LandmarkScheme = "wflw98",
        augment=None,
        seed: int = 0,
    ):
        if samples is None:
            if root is None:
                raise ValueError("WFLWStillDataset needs either root (a WFLW folder) or samples + images_dir")
            samples, images_dir = load_wflw(root, split)
        elif images_dir is None:
            raise ValueError("WFLWStillDataset: samples were given without images_dir")
        self.samples: list[WFLWSample] = list(samples)
        self.images_dir = Path(images_dir)
        self.split = split
        self.scheme = get_scheme(scheme)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of this epoch."""
        self.epoch = int(epoch)

    def subset_masks(self) -> dict[str, np.ndarray]:
        """Subset name -> (N,) bool mask over this dataset's samples (see :func:`subset_masks`)."""
        return subset_masks(self.samples)

    def load_image(self, index: int) -> np.ndarray:
        """The full BGR uint8 image of sample ``index``."""
        import cv2

        path = self.images_dir / self.samples[index].image_path
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read WFLW image {path} (missing or not an image)")
        return image

    def landmarks(self, index: int) -> np.ndarray:
        """(K, 2) image-pixel landmarks of sample ``index`` in this dataset's scheme."""
        sample = self.samples[index]
        return convert_landmarks(sample.landmarks, sample.scheme, self.scheme)

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The crop of sample ``index`` with the augmentations of the current epoch.

        Returns:
            ``(image_bgr (256, 256, 3) uint8, points (K, 2) crop pixels, frame_to_crop (2, 3))``.
        """
        from wflwv.dataset.crop import apply_affine, crop_matrix, warp_crop

        sample = self.samples[index]
        image = self.load_image(index)
        points = self.landmarks(index)
        m = crop_matrix(sample.box)
        if self.augment is None:
            return warp_crop(image, m), apply_affine(points, m), m
        from wflwv.models.api import CROP_SIZE
        from wflwv.training.augment import compose_affine, photometric, sample_geometry, sample_rng

        rng = sample_rng(self.seed, self.epoch, index)
        geom = sample_geometry(self.augment, rng, CROP_SIZE)
        m = compose_affine(geom.matrix, m)
        crop = warp_crop(image, m)
        points = apply_affine(points, m)
        if geom.flipped:
            points = points[self.scheme.flip_index()]
        crop = photometric(crop, self.augment, rng)
        return crop, points, m

    def __getitem__(self, index: int) -> dict:
        import torch

        from wflwv.models.api import CROP_SIZE

        crop, points, _ = self.crop(index)
        rgb = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1))
        return {
            "image": torch.from_numpy(rgb).float().div_(255.0),
            "keypoints": torch.from_numpy((points / CROP_SIZE).astype(np.float32)),
            "index": index,
        }


# --------------------------------------------------------------------------------------------------
# synthetic data (smoke tests, examples)


def render_synthetic_face(
    rng: np.random.Generator, size: int = 160
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a cartoon face with known WFLW-98 landmarks on a noisy background.

    The template face of :func:`wflwv.schemes.template_shape` is deformed (eye and mouth opening, jaw width),
    rotated by up to 20 degrees, scaled and placed at random; face, brows, eyes, nose and lips are drawn
    along the landmark polylines, pupils as dots.

    Returns:
        ``(image_bgr (size, size, 3) uint8, landmarks (98, 2) image pixels, box (4,))``; the box is the
        landmarks' bounding box grown or shrunk by a few percent per side, like a detector's.
    """
    import cv2

    from wflwv.schemes import get_scheme, template_shape

    scheme = get_scheme("wflw98")
    pts = template_shape("wflw98").copy()
    for group in ("left_eye", "right_eye"):  # eye opening
        idx = list(scheme.groups[group])
        cy = pts[idx, 1].mean()
        pts[idx, 1] = cy + (pts[idx, 1] - cy) * rng.uniform(0.3, 1.6)
    mouth = list(scheme.groups["mouth"])  # mouth opening
    cy = pts[mouth, 1].mean()
    pts[mouth, 1] = cy + (pts[mouth, 1] - cy) * rng.uniform(0.6, 2.2)
    jaw = list(scheme.groups["jaw"])
    pts[jaw, 0] = 0.5 + (pts[jaw, 0] - 0.5) * rng.uniform(0.85, 1.1)
    # unit template -> image: random similarity
    side = rng.uniform(0.45, 0.75) * size
    angle = np.deg2rad(rng.uniform(-20, 20))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.12, 0.12, size=2) * size
    landmarks = (pts - 0.55) @ rot.T * side + centre

    background = rng.integers(0, 256, size=(size // 8, size // 8, 3)).astype(np.uint8)
    image = cv2.resize(background, (size, size), interpolation=cv2.INTER_LINEAR)
    skin = tuple(int(v) for v in rng.integers(120, 256, size=3))
    dark = tuple(int(v) for v in rng.integers(0, 70, size=3))
    q = 4  # fixed-point bits for sub-pixel drawing

    def poly(idx, closed, color, thick=1, fill=False):
        p = np.round(landmarks[list(idx)] * (1 << q)).astype(np.int32)[None]
        if fill:
            cv2.fillPoly(image, p, color, lineType=cv2.LINE_AA, shift=q)
        else:
            cv2.polylines(image, p, closed, color, thick, lineType=cv2.LINE_AA, shift=q)

    # face: jaw plus the brow tops closes the outline
    outline = list(scheme.groups["jaw"]) + [46, 45, 44, 43, 42, 37, 36, 35, 34, 33]
    poly(outline, True, skin, fill=True)
    for edge in scheme.edges:
        closed = edge[0] == edge[-1]
        poly(edge[:-1] if closed else edge, closed, dark, 1)
    for i in (96, 97):
        c = tuple(int(v) for v in np.round(landmarks[i] * (1 << q)))
        cv2.circle(image, c, int(max(1.5, side * 0.015) * (1 << q)), dark, -1, cv2.LINE_AA, shift=q)
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    extent = hi - lo
    box = np.concatenate([lo - rng.uniform(-0.04, 0.06, 2) * extent, hi + rng.uniform(-0.04, 0.06, 2) * extent])
    return image, landmarks, box


def make_synthetic_wflw(
    root: str | os.PathLike,
    n_train: int = 32,
    n_test: int = 16,
    size: int = 160,
    seed: int = 0,
) -> Path:
    """Write a tiny synthetic dataset in the WFLW layout (for smoke tests and examples).

    Creates ``root/WFLW_images/synthetic/<split>_<i>.png`` and
    ``root/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_<split>.txt``; attribute flags
    are drawn at random (about one face in three per flag) so every test subset is populated.

    Returns:
        ``root``.
    """
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "WFLW_images" / "synthetic"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for i in range(n):
            image, landmarks, box = render_synthetic_face(rng, size)
            rel = f"synthetic/{split}_{i:05d}.png"
            if not cv2.imwrite(str(root / "WFLW_images" / rel), image):
                raise OSError(f"could not write {root / 'WFLW_images' / rel}")
            flags = tuple(int(v) for v in (rng.random(len(ATTRIBUTES)) < 0.35))
            samples.append(WFLWSample(landmarks=landmarks, box=box, attributes=flags, image_path=rel))
        write_annotations(ann_dir / annotation_filename(split), samples)
    return root
