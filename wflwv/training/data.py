"""Training data: WFLW-format still images cropped with the WFLW-V protocol and augmented.

:class:`WFLWStillDataset` crops every face as the WFLW-V evaluation does (:mod:`wflwv.protocol.crop`: square of
side 1.2 x max(w, h) around the box centre, 256 x 256) and optionally applies the training augmentations of
:mod:`wflwv.training.augment`, composed with the crop so that each image is warped only once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wflwv.protocol.crop import CROP_SIZE, apply_affine, crop_matrix, warp_crop
from wflwv.protocol.wflw import WFLWSample, load_wflw, subset_masks
from wflwv.schemes import LandmarkScheme, convert_landmarks, get_scheme
from wflwv.training.augment import compose_affine, photometric, sample_geometry, sample_rng

__all__ = ["WFLWStillDataset"]


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
        sample = self.samples[index]
        image = self.load_image(index)
        points = self.landmarks(index)
        m = crop_matrix(sample.box)
        if self.augment is None:
            return warp_crop(image, m), apply_affine(points, m), m
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
        crop, points, _ = self.crop(index)
        rgb = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1))
        return {
            "image": torch.from_numpy(rgb).float().div_(255.0),
            "keypoints": torch.from_numpy((points / CROP_SIZE).astype(np.float32)),
            "index": index,
        }
