"""Weights shipped inside the package: small models trained on the demo's still images (see
``wflwv/models/weights/MODEL_CARD.md`` for the data, the recipe, the command to reproduce them and their numbers).

A registered model created without ``weights`` and without architecture arguments uses its shipped weights when
there are some, and says so on standard error; ``weights="none"`` asks for a randomly initialised network instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["WEIGHTS_DIR", "SHIPPED", "shipped_weights", "resolve_default_weights", "NO_WEIGHTS", "export_for_shipping"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: architecture -> file in WEIGHTS_DIR
SHIPPED = {"ldeq": "ldeq-demo-ibug68.pt", "unet": "unet-demo-ibug68.pt"}
#: the `weights` value that asks for random initialisation
NO_WEIGHTS = "none"


def shipped_weights(arch: str) -> Path | None:
    """The shipped checkpoint of ``arch``, or None when the package has none."""
    name = SHIPPED.get(arch)
    path = WEIGHTS_DIR / name if name else None
    return path if path is not None and path.is_file() else None


def resolve_default_weights(arch: str, weights: str | None, custom_architecture: bool) -> str | None:
    """What a factory should load: the given path; the shipped file when none was given and the architecture is
    the default one; or None (random initialisation) for ``weights="none"`` or a custom architecture."""
    if weights is not None:
        return None if str(weights).lower() == NO_WEIGHTS else str(weights)
    if custom_architecture:
        return None
    path = shipped_weights(arch)
    if path is None:
        return None
    print(
        f"{arch}: no weights given, using the shipped demo weights {path.name} (iBUG-68, trained on the demo's "
        f"still images; see {WEIGHTS_DIR / 'MODEL_CARD.md'}). Pass weights=PATH for your own, weights=none for random.",
        file=sys.stderr,
    )
    return str(path)


def export_for_shipping(checkpoint: str | Path, arch: str, dest: str | Path | None = None) -> Path:
    """Write the slim copy of a `wflwv train` checkpoint that the package ships (no optimizer or RNG state).

    Keeps ``arch``, ``config``, ``scheme``, ``state_dict``, ``epoch``, ``step``, ``metrics`` and ``wflwv_version``.
    """
    from wflwv.models.checkpoints import load_checkpoint, save_checkpoint

    ck = load_checkpoint(checkpoint)
    if ck.get("arch") != arch:
        raise ValueError(f"{checkpoint}: a checkpoint of {ck.get('arch')!r}, not {arch!r}")
    keep = {k: ck[k] for k in ("arch", "config", "scheme", "state_dict", "epoch", "step", "metrics", "wflwv_version") if k in ck}
    keep["state_dict"] = {k: v.detach().clone().contiguous() for k, v in keep["state_dict"].items()}
    return save_checkpoint(Path(dest) if dest else WEIGHTS_DIR / SHIPPED[arch], keep)
