"""Acquisition for `wflwv build`: ID checks, range files, licence filtering, downloads from a local HTTP server.

The "remote site" is an http.server on 127.0.0.1 (port 0) serving mp4 files whose frames carry their own index as
a barcode, so frame-exact trimming can be checked by reading the frames back.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from wflwv.build import acquire as A
from wflwv.protocol.video import iter_frames, probe_video, write_video

BITS = 10


def barcode_frame(i: int, w: int = 160, h: int = 96) -> np.ndarray:
    """A grey frame whose top band encodes ``i`` in BITS black / white blocks."""
    img = np.full((h, w, 3), 128, np.uint8)
    bw = w // BITS
    for b in range(BITS):
        img[:32, b * bw : (b + 1) * bw] = 255 if (i >> b) & 1 else 0
    return img


def read_barcode(img: np.ndarray, w: int = 160) -> int:
    bw = w // BITS
    return sum(1 << b for b in range(BITS) if img[4:28, b * bw + 3 : (b + 1) * bw - 3].mean() > 128)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serve ``barcode25fp.mp4`` (25 fps, 120 frames) and ``barcode2997.mp4`` (29.97 fps, 200 frames)."""
    root = tmp_path_factory.mktemp("site")
    write_video(root / "barcode25fp.mp4", [barcode_frame(i) for i in range(120)], 25.0)
    write_video(root / "barcode2997.mp4", [barcode_frame(i) for i in range(200)], 30000 / 1001)

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # ffmpeg closes connections early; not an error here
            pass

    srv = Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def make_downloader(base: str, **opts) -> A.Downloader:
    sleeps: list[float] = []
    dl = A.Downloader(
        A.DownloadOptions(sleep=0.0, retries=2, backoff=0.01, **opts),
        url_for=lambda vid: f"{base}/{vid}.mp4",
        sleep_fn=sleeps.append,
    )
    dl.sleeps = sleeps
    return dl


# ------------------------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("good", ["dQw4w9WgXcQ", "eEbMsJPwPEM", "a-b_c-d_e-f", "___________"])
def test_valid_youtube_ids(good):
    assert A.check_youtube_id(good) == good
    assert A.youtube_url(good).endswith("watch?v=" + good)


@pytest.mark.parametrize(
    "bad",
    ["dQw4w9WgXc", "dQw4w9WgXcQQ", "../../etc/pa", "abc def ghi", "dQw4w9WgXc/", "dQw4w9WgXcé", "", None, 12345678901],
)
def test_malformed_youtube_ids_are_rejected(bad):
    with pytest.raises(ValueError, match="malformed YouTube video ID"):
        A.check_youtube_id(bad, "test")
    with pytest.raises(ValueError):
        A.youtube_url(bad)


def test_parse_ranges(tmp_path):
    f = tmp_path / "ranges.txt"
    f.write_text("# comment\neEbMsJPwPEM 3329 3454\n\nstlr8GcjKAo None None\n5W1mdd26rCs\n")
    r = A.parse_ranges(f)
    assert [(x.video_id, x.start, x.end) for x in r] == [
        ("eEbMsJPwPEM", 3329, 3454),
        ("stlr8GcjKAo", None, None),
        ("5W1mdd26rCs", None, None),
    ]
    assert r[0].num_frames == 126 and r[0].key == "youtube eEbMsJPwPEM 3329 3454"
    for text, msg in [
        ("eEbMsJPwPEM 10 5\n", "START <= END"),
        ("eEbMsJPwPEM ten 20\n", "integers"),
        ("eEbMsJPwPEM 1 2 3\n", "expected"),
        ("../etc/pass 1 2\n", "malformed YouTube video ID"),
    ]:
        f.write_text("eEbMsJPwPEM 1 2\n" + text)
        with pytest.raises(ValueError, match=msg) as ei:
            A.parse_ranges(f)
        assert "line 2" in str(ei.value)


def test_official_download_ranges_parse():
    ref = Path(__file__).resolve().parent / "data" / "reference" / "wflwv-official" / "download_ranges.txt"
    r = A.parse_ranges(ref)
    assert len(r) == 1000
    assert all(120 <= x.num_frames <= 151 for x in r)


