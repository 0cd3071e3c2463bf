"""Wrap a live :class:`~wflwv.models.api.LandmarkModel` with a causal filter running online.

The filter runs in **frame pixels** (so its parameters mean the same whatever the crop scale): crop-pixel
predictions go to the frame through ``FrameInfo.crop_to_frame``, are filtered, and come back through the
inverse affine. The per-clip state handed to the harness is ``(inner_state, filter_state)``; ``None`` (a clip's
first frame) starts a fresh filter. Filter states are copied before each step, so a state object, once
returned, is never modified (re-running from a saved state gives the same numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from wflwv.filters.base import FilterError
from wflwv.filters.parse import parse_filter_option
from wflwv.filters.registry import FilterSetting
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput
from wflwv.protocol.crop import apply_affine, invert_affine

__all__ = ["FilteredModel"]


class FilteredModel(LandmarkModel):
    """A landmark model whose predictions pass through a causal temporal filter, online.

    Args:
        model: the wrapped model.
        setting: a causal :class:`FilterSetting` (``ema``, ``sg-causal``, ``one-euro``) or an option string
            such as ``"one-euro:min_cutoff=1.0,beta=0.1"`` that names exactly one setting.

    Raises:
        FilterError: for a centred filter (``sg`` needs future frames) or an option string that is a sweep.

    Output landmarks are float64 numpy arrays in crop pixels; the wrapped model's stats are passed on and its
    heatmaps are dropped (they describe the unfiltered prediction).
    """

    def __init__(self, model: LandmarkModel, setting: FilterSetting | str):
        if isinstance(setting, str):
            settings = parse_filter_option(setting)
            if len(settings) != 1:
                raise FilterError(
                    f"FilteredModel wraps one filter setting; {setting!r} gives {len(settings)} "
                    f"({', '.join(s.label for s in settings)}). Wrap each one separately."
                )
            setting = settings[0]
        if not isinstance(setting, FilterSetting):
            raise FilterError(f"setting must be a FilterSetting or an option string; got {setting!r}")
        if not setting.causal:
            raise FilterError(
                f"filter {setting.label} is centred: it needs future frames, so it cannot wrap a live model. "
                "Apply it to saved predictions instead (apply_filter / wflwv bench --filter), or use a causal "
                "filter: ema, sg-causal, one-euro"
            )
        self.model = model
        self.setting = setting
        self.scheme = model.scheme
        self.name = f"{model.name or type(model).__name__}+{setting.label}"
        self.device = getattr(model, "device", torch.device("cpu"))

    def to(self, device: str | torch.device) -> FilteredModel:
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "model_config": self.model.config(),
            "filter": self.setting.name,
            "filter_params": dict(self.setting.params),
            "filter_label": self.setting.label,
        }

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """Run the wrapped model, then step each clip's filter in frame pixels (see the module docstring)."""
        if len(states) != len(frames):
            raise ValueError(f"got {len(states)} states for {len(frames)} frames; pass one state per clip")
        inner_states, filters = [], []
        for i, (state, info) in enumerate(zip(states, frames)):
            if state is None:
                inner_states.append(None)
                filters.append(self.setting.online(info.fps))
                continue
            if not (isinstance(state, tuple) and len(state) == 2):
                raise ValueError(
                    f"state {i} ({info.video_id} frame {info.frame_index}) is not one FilteredModel returned: "
                    "expected (inner_state, filter_state); pass None at a clip's first frame"
                )
            inner_states.append(state[0])
            filters.append(state[1].copy())
        out = self.model.predict(images, inner_states, frames)
        crop_lm = out.landmarks_numpy()  # (N, K, 2) crop pixels
        if crop_lm.ndim != 3 or crop_lm.shape[0] != len(frames):
            raise ValueError(
                f"the wrapped model {self.model.name!r} returned landmarks of shape {crop_lm.shape}; "
                f"expected ({len(frames)}, K, 2)"
            )
        result = np.empty_like(crop_lm)
        new_states = []
        for i, (info, filt) in enumerate(zip(frames, filters)):
            c2f = np.asarray(info.crop_to_frame, dtype=np.float64)
            if c2f.shape != (2, 3):
                raise FilterError(f"crop_to_frame must be a (2, 3) affine matrix; got shape {c2f.shape}")
            smoothed = filt.step(apply_affine(crop_lm[i], c2f), t=info.frame_index / filt.fps)
            result[i] = apply_affine(smoothed, invert_affine(c2f))
            new_states.append((out.states[i], filt))
        return ModelOutput(landmarks=result, states=new_states, stats=dict(out.stats), heatmaps=None)
