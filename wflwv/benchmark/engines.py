"""Execution engines: where the model pass of a bench runs. The harness (:mod:`wflwv.benchmark.harness`) stays the
same above them: it hands an engine groups of clip IDs and gets back :class:`~wflwv.benchmark.inference.ClipOutcome`
objects, which it alone scores and writes to the run folder.

* :class:`InProcessEngine` (the default): the model runs in this process; the next group's videos are decoded and
  cropped in threads while the model works on the current one.
* :class:`RayEngine`: one Ray actor per worker, each holding its own copy of the model, built once when the actor
  starts. A group of clips (``batch_videos`` clips; one clip by default) is the unit of work, so a stateful model
  keeps its per-clip state inside one call. Workers decode their clips themselves from the dataset path (which
  must be the same on every node: ``docs/cluster.md``); only clip IDs go out and predictions come back.

How the model gets to the workers: the model **object** is sent, once, through Ray's object store (pickled with
Ray's cloudpickle), and each worker moves it to its device. This way a model created in Python (a plug-in
registered in a script, a model with hand-set attributes) runs exactly as it would in-process, with no need to
re-create it from a registry name on the workers. The classes of models defined outside installed packages
(a script, a notebook, a test file) are pickled by value so workers need not import them.

Faults: a worker that dies (killed, out of memory, node lost) is replaced by a new one and the clips it held go
back to the queue; a group is tried at most ``max_attempts`` times, then its clips are recorded as failed with the
reason. A clip that fails for a reason of its own (unreadable video, the model raising) is returned as a failed
outcome by the worker and is not retried, exactly as in-process.
"""

from __future__ import annotations

import abc
import collections
import importlib.util
import os
import socket
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from wflwv.benchmark.cluster import ClusterError, ClusterSpec, RayCluster, wflwv_version
from wflwv.benchmark.inference import (
    DEFAULT_FRAME_BATCH,
    BenchError,
    ClipOutcome,
    auto_batch_videos,
    check_precision,
    failed_outcome,
    load_clip,
    run_group,
)
from wflwv.models.api import LandmarkModel, resolve_device
from wflwv.protocol.layout import DatasetError, WFLWVDataset
from wflwv.schemes import get_scheme

__all__ = ["BenchJob", "Engine", "InProcessEngine", "RayEngine", "ClusterError"]

#: seconds to wait for Ray workers to be placed and to build their model
WORKER_START_TIMEOUT = 300.0


@dataclass
class BenchJob:
    """What every worker needs to run the model pass (the harness fills it in)."""

    model: LandmarkModel
    dataset: WFLWVDataset
    model_scheme: str
    device: str = "auto"
    frame_batch: int = DEFAULT_FRAME_BATCH
    precision: str = "fp32"
    #: every sample computed alone on one-threaded kernels on a CPU (:func:`wflwv.models.parallel.predict_per_sample`)
    exact: bool = True
    #: the clips of this run, so that workers can check they see them
    video_ids: list[str] = field(default_factory=list)


class Engine(abc.ABC):
    """Runs the model pass of groups of clips somewhere; see the module docstring."""

    name: str = ""

    @abc.abstractmethod
    def start(self, job: BenchJob) -> dict[str, Any]:
        """Get ready to run ``job`` (check the device, start workers); returns a description for provenance."""

    @abc.abstractmethod
    def run(self, groups: Sequence[Sequence[str]]) -> Iterator[list[ClipOutcome]]:
        """Yield the outcomes of each group of clip IDs as it finishes (in any order)."""

    def close(self) -> None:  # noqa: B027  (optional: engines without workers have nothing to release)
        """Release workers (called once, also after an error)."""

    def describe(self) -> dict[str, Any]:
        """The engine's settings, for provenance when it is not started (nothing to do)."""
        return {"name": self.name}

    def auto_batch_videos(self) -> int:
        """Clips per group for ``batch_videos="auto"``, once started (:func:`~wflwv.benchmark.inference.auto_batch_videos`
        for where and on how many threads the model runs)."""
        return 1