@pytest.mark.parametrize(
    "info, ok",
    [
        ({"license": "Creative Commons Attribution license (reuse allowed)"}, True),
        ({"license": "CC BY 4.0"}, True),
        ({"license": "cc-by-sa"}, True),
        ({"license": "Standard YouTube License"}, False),
        ({"license": ""}, False),
        ({"license": None}, False),
        ({}, False),
    ],
)
def test_licence_filter_on_handwritten_info(info, ok):
    accepted, why = A.licence_ok(info)
    assert accepted is ok
    assert why  # a licence string or a reason, never empty


def test_cc_search_url():
    url = A.cc_search_url("talking head interview")
    assert url.startswith("https://www.youtube.com/results?")
    assert "search_query=talking+head+interview" in url and "sp=EgIwAQ%3D%3D" in url
    with pytest.raises(ValueError):
        A.cc_search_url("  ")


def test_local_sources(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    frames = [barcode_frame(i) for i in range(5)]
    write_video(tmp_path / "a" / "my clip!.mp4", frames, 10.0)
    write_video(tmp_path / "b" / "my clip!.mp4", frames, 10.0)
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    (tmp_path / "b" / "broken.mp4").write_bytes(b"not an mp4")
    res = A.local_sources([tmp_path])
    assert sorted(r.source_id for r in res.records) == ["my-clip", "my-clip-2"]
    assert all(r.fps == 10.0 and r.width == 160 and r.origin == "local" for r in res.records)
    assert [p.source_id for p in res.problems] == ["broken"] and res.problems[0].status == "failed"
    with pytest.raises(ValueError, match="no such file"):
        A.local_sources([tmp_path / "missing"])


# ------------------------------------------------------------------------------------------------ retries
def test_retries_back_off_then_give_up():
    dl = A.Downloader(A.DownloadOptions(sleep=0.0, retries=3, backoff=1.0), sleep_fn=lambda s: sleeps.append(s))
    sleeps: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        raise OSError("Read timed out")

    with pytest.raises(A.AcquireError) as ei:
        dl._with_retries("thing", flaky)
    assert not ei.value.permanent and "gave up after 3 attempts" in str(ei.value)
    assert len(calls) == 3
    assert len(sleeps) == 2 and 1.0 <= sleeps[0] <= 1.25 and 2.0 <= sleeps[1] <= 2.5  # doubling, with jitter

    outcomes = [OSError("HTTP Error 503"), "ok"]

    def recovers():
        o = outcomes.pop(0)
        if isinstance(o, Exception):
            raise o
        return o

    assert dl._with_retries("thing", recovers) == "ok"

    calls.clear()

    def private():
        calls.append(1)
        raise RuntimeError("ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access")

    with pytest.raises(A.AcquireError) as ei:
        dl._with_retries("thing", private)
    assert ei.value.permanent and len(calls) == 1  # permanent errors are not retried


def test_pacing_between_requests():
    slept: list[float] = []
    dl = A.Downloader(A.DownloadOptions(sleep=5.0), sleep_fn=slept.append)
    dl._pace()
    dl._pace()
    assert len(slept) == 1 and 4.0 < slept[0] <= 5.0


# ------------------------------------------------------------------------------------------------ downloads
@pytest.mark.slow
def test_download_ranges_frame_exact_and_resumable(server, tmp_path):
    dl = make_downloader(server)
    ranges = [
        A.ClipRange("barcode25fp", 37, 61),  # the generic extractor reports no fps: the 30 fps guess is wrong
        A.ClipRange("barcode2997", 150, 169),  # 29.97 fps, frames near the end
        A.ClipRange("barcode25fp", 0, 9),
        A.ClipRange("barcode25fp", 95, 114),  # here the wrong guess misses the range: fetched again at 25 fps
        A.ClipRange("missingVid1", 5, 20),  # 404: reported, not fatal
    ]
    res = A.acquire_ranges(ranges, tmp_path, dl)
    assert [r.source_id for r in res.records] == ["barcode25fp_37", "barcode2997", "barcode25fp_0", "barcode25fp_95"]
    for rng, rec in zip(ranges, res.records):
        codes = [read_barcode(f) for f in iter_frames(rec.path)]
        assert codes == list(range(rng.start, rng.end + 1)), rec.source_id
        assert rec.fixed_window and rec.frame_offset == rng.start and rec.num_frames == rng.num_frames
        assert rec.url.startswith(server) and rec.retrieved
        assert Path(tmp_path / "sources" / f"{rec.source_id}.json").is_file()
    assert abs(res.records[1].fps - 29.97) < 0.01 and abs(probe_video(res.records[1].path).fps - 29.97) < 0.01
    assert len(res.problems) == 1 and res.problems[0].status == "failed" and "404" in res.problems[0].reason
    archive = (tmp_path / "download_archive.txt").read_text().split("\n")
    assert "youtube barcode25fp 37 61" in archive and not any("missingVid1" in a for a in archive)
    log = A.FailureLog(tmp_path / "acquire_failures.json")
    assert log.permanent("youtube missingVid1 5 20")
    assert not list((tmp_path / "downloads").glob("*.section.*"))  # sections removed after trimming

    # a re-run asks the network for nothing: finished clips are archived, the 404 is permanent
    requests = dl.requests
    again = A.acquire_ranges(ranges, tmp_path, dl)
    assert dl.requests == requests and again.skipped == 4 and len(again.problems) == 1
    # unless asked to retry failures
    A.acquire_ranges(ranges, tmp_path, dl, retry_failed=True)
    assert dl.requests > requests


def test_range_past_the_end_is_a_permanent_failure(server, tmp_path):
    dl = make_downloader(server)
    res = A.acquire_ranges([A.ClipRange("barcode25fp", 110, 130)], tmp_path, dl)
    assert not res.records and "ends after the video" in res.problems[0].reason
    assert A.FailureLog(tmp_path / "acquire_failures.json").permanent("youtube barcode25fp 110 130")


def test_search_checks_every_candidates_licence(server, tmp_path):
    """The search listing and metadata are recorded dictionaries; the accepted video is really downloaded."""
    infos = {
        "barcode2997": {
            "id": "barcode2997",
            "title": "Talk",
            "uploader": "Alice",
            "license": "Creative Commons Attribution license (reuse allowed)",
        },
        "barcode25fp": {
            "id": "barcode25fp",
            "title": "Music video",
            "uploader": "Bob",
            "license": "Standard YouTube License",
        },
        "noLicence01": {"id": "noLicence01", "title": "Vlog", "uploader": "Carol"},
    }

    class Recorded(A.Downloader):
        def search(self, query, max_results):
            return [{"id": "barcode25fp"}, {"id": "../etc/pass"}, {"id": "barcode2997"}, {"id": "noLicence01"}]

        def probe(self, url):
            return infos[url.rsplit("/", 1)[1].removesuffix(".mp4")]

    dl = Recorded(A.DownloadOptions(sleep=0.0), url_for=lambda vid: f"{server}/{vid}.mp4", sleep_fn=lambda s: None)
    res = A.acquire_search("talk", 10, tmp_path, dl)
    assert [r.source_id for r in res.records] == ["barcode2997"]
    rec = res.records[0]
    assert rec.origin == "youtube-search" and rec.licence.startswith("Creative Commons")
    assert rec.uploader == "Alice" and rec.title == "Talk" and rec.url.endswith("barcode2997.mp4") and rec.retrieved
    assert not rec.fixed_window and rec.frame_offset == 0
    assert [read_barcode(f) for f in iter_frames(rec.path)] == list(range(200))  # the whole (short) video
    why = {p.source_id: (p.status, p.reason) for p in res.problems}
    assert why["barcode25fp"] == ("rejected", "licence 'Standard YouTube License' is not Creative Commons")
    assert why["noLicence01"][0] == "rejected" and "no licence" in why["noLicence01"][1]
    assert any(s == "rejected" and "malformed" in r for s, r in why.values())
    again = A.acquire_search("talk", 10, tmp_path, dl)
    assert again.skipped == 1
