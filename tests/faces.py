"""Real-face material shared by the tests that need dlib: a portrait and the check that dlib's model is there."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def portrait() -> np.ndarray:
    """matplotlib's sample portrait (Grace Hopper), BGR; skips the test when it is not installed."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib's sample portrait is not installed")
    return cv2.imread(str(path))


def needs_dlib() -> None:
    """Skip the test unless dlib and its 68-point model (face-recognition-models) are installed."""
    pytest.importorskip("dlib")
    from wflwv.baselines.dlib68 import dlib_predictor_path

    try:
        dlib_predictor_path()
    except FileNotFoundError:
        pytest.skip("face-recognition-models (dlib's 68-point model) is not installed")
