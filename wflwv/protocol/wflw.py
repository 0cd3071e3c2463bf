"""WFLW still images: the annotation format (reader and writer), file locations and the test subsets.

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

The torch dataset of protocol crops used for training is :class:`wflwv.training.data.WFLWStillDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wflwv.io import atomic_path
from wflwv.schemes import LandmarkScheme, scheme_for_num_points

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
            raise ValueError(
                f"WFLW landmarks must have shape (98, 2) (or (68, 2) for iBUG-68), got {self.landmarks.shape}"
            )
        if self.box.shape != (4,):
            raise ValueError(f"WFLW box must be 4 numbers x_min, y_min, x_max, y_max, got shape {self.box.shape}")
        if len(self.attributes) != len(ATTRIBUTES) or any(a not in (0, 1) for a in self.attributes):
            raise ValueError(
                f"WFLW attributes must be {len(ATTRIBUTES)} flags of 0/1 ({', '.join(ATTRIBUTES)}), got {self.attributes}"
            )

    @property
    def scheme(self) -> LandmarkScheme:
        """The landmark scheme of this sample (by its number of points)."""
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
        raise FileNotFoundError(
            f"WFLW folder {root} does not exist (pass the folder holding WFLW_annotations/ and WFLW_images/)"
        )
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