# ------------------------------------------------------------------------------------------------------------------
class InProcessEngine(Engine):
    """The model runs in this process (decoding of the next group overlaps the model in two threads)."""

    name = "in-process"

    def __init__(self):
        self.job: BenchJob | None = None
        self.device: torch.device | None = None

    def start(self, job: BenchJob) -> dict[str, Any]:
        try:
            self.device = resolve_device(job.device)
        except ValueError as exc:
            raise BenchError(str(exc)) from None
        check_precision(job.precision, self.device)
        job.model.to(self.device)
        self.job = job
        return {**self.describe(), "device": str(self.device), "threads": torch.get_num_threads()}

    def auto_batch_videos(self) -> int:
        assert self.device is not None, "start() first"
        return auto_batch_videos(self.device.type, torch.get_num_threads())

    def run(self, groups: Sequence[Sequence[str]]) -> Iterator[list[ClipOutcome]]:
        job, dev = self.job, self.device
        assert job is not None and dev is not None, "start() first"
        ds = job.dataset
        scheme = get_scheme(job.model_scheme)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending: list[Future] = [pool.submit(load_clip, ds, v) for v in groups[0]] if groups else []
            for gi, group in enumerate(groups):
                futures = pending
                pending = [pool.submit(load_clip, ds, v) for v in groups[gi + 1]] if gi + 1 < len(groups) else []
                loaded, failed = [], []
                for vid, fut in zip(group, futures):
                    try:
                        loaded.append(fut.result())
                    except Exception as exc:
                        failed.append(failed_outcome(vid, ds.split_of(vid), exc))
                if failed:
                    yield failed
                if loaded:
                    yield run_group(
                        job.model,
                        loaded,
                        device=dev,
                        dataset_root=ds.root,
                        model_scheme=scheme,
                        frame_batch=job.frame_batch,
                        precision=job.precision,
                        exact=job.exact,
                    )


# ------------------------------------------------------------------------------------------------------------------
# Ray
def _installed_module(module_name: str) -> bool:
    """True for modules that every node can import by name: the standard library, installed packages, wflwv."""
    if module_name.split(".")[0] in ("wflwv", "builtins") or module_name in sys.builtin_module_names:
        return True
    mod = sys.modules.get(module_name)
    file = getattr(mod, "__file__", None)
    if not file:
        spec = importlib.util.find_spec(module_name) if mod is None else getattr(mod, "__spec__", None)
        file = getattr(spec, "origin", None)
    if not file:
        return False
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    file = os.path.realpath(file)
    return any(file.startswith(os.path.realpath(r) + os.sep) for r in roots)


def _local_modules(model: Any) -> list[str]:
    """Modules defining the model's classes (and its network's) that workers may not be able to import."""
    classes = list(type(model).__mro__)
    net = getattr(model, "net", None)
    if net is not None:
        classes += list(type(net).__mro__)
    names = {c.__module__ for c in classes if c.__module__ not in (None, "__main__")}
    return sorted(n for n in names if n in sys.modules and not _installed_module(n))


