"""Training on WFLW still images: augmentations, losses, the shared loop and the ``wflwv train`` command.

Importing this package is light; the heavy pieces (torch data loading, architectures) load on use.
"""
from wflwv.training.archs import ARCHS, apply_overrides, build_net, resolve_arch
from wflwv.training.augment import AugmentConfig
from wflwv.training.loop import TrainConfig, TrainData, TrainResult, evaluate, load_trained_net, load_training_checkpoint, train

__all__ = [
    "ARCHS",
    "AugmentConfig",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "apply_overrides",
    "build_net",
    "evaluate",
    "load_trained_net",
    "load_training_checkpoint",
    "resolve_arch",
    "train",
]
