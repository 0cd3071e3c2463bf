"""Training on still images: the WFLW data and augmentations, losses, the shared loop and evaluation.

The command is ``wflwv train`` (:mod:`wflwv.cli.train`); architectures come from :mod:`wflwv.models.archs`.
"""

from wflwv.training.augment import AugmentConfig
from wflwv.training.evaluate import evaluate, format_table
from wflwv.training.loop import TrainConfig, TrainData, TrainResult, load_training_checkpoint, train

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "evaluate",
    "format_table",
    "load_training_checkpoint",
    "train",
]
