"""Several CPU threads for inference without changing a single bit of the numbers.

Torch's own intra-op threads change rounding (a one-by-one convolution's matrix product sums in another order on
two threads than on one, and the convolution backend chosen depends on the thread count), and RwR on a random
network amplifies such differences to pixels. So every kernel here runs on **one** thread, as the sequential
evaluation's, and the parallelism is above the kernels:

* :func:`run_tasks` -- independent tasks (the samples of a batch, each solved as a batch of one) shared by the
  calling thread and a pool of helper threads (torch releases the GIL inside its kernels);
* :func:`predict_per_sample` -- any landmark model, each sample of a ``predict`` call computed alone on one-threaded
  kernels, the samples spread over threads: numbers that depend neither on which frames or clips share a call nor
  on the machine's thread count (the harness's exact mode);
* :func:`split_convolutions` -- for a batch of one: a large convolution is computed as a few convolutions over
  slices of its output channels on those threads and concatenated (a slice's outputs are the same numbers as the
  whole convolution's; ``tests/test_ldeq.py`` checks it).

Work is handed out dynamically: the calling thread takes tasks too and never waits for a helper that has not
started, so a busy machine costs at most the task a descheduled helper holds. CPU only: on a GPU the model makes
batched calls instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wflwv.models.api import ModelOutput

__all__ = [
    "one_thread",
    "cpu_threads",
    "spread_over",
    "run_tasks",
    "predict_per_sample",
    "split_convolutions",
    "convolution_splitter",
    "CHANNEL_ALIGN",
]

#: output-channel slices start at multiples of this (the channel blocking of the x86 convolution kernels)
CHANNEL_ALIGN = 16
#: a convolution is split only into slices of at least this many multiply-adds: handing a slice over, and preparing
#: the input once more for it, must be small beside the slice's work (the demo model's convolutions stay whole, the
#: paper-size model's are split)
MIN_SLICE_MACS = 16_000_000
#: slices of a split convolution per thread (more balance the load when a thread is slow to start, but every
#: slice repeats the preparation of the input: layout change or unfolding)
SLICES_PER_THREAD = 1

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
_SPLIT: ContextVar[Callable[..., torch.Tensor] | None] = ContextVar("ldeq_convolution_split", default=None)
_BUDGET: ContextVar[int | None] = ContextVar("wflwv_cpu_threads", default=None)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread in this block (the caller's count is given back afterwards)."""
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


def cpu_threads() -> int:
    """The CPU threads the work above the kernels may use here: what :func:`spread_over` set for this thread, else
    torch's intra-op thread count."""
    budget = _BUDGET.get()
    return torch.get_num_threads() if budget is None else budget


@contextlib.contextmanager
def spread_over(threads: int) -> Iterator[None]:
    """In this block the calling thread computes on one torch thread, and :func:`cpu_threads` says ``threads``: the
    parallel work is the tasks handed to :func:`run_tasks`, never torch's own thread pool.

    A whole frame loop runs inside this (the harness's exact mode on a CPU): an OpenMP thread woken by a small
    step between two ``predict`` calls spins for a while after it, and that takes a core from the helper threads
    and from the decoding of the next clips.
    """
    token = _BUDGET.set(max(int(threads), 1))
    try:
        with one_thread():
            yield
    finally:
        _BUDGET.reset(token)


def _forget_pool() -> None:  # a forked child has none of the parent's threads: it makes its own pool on demand
    global _POOL, _POOL_SIZE, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_LOCK = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _helper_init() -> None:
    torch.set_num_threads(1)


def _pool(helpers: int) -> ThreadPoolExecutor:
    """The shared helper threads (at least ``helpers`` of them; grown on demand, never shrunk)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < helpers:
            old = _POOL
            _POOL = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="wflwv-cpu", initializer=_helper_init)
            _POOL_SIZE = helpers
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def _callers_modes(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped to run under the calling thread's grad / inference / CPU autocast modes (all thread-local)."""
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()
    autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    def run() -> Any:
        if torch.get_num_threads() != 1:  # a helper thread always computes on one thread
            torch.set_num_threads(1)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode() if inference else torch.set_grad_enabled(grad))
            if autocast is not None:
                stack.enter_context(torch.autocast("cpu", dtype=autocast))
            return fn()

    return run


