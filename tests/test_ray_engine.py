"""The Ray engine under the harness: same per-clip numbers, predictions and filter results as in-process; a worker
killed mid-run; clips that fail on their own; a worker that cannot see the dataset. One local Ray (2 CPUs) serves
the whole module; the command-line paths (own Ray, ``ray start``, driver killed) are in test_ray_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wflwv.benchmark.cluster import ClusterError
from wflwv.benchmark.engines import RayEngine
from wflwv.benchmark.harness import BenchError, run_benchmark
from wflwv.benchmark.results import RunDir
from wflwv.filters import parse_filter_options
from wflwv.models import LandmarkModel, ModelOutput, create_model
from wflwv.protocol.layout import WFLWVDataset
from wflwv.testing import make_synthetic_dataset

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TINY_LDEQ = dict(weights="none", num_landmarks=98, injection_width=8, cell_base_width=8, cell_width_increment=4)


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    """A dataset no other test uses: 5 clips of 9..15 frames, its own seed."""
    root = tmp_path_factory.mktemp("unseen") / "data"
    make_synthetic_dataset(root, num_hard=3, num_easy=2, num_frames=9, seed=7)
    # clips of different lengths (a group of clips must cope with clips ending at different frames)
    extra = tmp_path_factory.mktemp("longer") / "data"
    make_synthetic_dataset(extra, num_hard=0, num_easy=1, num_frames=15, seed=8)
    for sub in ("videos", "bboxes", "landmarks"):
        for p in (extra / sub).iterdir():
            shutil.copy(p, root / sub / p.name.replace("synth0000e0", "synth0099e0"))
    return root


def _single_thread_in_process(model, data, out, **kw):
    """The in-process reference with the workers' thread count (torch kernels may round differently with more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_benchmark(model, data, out, progress=False, **kw)
    finally:
        torch.set_num_threads(before)


def _assert_same_runs(a: Path, b: Path, data: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "per_video.csv"), pd.read_csv(b / "per_video.csv"), check_exact=True)
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert sa["sets"] == sb["sets"] and sa["identity"] == sb["identity"]
    ra, rb = RunDir(a), RunDir(b)
    for vid in WFLWVDataset(data).ids():
        if not ra.finished(vid):
            assert not rb.finished(vid)
            continue
        pa, pb = ra.load_predictions(vid), rb.load_predictions(vid)
        assert pa.keys() == pb.keys()
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{vid}: {k}")


def _seeded_ldeq(**kw):
    torch.manual_seed(1234)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model("ldeq", **TINY_LDEQ, **kw)


def test_ldeq_rwr_with_a_filter_sweep_matches_in_process(local_ray, unseen, tmp_path):
    filters = parse_filter_options(["ema:alpha=0.3|0.7", "one-euro:min_cutoff=1.0,beta=0.05"])
    model = _seeded_ldeq(rwr=True)
    assert model.stateful
    _single_thread_in_process(model, unseen, tmp_path / "local", filters=filters, batch_videos=2)
    run_benchmark(
        _seeded_ldeq(rwr=True),
        unseen,
        tmp_path / "ray",
        filters=filters,
        batch_videos=2,
        progress=False,
        engine=RayEngine(workers=2),
    )
    _assert_same_runs(tmp_path / "local", tmp_path / "ray", unseen)
    df = pd.read_csv(tmp_path / "ray" / "per_video.csv")
    assert df["filter"].nunique() == 4 and "none" in set(df["filter"])  # unfiltered + three settings
    assert (df.status == "ok").all() and len(df) == 4 * 6
    info = json.loads((tmp_path / "ray" / "run.json").read_text())["engine"]
    assert info["name"] == "ray" and info["workers"] == 2 and info["nodes"] == 1
    assert info["ray_version"] == ray.__version__ and info["threads_per_worker"] == 1
    assert json.loads((tmp_path / "local" / "run.json").read_text())["engine"]["name"] == "in-process"


def test_per_frame_heatmap_model_matches_in_process(local_ray, unseen, tmp_path):
    torch.manual_seed(5)
    unet = create_model("unet", weights="none", size="tiny")
    assert not unet.stateful
    kw = dict(batch_videos=2, frame_batch=5, filters=parse_filter_options(["ema:alpha=0.5"]))
    _single_thread_in_process(unet, unseen, tmp_path / "local", **kw)
    run_benchmark(unet, unseen, tmp_path / "ray", progress=False, engine=RayEngine(workers=2), **kw)
    _assert_same_runs(tmp_path / "local", tmp_path / "ray", unseen)


