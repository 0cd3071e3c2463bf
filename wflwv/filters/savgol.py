"""Savitzky-Golay filters: a least-squares polynomial of order ``order`` fitted to a window of ``window`` frames.

Both forms count the window in frames (not seconds), so the same setting smooths over fewer seconds at a higher
frame rate. A polynomial of degree <= ``order`` passes through unchanged.

``sg`` (centred, offline, :func:`savgol`)
    ``window`` is odd; frame t gets the value at t of the polynomial fitted to frames ``t - h .. t + h``
    (``h = window // 2``): zero lag, but it needs ``h`` future frames. Edges: the first ``h`` frames get the
    polynomial fitted to the first ``window`` frames evaluated at their positions, the last ``h`` frames likewise
    with the last ``window`` frames (scipy's ``mode='interp'``). A clip shorter than the window gets one
    polynomial fitted to the whole clip, of order ``min(order, T - 1)`` (so a clip of at most ``order + 1``
    frames comes back unchanged).

``sg-causal`` (online, :class:`SGCausalFilter`, :func:`savgol_causal`)
    Frame t gets the value at t of the polynomial fitted to the last ``window`` frames ``t - window + 1 .. t``.
    At the start of a clip only ``n = t + 1 < window`` frames exist: the fit uses those ``n`` frames with the
    order lowered to ``min(order, n - 1)``. A fit through at most ``order + 1`` points interpolates them, so the
    first ``order + 1`` frames of a clip come back unchanged; smoothing starts with frame ``order + 1``. Evaluating a fit at the end of its window amplifies noise more than at the
    centre, increasingly so with the order: order 1 or 2 with window 7 to 15 are sensible.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from wflwv.filters.base import FilterError, OnlineFilter, check_trajectory, poly_fit_weights

__all__ = ["savgol", "savgol_causal", "SGCausalFilter", "savgol_weights", "causal_savgol_weights"]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise FilterError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if value < low:
        raise FilterError(f"{name} must be >= {low}; got {value}")
    return value


def _check_centred(window, order) -> tuple[int, int]:
    window = _check_int("sg: window", window, 1)
    order = _check_int("sg: order", order, 0)
    if window % 2 == 0:
        raise FilterError(f"sg: window must be odd (the window is centred on the frame); got {window}")
    if order >= window:
        raise FilterError(f"sg: order must be smaller than window; got order={order}, window={window}")
    return window, order


def _check_causal(window, order) -> tuple[int, int]:
    window = _check_int("sg-causal: window", window, 1)
    order = _check_int("sg-causal: order", order, 0)
    if order >= window:
        raise FilterError(f"sg-causal: order must be smaller than window; got order={order}, window={window}")
    return window, order


def savgol_weights(window: int, order: int) -> np.ndarray:
    """Weights of the centred filter, ``(window,)``: ``y_t = sum_j w_j x_{t - h + j}``."""
    window, order = _check_centred(window, order)
    h = window // 2
    return poly_fit_weights(np.arange(window), np.array([h]), order)[0]


def causal_savgol_weights(window: int, order: int) -> list[np.ndarray]:
    """Weights of the causal filter for every number of available frames.

    Returns a list whose entry ``n - 1`` (n = 1..window) is ``(n,)`` weights applied to the last n frames,
    oldest first, with the order lowered to ``min(order, n - 1)``.
    """
    window, order = _check_causal(window, order)
    return [poly_fit_weights(np.arange(n), np.array([n - 1]), min(order, n - 1))[0] for n in range(1, window + 1)]


def savgol(x, window: int = 9, order: int = 2, fps: float | None = None, timestamps=None) -> np.ndarray:
    """Centred Savitzky-Golay filter of a whole clip (edges as in the module docstring).

    Args:
        x: (T, K, 2) trajectory.
        window: odd window length in frames.
        order: polynomial order, ``0 <= order < window``.
        fps, timestamps: accepted for a uniform interface; the filter works per frame and ignores them.

    Returns:
        (T, K, 2) filtered trajectory, float64.
    """
    window, order = _check_centred(window, order)
    arr = check_trajectory(x)
    num = arr.shape[0]
    if num == 0:
        return arr.copy()
    if num < window:
        w = poly_fit_weights(np.arange(num), np.arange(num), min(order, num - 1))  # (T, T)
        return np.tensordot(w, arr, axes=(1, 0))
    h = window // 2
    out = np.empty_like(arr)
    centre = savgol_weights(window, order)  # (window,)
    # interior: y_t = sum_j w_j x_{t-h+j}; sliding_window_view puts the window on the last axis
    windows = np.lib.stride_tricks.sliding_window_view(arr, window, axis=0)  # (T-window+1, ..., window)
    out[h : num - h] = windows @ centre
    if h:
        edge = poly_fit_weights(np.arange(window), np.arange(h), order)  # (h, window)
        out[:h] = np.tensordot(edge, arr[:window], axes=(1, 0))
        edge_end = poly_fit_weights(np.arange(window), np.arange(window - h, window), order)  # (h, window)
        out[num - h :] = np.tensordot(edge_end, arr[num - window :], axes=(1, 0))
    return out


class SGCausalFilter(OnlineFilter):
    """Streaming causal Savitzky-Golay filter (see the module docstring).

    Args:
        window: number of frames fitted (the current one and ``window - 1`` before it).
        order: polynomial order, ``0 <= order < window`` (lowered while fewer than ``order + 1`` frames exist).
        fps: frame rate (unused by the maths; the window is in frames).
    """

    def __init__(self, window: int = 9, order: int = 1, fps: float = 30.0):
        super().__init__(fps)
        self.window, self.order = _check_causal(window, order)
        self._weights = causal_savgol_weights(self.window, self.order)
        self._buffer: deque[np.ndarray] = deque(maxlen=self.window)

    def _reset(self) -> None:
        self._buffer.clear()

    def _step(self, x: np.ndarray, dt: float | None) -> np.ndarray:
        self._buffer.append(x)
        w = self._weights[len(self._buffer) - 1]
        return np.tensordot(w, np.stack(self._buffer), axes=(0, 0))


def savgol_causal(x, window: int = 9, order: int = 1, fps: float = 30.0, timestamps=None) -> np.ndarray:
    """Causal Savitzky-Golay filter of a whole clip (same maths as :class:`SGCausalFilter`).

    Args:
        x: (T, K, 2) trajectory.
        window, order: as for :class:`SGCausalFilter`.
        fps, timestamps: accepted for a uniform interface; ignored (the window is in frames).

    Returns:
        (T, K, 2) filtered trajectory, float64.
    """
    return SGCausalFilter(window, order, fps).run(x, timestamps)
