"""One Euro filter (Casiez, Roussel and Vogel, CHI 2012): a first-order low-pass whose cutoff grows with speed.

Per frame, with ``dt`` the time since the previous frame in seconds:

* smoothing factor of a low-pass with cutoff ``fc`` Hz: ``a(fc) = 1 / (1 + 1 / (2 pi fc dt))``;
* derivative: ``dx_t = (x_t - y_{t-1}) / dt`` (against the previous *filtered* value), low-passed at
  ``d_cutoff`` Hz into ``edx_t``;
* cutoff: ``fc_t = min_cutoff + beta * |edx_t|``; output ``y_t = y_{t-1} + a(fc_t) (x_t - y_{t-1})``.

First frame: ``y_0 = x_0`` and ``edx_0 = 0``. The time step comes from explicit timestamps when given (their
successive differences, so a variable frame rate is followed), else ``1 / fps``. This is the published
algorithm exactly (it reproduces the author's conformance vector).

Frame rate: the cutoffs are in Hz, so with ``beta = 0`` the filter is the same continuous low-pass at any frame
rate (a ramp lags by ``1 / (2 pi min_cutoff)`` seconds at 24 and at 60 fps). With ``beta > 0`` it is only
approximately so: the speed is measured against the previous *output*, which lags the input by ``L`` pixels, so
the speed estimate on a ramp of speed ``v`` is ``v + L / dt`` and grows with the frame rate, giving a higher
cutoff (less lag) at higher fps. Compare ``beta`` values at one frame rate.

Units with landmarks in frame pixels: ``min_cutoff`` and
``d_cutoff`` in Hz, ``beta`` in 1/pixel (Hz of extra cutoff per pixel/second of speed). Everything is
elementwise, so each landmark coordinate has its own speed-dependent cutoff.
"""

from __future__ import annotations

import math

import numpy as np

from wflwv.filters.base import FilterError, OnlineFilter

__all__ = ["OneEuroFilter", "one_euro"]


def _smoothing(cutoff, dt: float):
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz (scalar or array) at time step ``dt`` s."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


def _check_param(name: str, value, allow_zero: bool) -> float:
    v = float(value)
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        rng = "[0, inf)" if allow_zero else "(0, inf)"
        raise FilterError(f"one-euro: {name} must be in {rng}; got {value!r}")
    return v


class OneEuroFilter(OnlineFilter):
    """Streaming One Euro filter (see the module docstring).

    Args:
        min_cutoff: cutoff at rest, Hz (> 0). Lower = less jitter, more lag when slow.
        beta: speed coefficient, 1/pixel (>= 0). Higher = less lag when moving fast.
        d_cutoff: cutoff of the derivative's low-pass, Hz (> 0).
        fps: frame rate used when :meth:`step` gets no time.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.1, d_cutoff: float = 1.0, fps: float = 30.0):
        super().__init__(fps)
        self.min_cutoff = _check_param("min_cutoff", min_cutoff, allow_zero=False)
        self.beta = _check_param("beta", beta, allow_zero=True)
        self.d_cutoff = _check_param("d_cutoff", d_cutoff, allow_zero=False)
        self._y: np.ndarray | None = None
        self._dy: np.ndarray | None = None

    def _reset(self) -> None:
        self._y = None
        self._dy = None

    def _step(self, x: np.ndarray, dt: float | None) -> np.ndarray:
        if self._y is None or dt is None:
            self._y = x.copy()
            self._dy = np.zeros_like(x)
            return self._y.copy()
        if dt <= 0:
            raise FilterError(f"one-euro: the time step must be positive; got {dt!r} s")
        speed = (x - self._y) / dt
        self._dy = self._dy + _smoothing(self.d_cutoff, dt) * (speed - self._dy)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dy)
        self._y = self._y + _smoothing(cutoff, dt) * (x - self._y)
        return self._y.copy()


def one_euro(
    x, min_cutoff: float = 1.0, beta: float = 0.1, d_cutoff: float = 1.0, fps: float = 30.0, timestamps=None
) -> np.ndarray:
    """One Euro filter of a whole clip (same maths as :class:`OneEuroFilter`).

    Args:
        x: (T, K, 2) trajectory (frame pixels for the units of ``beta`` to hold).
        min_cutoff, beta, d_cutoff: as for :class:`OneEuroFilter`.
        fps: frame rate; frame t is at ``t / fps`` seconds unless ``timestamps`` are given.
        timestamps: optional (T,) frame times in seconds, strictly increasing (overrides ``fps``).

    Returns:
        (T, K, 2) filtered trajectory, float64.
    """
    return OneEuroFilter(min_cutoff, beta, d_cutoff, fps).run(x, timestamps)
