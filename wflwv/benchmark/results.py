"""The bench run directory: the one place that knows how results are laid out on disk.

::

    OUT/
      run.json                 provenance (git hash, package versions, command), resolved configuration, dataset
                               fingerprint, requested filter settings, ``scoring_scheme``
      predictions/ID.npz       landmarks (T, K, 2) in frame pixels and the scoring scheme (the dataset's, or the
                               model's when it has fewer points; then the ground truth is converted), ``nme_frames`` (T,)
                               per-frame NME as fractions, ``stat_<name>`` (T,) per-frame model statistics
      clips/ID.json            the unfiltered per-clip record (also the resume marker; written last, atomically)
      per_video.csv / .parquet one row per (filter setting, clip): filter, video_id, split, frames, fps, status,
                               error, nme, nmf, nmf_<region>..., <stat>_mean...
      summary.json             run.json plus, for every result set, per-split aggregates
      .wflwv.lock(.json)       the run's exclusive lock while a bench writes into the folder (and its holder)

Units: ``nme`` in percent of the normaliser (inter-ocular by default), ``nmf`` as the released evaluation code
computes it (see docs/metrics.md), FR and AUC as fractions.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from wflwv.io import FolderLockedError, atomic_path, folder_lock, read_json, save_npz, write_json

__all__ = ["UNFILTERED", "RunDir", "RunLockedError", "holding_run_lock"]

#: label of the result set without any filter
UNFILTERED = "none"


#: raised when another process is writing into the run folder
RunLockedError = FolderLockedError

_F = TypeVar("_F", bound=Callable[..., Any])


class RunDir:
    """Reader/writer of one bench output folder (layout in the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the folder's exclusive lock (created if needed) for a whole bench run.

        Raises:
            RunLockedError: another process holds it; the message names its PID and how to proceed.
        """
        with folder_lock(self.path, command="wflwv bench", other="another --out"):
            yield self

    # ---- paths -------------------------------------------------------------------------------------------------
    def prediction_path(self, video_id: str) -> Path:
        return self.path / "predictions" / f"{video_id}.npz"

    def record_path(self, video_id: str) -> Path:
        return self.path / "clips" / f"{video_id}.json"

    # ---- run metadata --------------------------------------------------------------------------------------------
    def read_run(self) -> dict[str, Any] | None:
        p = self.path / "run.json"
        return read_json(p) if p.is_file() else None

    def write_run(self, run: dict[str, Any]) -> None:
        write_json(self.path / "run.json", run)

    # ---- per clip ---------------------------------------------------------------------------------------------
    def finished(self, video_id: str) -> bool:
        """True when the clip has a successful record and its predictions on disk."""
        p = self.record_path(video_id)
        if not p.is_file() or not self.prediction_path(video_id).is_file():
            return False
        try:
            return read_json(p).get("status") == "ok"
        except ValueError:
            return False

    def write_clip(self, record: dict[str, Any], landmarks: np.ndarray | None = None, **arrays: np.ndarray) -> None:
        """Write a clip's predictions (if any) and then its record, each atomically."""
        if landmarks is not None:
            save_npz(self.prediction_path(record["video_id"]), landmarks=landmarks, **arrays)
        write_json(self.record_path(record["video_id"]), record)

    def read_record(self, video_id: str) -> dict[str, Any] | None:
        p = self.record_path(video_id)
        return read_json(p) if p.is_file() else None

    def load_predictions(self, video_id: str) -> dict[str, np.ndarray]:
        """``{"landmarks": (T, K, 2), "nme_frames": (T,), "stat_<name>": (T,) ...}`` for one clip."""
        p = self.prediction_path(video_id)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no predictions for clip {video_id} in this run")
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # ---- tables ------------------------------------------------------------------------------------------------
    def write_tables(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> pd.DataFrame:
        """Write per_video.csv / .parquet and summary.json; returns the table."""
        df = pd.DataFrame(rows)
        front = [
            c for c in ("filter", "video_id", "split", "frames", "fps", "status", "error", "nme", "nmf") if c in df
        ]
        df = df[front + [c for c in df.columns if c not in front]]
        with atomic_path(self.path / "per_video.csv") as tmp:
            df.to_csv(tmp, index=False)
        with atomic_path(self.path / "per_video.parquet") as tmp:
            df.to_parquet(tmp, index=False)
        write_json(self.path / "summary.json", summary)
        return df

    def per_video(self) -> pd.DataFrame:
        p = self.path / "per_video.parquet"
        if p.is_file():
            return pd.read_parquet(p)
        p = self.path / "per_video.csv"
        if p.is_file():
            return pd.read_csv(p, keep_default_na=False, na_values=[""])
        raise FileNotFoundError(
            f"{self.path}: no per_video.parquet or per_video.csv (is this a `wflwv bench` output folder?)"
        )

    def summary(self) -> dict[str, Any]:
        p = self.path / "summary.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found (is this a `wflwv bench` output folder?)")
        return read_json(p)


def holding_run_lock(fn: _F) -> _F:
    """Decorate ``fn(model, data, out, ...)`` so it runs holding the lock of the run folder ``out``: two benches
    into one folder never interleave their configuration checks and writes (the second is refused)."""

    @functools.wraps(fn)
    def wrapper(model: Any, data: Any, out: str | Path, *args: Any, **kwargs: Any) -> Any:
        with RunDir(out).lock():
            return fn(model, data, out, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
