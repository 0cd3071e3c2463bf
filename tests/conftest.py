"""Shared fixtures: tiny synthetic datasets in the official layout (no downloads, ever)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: public reference data copied into the repository (see tests/data/reference/README.md)
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """4 clips (2 hard, 2 easy) of 12 frames, wflw98; read-only for tests (copy before modifying)."""
    from wflwv.testing import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    make_synthetic_dataset(root, num_hard=2, num_easy=2, num_frames=12)
    return root


@pytest.fixture
def synth_copy(synth_root, tmp_path) -> Path:
    """A private copy of the synthetic dataset that a test may damage."""
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(synth_root, dst)
    return dst


@pytest.fixture(scope="session")
def synth_root68(tmp_path_factory) -> Path:
    """Like :func:`synth_root` but with iBUG-68 landmarks (for 68-point models)."""
    from wflwv.testing import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth68") / "data"
    make_synthetic_dataset(root, num_hard=2, num_easy=2, num_frames=12, scheme="ibug68")
    return root