class SlowRecorder(LandmarkModel):
    """A deterministic stateful plug-in defined in this test file (so it travels to workers by value).

    Output: the mean shape moved by the image mean and a per-clip frame counter. With ``hold`` set, the first
    process to reach frame 4 of clip ``hold[0]`` writes its pid to the file ``hold[1]`` and sleeps, to be killed.
    ``broken`` clips make predict raise (a clip failing for its own reason).
    """

    scheme = "wflw98"

    def __init__(self, hold: tuple[str, str] | None = None, broken: str | None = None):
        from wflwv.schemes import template_shape

        self.base = template_shape("wflw98") * 256
        self.hold = hold
        self.broken = broken

    def predict(self, images, states, frames):
        out, new = [], []
        for img, st, f in zip(images, states, frames):
            if self.hold and f.video_id == self.hold[0] and f.frame_index == 4:
                marker = Path(self.hold[1])
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    time.sleep(120)
            if f.video_id == self.broken and f.frame_index == 2:
                raise ValueError("this clip breaks the model")
            count = 0 if st is None else st + 1
            # numpy's mean: the same sum whatever torch's thread count
            out.append(self.base + img.numpy().astype(np.float64).mean() * 10 + count * 0.1)
            new.append(count)
        return ModelOutput(np.stack(out), new, stats={"counter": np.array(new, float)})


def test_a_worker_killed_mid_run_is_replaced_and_every_clip_scored_once(local_ray, unseen, tmp_path, monkeypatch):
    ids = WFLWVDataset(unseen).ids()
    victim = ids[2]
    _single_thread_in_process(SlowRecorder(), unseen, tmp_path / "calm")

    marker = tmp_path / "worker.pid"
    written = Counter()
    original = RunDir.write_clip

    def counting(self, record, *a, **kw):
        written[record["video_id"]] += 1
        return original(self, record, *a, **kw)

    monkeypatch.setattr(RunDir, "write_clip", counting)
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline:
            if marker.is_file() and marker.read_text():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    engine = RayEngine(workers=2)
    run_benchmark(SlowRecorder(hold=(victim, str(marker))), unseen, tmp_path / "hurt", progress=False, engine=engine)
    thread.join(5)
    assert killed, "the test never saw the worker reach the clip"
    assert engine.deaths == 1 and engine.replaced == 1
    assert written == Counter({v: 1 for v in ids}), "every clip is written exactly once"
    _assert_same_runs(tmp_path / "calm", tmp_path / "hurt", unseen)


def test_clips_failing_on_their_own_are_recorded_like_in_process(local_ray, unseen, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(unseen, data)
    ids = WFLWVDataset(data).ids()
    (data / "videos" / f"{ids[0]}.mp4").write_bytes(b"no video here" * 50)
    broken = ids[3]
    run_benchmark(SlowRecorder(broken=broken), data, tmp_path / "local", progress=False, batch_videos=2)
    engine = RayEngine(workers=2)
    run_benchmark(SlowRecorder(broken=broken), data, tmp_path / "ray", progress=False, batch_videos=2, engine=engine)
    _assert_same_runs(tmp_path / "local", tmp_path / "ray", data)
    df = pd.read_csv(tmp_path / "ray" / "per_video.csv").set_index("video_id")
    assert "this clip breaks the model" in df.loc[broken, "error"]
    assert f"{ids[0]}.mp4" in df.loc[ids[0], "error"]
    assert engine.deaths == 0  # failed clips are results, not worker faults: nothing retried


def test_resume_works_whichever_engine_ran_first(local_ray, unseen, tmp_path, monkeypatch):
    ids = WFLWVDataset(unseen).ids()
    first = tmp_path / "first.txt"
    first.write_text("\n".join(ids[:2]) + "\n")
    run_benchmark(SlowRecorder(), unseen, tmp_path / "whole", progress=False)
    run_benchmark(SlowRecorder(), unseen, tmp_path / "mixed", split=str(first), progress=False)
    seen = []
    original = RunDir.write_clip
    monkeypatch.setattr(
        RunDir, "write_clip", lambda self, rec, *a, **kw: (seen.append(rec["video_id"]), original(self, rec, *a, **kw))
    )
    run_benchmark(SlowRecorder(), unseen, tmp_path / "mixed", progress=False, engine=RayEngine(workers=2))
    assert sorted(seen) == sorted(ids[2:])
    _assert_same_runs(tmp_path / "whole", tmp_path / "mixed", unseen)


def test_a_worker_that_cannot_see_the_dataset_says_so(local_ray, unseen, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(unseen, data)
    original = RayEngine.start

    def start_after_the_data_moved(self, job):
        # the driver has read the dataset; the workers look for it at the same path and do not find it (as on a
        # node without the shared filesystem)
        data.rename(tmp_path / "elsewhere")
        return original(self, job)

    monkeypatch.setattr(RayEngine, "start", start_after_the_data_moved)
    with pytest.raises(ClusterError) as err:
        run_benchmark(create_model("mean-shape"), data, tmp_path / "run", progress=False, engine=RayEngine(workers=1))
    msg = str(err.value)
    assert "cannot see the dataset" in msg and str(data.resolve()) in msg
    assert "same path" in msg and "docs/cluster.md" in msg


def test_model_contract_errors_on_a_worker_stop_the_run(local_ray, unseen, tmp_path):
    class WrongShape(LandmarkModel):
        stateful = False

        def predict(self, images, states, frames):
            return ModelOutput(np.zeros((len(images), 5, 2)), [None] * len(images))

    with pytest.raises(BenchError, match="shape"):
        run_benchmark(WrongShape(), unseen, tmp_path / "run", progress=False, engine=RayEngine(workers=1))
