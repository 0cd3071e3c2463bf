"""Models: the plug-in API, the one model registry (built-ins are imported only when asked for), architectures,
solvers and checkpoints."""

from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.registry import check_model_name, create_model, get_model_entry, list_models, register_model

__all__ = [
    "CROP_SIZE",
    "FrameInfo",
    "LandmarkModel",
    "ModelOutput",
    "check_model_name",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
