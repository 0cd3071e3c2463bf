"""How an oracle's flicker falls with the number of sub-pixel test-time augmentations, and how to combine votes.

Exact-motion clips (as ``benchmarks/oracle_floor.py`` makes them: real demo frames moved by the ``static`` and
``slow`` presets, H.264 crf 17) are cropped as `wflwv build` crops them (boxes from a dlib68 pass without
augmentation, squared and smoothed over 5 frames); every member then votes on every variant of a large jitter set
and the votes are kept (``<work>/votes/CLIP.MEMBER.npy``, frame pixels). The floor of any subset / combination of
those votes is then computed offline (NMF against the oracle's own mean label carried by the exact warp, as
:func:`wflwv.build.floor.nmf_against_motion`).

Usage::

    python benchmarks/oracle_votes.py                              # choosing set: 4 frames of the training part
    python benchmarks/oracle_votes.py --part eval --stills 6      # held-out frames (evaluation part)
    python benchmarks/oracle_votes.py --members dlib68 faceapi68 --variants 32

Prints, per member and for member combinations, the floor (mean NMF over clips, and its spread over clips) for
the first n jitter variants (n = 1, 2, 4, ...), with the mean, the median and the robust location of the votes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from oracle_floor import demo_stills  # noqa: E402

from wflwv.baselines.ensemble import OracleEnsemble, jitter_variants  # noqa: E402
from wflwv.baselines.robust import combine_members, robust_location  # noqa: E402
from wflwv.build.detect import landmarks_box, square_box  # noqa: E402
from wflwv.build.floor import FloorSettings, _clip_seed, make_floor_clip, nmf_against_motion  # noqa: E402
from wflwv.build.oracle import build_members, label_clip, smooth_boxes  # noqa: E402
from wflwv.io import cache_dir  # noqa: E402
from wflwv.models.api import CROP_SIZE, FrameInfo  # noqa: E402
from wflwv.protocol.crop import apply_affine, crop_matrix, invert_affine, warp_crop  # noqa: E402
from wflwv.protocol.video import iter_frames  # noqa: E402

#: member name -> create_model spec
MEMBERS = {
    "dlib68": "dlib68",
    "dlib68u4": ("dlib68", None, {"upsample": 4}),
    "dlib68u1": ("dlib68", None, {"upsample": 1}),
    "faceapi68": "faceapi68",
    "faceapi68tiny": ("faceapi68", None, {"variant": "tiny"}),
    "unet": "unet",
}


def clip_boxes(video: Path, clip_landmarks: np.ndarray, box_member) -> np.ndarray:
    """The final boxes `wflwv build` would crop with (one box pass without augmentation, squared, smoothed)."""
    ens = OracleEnsemble([box_member], tta=None, combine="mean")
    pre = label_clip(ens, video, square_box(landmarks_box(clip_landmarks)), passes=1)
    return smooth_boxes(square_box(landmarks_box(pre.landmarks)), 5)


def collect_votes(video: Path, boxes: np.ndarray, member, variants, batch: int = 8) -> np.ndarray:
    """(V, T, K, 2) frame-pixel votes of ``member`` on every variant for every frame."""
    ens = OracleEnsemble([member], tta=None, combine="mean")
    ens.variants = list(variants)
    out = []
    frames = list(iter_frames(video))
    for s in range(0, len(frames), batch):
        ms, crops = [], []
        for t in range(s, min(s + batch, len(frames))):
            m = crop_matrix(boxes[t], CROP_SIZE)
            ms.append(m)
            crops.append(warp_crop(frames[t], m, CROP_SIZE)[..., ::-1])
        imgs = torch.from_numpy(np.stack(crops).copy()).permute(0, 3, 1, 2).float().div_(255.0)
        infos = [FrameInfo("c", s + i, len(frames), 25.0, invert_affine(m)) for i, m in enumerate(ms)]
        with torch.no_grad():
            ens.predict(imgs, [None] * len(ms), infos)
        v = ens.last_votes  # (V, n, K, 2) crop pixels
        out.append(
            np.stack([[apply_affine(v[j, i], invert_affine(ms[i])) for i in range(len(ms))] for j in range(len(v))])
        )
    return np.concatenate(out, axis=1)


#: how the votes (V, T, K, 2) of one member become labels (T, K, 2)
AGGREGATE = {
    "mean": lambda v: v.mean(axis=0),
    "median": lambda v: np.median(v, axis=0),
    "robust": lambda v: robust_location(v)[0],
}


def floors(labels_of, clips) -> np.ndarray:
    return np.array([nmf_against_motion(labels_of(c), c["motion"])[0] for c in clips])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="train", choices=["train", "eval"])
    ap.add_argument("--stills", type=int, default=4)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--members", nargs="+", default=["dlib68", "faceapi68", "unet"], choices=sorted(MEMBERS))
    ap.add_argument("--variants", type=int, default=64, help="jitter variants (the identity is variant 0)")
    ap.add_argument("--jitter", default="1,0.02,1", help="shift (crop px), log-zoom, rotation (deg) half-ranges")
    ap.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of every variant but the identity (crop px)")
    ap.add_argument("--flip", action="store_true", help="mirror every second jitter variant")
    ap.add_argument("--crf", type=int, default=17)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    shift, zoom, rot = (float(v) for v in args.jitter.split(","))
    tag = f"j{shift:g}_{zoom:g}_{rot:g}{'f' if args.flip else ''}{f'b{args.blur:g}' if args.blur else ''}"
    work = (
        args.work or cache_dir() / "bench" / "oracle-votes"
    ) / f"{args.part}-{args.stills}-f{args.frames}-crf{args.crf}"
    (work / "votes").mkdir(parents=True, exist_ok=True)
    settings = FloorSettings(stills=args.stills, num_frames=args.frames, crf=args.crf)
    variants = jitter_variants(args.variants - 1, shift, zoom, rot, args.flip, args.blur)
    from wflwv.baselines.ensemble import TTAVariant

    variants = [TTAVariant("identity"), *variants]
    stills = demo_stills(args.stills, args.part)
    print(f"frames: {', '.join(s.source for s in stills)}; {args.frames} frames per clip, crf {args.crf}; "
          f"jitter {tag}, {len(variants)} variants", flush=True)  # fmt: skip
    built = dict(zip(args.members, build_members([MEMBERS[m] for m in args.members])))
    box_member = build_members(["dlib68"])[0]
    clips = []
    speed = {}
    for i, still in enumerate(stills):
        for preset in settings.presets:
            cid = f"floor-{i:02d}-{preset}"
            video = work / f"{cid}.mp4"
            if not video.is_file():
                fc = make_floor_clip(still, preset, _clip_seed(0, i, preset), settings, video)
                np.save(work / f"{cid}.boxes.npy", clip_boxes(video, fc.landmarks, box_member))
            clip = {"id": cid, "preset": preset, "motion": np.load(work / f"{cid}.motion.npy"), "votes": {}}
            boxes = np.load(work / f"{cid}.boxes.npy")
            for name, member in built.items():
                path = work / "votes" / f"{cid}.{name}.{tag}.npy"
                if not path.is_file() or np.load(path, mmap_mode="r").shape[0] < len(variants):
                    t0 = time.perf_counter()
                    np.save(path, collect_votes(video, boxes, member, variants))
                    speed.setdefault(name, []).append((time.perf_counter() - t0) / (args.frames * len(variants)))
                clip["votes"][name] = np.load(path)[: len(variants)]
            clips.append(clip)
    for name, v in speed.items():
        print(f"{name}: {1000 * np.mean(v):.1f} ms per vote (crop, predict, map back; loaded machine)")
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= len(variants)]
    print(f"\nfloor (mean NMF over {len(clips)} clips; [static / slow]) for the first n variants")
    print(f"{'member':<16} {'combine':<8} " + " ".join(f"{'n=' + str(n):>17}" for n in ns))
    for name in args.members:
        for how in ("mean", "median", "robust"):
            cells = []
            for n in ns:
                f = floors(lambda c, name=name, n=n, how=how: AGGREGATE[how](c["votes"][name][:n]), clips)
                st = np.mean([x for x, c in zip(f, clips) if c["preset"] == "static"])
                sl = np.mean([x for x, c in zip(f, clips) if c["preset"] == "slow"])
                cells.append(f"{f.mean():5.1f} [{st:4.1f}/{sl:4.1f}]")
            print(f"{name:<16} {how:<8} " + " ".join(f"{c:>17}" for c in cells))
    if len(args.members) > 1:
        n = len(variants)
        print(f"\nmember combinations, all {n} variants each")
        combos = [args.members] + [[a, b] for i, a in enumerate(args.members) for b in args.members[i + 1 :]]
        for combo in combos:

            def pooled(c, combo=combo):
                return np.concatenate([c["votes"][m] for m in combo]).mean(axis=0)

            def robust(c, combo=combo):
                per = [robust_location(c["votes"][m]) for m in combo]
                return combine_members(np.stack([p[0] for p in per]), np.stack([p[1] for p in per]))[0]

            for how, fn in (("pooled", pooled), ("robust", robust)):
                f = floors(fn, clips)
                print(f"{'+'.join(combo):<32} {how:<8} {f.mean():6.1f}  (per clip {f.min():.1f} .. {f.max():.1f})")


if __name__ == "__main__":
    main()
