"""The small models shipped with the package (trained on the demo stills; see wflwv/models/weights/MODEL_CARD.md)."""

from __future__ import annotations

import warnings

from wflwv.models import checkpoints, create_model
from wflwv.models.archs import ARCHS, WEIGHTS_DIR, get_arch

SHIPPED = {name: spec.weights for name, spec in ARCHS.items() if spec.weights}


def test_shipped_files_are_small_and_documented():
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert set(SHIPPED) == {"ldeq", "unet"}
    for arch, name in SHIPPED.items():
        path = get_arch(arch).shipped_weights()
        assert path is not None, f"{name} is missing from {WEIGHTS_DIR}"
        assert path.stat().st_size < 10 * 1024 * 1024
        assert name in card and "wflwv train" in card


def test_default_models_use_the_shipped_weights_and_say_so_once(capsys, monkeypatch):
    monkeypatch.setattr(checkpoints, "_NOTICED", set())
    for arch in SHIPPED:
        model = create_model(arch)
        assert model.scheme == "ibug68"
        assert model.config()["weights"] == str(get_arch(arch).shipped_weights())
        assert capsys.readouterr().err.count("shipped demo weights") == 1
        create_model(arch)  # the notice is not repeated
        assert "shipped demo weights" not in capsys.readouterr().err


def test_weights_none_or_a_custom_architecture_means_random_init(capsys):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert create_model("ldeq", weights="none").config()["weights"] is None
        assert (
            create_model("ldeq", injection_width=8, cell_base_width=8, cell_width_increment=2).config()["weights"]
            is None
        )
    assert create_model("unet", size="tiny").config()["weights"] is None
    assert "shipped" not in capsys.readouterr().err
