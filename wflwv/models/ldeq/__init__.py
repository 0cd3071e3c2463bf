"""LDEQ, the landmark deep equilibrium model (paper Sec. 3), in four parts one can read in one sitting each:

* :mod:`~wflwv.models.ldeq.config`: :class:`LDEQConfig` and the translation of released checkpoints' ``args``;
* :mod:`~wflwv.models.ldeq.net`: the network (stem, weight-tied cell, solvers, keypoint readout);
* :mod:`~wflwv.models.ldeq.implicit`: training through the equilibrium (implicit gradient, unrolled);
* :mod:`~wflwv.models.ldeq.model`: the harness plug-in :class:`LDEQModel` with Recurrence without Recurrence.
"""

from wflwv.models.ldeq.config import CELL_NORMS, GRAD_MODES, PAPER_CONFIG, LDEQConfig
from wflwv.models.ldeq.model import LDEQModel
from wflwv.models.ldeq.net import LDEQNet, heatmaps_to_keypoints, normalise_heatmaps

__all__ = [
    "CELL_NORMS",
    "GRAD_MODES",
    "PAPER_CONFIG",
    "LDEQConfig",
    "LDEQModel",
    "LDEQNet",
    "heatmaps_to_keypoints",
    "normalise_heatmaps",
]
