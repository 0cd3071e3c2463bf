"""wflwv: measure and reduce landmark flicker in face video.

``import wflwv`` is light: the model API is imported on first use of one of the names below.
"""

__version__ = "0.2.0"

__all__ = ["FrameInfo", "LandmarkModel", "ModelOutput", "create_model", "list_models", "register_model", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        import wflwv.models as _models

        return getattr(_models, name)
    raise AttributeError(f"module 'wflwv' has no attribute {name!r}")
