"""Ray, for the commands that can run past one process (``wflwv bench``, ``wflwv build``): where the workers come
from, how many there are, and the errors a user sees when Ray is missing or a cluster cannot be reached.

Ray is an optional dependency (``pip install 'wflwv[ray]'``) and is imported only here and only when a command asks
for it; ``import wflwv`` never imports it. See ``docs/cluster.md``.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = ["ClusterError", "ClusterSpec", "RayCluster", "import_ray", "RAY_INSTALL_HINT", "wflwv_version"]

RAY_INSTALL_HINT = "pip install 'wflwv[ray]'  (or: pip install 'ray>=2.9')"


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or its workers cannot do the job (the message says why)."""


def import_ray():
    """The ``ray`` module, or a :class:`ClusterError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            f"--workers / --ray-address run on Ray, which is not installed here ({exc}). Install it with: "
            f"{RAY_INSTALL_HINT}; or leave out --workers / --ray-address to run in this process."
        ) from None
    return ray


def wflwv_version() -> str:
    try:
        return metadata.version("wflwv")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ClusterSpec:
    """How to get workers.

    Attributes:
        workers: number of workers; without ``address`` a local Ray is started for them. With ``address`` and
            no ``workers``: as many as the cluster's CPUs (or GPUs, with ``gpus_per_worker``) allow.
        address: an existing cluster: ``auto`` (the one ``ray start`` made on this machine, or ``RAY_ADDRESS``),
            ``HOST:PORT`` or ``ray://HOST:PORT``.
        cpus_per_worker: Ray CPUs each worker reserves; also its torch thread count (at least 1).
        gpus_per_worker: Ray GPUs each worker reserves (fractions share a GPU).
    """

    workers: int | None = None
    address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ClusterError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ClusterError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ClusterError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.workers is None and self.address is None:
            raise ClusterError("a Ray cluster needs --workers N (a local Ray) or --ray-address ADDR (an existing one)")

    @property
    def threads(self) -> int:
        """torch threads per worker: one per reserved CPU, at least one."""
        return max(1, int(self.cpus_per_worker))

    def options(self) -> dict[str, float]:
        """Ray resource options of one worker (actor or task)."""
        return {"num_cpus": self.cpus_per_worker, "num_gpus": self.gpus_per_worker}


class RayCluster:
    """A connection to Ray for the duration of a command (a context manager).

    Without an address a local Ray is started with exactly the resources of ``spec.workers`` workers and shut down
    on exit; with one the existing cluster is joined (and left running). When the calling program already
    initialised Ray (a script or notebook), that session is used as it is and left open.
    """

    def __init__(self, spec: ClusterSpec):
        spec.check()
        self.spec = spec
        self.ray = import_ray()
        self._started = False

    def __enter__(self) -> RayCluster:
        ray = self.ray
        if ray.is_initialized():
            return self
        common = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": True}
        if self.spec.address is None:
            cpus = max(1, math.ceil(self.spec.workers * self.spec.cpus_per_worker))
            gpus = math.ceil(self.spec.workers * self.spec.gpus_per_worker) if self.spec.gpus_per_worker else 0
            # "local": a new Ray even when RAY_ADDRESS names another cluster
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, **common)
        else:
            try:
                ray.init(address=self.spec.address, **common)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                auth = "Authentication" in type(exc.__cause__).__name__ or "InvalidAuthToken" in str(exc.__cause__)
                hint = (
                    "the cluster uses token authentication (the default of `ray start` in recent Ray): run with "
                    "RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                    if auth
                    else "start one with `ray start --head` (then --ray-address auto), give HOST:PORT of its head "
                    "node, or use --workers N for a Ray inside this command"
                )
                raise ClusterError(
                    f"cannot connect to the Ray cluster at {self.spec.address!r}: {exc}; {hint} (docs/cluster.md)"
                ) from None
        self._started = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    # ---- sizing ------------------------------------------------------------------------------------------------
    def resources(self) -> dict[str, float]:
        return dict(self.ray.cluster_resources())

    def num_workers(self) -> int:
        """``spec.workers``, or as many workers as the cluster's resources hold."""
        if self.spec.workers is not None:
            return self.spec.workers
        res = self.resources()
        fits = [int(res.get("CPU", 0) // self.spec.cpus_per_worker)]
        if self.spec.gpus_per_worker:
            fits.append(int(res.get("GPU", 0) // self.spec.gpus_per_worker))
        n = min(fits)
        if n < 1:
            raise ClusterError(
                f"the Ray cluster has {res.get('CPU', 0):g} CPU(s) and {res.get('GPU', 0):g} GPU(s): not enough for one "
                f"worker of {self.spec.cpus_per_worker:g} CPU(s) and {self.spec.gpus_per_worker:g} GPU(s)"
            )
        return n

    def check_fits(self, workers: int) -> None:
        """Raise when ``workers`` workers of the spec's size could never all be placed (they would wait forever)."""
        res = self.resources()
        need_cpu, need_gpu = workers * self.spec.cpus_per_worker, workers * self.spec.gpus_per_worker
        if need_cpu > res.get("CPU", 0) + 1e-9 or need_gpu > res.get("GPU", 0) + 1e-9:
            raise ClusterError(
                f"{workers} worker(s) of {self.spec.cpus_per_worker:g} CPU(s) and {self.spec.gpus_per_worker:g} GPU(s) "
                f"need {need_cpu:g} CPU(s) and {need_gpu:g} GPU(s); the Ray cluster has {res.get('CPU', 0):g} and "
                f"{res.get('GPU', 0):g}. Use fewer --workers or smaller --cpus-per-worker / --gpus-per-worker"
            )

    def describe(self) -> dict[str, Any]:
        """Provenance: the Ray version and the cluster's size."""
        res = self.resources()
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return {
            "ray_version": self.ray.__version__,
            "address": self.spec.address or "local",
            "nodes": len(nodes),
            "cluster_cpus": res.get("CPU", 0.0),
            "cluster_gpus": res.get("GPU", 0.0),
            "cpus_per_worker": self.spec.cpus_per_worker,
            "gpus_per_worker": self.spec.gpus_per_worker,
            "driver_host": socket.gethostname(),
        }


def where() -> str:
    """``host (pid N)`` of the calling process, for messages from workers."""
    return f"{socket.gethostname()} (pid {os.getpid()})"
