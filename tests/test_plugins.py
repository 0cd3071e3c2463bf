"""Third-party models: the decorator, and discovery through the `wflwv.models` entry-point group."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wflwv.models import create_model, list_models, register_model
from wflwv.models.registry import _REGISTRY


def _install_fake_distribution(site: Path) -> None:
    """A separately installed package as pip leaves it: a module plus a .dist-info with entry_points.txt."""
    (site / "acme_landmarks.py").write_text(
        textwrap.dedent(
            '''
            import numpy as np
            from wflwv.models import LandmarkModel, ModelOutput
            from wflwv.schemes import template_shape

            class AcmeModel(LandmarkModel):
                """ACME's landmark model (a shifted mean face)."""
                scheme = "wflw98"
                def __init__(self, shift: float = 3.0):
                    self.shift = shift
                def predict(self, images, states, frames):
                    pts = np.repeat(template_shape("wflw98")[None] * 256 + self.shift, len(frames), axis=0)
                    return ModelOutput(pts, [None] * len(frames))
            '''
        )
    )
    dist = site / "acme_landmarks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-landmarks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[wflwv.models]\nacme = acme_landmarks:AcmeModel\n")


@pytest.mark.slow
def test_entry_point_model_is_listed_and_benched(tmp_path, synth_root):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "wflwv.cli"]
    listed = subprocess.run(cmd + ["models"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^acme\s+ACME's landmark model .*\[acme-landmarks\]", listed.stdout, re.M), listed.stdout
    out = tmp_path / "run"
    bench = subprocess.run(
        cmd
        + [
            "bench",
            "--model",
            "acme",
            "--model-arg",
            "shift=5",
            "--data",
            str(synth_root),
            "--out",
            str(out),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stderr
    assert (out / "per_video.csv").is_file() and "acme" in (out / "run.json").read_text()


def test_entry_point_not_imported_until_asked(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site)
    (site / "acme_landmarks.py").write_text("raise ImportError('boom: acme is broken')\n")
    monkeypatch.syspath_prepend(str(site))
    assert "acme" in list_models()  # listed without importing
    with pytest.raises(RuntimeError, match="acme.*could not be imported.*boom"):
        create_model("acme")


def test_register_decorator_and_errors():
    @register_model("test-dummy-xyz")
    class Dummy:
        """Dummy."""

        scheme = "wflw98"

        def __init__(self, a: int = 1):
            self.a = a

        def predict(self, images, states, frames):
            raise NotImplementedError

    try:
        assert create_model("test-dummy-xyz", a=3).a == 3
        with pytest.raises(TypeError, match="does not accept argument.*b.*accepted: a"):
            create_model("test-dummy-xyz", b=1)
        with pytest.raises(ValueError, match="already registered"):
            register_model("test-dummy-xyz")(type("Other", (), {"predict": lambda *a: None}))
        with pytest.raises(KeyError, match="unknown model 'nope'.*oracle"):
            create_model("nope")
    finally:
        _REGISTRY.pop("test-dummy-xyz", None)
