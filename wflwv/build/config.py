"""What `wflwv build` can be told (:class:`BuildConfig`), what it reports (:class:`BuildSummary`), and its errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wflwv.build.acquire import LICENCE_PATTERN, DownloadOptions

#: the default oracle of `wflwv build` and of exact-motion datasets from unlabelled stills (members, test-time
#: augmentation, combination of the votes); chosen by measurement, see docs/oracle.md
DEFAULT_MEMBERS: tuple[str, ...] = ("dlib68", "faceapi68")
DEFAULT_TTA = "jitter:16/shift=2/scale=0.04/rotate=2/flip"
DEFAULT_COMBINE = "robust"

__all__ = ["BuildConfig", "BuildSummary", "BuildError", "SIDECAR_SUFFIX", "config_hash"]

SIDECAR_SUFFIX = ".boxes.npy"
_STATUS_KEPT, _STATUS_DROPPED, _STATUS_FAILED, _STATUS_REJECTED = "kept", "dropped", "failed", "rejected"


class BuildError(RuntimeError):
    """A problem with the whole build (bad options, nothing to build from)."""


@dataclass
class BuildConfig:
    """Everything `wflwv build` can be told. Paths may be str or Path.

    Sources (at least one): ``ids`` (a ranges file), ``search`` (queries), ``local`` (files / folders).
    """

    out: Path
    ids: Path | None = None
    search: Sequence[str] = ()
    max_results: int = 20
    local: Sequence[Path] = ()
    # clipping
    window: float = 5.0
    max_clips_per_video: int = 0
    cut_threshold: float = 0.3
    detector: str = "hog"
    min_coverage: float = 0.5
    max_gap: float = 0.5  # seconds without a detection inside a window
    min_face: float = 40.0  # pixels
    min_track_hits: int = 5
    # oracle
    members: Sequence[str] = DEFAULT_MEMBERS
    tta: str = DEFAULT_TTA
    combine: str = DEFAULT_COMBINE  # how the oracle's votes are combined: heatmap, robust or mean
    passes: int = 2
    box_smooth: int = 5
    batch_size: int = 16
    device: str = "cpu"
    max_outside: float = 0.05  # largest fraction of landmarks outside the frame in any frame
    # split
    hard_k: int | None = None
    easy_k: int | None = None
    keep_unselected: bool = False
    # label-flicker floor (wflwv.build.floor): real frames moved by known warps, labelled like the clips
    floor_stills: int = 3  # frames of the published clips to measure it on (0 = do not measure)
    floor_frames: int = 40  # frames per floor clip
    # running
    workers: int = 1
    #: where the per-item stages run: "processes" (a local process pool of ``workers``), "ray" (Ray tasks: a local
    #: Ray of ``workers`` CPUs, or the cluster at ``ray_address``), "auto" (Ray when ``ray_address`` is given or
    #: ``workers`` > 1 and Ray is installed, else processes). The dataset written is the same either way.
    engine: str = "auto"
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # per labelling task (the oracle's torch members, with device="cuda")
    work: Path | None = None
    download: DownloadOptions = field(default_factory=DownloadOptions)
    licence_pattern: str = LICENCE_PATTERN
    retry_failed: bool = False
    previews: int = 2
    progress: bool = True

    def __post_init__(self):
        self.out = Path(self.out).expanduser()
        self.ids = Path(self.ids).expanduser() if self.ids else None
        self.local = [Path(p).expanduser() for p in self.local]
        self.search = [self.search] if isinstance(self.search, str) else list(self.search)
        self.members = [self.members] if isinstance(self.members, str) else list(self.members)
        self.work = Path(self.work).expanduser() if self.work else self.out / ".build"
        # numbers enter the configuration hashes: 20 and 20.0 must be the same setting
        for name in ("window", "cut_threshold", "min_coverage", "max_gap", "min_face", "max_outside"):
            setattr(self, name, float(getattr(self, name)))

    def check(self) -> None:
        """Raise :class:`BuildError` for inconsistent options, saying what to change."""
        if not (self.ids or self.search or self.local):
            raise BuildError("nothing to build from: give --ids FILE, --search QUERY or --local PATH")
        if self.window <= 0:
            raise BuildError(f"--window must be positive (seconds), got {self.window}")
        if not 0 < self.cut_threshold < 1:
            raise BuildError(f"--cut-threshold must be in (0, 1), got {self.cut_threshold}")
        if self.passes < 1:
            raise BuildError(f"--passes must be >= 1, got {self.passes}")
        for k, name in ((self.hard_k, "--hard-k"), (self.easy_k, "--easy-k")):
            if k is not None and k < 0:
                raise BuildError(f"{name} must be >= 0, got {k}")
        if self.workers < 1:
            raise BuildError(f"--workers must be >= 1, got {self.workers}")
        if self.engine not in ("auto", "processes", "ray"):
            raise BuildError(f"--engine must be auto, processes or ray, got {self.engine!r}")
        if self.ray_address and self.engine == "processes":
            raise BuildError("--ray-address runs on Ray; it cannot be combined with --engine processes")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise BuildError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
        if self.gpus_per_worker and not str(self.device).startswith("cuda"):
            raise BuildError("--gpus-per-worker gives labelling tasks a GPU: also pass --device cuda")
        if self.floor_stills < 0 or (self.floor_stills and self.floor_frames < 3):
            raise BuildError(
                f"--floor-stills must be >= 0 and --floor-frames >= 3, got {self.floor_stills}, {self.floor_frames}"
            )
        if self.detector == "sidecar" and (self.ids or self.search):
            raise BuildError(
                "--detector sidecar reads boxes beside local videos; it cannot be used with --ids/--search"
            )
        if not self.members:
            raise BuildError("the oracle needs at least one member (--member dlib68)")
        uses_dlib = "hog" in self.detector.split("+") or any(str(m).split(":")[0] == "dlib68" for m in self.members)
        if uses_dlib:
            if importlib.util.find_spec("dlib") is None:
                raise BuildError(
                    "the hog detector and the dlib68 oracle need dlib: pip install dlib-bin face-recognition-models "
                    "(or use --detector haar and other --member models)"
                )

    def scan_key(self) -> str:
        return config_hash(["scan", 1, self.window, self.max_clips_per_video, self.cut_threshold, self.detector,
                      self.min_coverage, self.max_gap, self.min_face, self.min_track_hits])  # fmt: skip

    def label_key(self) -> str:
        return config_hash(["label", 1, self.scan_key(), list(self.members), self.tta, self.passes, self.box_smooth,
                      self.max_outside] + ([self.combine] if self.combine != "heatmap" else []))  # fmt: skip


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class BuildSummary:
    """What a build did. ``rows`` is the manifest (one dict per source problem or clip)."""

    out: Path
    rows: list[dict]
    hard: list[str]
    easy: list[str]
    timings: dict[str, float]
    counts: dict[str, Any]
    scheme: str | None
    label_floor: dict | None = None  # see wflwv.build.floor
