"""wflwv: measure and reduce landmark flicker in face video."""
__version__ = "0.1.0"

from wflwv.models import (  # noqa: E402  (re-exported for `import wflwv; wflwv.create_model(...)`)
    FrameInfo,
    LandmarkModel,
    ModelOutput,
    create_model,
    list_models,
    register_model,
)

__all__ = ["FrameInfo", "LandmarkModel", "ModelOutput", "create_model", "list_models", "register_model", "__version__"]
