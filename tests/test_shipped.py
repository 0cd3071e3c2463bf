"""The small models shipped with the package (trained on the demo stills; see wflwv/models/weights/MODEL_CARD.md)."""
from __future__ import annotations

import warnings

from wflwv.models import create_model
from wflwv.models.shipped import SHIPPED, WEIGHTS_DIR, shipped_weights


def test_shipped_files_are_small_and_documented():
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    for arch, name in SHIPPED.items():
        path = shipped_weights(arch)
        assert path is not None, f"{name} is missing from {WEIGHTS_DIR}"
        assert path.stat().st_size < 10 * 1024 * 1024
        assert name in card and "wflwv train" in card


def test_default_models_use_the_shipped_weights_and_say_so(capsys):
    for arch in SHIPPED:
        model = create_model(arch)
        assert model.scheme == "ibug68"
        assert model.config()["weights"] == str(shipped_weights(arch))
        assert "shipped demo weights" in capsys.readouterr().err


def test_weights_none_or_a_custom_architecture_means_random_init(capsys):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert create_model("ldeq", weights="none").config()["weights"] is None
        assert create_model("ldeq", injection_width=8, cell_base_width=8, cell_width_increment=2).config()["weights"] is None
    assert create_model("unet", size="tiny").config()["weights"] is None
    assert "shipped" not in capsys.readouterr().err
