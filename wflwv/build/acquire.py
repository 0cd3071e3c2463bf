"""Getting source videos for `wflwv build`: YouTube clip ranges, Creative Commons search results, local files.

Everything lands in ``WORK/sources/`` as one media file plus one JSON record per source
(:class:`SourceRecord`: where it came from, licence, uploader, title, URL, retrieval date, frame offset). Re-runs
skip sources whose record exists; ``WORK/download_archive.txt`` lists every finished download (one key per line,
``youtube ID START END`` or ``youtube ID``) and ``WORK/acquire_failures.json`` every failure with its reason.
Private, removed or otherwise unavailable videos are *permanent* failures: reported, never fatal, not retried on
re-runs unless asked. Network trouble is retried with exponential back-off, and again on the next run.

Clip ranges (``download_ranges.txt``: ``VIDEO_ID START END``, inclusive 0-based frames of the source video)
    Only a section around the range is downloaded (yt-dlp's ``download_ranges``; ffmpeg from imageio-ffmpeg,
    re-encoding at the cut so it is accurate), then the range is cut out frame-exactly: the frame rate of the
    downloaded section tells which of its frames is the requested first frame (the section starts at the first
    frame at or after its start time). If the platform's frame rate was wrong, or the first frame is ambiguous,
    the section is fetched again with the measured rate. A line with only an ID (or ``ID None None``) asks for
    the whole video (up to ``search_seconds``), to be searched for windows like a search result.

Search (``--search QUERY``)
    The YouTube results page with the Creative Commons filter; the filter is not trusted: every candidate's own
    metadata must carry a Creative Commons ``license`` (:func:`licence_ok`) before anything is downloaded.

Local files / folders
    Used in place (nothing copied); the source ID is the file name made safe.

Video IDs are checked against YouTube's syntax (:func:`check_youtube_id`) before they go into a path or URL.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import itertools
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from wflwv.io import atomic_path, read_json, write_json
from wflwv.protocol.video import VideoError, VideoWriter, ffmpeg_exe, iter_frames, probe_video

__all__ = [
    "YOUTUBE_ID_RE",
    "VIDEO_EXTENSIONS",
    "AcquireError",
    "ClipRange",
    "SourceRecord",
    "SourceProblem",
    "AcquireResult",
    "DownloadOptions",
    "Downloader",
    "check_youtube_id",
    "parse_ranges",
    "licence_ok",
    "youtube_url",
    "cc_search_url",
    "safe_source_id",
    "local_sources",
    "acquire_ranges",
    "fetch_range_job",
    "acquire_search",
    "DownloadArchive",
    "FailureLog",
]

YOUTUBE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ogv", ".mpg", ".mpeg", ".wmv", ".flv")
#: a licence string counts as Creative Commons when it matches this (case-insensitive)
LICENCE_PATTERN = r"creative\s*commons|\bcc[\s-]*(by|0)\b"
#: the YouTube search-results filter "Creative Commons" (protobuf: features { creative_commons: 1 })
CC_SEARCH_FILTER = "EgIwAQ=="
#: errors that will not go away by retrying (matched case-insensitively against yt-dlp's message)
_PERMANENT = re.compile(
    r"private video|video unavailable|not available|removed|terminated|copyright|does not exist|"
    r"members[- ]only|sign in to confirm your age|age[- ]restricted|http error 40[34]|http error 410|"
    r"unsupported url|is not a valid url|no video formats|requested format is not available",
    re.I,
)


class AcquireError(RuntimeError):
    """A source could not be obtained. ``permanent``: retrying will not help (private, removed, malformed...)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def check_youtube_id(video_id: Any, where: str = "") -> str:
    """Return ``video_id`` if it has YouTube's ID syntax (11 characters of ``A-Z a-z 0-9 _ -``), else raise
    ValueError naming it (and ``where`` it came from)."""
    if not isinstance(video_id, str) or not YOUTUBE_ID_RE.match(video_id):
        loc = f" ({where})" if where else ""
        raise ValueError(
            f"malformed YouTube video ID {video_id!r}{loc}: an ID is exactly 11 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    return video_id


def youtube_url(video_id: str) -> str:
    """The watch URL of a (checked) YouTube ID."""
    return "https://www.youtube.com/watch?v=" + check_youtube_id(video_id)


def cc_search_url(query: str) -> str:
    """YouTube's search-results URL for ``query`` restricted to Creative Commons videos."""
    if not query.strip():
        raise ValueError("empty search query")
    return "https://www.youtube.com/results?" + urllib.parse.urlencode({"search_query": query, "sp": CC_SEARCH_FILTER})


def licence_ok(info: dict, pattern: str = LICENCE_PATTERN) -> tuple[bool, str]:
    """Whether a video's own metadata (a yt-dlp info dict) declares a Creative Commons licence.

    Returns:
        ``(ok, reason)``: the licence string when accepted, else why it was rejected.
    """
    lic = info.get("license")
    if not isinstance(lic, str) or not lic.strip():
        return False, "no licence in the video's metadata (treated as not Creative Commons)"
    if re.search(pattern, lic, re.I):
        return True, lic.strip()
    return False, f"licence {lic.strip()!r} is not Creative Commons"


def safe_source_id(name: str, max_len: int = 48) -> str:
    """A file-name-safe ID from any name: characters outside ``A-Za-z0-9_-`` become ``-``."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "video"
    return s[:max_len]


# ------------------------------------------------------------------------------------------------ ranges
@dataclass(frozen=True)
class ClipRange:
    """One requested clip: frames ``start..end`` (inclusive, 0-based) of a YouTube video; ``start = end = None``
    asks for the whole video."""

    video_id: str
    start: int | None
    end: int | None
    line: int = 0

    @property
    def num_frames(self) -> int | None:
        return None if self.start is None else self.end - self.start + 1

    @property
    def key(self) -> str:
        return f"youtube {self.video_id}" + ("" if self.start is None else f" {self.start} {self.end}")


def parse_ranges(path: str | Path) -> list[ClipRange]:
    """Read a ``download_ranges.txt``-style file: ``VIDEO_ID START END`` per line (``#`` comments and blank lines
    ignored; ``VIDEO_ID`` alone or ``VIDEO_ID None None`` = the whole video).

    Raises:
        ValueError: naming the file and line, for a malformed ID or range.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: ranges file not found")
    out: list[ClipRange] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}, line {n}"
        vid = check_youtube_id(parts[0], where)
        if len(parts) == 1 or (len(parts) == 3 and parts[1] == parts[2] == "None"):
            out.append(ClipRange(vid, None, None, n))
            continue
        if len(parts) != 3:
            raise ValueError(f"{where}: expected 'VIDEO_ID START END', got {raw.strip()!r}")
        try:
            start, end = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"{where}: START and END must be integers (frame indices), got {raw.strip()!r}") from None
        if start < 0 or end < start:
            raise ValueError(f"{where}: need 0 <= START <= END, got {start} {end}")
        out.append(ClipRange(vid, start, end, n))
    return out


