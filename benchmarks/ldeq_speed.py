"""LDEQ frames per second through `wflwv bench`, this code against a checkout of the code before it.

Runs whole `python -m wflwv.cli bench` commands (process start, decode, crop, model, scoring, writing the run folder)
for the LDEQ at the demo size (the shipped demo model) and at the paper's widths 224/224/24 (random weights from
seed 0), full solve and RwR, at several --batch-videos, with the baseline and this code run
alternately --repeats times; prints per row the median frames per second of each, the speed-up, and the largest
|prediction difference| in frame pixels over every landmark of every frame of every run. Each command runs at its
defaults apart from the row's option: "defaults" runs both commands as a user would type them (each with its own
default --batch-videos and --frame-batch), "videos N" gives both --batch-videos N, and where this code's `wflwv bench`
has --frame-batch, rows "frames N" (--frame-batch N, the baseline without it) are added for the full solve.

The clips are the demo dataset when it has already been built (it is never built here), else synthetic clips
(`wflwv.testing.make_synthetic_dataset`, 640 x 480 frames, kept in the cache folder); the first line says which.

    git worktree add ../wflwv-base c70f376     # the code before issue 16
    python3 benchmarks/ldeq_speed.py --baseline ../wflwv-base [--sizes demo 224] [--modes full rwr]
        [--batch-videos 1 4] [--frame-batch 8] [--rows defaults videos frames] [--repeats 3] [--clips 4] [--frames 48] [--frames-224 8] [--data DIR]

Timings on a machine shared with other work are noisy: the runs alternate so that load hits both alike, and the
medians are printed; run it on a quiet machine for the numbers to quote.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wflwv.io import cache_dir  # noqa: E402

SIZES = {
    "demo": [],  # the shipped demo model (68 points, widths 32/32/8, 128 px input)
    # the paper's config (widths 224/224/24, 98 points), randomly initialised from seed 0: an architecture field
    # given means no shipped weights (a bare weights=none reads as "not given" on the command line)
    "224": ["num_landmarks=98", "seed=0"],
}


def _dataset(args: argparse.Namespace, frames: int) -> tuple[Path, str]:
    if args.data is not None:
        return args.data, f"dataset {args.data}"
    from wflwv.build.demo import demo_dir

    demo = demo_dir() / "dataset"
    if (demo / "dataset.json").is_file() and (demo / "hard_video_IDs.txt").is_file():
        return demo, f"the demo dataset {demo}"
    from wflwv.testing import make_synthetic_dataset

    root = cache_dir() / "benchmarks" / f"ldeq-speed-synthetic-{args.clips}x{frames}"
    make_synthetic_dataset(
        root, num_hard=args.clips // 2, num_easy=args.clips - args.clips // 2, num_frames=frames, size=(640, 480)
    )
    return root, f"synthetic clips ({args.clips} x {frames} frames, 640 x 480) in {root}"


def _clip_ids(data: Path, n: int | None) -> list[str]:
    ids: list[str] = []
    for split in ("hard", "easy"):
        p = data / f"{split}_video_IDs.txt"
        if p.is_file():
            ids += [v.strip() for v in p.read_text().split() if v.strip()]
    ids = sorted(set(ids))
    return ids[:n] if n else ids


def _has_option(tree: Path, option: str) -> bool:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "wflwv.cli", "bench", "--help"], cwd=tree, env=env, capture_output=True, text=True
    )
    return option in out.stdout


def _bench(tree: Path, data: Path, split: Path, ids: list[str], model_args: list[str], extra: list[str]):
    """One whole `wflwv bench` command with the code in ``tree``: (seconds, CPU seconds, frames, {clip: landmarks})."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "wflwv.cli", "bench", "--model", "ldeq", "--data", str(data)]
        cmd += ["--split", str(split), "--out", out, "--device", "cpu", "--quiet", *extra]
        for a in model_args:
            cmd += ["--model-arg", a]
        c0, t0 = _children_cpu(), time.perf_counter()
        res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
        if res.returncode != 0:
            raise SystemExit(f"bench failed in {tree}:\n{' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        preds = {}
        for v in ids:
            with np.load(Path(out) / "predictions" / f"{v}.npz") as z:
                preds[v] = z["landmarks"]
    return dt, cpu, sum(len(p) for p in preds.values()), preds


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="checkout of the code to compare with")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--modes", nargs="+", default=["full", "rwr"], choices=["full", "rwr"])
    ap.add_argument("--batch-videos", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frame-batch", type=int, default=4, help="an extra frame batch for the full solve, if supported")
    ap.add_argument(
        "--rows",
        nargs="+",
        default=["defaults", "videos", "frames"],
        choices=["defaults", "videos", "frames"],
        help="defaults: each command at its defaults; videos: both at each --batch-videos; frames: --frame-batch",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=4, help="clips used (synthetic: clips made)")
    ap.add_argument("--frames", type=int, default=48, help="frames per synthetic clip (demo size)")
    ap.add_argument("--frames-224", type=int, default=8, help="frames per synthetic clip (224 widths)")
    ap.add_argument("--data", type=Path, default=None, help="a dataset folder instead of the demo / synthetic clips")
    a = ap.parse_args()
    base, new = a.baseline.resolve(), ROOT
    if not (base / "wflwv" / "cli" / "bench.py").is_file():
        raise SystemExit(f"{base} is not a wflwv checkout (no wflwv/cli/bench.py)")
    frame_batch = _has_option(new, "--frame-batch")
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"baseline {base}, new {new}; medians of {a.repeats} alternating runs of the whole command")
    head = (
        f"{'model':<6} {'mode':<5} {'batch':>9} {'frames':>6} {'base fps':>9} {'new fps':>9} {'speed-up':>8} "
        f"{'max |d| px':>10} {'base cpu/f':>10} {'new cpu/f':>9}"
    )
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "clips.txt"
        for size in a.sizes:
            data, what = _dataset(a, a.frames if size == "demo" else a.frames_224)
            ids = _clip_ids(data, a.clips)
            split.write_text("\n".join(ids) + "\n")
            print(f"{size}: {what}; {len(ids)} clips used", flush=True)
            for mode in a.modes:
                model_args = SIZES[size] + (["rwr=true"] if mode == "rwr" else [])
                rows = [("defaults", [], [])] if "defaults" in a.rows else []
                if "videos" in a.rows:
                    rows += [
                        (f"videos {bv}", [f"--batch-videos={bv}"], [f"--batch-videos={bv}"]) for bv in a.batch_videos
                    ]
                if frame_batch and mode == "full" and "frames" in a.rows:  # without frame batching, and another size
                    for fb in (1, a.frame_batch):
                        rows.append((f"frames {fb}", [], [f"--frame-batch={fb}"]))
                for label, base_extra, new_extra in rows:
                    fps = {"base": [], "new": []}
                    cpu = {"base": [], "new": []}
                    diff, frames = 0.0, 0
                    for _ in range(a.repeats):
                        tb, cb, frames, pb = _bench(base, data, split, ids, model_args, base_extra)
                        tn, cn, _, pn = _bench(new, data, split, ids, model_args, new_extra)
                        fps["base"].append(frames / tb)
                        fps["new"].append(frames / tn)
                        cpu["base"].append(cb / frames)
                        cpu["new"].append(cn / frames)
                        diff = max(diff, max(float(np.abs(pb[v] - pn[v]).max()) for v in ids))
                    fb, fn = statistics.median(fps["base"]), statistics.median(fps["new"])
                    print(
                        f"{size:<6} {mode:<5} {label:>9} {frames:>6} {fb:>9.2f} {fn:>9.2f} {fn / fb:>7.2f}x "
                        f"{diff:>10.2g} {statistics.median(cpu['base']):>10.3f} {statistics.median(cpu['new']):>9.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
