"""Models: the plug-in API, the registry, and the built-in models (importing this registers them)."""
from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.registry import create_model, get_model_entry, list_models, register_model

__all__ = [
    "CROP_SIZE",
    "FrameInfo",
    "LandmarkModel",
    "ModelOutput",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
from wflwv.models import sanity  # noqa: E402,F401  (registers oracle, mean-shape, perturbed-oracle)
from wflwv.models import ldeq  # noqa: E402,F401  (registers ldeq)
from wflwv import baselines as _baselines  # noqa: E402,F401  (registers unet, hrnet, hrformer, oracle-ensemble)
from wflwv.dataset import oracle as _dlib68  # noqa: E402,F401  (registers dlib68, the offline 68-point teacher)
