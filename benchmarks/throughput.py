"""Throughput of the bench: frames per second of the models alone, of the bench pipeline alone, of whole benches
per precision mode (with what each mode does to NME / NMF), and of the whole ``wflwv bench`` command with and
without frame batching. One process; prints tables.

Tables:

1. **models alone** -- ``predict`` on batches of 256 x 256 crops (after two warm-up calls at each batch size):
   the shipped UNet (``create_model("unet")``), HRNet ``size=small`` (random weights: speed does not depend on
   them) and LDEQ at the demo size and at the paper's widths, full solve and RwR (the shipped demo model; 224/224/24
   with random weights, frame batches 1 and 8 only), at frame batch 1 / 8 / 32. Peak memory on CUDA.
2. **bench pipeline alone** -- ``run_benchmark`` with the ``mean-shape`` model (no network): decoding, cropping,
   scoring and writing the run folder.
3. **precision modes** -- whole benches of the shipped UNet (the default frame batch) and of the shipped LDEQ with RwR
   for every precision this machine runs
   (fp32; bf16 on CUDA and on CPUs with native bf16; fp16 on CUDA): frames per second, and the change of NME and
   NMF against fp32 (relative change of the dataset means, and the largest change of a landmark, frame pixels).
4. **whole command** -- ``wflwv bench --model unet`` as a subprocess with ``--frame-batch 1``, with the default
   (exact mode) and with ``--batched`` (and with ``--before CHECKOUT``, the same command with another checkout's
   code, e.g. the code before frame batching), wall time including start-up and CPU time (the fastest of
   ``--repeats`` runs), and the largest difference of per-clip NME / NMF and of the predictions.

Data: ``--data DIR``; by default the demo dataset when it is already built in the cache (``--demo`` builds it:
a few minutes on first use), else synthetic clips (``wflwv.testing``, said in the output).

Usage::

    python benchmarks/throughput.py                    # this machine's default torch threads
    python benchmarks/throughput.py --threads 1 --demo
    python benchmarks/throughput.py --device cuda      # the same tables on a GPU, with peak memory
    python benchmarks/throughput.py --before ../wflwv-before --repeats 3   # the whole command against older code
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wflwv.benchmark import inference  # noqa: E402
from wflwv.benchmark.harness import DEFAULT_FRAME_BATCH, run_benchmark  # noqa: E402
from wflwv.benchmark.results import RunDir  # noqa: E402
from wflwv.models import create_model  # noqa: E402
from wflwv.models.api import resolve_device  # noqa: E402
from wflwv.protocol.layout import WFLWVDataset  # noqa: E402

FRAME_BATCHES = (1, 8, 32)

#: rows of table 1: (label, model name, model arguments, frame batches, stateful). LDEQ at the demo size (the shipped
#: model) and at the paper's widths 224/224/24 (random weights from seed 0: an architecture field given means no
#: shipped weights), full solve and RwR; for RwR a "frame batch" of N is frame t of N clips, each warm-started from
#: its previous frame. The 224 model takes seconds per frame on a CPU: batches 1 and 8 only.
MODEL_ROWS = [
    ("unet (shipped)", "unet", {}, FRAME_BATCHES, False),
    ("hrnet small", "hrnet", {"size": "small", "weights": "none"}, FRAME_BATCHES, False),
    ("ldeq demo", "ldeq", {}, FRAME_BATCHES, False),
    ("ldeq demo rwr", "ldeq", {"rwr": True}, FRAME_BATCHES, True),
    ("ldeq 224/224/24", "ldeq", {"num_landmarks": 98, "seed": 0}, (1, 8), False),
    ("ldeq 224/224/24 rwr", "ldeq", {"num_landmarks": 98, "seed": 0, "rwr": True}, (1, 8), True),
]


def _peak_mb(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "-"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


#: the clock of table 1: wall time, or this process's CPU time (``--clock cpu``: steadier on a machine that other
#: jobs keep busy; meaningful with one thread, where CPU time is the time the work needed)
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def _predict_fps(
    model,
    batch: int,
    device: torch.device,
    seconds: float,
    precision: str = "fp32",
    clock=time.perf_counter,
    stateful: bool = False,
) -> float:
    x = torch.rand(batch, 3, 256, 256, device=device)
    states, frames = [None] * batch, [None] * batch
    with torch.inference_mode(), inference.precision_context(precision, device):
        for _ in range(2):
            out = model.predict(x, states, frames)
            if stateful:  # the timed calls are later frames, warm-started from this one
                states = out.states
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        n, t0 = 0, clock()
        while n < 3 or clock() - t0 < seconds:
            model.predict(x, states, frames)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return n * batch / (clock() - t0)


def _precisions(device: torch.device) -> list[str]:
    out = []
    for p in inference.PRECISIONS:
        try:
            inference.check_precision(p, device)
        except inference.BenchError:
            continue
        out.append(p)
    return out


def _data(args, tmp: Path) -> tuple[Path, str]:
    if args.data:
        return Path(args.data), f"dataset {args.data}"
    from wflwv.build.demo import demo_dir, ensure_demo_dataset

    built = demo_dir() / "dataset"
    if args.demo or (built / "dataset.json").is_file():
        return ensure_demo_dataset(log=lambda m: print(m, file=sys.stderr)), "the demo dataset"
    from wflwv.testing import make_synthetic_dataset

    root = tmp / "synthetic"
    make_synthetic_dataset(root, num_hard=4, num_easy=4, num_frames=60, size=(320, 240), scheme="ibug68", seed=5)
    return root, "SYNTHETIC clips (8 x 60 frames; the demo dataset is not built: --demo builds it)"


def _bench_row(model, data: Path, out: Path, device: torch.device, **kw) -> tuple[dict, float]:
    _reset_peak(device)
    t0 = time.perf_counter()
    summary = run_benchmark(model, data, out, device=str(device), progress=False, **kw)
    return summary, time.perf_counter() - t0


def _max_prediction_diff(a: Path, b: Path, ids: list[str]) -> float:
    worst = 0.0
    for vid in ids:
        if RunDir(a).finished(vid) and RunDir(b).finished(vid):
            pa, pb = RunDir(a).load_predictions(vid)["landmarks"], RunDir(b).load_predictions(vid)["landmarks"]
            worst = max(worst, float(np.abs(pa - pb).max()))
    return worst


def table_models(args, device: torch.device, machine: str) -> None:
    print(f"\n1. models alone: predict() frames per {args.clock} second on {device} ({machine})")
    head = f"{'model':<22} {'precision':<9} " + " ".join(f"{'fb ' + str(b):>9}" for b in FRAME_BATCHES)
    head += f" {'fb32/fb1':>9} {'peak MB':>8}"
    print(head)
    print("-" * len(head))
    for label, name, kw, batches, stateful in MODEL_ROWS:
        with warnings.catch_warnings():  # "created without weights": meant (speed does not depend on them)
            warnings.simplefilter("ignore")
            model = create_model(name, **kw).to(device)
        for precision in _precisions(device):
            _reset_peak(device)
            fps = {
                b: _predict_fps(model, b, device, args.seconds, precision, CLOCK[args.clock], stateful) for b in batches
            }
            cells = " ".join(f"{fps[b]:>9.1f}" if b in fps else f"{'-':>9}" for b in FRAME_BATCHES)
            ratio = (
                f"{fps[FRAME_BATCHES[-1]] / fps[FRAME_BATCHES[0]]:>8.2f}x" if FRAME_BATCHES[-1] in fps else f"{'-':>9}"
            )
            print(f"{label:<22} {precision:<9} {cells} {ratio} {_peak_mb(device):>8}", flush=True)


def table_pipeline(data: Path, tmp: Path, device: torch.device, frames: int) -> None:
    scheme = WFLWVDataset(data).scheme.name
    _, wall = _bench_row(create_model("mean-shape", scheme=scheme), data, tmp / "pipeline", device)
    print(f"\n2. bench pipeline alone (decode + crop + scoring + writing, mean-shape model): {frames / wall:.1f} fps")


#: table 3's models: (label, model name, model arguments)
PRECISION_ROWS = [("unet (shipped)", "unet", {}), ("ldeq demo rwr", "ldeq", {"rwr": True})]


def table_precision(data: Path, tmp: Path, device: torch.device, frames: int, ids: list[str]) -> None:
    print(f"\n3. precision modes: whole benches (stateless models at frame batch {DEFAULT_FRAME_BATCH})")
    head = (
        f"{'model':<16} {'precision':<9} {'fps':>8} {'NME %':>9} {'NMF':>9} {'dNME rel':>9} {'dNMF rel':>9} "
        f"{'max |d| px':>10} {'peak MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for label, name, kw in PRECISION_ROWS:
        ref = None
        for precision in _precisions(device):
            out = tmp / f"{name}-{precision}"
            s, wall = _bench_row(create_model(name, **kw), data, out, device, precision=precision)
            a = s["sets"]["none"]["splits"]["all"]
            if ref is None:
                ref = (a, out)
            d_nme = (a["nme"] - ref[0]["nme"]) / ref[0]["nme"]
            d_nmf = (a["nmf"] - ref[0]["nmf"]) / ref[0]["nmf"]
            worst = _max_prediction_diff(ref[1], out, ids)
            print(f"{label:<16} {precision:<9} {frames / wall:>8.1f} {a['nme']:>9.4f} {a['nmf']:>9.3f} "
                  f"{100 * d_nme:>8.3f}% {100 * d_nmf:>8.3f}% {worst:>10.4f} {_peak_mb(device):>8}", flush=True)  # fmt: skip
    print("(fp32 is the default; another mode is worth it only when its change is below 0.1 % NME and 1 % NMF)")


def _compare(label: str, a: Path, b: Path, ids: list[str]) -> None:
    x, y = pd.read_csv(a / "per_video.csv"), pd.read_csv(b / "per_video.csv")
    print(f"{label}: largest per-clip difference NME {(x.nme - y.nme).abs().max():.2e} %, NMF "
          f"{(x.nmf - y.nmf).abs().max():.2e}, predictions {_max_prediction_diff(a, b, ids):.2e} frame px")  # fmt: skip


def table_command(args, data: Path, tmp: Path, device: torch.device, frames: int, ids: list[str]) -> None:
    print("\n4. whole command: wflwv bench --model unet, wall time including start-up")
    runs = [(f"--frame-batch {fb}", ROOT, ["--frame-batch", str(fb)]) for fb in (1, DEFAULT_FRAME_BATCH)]
    runs.append((f"--frame-batch {DEFAULT_FRAME_BATCH} --batched", ROOT, ["--batched"]))  # not exact mode
    if args.before:
        runs.insert(0, (f"before ({args.before})", Path(args.before).resolve(), []))
    walls, cpus, outs = {}, {}, {}
    for label, tree, extra in runs:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        outs[label] = tmp / f"cmd-{len(outs)}"
        for _ in range(args.repeats):  # the fastest of a few: other jobs on the machine only slow runs down
            shutil.rmtree(outs[label], ignore_errors=True)
            cmd = [sys.executable, "-m", "wflwv.cli", "bench", "--model", "unet", "--data", str(data), "--out",
                   str(outs[label]), "--device", str(device), "--quiet", *extra]  # fmt: skip
            t0, c0 = time.perf_counter(), os.times()
            # cwd: a neutral folder, or `python -m` would import the package from the current directory
            subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tmp)
            c1 = os.times()
            cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
            walls[label] = min(walls.get(label, np.inf), time.perf_counter() - t0)
            cpus[label] = min(cpus.get(label, np.inf), cpu)
    print(f"{'command':<40} {'wall s':>8} {'fps':>8} {'CPU s':>8}  speed-up over the first row")
    first = runs[0][0]
    for label, _, _ in runs:
        print(f"{label[:40]:<40} {walls[label]:>8.1f} {frames / walls[label]:>8.1f} {cpus[label]:>8.1f}  "
              f"{walls[first] / walls[label]:.2f}x wall, {cpus[first] / cpus[label]:.2f}x CPU")  # fmt: skip
    one, default, batched = (r[0] for r in runs[-3:])
    _compare(f"{one} vs {default}", outs[one], outs[default], ids)
    _compare(f"{default} vs {batched}", outs[default], outs[batched], ids)
    if args.before:
        for label in (one, default, batched):
            _compare(f"before vs {label}", outs[runs[0][0]], outs[label], ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="a dataset folder (default: the demo dataset, else synthetic)")
    ap.add_argument("--demo", action="store_true", help="build the demo dataset if it is not there yet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per row of table 1")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="table 1's clock (cpu: for busy machines)")
    ap.add_argument("--tables", default="1234", help="which tables to print (e.g. 4)")
    ap.add_argument("--before", default=None, help="table 4: also bench with the code of this checkout")
    ap.add_argument("--repeats", type=int, default=2, help="table 4: runs per command (the fastest counts)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    machine = (
        f"{os.cpu_count()} CPU core(s), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    if "1" in args.tables:
        table_models(args, device, machine)
    with tempfile.TemporaryDirectory(prefix="wflwv-throughput-") as tmp_s:
        tmp = Path(tmp_s)
        data, what = _data(args, tmp)
        ds = WFLWVDataset(data)
        ids = ds.ids()
        frames = sum(ds.load(v).num_frames for v in ids)
        print(f"\ndata: {what}: {len(ids)} clips, {frames} frames")
        if "2" in args.tables:
            table_pipeline(data, tmp, device, frames)
        if "3" in args.tables:
            table_precision(data, tmp, device, frames, ids)
        if "4" in args.tables:
            table_command(args, data, tmp, device, frames, ids)


if __name__ == "__main__":
    main()