# ------------------------------------------------------------------------------------------------ records
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class SourceRecord:
    """Provenance of one source video (written to ``WORK/sources/SOURCE_ID.json``).

    Attributes:
        source_id: file-name-safe ID (the YouTube ID, ``ID_START`` for a range of a video listed twice, or
            the local file's safe name).
        origin: ``"youtube-range"``, ``"youtube"`` (whole video of an ID list), ``"youtube-search"`` or ``"local"``.
        path: the media file.
        frame_offset: index in the original video of the media file's frame 0.
        fixed_window: the whole media file is the one clip requested (a range); otherwise windows are searched.
    """

    source_id: str
    origin: str
    path: str
    url: str = ""
    video_id: str = ""
    title: str = ""
    uploader: str = ""
    licence: str = ""
    retrieved: str = ""
    frame_offset: int = 0
    fixed_window: bool = False
    fps: float = 0.0
    num_frames: int = 0
    width: int = 0
    height: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SourceRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SourceProblem:
    """A source that gave no video: ``status`` is ``"failed"`` (download error) or ``"rejected"`` (licence)."""

    source_id: str
    status: str
    reason: str
    url: str = ""
    video_id: str = ""
    title: str = ""
    uploader: str = ""
    licence: str = ""
    origin: str = ""


@dataclass
class AcquireResult:
    records: list[SourceRecord] = field(default_factory=list)
    problems: list[SourceProblem] = field(default_factory=list)
    skipped: int = 0  # already there from an earlier run


