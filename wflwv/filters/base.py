"""Shared pieces of the temporal filters: input checks, the streaming-filter base class, polynomial-fit weights.

Every filter works on a trajectory ``x: (T, K, 2)`` (T frames, K landmarks, x/y in frame pixels). The maths is
elementwise across the trailing axes, so any trailing shape ``(T, ...)`` works (a 1-D signal ``(T,)`` too).
"""

from __future__ import annotations

import abc
import copy
import math

import numpy as np

__all__ = ["FilterError", "OnlineFilter", "check_trajectory", "check_fps", "check_timestamps", "poly_fit_weights"]


class FilterError(ValueError):
    """A filter was asked for with a bad name, parameter or input (the message says how to fix it)."""


def check_trajectory(x, what: str = "landmarks") -> np.ndarray:
    """``x`` as a float64 array ``(T, ...)`` (a copy is never made when not needed).

    Raises:
        FilterError: for a 0-d input or non-numeric data.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"{what} must be a numeric array of shape (T, K, 2); got {type(x).__name__}") from exc
    if arr.ndim == 0:
        raise FilterError(f"{what} must have a leading time axis, shape (T, K, 2); got a scalar")
    return arr


def check_fps(fps) -> float:
    """``fps`` as a positive finite float."""
    try:
        val = float(fps)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"fps must be a positive number (frames per second); got {fps!r}") from exc
    if not math.isfinite(val) or val <= 0:
        raise FilterError(f"fps must be a positive finite number (frames per second); got {fps!r}")
    return val


def check_timestamps(timestamps, num_frames: int) -> np.ndarray:
    """``timestamps`` as a strictly increasing float64 array ``(T,)`` in seconds."""
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.shape[0] != num_frames:
        raise FilterError(
            f"timestamps must have one entry per frame: got {ts.shape[0]} timestamps for {num_frames} frames"
        )
    if not np.all(np.isfinite(ts)):
        raise FilterError("timestamps must be finite numbers (seconds)")
    if num_frames > 1 and not np.all(np.diff(ts) > 0):
        bad = int(np.argmin(np.diff(ts) > 0)) + 1
        raise FilterError(
            f"timestamps must be strictly increasing (seconds); timestamp {bad} ({ts[bad]!r}) does not come "
            f"after timestamp {bad - 1} ({ts[bad - 1]!r})"
        )
    return ts


class OnlineFilter(abc.ABC):
    """A causal filter fed one frame at a time.

    ``step(x)`` takes the current frame ``x: (K, 2)`` (any shape, as long as it stays the same within a clip)
    and returns the filtered frame, using only this and earlier frames. ``reset()`` forgets the clip, so the
    next ``step`` is treated as a first frame. ``copy()`` returns an independent copy of the state.
    """

    def __init__(self, fps: float):
        self.fps = check_fps(fps)
        self._last_time = 0.0
        self._shape: tuple[int, ...] = ()
        self.num_steps = 0

    @abc.abstractmethod
    def _step(self, x: np.ndarray, dt: float | None) -> np.ndarray:
        """Filter one frame; ``dt`` is the time since the previous frame in seconds (None at the first)."""

    @abc.abstractmethod
    def _reset(self) -> None:
        """Forget the filter-specific state."""

    def step(self, x, t: float | None = None) -> np.ndarray:
        """Filter one frame.

        Args:
            x: (K, 2) current landmarks (any shape; it must not change within a clip).
            t: optional time of this frame in seconds. Without it the frame is taken to come ``1 / fps`` after
                the previous one. Only filters whose parameters are in Hz (``one-euro``) use the time.

        Returns:
            (K, 2) filtered landmarks, float64 (a new array).
        """
        arr = np.array(x, dtype=np.float64)  # always a copy: the caller may reuse its buffer
        if t is not None:
            t = float(t)
            if not math.isfinite(t):
                raise FilterError(f"frame time must be a finite number of seconds; got {t!r}")
        if self.num_steps == 0:
            self._shape = arr.shape
            dt = None
            t = 0.0 if t is None else t
        elif arr.shape != self._shape:
            raise FilterError(
                f"frame shape changed within a clip: {arr.shape} after {self._shape}; call reset() to start a new clip"
            )
        elif t is None:
            dt = 1.0 / self.fps
            t = self._last_time + dt
        else:
            dt = t - self._last_time
            if dt <= 0:
                raise FilterError(
                    f"frame times must increase: got t={t!r} after t={self._last_time!r}; call reset() to "
                    "start a new clip"
                )
        out = self._step(arr, dt)
        self._last_time = t
        self.num_steps += 1
        return out

    def reset(self) -> None:
        """Start a new clip: the next :meth:`step` is a first frame."""
        self._last_time = 0.0
        self.num_steps = 0
        self._reset()

    def copy(self) -> OnlineFilter:
        """An independent copy (stepping it leaves this one untouched)."""
        return copy.deepcopy(self)

    def run(self, x, timestamps=None) -> np.ndarray:
        """Reset, then filter a whole clip frame by frame.

        Args:
            x: (T, K, 2) trajectory.
            timestamps: optional (T,) frame times in seconds (strictly increasing).

        Returns:
            (T, K, 2) filtered trajectory, float64.
        """
        arr = check_trajectory(x)
        ts = None if timestamps is None else check_timestamps(timestamps, arr.shape[0])
        self.reset()
        out = np.empty_like(arr)
        for i in range(arr.shape[0]):
            out[i] = self.step(arr[i], None if ts is None else ts[i])
        return out


def poly_fit_weights(positions: np.ndarray, targets: np.ndarray, order: int) -> np.ndarray:
    """Linear weights of a least-squares polynomial fit evaluated at other positions.

    Fitting a polynomial of degree ``order`` to samples ``y`` at ``positions`` (n,) and evaluating it at
    ``targets`` (m,) is linear in ``y``: the result is ``W @ y`` with the returned ``W`` of shape (m, n).
    Requires ``order < n`` (callers lower the order for short windows).
    """
    positions = np.asarray(positions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = positions.shape[0]
    if not 0 <= order < n:
        raise FilterError(f"a polynomial of order {order} needs at least {order + 1} samples; got {n}")
    # centre and scale the abscissa to about [-1, 1] so the Vandermonde matrix stays well conditioned
    centre = 0.5 * (positions.min() + positions.max())
    scale = max(0.5 * (positions.max() - positions.min()), 1.0)
    v = np.vander((positions - centre) / scale, order + 1, increasing=True)  # (n, order+1)
    e = np.vander((targets - centre) / scale, order + 1, increasing=True)  # (m, order+1)
    return e @ np.linalg.pinv(v)
