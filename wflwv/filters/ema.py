"""Exponential moving average: ``y_0 = x_0``, ``y_t = alpha * x_t + (1 - alpha) * y_{t-1}``.

``alpha`` in (0, 1] is the weight of the new frame (``alpha = 1`` is no filtering). It is a per-frame weight:
the time constant in frames is about ``1 / alpha - 1``, so the same ``alpha`` smooths over fewer seconds at a
higher frame rate. Causal; DC gain 1; the lag on a ramp of slope ``v`` (per frame) settles at
``v * (1 - alpha) / alpha`` frames.
"""

from __future__ import annotations

import numpy as np

from wflwv.filters.base import FilterError, OnlineFilter

__all__ = ["EMAFilter", "ema"]


def _check_alpha(alpha) -> float:
    a = float(alpha)
    if not 0.0 < a <= 1.0:
        raise FilterError(f"ema: alpha must be in (0, 1] (weight of the new frame); got {alpha!r}")
    return a


class EMAFilter(OnlineFilter):
    """Streaming exponential moving average (see the module docstring).

    Args:
        alpha: weight of the new frame, in (0, 1].
        fps: frame rate (unused by the maths; kept so every online filter is built the same way).
    """

    def __init__(self, alpha: float = 0.5, fps: float = 30.0):
        super().__init__(fps)
        self.alpha = _check_alpha(alpha)
        self._y: np.ndarray | None = None

    def _reset(self) -> None:
        self._y = None

    def _step(self, x: np.ndarray, dt: float | None) -> np.ndarray:
        if self._y is None:
            self._y = x.copy()
        else:
            self._y = self.alpha * x + (1.0 - self.alpha) * self._y
        return self._y.copy()


def ema(x, alpha: float = 0.5, fps: float = 30.0, timestamps=None) -> np.ndarray:
    """Exponential moving average of a whole clip (same maths as :class:`EMAFilter`).

    Args:
        x: (T, K, 2) trajectory.
        alpha: weight of the new frame, in (0, 1].
        fps, timestamps: accepted for a uniform interface; the EMA works per frame and ignores them.

    Returns:
        (T, K, 2) filtered trajectory, float64.
    """
    return EMAFilter(alpha, fps).run(x, timestamps)
