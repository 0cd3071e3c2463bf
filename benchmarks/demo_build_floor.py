"""The label floor `wflwv build --local` records on the demo videos, next to a shipped model's NMF on the same clips.

A piece of ``--seconds`` seconds of each demo video's evaluation part (after ``wflwv.build.demo.TRAIN_FRAMES``)
is cut out (H.264 crf 12, as the demo does), built with the demo's settings (oracle dlib68 with flip, shift and
scale test-time augmentation, 2 passes, one clip per video) and the default label floor (3 frames x static / slow
x 40 frames); then ``--model`` is benched on the result. Everything lives in ``--work`` (default
``<cache>/bench/demo-floor``) and resumes.

Usage::

    python benchmarks/demo_build_floor.py
    python benchmarks/demo_build_floor.py --seconds 10 --floor-stills 6 --model ldeq
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wflwv.benchmark.harness import run_benchmark  # noqa: E402
from wflwv.build.demo import DEMO_FILES, TRAIN_FRAMES, fetch_media  # noqa: E402
from wflwv.build.pipeline import BuildConfig, build_dataset  # noqa: E402
from wflwv.io import cache_dir  # noqa: E402
from wflwv.models import create_model  # noqa: E402
from wflwv.protocol.video import iter_frames, probe_video, write_video  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the piece cut from each video")
    ap.add_argument("--floor-stills", type=int, default=3)
    ap.add_argument("--floor-frames", type=int, default=40)
    ap.add_argument("--model", default="unet")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or cache_dir() / "bench" / "demo-floor"
    media = fetch_media(log=lambda m: print(m, file=sys.stderr))
    pieces = work / f"pieces-{args.seconds:g}s"
    pieces.mkdir(parents=True, exist_ok=True)
    spans = []
    for name in DEMO_FILES:
        start = TRAIN_FRAMES.get(name, 0)
        fps = probe_video(media / name).fps
        stop = start + int(round(args.seconds * fps))
        if not (pieces / name).is_file():
            write_video(pieces / name, iter_frames(media / name, start, stop), fps, crf=12)
        spans.append(f"{Path(name).stem} {start}-{stop - 1}")
    out = work / f"dataset-{args.seconds:g}s-floor{args.floor_stills}x{args.floor_frames}"
    config = BuildConfig(out=out, local=[pieces], max_clips_per_video=1, members=("dlib68",), tta="flip,shift,scale",
                         previews=0, floor_stills=args.floor_stills, floor_frames=args.floor_frames,
                         window=args.seconds - 1.0)  # fmt: skip
    summary = build_dataset(config, log=lambda m: print(m, file=sys.stderr))
    floor = summary.label_floor or {}
    bench = run_benchmark(create_model(args.model), out, work / f"run-{args.model}-{out.name}", progress=False)
    nmf = bench["sets"]["none"]["splits"]["all"]["nmf"]
    print(f"pieces: {', '.join(spans)}; {summary.counts['kept']} clips kept")
    header = f"{'oracle':<28} {'floor':>7} {'static':>7} {'slow':>7} {'clips':>5} {args.model + ' NMF':>12} {'floor^2 share':>14}"
    print(header)
    print("-" * len(header))
    o = floor.get("oracle", {})
    share = (floor["nmf"] / nmf) ** 2 if floor.get("nmf") and nmf else float("nan")
    print(f"{'+'.join(o.get('members', [])) + ' (' + (o.get('tta') or 'no TTA') + ')':<28} {floor.get('nmf', float('nan')):7.1f} "
          f"{floor.get('nmf_static', float('nan')):7.1f} {floor.get('nmf_slow', float('nan')):7.1f} "
          f"{floor.get('clips', 0):5d} {nmf:12.1f} {share:14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