def run_tasks(tasks: Sequence[Callable[[], Any]], threads: int) -> list[Any]:
    """Results of ``tasks`` in order, computed by the calling thread and up to ``threads - 1`` helper threads.

    Each task runs on one torch thread under the caller's grad / inference / autocast modes. The caller must itself
    be on one torch thread (:func:`one_thread`). An exception in a task is raised here after every task has ended.
    """
    n = len(tasks)
    helpers = min(threads, n) - 1
    if helpers <= 0:
        return [t() for t in tasks]
    wrapped = [_callers_modes(t) for t in tasks]
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n
    counter = itertools.count()
    done = threading.Semaphore(0)

    def drain() -> None:
        while (i := next(counter)) < n:  # next() on a count is atomic under the GIL
            try:
                results[i] = wrapped[i]()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors[i] = exc
            done.release()

    pool = _pool(helpers)
    for _ in range(helpers):
        pool.submit(drain)
    drain()
    for _ in range(n):  # a helper that starts after the caller has taken every task finds none and returns
        done.acquire()
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def predict_per_sample(model, images: torch.Tensor, states: Sequence[Any], frames: Sequence[Any], threads: int):
    """``model.predict`` on each sample alone (a batch of one on one-threaded kernels), samples spread over
    ``threads`` CPU threads, outputs put back together as one :class:`~wflwv.models.api.ModelOutput`.

    The numbers are those of one sample after another on one thread, whatever the batch and the thread count.
    """
    n = images.shape[0]
    tasks = [lambda i=i: model.predict(images[i : i + 1], [states[i]], [frames[i]]) for i in range(n)]
    with one_thread():
        outs = run_tasks(tasks, threads)
    landmarks = [o.landmarks for o in outs]
    if all(isinstance(lm, torch.Tensor) for lm in landmarks):
        landmarks = torch.cat([lm.detach().cpu() for lm in landmarks])
    else:
        landmarks = np.concatenate([o.landmarks_numpy() for o in outs])
    stats = {k: np.concatenate([o.stats_numpy()[k] for o in outs]) for k in outs[0].stats}
    heatmaps = None
    if all(o.heatmaps is not None for o in outs):
        heatmaps = torch.cat([torch.as_tensor(o.heatmaps).detach().cpu() for o in outs])
    return ModelOutput(landmarks, [s for o in outs for s in o.states], stats, heatmaps)


def convolution_splitter(threads: int, min_slice_macs: int | None = None) -> Callable[..., torch.Tensor | None]:
    """``split(conv, x, act)``: ``act(conv(x))`` computed over output-channel slices on ``threads`` threads
    (slices of at least ``min_slice_macs`` multiply-adds; None: :data:`MIN_SLICE_MACS`), or None for a convolution
    too small to split (the caller computes it as usual)."""
    least = max(int(MIN_SLICE_MACS if min_slice_macs is None else min_slice_macs), 1)

    def split(
        conv: torch.nn.Conv2d, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor | None:
        c_out = conv.out_channels
        kh, kw = conv.kernel_size
        h_out = (x.shape[-2] + 2 * conv.padding[0] - kh) // conv.stride[0] + 1
        w_out = (x.shape[-1] + 2 * conv.padding[1] - kw) // conv.stride[1] + 1
        macs = x.shape[0] * c_out * (conv.in_channels // conv.groups) * kh * kw * h_out * w_out
        pieces = min(SLICES_PER_THREAD * threads, c_out // CHANNEL_ALIGN, macs // least)
        if pieces < 2 or conv.groups != 1 or conv.padding_mode != "zeros":
            return None
        cuts = sorted({round(c_out * j / pieces / CHANNEL_ALIGN) * CHANNEL_ALIGN for j in range(1, pieces)} - {0})
        edges = [0, *[c for c in cuts if c < c_out], c_out]
        w, b = conv.weight, conv.bias

        def piece(lo: int, hi: int) -> Callable[[], torch.Tensor]:
            return lambda: act(
                F.conv2d(x, w[lo:hi], None if b is None else b[lo:hi], conv.stride, conv.padding, conv.dilation)
            )

        return torch.cat(run_tasks([piece(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])], threads), dim=1)

    return split


@contextlib.contextmanager
def split_convolutions(threads: int) -> Iterator[None]:
    """In this block (this thread only), LDEQ's convolution blocks split their large convolutions over ``threads``
    threads by output channels (see the module docstring). ``threads <= 1``: no change."""
    if threads <= 1:
        yield
        return
    token = _SPLIT.set(convolution_splitter(threads))
    try:
        yield
    finally:
        _SPLIT.reset(token)


def current_splitter() -> Callable[..., torch.Tensor] | None:
    """The splitter :func:`split_convolutions` set for this thread, or None."""
    return _SPLIT.get()