class DownloadArchive:
    """The set of finished download keys, kept in a text file rewritten atomically on every addition."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._keys: list[str] = []
        if self.path.is_file():
            self._keys = [ln.strip() for ln in self.path.read_text().splitlines() if ln.strip()]
        self._set = set(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._set

    def add(self, key: str) -> None:
        if key in self._set:
            return
        self._keys.append(key)
        self._set.add(key)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(k + "\n" for k in self._keys))


class FailureLog:
    """Per-source failures (``key -> {error, permanent, attempts, time, ...}``) in a JSON file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = read_json(self.path) if self.path.is_file() else {}

    def record(self, key: str, **entry: Any) -> None:
        entry["time"] = _now()
        self.entries[key] = entry
        write_json(self.path, self.entries)

    def clear(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            write_json(self.path, self.entries)

    def permanent(self, key: str) -> dict | None:
        e = self.entries.get(key)
        return e if e and e.get("permanent") else None


# ------------------------------------------------------------------------------------------------ yt-dlp
class _QuietLogger:
    """Collects yt-dlp's messages instead of printing them (the last error is used in reports)."""

    def __init__(self):
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.messages.append(str(msg))

    def error(self, msg: str) -> None:
        self.messages.append(str(msg))


def _ffmpeg_exe() -> str:
    try:
        return ffmpeg_exe(required=True, purpose="downloading a section")
    except VideoError as exc:
        raise AcquireError(str(exc), permanent=True) from None


@dataclass
class DownloadOptions:
    """Politeness and format settings for downloads.

    Attributes:
        rate_limit: maximum download speed in bytes per second (None = unlimited).
        sleep: minimum seconds between the starts of two videos' requests.
        retries: attempts per video for transient errors (network, throttling), with back-off.
        backoff: seconds before the first retry; doubles each time (plus up to 25% random jitter).
        max_height: highest resolution fetched (pixels; best available at or below it).
        search_seconds: how much of a whole video is fetched (search results, ID-only lines), seconds.
        url_template: watch URL of an ID (``{id}``); a test or a mirror can change it.
        socket_timeout: seconds before a stalled connection is given up.
    """

    rate_limit: float | None = None
    sleep: float = 2.0
    retries: int = 3
    backoff: float = 5.0
    max_height: int = 720
    search_seconds: float = 300.0
    url_template: str = "https://www.youtube.com/watch?v={id}"
    socket_timeout: float = 30.0


class Downloader:
    """yt-dlp behind three methods the build uses: :meth:`search`, :meth:`probe` and :meth:`download`.

    Args:
        options: :class:`DownloadOptions`.
        url_for: maps a YouTube ID to a URL (default: ``options.url_template``); tests map IDs to a local server.
        sleep_fn: the sleep used for pacing and back-off (tests pass a no-op).
    """

    def __init__(
        self,
        options: DownloadOptions | None = None,
        url_for: Callable[[str], str] | None = None,
        sleep_fn: Callable[[float], None] = time.sleep,
    ):
        self.options = options or DownloadOptions()
        self._url_for = url_for
        self._sleep = sleep_fn
        self._last_start = 0.0
        self.requests = 0

    # ---- helpers
    def url_for(self, video_id: str) -> str:
        check_youtube_id(video_id)
        if self._url_for is not None:
            return self._url_for(video_id)
        return self.options.url_template.format(id=video_id)

    def _params(self, logger: _QuietLogger, **extra: Any) -> dict:
        o = self.options
        params = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": logger,
            "socket_timeout": o.socket_timeout,
            "retries": 2,
            "fragment_retries": 2,
            "ffmpeg_location": _ffmpeg_exe(),
            "format": f"bv*[height<=?{o.max_height}]/b[height<=?{o.max_height}]/bv*/b",
            "noplaylist": True,
            "overwrites": True,
            "continuedl": False,
        }
        if o.rate_limit:
            params["ratelimit"] = float(o.rate_limit)
        params.update(extra)
        return params

    def _pace(self) -> None:
        wait = self.options.sleep - (time.monotonic() - self._last_start)
        if self._last_start and wait > 0:
            self._sleep(wait)
        self._last_start = time.monotonic()

    def _with_retries(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with pacing, retries and back-off; classify the final error as permanent or not."""
        attempts = max(1, int(self.options.retries))
        last = ""
        for k in range(attempts):
            self._pace()
            self.requests += 1
            try:
                return contextvars.copy_context().run(fn)
            except AcquireError:
                raise
            except Exception as exc:  # yt-dlp raises DownloadError / ExtractorError; OSError for the network
                last = re.sub(r"^ERROR:\s*", "", str(exc).strip()) or type(exc).__name__
                if _PERMANENT.search(last):
                    raise AcquireError(f"{what}: {last}", permanent=True) from None
                if k + 1 < attempts:
                    delay = self.options.backoff * (2**k)
                    self._sleep(delay * (1 + 0.25 * random.random()))
        raise AcquireError(f"{what}: {last} (gave up after {attempts} attempts)", permanent=False)

    @staticmethod
    def _use_ffmpeg(location: str) -> None:
        # yt-dlp decides whether section downloads are possible by looking for ffmpeg *without* its params
        # (its command line sets this context variable for the same reason); set it in this context only
        from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

        FFmpegPostProcessor._ffmpeg_location.set(location)

    # ---- network operations (tests replace search / probe with recorded answers)
    def search(self, query: str, max_results: int) -> list[dict]:
        """The first ``max_results`` entries (``{"id", "url", "title", ...}``) of a Creative Commons search."""
        import yt_dlp

        url = cc_search_url(query)

        def run():
            logger = _QuietLogger()
            with yt_dlp.YoutubeDL(self._params(logger, extract_flat="in_playlist", playlistend=max_results)) as ydl:
                info = ydl.extract_info(url, download=False, process=False)
                return [dict(e) for e in itertools.islice(info.get("entries") or [], max_results)]

        return self._with_retries(f"search {query!r}", run)

    def probe(self, url: str) -> dict:
        """A video's metadata (yt-dlp info dict, unprocessed: ``license``, ``title``, ``uploader``, ``formats``...)."""
        import yt_dlp

        def run():
            with yt_dlp.YoutubeDL(self._params(_QuietLogger())) as ydl:
                return ydl.extract_info(url, download=False, process=False)

        return self._with_retries(f"metadata of {url}", run)

    def download(
        self, url: str, dest_stem: Path, section: tuple[float, float] | None, info: dict | None = None
    ) -> Path:
        """Download a video, or only ``section = (start_s, end_s)`` of it re-encoded at the cut, to
        ``dest_stem.EXT``; returns the file. ``info`` from :meth:`probe` avoids asking for the metadata again."""
        import yt_dlp

        dest_stem.parent.mkdir(parents=True, exist_ok=True)
        ffmpeg = _ffmpeg_exe()
        extra: dict[str, Any] = {"outtmpl": str(dest_stem) + ".%(ext)s"}
        if section is not None:
            s0, s1 = section
            extra["download_ranges"] = lambda _info, _ydl: [{"start_time": s0, "end_time": s1}]
            # re-encode at the cut only when the start matters (a section from 0 is exact when stream-copied)
            extra["force_keyframes_at_cuts"] = s0 > 0

        def run():
            self._use_ffmpeg(ffmpeg)
            logger = _QuietLogger()
            with yt_dlp.YoutubeDL(self._params(logger, **extra)) as ydl:
                if info is not None and info.get("formats"):
                    out = ydl.process_ie_result(dict(info), download=True)
                else:
                    out = ydl.extract_info(url, download=True)
            files = [d.get("filepath") for d in (out or {}).get("requested_downloads") or [] if d.get("filepath")]
            if not files or not Path(files[0]).is_file():
                raise RuntimeError(f"yt-dlp reported no file ({'; '.join(logger.messages[-2:]) or 'no message'})")
            return Path(files[0])

        return self._with_retries(f"download of {url}", run)


def _format_fps(info: dict, max_height: int) -> float | None:
    """The frame rate the platform reports for the formats we would fetch (None when unknown)."""
    if info.get("fps"):
        return float(info["fps"])
    rates = [
        float(f["fps"])
        for f in info.get("formats") or []
        if f.get("fps") and f.get("vcodec") != "none" and (f.get("height") or 0) <= max_height
    ]
    return max(rates) if rates else None


def _probe_media(path: Path) -> tuple[float, int, int, int]:
    try:
        v = probe_video(path)
    except VideoError as exc:
        raise AcquireError(str(exc), permanent=False) from None
    if v.fps <= 0:
        raise AcquireError(f"{path}: the video has no frame rate", permanent=True)
    return v.fps, v.frame_count, v.width, v.height


def _trim(section: Path, dst: Path, first: int, count: int, fps: float) -> int:
    """Copy frames ``first .. first + count - 1`` of ``section`` to ``dst`` (re-encoded); returns how many."""
    n = 0
    with VideoWriter(dst, fps) as enc:
        for i, frame in enumerate(iter_frames(section)):
            if i < first:
                continue
            if n >= count:
                break
            enc.write(frame)
            n += 1
    return n


def _metadata(info: dict | None, url: str) -> dict:
    info = info or {}
    return {
        "url": info.get("webpage_url") or url,
        "title": str(info.get("title") or ""),
        "uploader": str(info.get("uploader") or info.get("channel") or ""),
        "licence": str(info.get("license") or ""),
    }


def _source_ids(ranges: Sequence[ClipRange]) -> list[str]:
    counts: dict[str, int] = {}
    for r in ranges:
        counts[r.video_id] = counts.get(r.video_id, 0) + 1
    return [
        r.video_id if counts[r.video_id] == 1 else f"{r.video_id}_{r.start if r.start is not None else 'all'}"
        for r in ranges
    ]


def _load_done(work: Path, sid: str) -> SourceRecord | None:
    p = work / "sources" / f"{sid}.json"
    if not p.is_file():
        return None
    rec = SourceRecord.from_dict(read_json(p))
    return rec if Path(rec.path).is_file() else None


def _fetch_range(dl: Downloader, rng: ClipRange, sid: str, work: Path, info: dict | None = None) -> SourceRecord:
    url = dl.url_for(rng.video_id)
    if info is None:
        info = dl.probe(url)
    meta = _metadata(info, url)
    if info.get("availability") in ("private", "needs_auth", "subscriber_only", "premium_only"):
        raise AcquireError(f"{rng.video_id}: video is {info['availability']}", permanent=True)
    tmp_dir = work / "downloads"
    out = work / "sources" / f"{sid}.mp4"
    if rng.start is None:  # whole video, up to search_seconds
        dur = info.get("duration")
        limit = dl.options.search_seconds
        section = (0.0, float(limit)) if (dur is None or dur > limit + 1) else None
        path = dl.download(url, tmp_dir / f"{sid}.full", section, info)
        fps, count, w, h = _probe_media(path)
        final = work / "sources" / f"{sid}{path.suffix}"
        final.parent.mkdir(parents=True, exist_ok=True)
        path.replace(final)
        return SourceRecord(sid, "youtube", str(final), video_id=rng.video_id, retrieved=_now(), fps=fps,
                            num_frames=count, width=w, height=h, **meta)  # fmt: skip
    n = rng.num_frames
    guess = _format_fps(info, dl.options.max_height) or 30.0
    for attempt in range(3):
        # the section starts half a frame before the wanted frame (by the guessed rate) minus a margin that
        # covers a wrong guess (29.97 reported as 30 drifts by 0.1% of the start time)
        margin = 0.5 + 0.002 * rng.start / guess
        s0 = max(0.0, (rng.start - 0.5) / guess - margin)
        s1 = (rng.end + 1.5) / guess + margin
        section = dl.download(url, tmp_dir / f"{sid}.section", (s0, s1), info)
        rate, count, w, h = _probe_media(section)
        pos = s0 * rate
        first = math.ceil(pos - 1e-9)  # the section's frame 0 is the first source frame at or after s0
        frac = pos - math.floor(pos)
        ambiguous = s0 > 0 and (frac < 0.02 or frac > 0.98)
        offset = rng.start - first
        if ambiguous or offset < 0 or (offset + n > count and abs(rate - guess) > 1e-3 * guess):
            guess = rate if not ambiguous else rate * (1 + 1e-3 * (attempt + 1))
            section.unlink(missing_ok=True)
            continue
        got = _trim(section, out, offset, n, rate)
        section.unlink(missing_ok=True)
        if got < n:
            out.unlink(missing_ok=True)
            raise AcquireError(
                f"{rng.video_id}: range {rng.start}-{rng.end} ends after the video (got {got} of {n} frames)",
                permanent=True,
            )
        return SourceRecord(sid, "youtube-range", str(out), video_id=rng.video_id, retrieved=_now(),
                            frame_offset=rng.start, fixed_window=True, fps=rate, num_frames=n, width=w, height=h,
                            extra={"section_start_s": s0, "section_end_s": s1}, **meta)  # fmt: skip
    raise AcquireError(
        f"{rng.video_id}: could not place frame {rng.start} exactly in the downloaded section", permanent=False
    )


#: one Downloader per process and set of options (its pacing state lives across the fetches of a worker)
_DOWNLOADERS: dict[str, Downloader] = {}


def fetch_range_job(
    options: DownloadOptions, rng: ClipRange, sid: str, work: str | Path
) -> SourceRecord | AcquireError:
    """Fetch one range in any process (a Ray task): the record, or the :class:`AcquireError` that stopped it.

    The caller keeps the books (archive, failure log, record file), so this writes only the media file.
    """
    key = repr(options)
    if key not in _DOWNLOADERS:
        _DOWNLOADERS[key] = Downloader(options)
    try:
        return _fetch_range(_DOWNLOADERS[key], rng, sid, Path(work))
    except AcquireError as exc:
        return exc


def acquire_ranges(
    ranges: Sequence[ClipRange],
    work: str | Path,
    downloader: Downloader,
    retry_failed: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    parallel: Callable[[list[tuple[ClipRange, str]], Callable[[int, Any], None]], None] | None = None,
) -> AcquireResult:
    """Fetch every clip range (or whole video) into ``WORK/sources`` (see the module docstring).

    Args:
        retry_failed: also retry sources that failed permanently in an earlier run.
        progress: wraps the iteration (e.g. ``tqdm``).
        parallel: fetch elsewhere (Ray tasks): ``parallel(jobs, on_result)`` runs :func:`fetch_range_job` for
            every ``(range, source ID)`` of ``jobs`` and calls ``on_result(index, record or AcquireError)`` in this
            process as each one finishes, so the books are kept here and an interrupted run resumes.
    """
    work = Path(work)
    archive = DownloadArchive(work / "download_archive.txt")
    failures = FailureLog(work / "acquire_failures.json")
    result = AcquireResult()
    items = list(zip(ranges, _source_ids(ranges)))
    outcome: list[SourceRecord | SourceProblem | None] = [None] * len(items)
    todo = []
    for k, (rng, sid) in enumerate(items):
        done = _load_done(work, sid)
        if done is not None and rng.key in archive:
            outcome[k] = done
            result.skipped += 1
            continue
        prior = failures.permanent(rng.key)
        if prior and not retry_failed:
            outcome[k] = SourceProblem(sid, "failed", prior["error"], video_id=rng.video_id, origin="youtube")
            continue
        todo.append(k)

    def settle(k: int, got: SourceRecord | AcquireError) -> None:
        rng, sid = items[k]
        if isinstance(got, AcquireError):
            failures.record(rng.key, video_id=rng.video_id, error=str(got), permanent=got.permanent)
            outcome[k] = SourceProblem(sid, "failed", str(got), video_id=rng.video_id, origin="youtube")
            return
        write_json(work / "sources" / f"{sid}.json", got.to_dict())
        archive.add(rng.key)
        failures.clear(rng.key)
        outcome[k] = got

    if parallel is not None and todo:
        parallel([items[k] for k in todo], lambda j, got: settle(todo[j], got))
    else:
        for k in progress(todo) if progress else todo:
            rng, sid = items[k]
            try:
                settle(k, _fetch_range(downloader, rng, sid, work))
            except AcquireError as exc:
                settle(k, exc)
    for o in outcome:  # in the order of the ranges file, whatever order the fetches finished in
        if isinstance(o, SourceRecord):
            result.records.append(o)
        elif o is not None:
            result.problems.append(o)
    return result


def acquire_search(
    query: str,
    max_results: int,
    work: str | Path,
    downloader: Downloader,
    licence_pattern: str = LICENCE_PATTERN,
    retry_failed: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> AcquireResult:
    """Search YouTube for Creative Commons videos and fetch the first ``search_seconds`` of each candidate whose
    own metadata declares a Creative Commons licence. Rejected candidates are reported with the reason."""
    work = Path(work)
    archive = DownloadArchive(work / "download_archive.txt")
    failures = FailureLog(work / "acquire_failures.json")
    result = AcquireResult()
    entries = downloader.search(query, max_results)[:max_results]
    seen: set[str] = set()
    for entry in progress(entries) if progress else entries:
        vid = entry.get("id")
        try:
            check_youtube_id(vid, "search result")
        except ValueError as exc:
            result.problems.append(
                SourceProblem(safe_source_id(str(vid)), "rejected", str(exc), origin="youtube-search")
            )
            continue
        if vid in seen:
            continue
        seen.add(vid)
        key = f"youtube {vid}"
        done = _load_done(work, vid)
        if done is not None and key in archive:
            result.records.append(done)
            result.skipped += 1
            continue
        prior = failures.permanent(key)
        if prior and not retry_failed:
            result.problems.append(SourceProblem(vid, "failed", prior["error"], video_id=vid, origin="youtube-search"))
            continue
        url = downloader.url_for(vid)
        try:
            info = downloader.probe(url)
            ok, why = licence_ok(info, licence_pattern)
            meta = _metadata(info, url)
            if not ok:
                result.problems.append(
                    SourceProblem(vid, "rejected", why, video_id=vid, origin="youtube-search", **meta)
                )
                continue
            rec = _fetch_range(downloader, ClipRange(vid, None, None), vid, work, info)
        except AcquireError as exc:
            failures.record(key, video_id=vid, error=str(exc), permanent=exc.permanent)
            result.problems.append(SourceProblem(vid, "failed", str(exc), video_id=vid, origin="youtube-search"))
            continue
        rec.origin = "youtube-search"
        rec.extra["query"] = query
        rec.licence = why
        write_json(work / "sources" / f"{vid}.json", rec.to_dict())
        archive.add(key)
        failures.clear(key)
        result.records.append(rec)
    return result


def local_sources(paths: Sequence[str | Path]) -> AcquireResult:
    """Source records for local video files and folders (searched recursively for video extensions).

    Source IDs are the file stems made safe; clashes get ``-2``, ``-3``... in sorted path order.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    result = AcquireResult()
    used: dict[str, int] = {}
    for f in dict.fromkeys(q.resolve() for q in files):
        base = safe_source_id(f.stem)
        used[base] = used.get(base, 0) + 1
        sid = base if used[base] == 1 else f"{base}-{used[base]}"
        try:
            fps, count, w, h = _probe_media(f)
        except AcquireError as exc:
            result.problems.append(SourceProblem(sid, "failed", str(exc), url=str(f), origin="local"))
            continue
        result.records.append(
            SourceRecord(
                sid,
                "local",
                str(f),
                url=f.as_uri(),
                title=f.name,
                retrieved=_now(),
                fps=fps,
                num_frames=count,
                width=w,
                height=h,
            )  # fmt: skip
        )
    return result