class _BenchWorker:
    """A Ray actor: one model, built once, running groups of clips (see the module docstring)."""

    def __init__(self, model: LandmarkModel, settings: dict[str, Any]):
        self.error: str | None = None
        self.model = model
        self.settings = settings
        self.prefetched: dict[str, Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=1)
        host = socket.gethostname()
        try:
            torch.set_num_threads(settings["threads"])
            if settings["wflwv_version"] != wflwv_version():
                raise ClusterError(
                    f"the driver runs wflwv {settings['wflwv_version']} but this worker has {wflwv_version()}; "
                    "install the same version on every node"
                )
            self.dataset = _open_dataset(settings["dataset_root"], settings["video_ids"])
            self.device = resolve_device(settings["device"])
            check_precision(settings["precision"], self.device)
            self.model.to(self.device)
            self.scheme = get_scheme(settings["model_scheme"])
        except Exception as exc:  # reported by info(): an actor that raised here would only say "actor died"
            self.error = f"worker on {host} (pid {os.getpid()}): {exc}"
        self.description = {
            "host": host,
            "pid": os.getpid(),
            "device": str(getattr(self, "device", "")),
            "threads": torch.get_num_threads(),
        }

    def info(self) -> dict[str, Any]:
        return {**self.description, "error": self.error}

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used (all its threads)."""
        return time.process_time()

    def run(self, group: list[str], next_group: list[str] | None = None) -> list[ClipOutcome]:
        futures = [self.prefetched.pop(v, None) or self.pool.submit(load_clip, self.dataset, v) for v in group]
        for stale in self.prefetched.values():
            stale.cancel()
        self.prefetched = {v: self.pool.submit(load_clip, self.dataset, v) for v in next_group or []}
        loaded, outcomes = [], []
        for vid, fut in zip(group, futures):
            try:
                loaded.append(fut.result())
            except Exception as exc:
                outcomes.append(failed_outcome(vid, self.dataset.split_of(vid), exc))
        s = self.settings
        outcomes += run_group(
            self.model,
            loaded,
            device=self.device,
            dataset_root=self.dataset.root,
            model_scheme=self.scheme,
            frame_batch=s["frame_batch"],
            precision=s["precision"],
            exact=s["exact"],
        )
        for o in outcomes:
            o.clip = None  # the driver reads the annotations itself
        return outcomes


def _open_dataset(root: str, video_ids: Sequence[str]) -> WFLWVDataset:
    """The dataset as a worker sees it, or a :class:`ClusterError` explaining the shared-filesystem requirement."""
    hint = (
        "every Ray node must see the dataset at the same path as the driver (a shared filesystem such as NFS, "
        "mounted at the same place on every node; see docs/cluster.md)"
    )
    try:
        ds = WFLWVDataset(root)
    except DatasetError as exc:
        raise ClusterError(f"cannot see the dataset: {exc}; {hint}") from None
    missing = [v for v in video_ids if not ds.paths(v)["landmarks"].is_file()]
    if missing:
        raise ClusterError(
            f"sees {root} but {len(missing)} of the run's {len(video_ids)} clips are missing there (e.g. "
            f"{ds.paths(missing[0])['landmarks']}); {hint}"
        )
    return ds


@dataclass
class _Slot:
    """A worker and what the driver has given it."""

    actor: Any
    busy: tuple[Any, list[str], int] | None = None  # (object ref, group, attempt)
    reserved: tuple[list[str], int] | None = None  # the group it is decoding ahead
    info: dict[str, Any] = field(default_factory=dict)


class RayEngine(Engine):
    """The model pass on Ray workers (actors); see the module docstring.

    Args:
        workers: number of workers (None with ``address``: as many as the cluster holds).
        address: an existing Ray cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None starts a local Ray.
        cpus_per_worker, gpus_per_worker: Ray resources per worker; the worker uses ``int(cpus_per_worker)``
            torch threads (at least 1).
        max_attempts: tries of a group whose worker died before it gives up on the group's clips.
        max_replacements: workers started to replace dead ones before the run stops (default: 2 per worker + 2).
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        max_attempts: int = 3,
        max_replacements: int | None = None,
    ):
        self.spec = ClusterSpec(workers, address, cpus_per_worker, gpus_per_worker)
        self.spec.check()
        if max_attempts < 1:
            raise ClusterError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.max_replacements = max_replacements
        self.cluster: RayCluster | None = None
        self.slots: list[_Slot] = []
        self.replaced = 0
        self.deaths = 0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workers": self.spec.workers,
            "address": self.spec.address or "local",
            "cpus_per_worker": self.spec.cpus_per_worker,
            "gpus_per_worker": self.spec.gpus_per_worker,
        }

    # ---- start ---------------------------------------------------------------------------------------------------
    def start(self, job: BenchJob) -> dict[str, Any]:
        try:
            torch.device(job.device if job.device != "auto" else "cpu")
        except RuntimeError:
            raise BenchError(f"unknown device {job.device!r}; use auto, cpu, cuda or cuda:N") from None
        self.cluster = RayCluster(self.spec).__enter__()
        ray = self.cluster.ray
        n = self.cluster.num_workers()
        self.cluster.check_fits(n)
        self._by_value = _local_modules(job.model)
        for name in self._by_value:
            ray.cloudpickle.register_pickle_by_value(sys.modules[name])
        try:
            model_ref = ray.put(job.model)
        except Exception as exc:
            raise BenchError(
                f"the model {job.model.name or type(job.model).__name__} cannot be sent to Ray workers "
                f"({type(exc).__name__}: {exc}); models must be picklable to run with --workers / --ray-address"
            ) from None
        self._settings = {
            "dataset_root": str(job.dataset.root.resolve()),
            "video_ids": list(job.video_ids),
            "device": job.device,
            "precision": job.precision,
            "exact": job.exact,
            "frame_batch": job.frame_batch,
            "model_scheme": job.model_scheme,
            "threads": self.spec.threads,
            "wflwv_version": wflwv_version(),
        }
        self._actor_cls = ray.remote(_BenchWorker).options(
            **self.spec.options(), max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
        )
        self._model_ref = model_ref
        self.slots = [_Slot(self._actor_cls.remote(model_ref, self._settings)) for _ in range(n)]
        infos = self._wait_for_workers([s.actor for s in self.slots])
        for slot, info in zip(self.slots, infos):
            self._check_info(info)
            slot.info = info
        if self.max_replacements is None:
            self.max_replacements = 2 * n + 2
        return {
            **self.describe(),
            **self.cluster.describe(),
            "workers": n,
            "threads_per_worker": self.spec.threads,
            "worker_devices": sorted({i["device"] for i in infos}),
            "worker_hosts": sorted({i["host"] for i in infos}),
        }

    def auto_batch_videos(self) -> int:
        """Every worker on a CPU: the in-process rule for a worker's threads; any worker on a GPU: 1."""
        devices = {str(s.info.get("device", "")).split(":")[0] for s in self.slots}
        if devices != {"cpu"}:
            return 1
        return auto_batch_videos("cpu", self.spec.threads)

    def _wait_for_workers(self, actors: list[Any]) -> list[dict[str, Any]]:
        """Each worker's description once it has built its model; a worker that cannot work is an error."""
        ray = self.cluster.ray
        try:
            return ray.get([a.info.remote() for a in actors], timeout=WORKER_START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(
                f"the Ray workers did not start within {WORKER_START_TIMEOUT:.0f} s: the cluster may lack the "
                f"resources of {len(actors)} worker(s) of {self.spec.cpus_per_worker:g} CPU(s) and "
                f"{self.spec.gpus_per_worker:g} GPU(s) (`ray status` shows what it has)"
            ) from None

    @staticmethod
    def _check_info(info: dict[str, Any]) -> None:
        if info.get("error"):
            raise ClusterError(info["error"])

    # ---- run -----------------------------------------------------------------------------------------------------
    def run(self, groups: Sequence[Sequence[str]]) -> Iterator[list[ClipOutcome]]:
        assert self.cluster is not None, "start() first"
        ray = self.cluster.ray
        from ray.exceptions import RayActorError, RayTaskError

        queue: collections.deque[tuple[list[str], int]] = collections.deque((list(g), 1) for g in groups)

        def dispatch(slot: _Slot) -> None:
            if slot.busy is not None:
                return
            if slot.reserved is not None:
                group, attempt = slot.reserved
                slot.reserved = None
            elif queue:
                group, attempt = queue.popleft()
            else:
                return
            slot.reserved = queue.popleft() if queue else None
            ref = slot.actor.run.remote(group, slot.reserved[0] if slot.reserved else None)
            slot.busy = (ref, group, attempt)

        for slot in self.slots:
            dispatch(slot)
        while any(s.busy for s in self.slots):
            refs = {s.busy[0]: s for s in self.slots if s.busy}
            ready, _ = ray.wait(list(refs), num_returns=1)
            slot = refs[ready[0]]
            ref, group, attempt = slot.busy
            slot.busy = None
            try:
                outcomes = ray.get(ref)
            except RayActorError as exc:
                gave_up = self._worker_died(slot, group, attempt, queue, exc)
                if gave_up:
                    yield gave_up
                dispatch(slot)
                continue
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BenchError):
                    raise BenchError(str(cause)) from None
                raise BenchError(f"a Ray worker failed outside any clip: {exc}") from None
            dispatch(slot)
            yield outcomes

    def _worker_died(self, slot: _Slot, group, attempt, queue, exc) -> list[ClipOutcome]:
        """Put the dead worker's groups back in the queue (or give up on a group tried too often) and replace it."""
        self.deaths += 1
        gave_up: list[ClipOutcome] = []
        if attempt >= self.max_attempts:
            reason = (
                f"the Ray worker running this clip died {attempt} time(s) (last: {type(exc).__name__}); "
                "the clip may need more memory than a worker has"
            )
            gave_up = [ClipOutcome(v, "", 0, float("nan"), error=reason) for v in group]
        else:
            queue.appendleft((group, attempt + 1))
        if slot.reserved is not None:
            queue.appendleft(slot.reserved)  # decoded ahead, never started: not an attempt
            slot.reserved = None
        if self.replaced >= (self.max_replacements or 0):
            raise ClusterError(
                f"{self.deaths} Ray worker(s) died during the run (last: {exc}); stopping after "
                f"{self.replaced} replacement(s). Finished clips are saved: re-run the same command to resume"
            )
        self.replaced += 1
        try:  # an unreachable worker may still hold its resources
            self.cluster.ray.kill(slot.actor, no_restart=True)
        except Exception:
            pass
        slot.actor = self._actor_cls.remote(self._model_ref, self._settings)
        info = self._wait_for_workers([slot.actor])[0]
        self._check_info(info)
        slot.info = info
        return gave_up

    def worker_cpu_seconds(self) -> list[float]:
        """CPU time used so far by each live worker process (for benchmarks)."""
        return self.cluster.ray.get([s.actor.cpu_seconds.remote() for s in self.slots])

    def close(self) -> None:
        if self.cluster is None:
            return
        ray = self.cluster.ray
        for slot in self.slots:
            try:
                ray.kill(slot.actor)
            except Exception:  # already dead
                pass
        self.slots = []
        for name in getattr(self, "_by_value", []):
            try:
                ray.cloudpickle.unregister_pickle_by_value(sys.modules[name])
            except (KeyError, ValueError):
                pass
        self.cluster.__exit__(None, None, None)
        self.cluster = None
