"""The publish stage of `wflwv build`: choose the hard / easy splits by oracle variance, write the official layout,
the manifest and overlay previews, and summarise what the build did."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wflwv.build.acquire import AcquireResult, SourceRecord
from wflwv.build.config import BuildConfig, BuildSummary
from wflwv.io import atomic_path, save_npy
from wflwv.protocol.floor import format_floor
from wflwv.protocol.layout import WFLWVDataset, write_clip, write_dataset_info, write_split
from wflwv.protocol.video import iter_frames
from wflwv.schemes import scheme_for_num_points

__all__ = ["publish", "render_overlay", "format_summary"]

_STATUS_KEPT, _STATUS_DROPPED, _STATUS_FAILED, _STATUS_REJECTED = "kept", "dropped", "failed", "rejected"


# ------------------------------------------------------------------------------------------------ publish
def _select(scores: dict[str, float], hard_k: int | None, easy_k: int | None) -> tuple[list[str], list[str]]:
    """Top ``hard_k`` by score -> hard, bottom ``easy_k`` of the rest -> easy (default: split in halves)."""
    ranked = sorted(scores, key=lambda c: (-scores[c], c))
    n = len(ranked)
    if hard_k is None and easy_k is None:
        hard_k, easy_k = n // 2, n - n // 2
    hard_k = min(n, hard_k if hard_k is not None else 0)
    hard = ranked[:hard_k]
    rest = ranked[hard_k:]
    easy_k = min(len(rest), easy_k if easy_k is not None else 0)
    easy = rest[len(rest) - easy_k :] if easy_k else []
    return hard, sorted(easy, key=lambda c: (scores[c], c))


def _remove_clip(root: Path, cid: str) -> None:
    for sub, ext in (("videos", ".mp4"), ("bboxes", ".npy"), ("landmarks", ".npy"), ("variance", ".npy")):
        p = root / sub / f"{cid}{ext}"
        if p.is_file():
            p.unlink()


def _publish_clip(root: Path, cid: str, video: Path, labels: Path) -> None:
    with np.load(labels) as z:
        lm, boxes, var = z["landmarks"], z["boxes"], z["variance"]
    lm_path = root / "landmarks" / f"{cid}.npy"
    if lm_path.is_file() and (root / "videos" / f"{cid}.mp4").is_file():
        cur = np.load(lm_path)
        if cur.shape == lm.shape and np.array_equal(cur, lm) and (root / "variance" / f"{cid}.npy").is_file():
            return  # already published from the same labels
    lm_path.unlink(missing_ok=True)  # the clip is incomplete until its landmarks are written again
    save_npy(root / "variance" / f"{cid}.npy", var.astype(np.float32))
    write_clip(root, cid, boxes=boxes, landmarks=lm, video=video)


def render_overlay(root: str | Path, clip_id: str, frame: int, out_png: str | Path) -> Path:
    """Draw a published clip's landmarks and box on one of its frames and save a PNG (for a human to look at)."""

    ds = WFLWVDataset(root)
    clip = ds.load(clip_id)
    frame = int(np.clip(frame, 0, clip.num_frames - 1))
    img = None
    for i, f in enumerate(iter_frames(clip.video_path)):
        if i == frame:
            img = f.copy()
            break
    if img is None:
        raise ValueError(f"{clip.video_path}: frame {frame} could not be decoded")
    scale = max(1, int(np.ceil(480 / max(img.shape[:2]))))
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
    pts = clip.landmarks[frame] * scale + (scale - 1) / 2
    b = clip.boxes[frame] * scale
    cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (255, 160, 0), 1, cv2.LINE_AA)
    scheme = scheme_for_num_points(len(pts))
    for edge in scheme.edges:
        cv2.polylines(
            img, [np.round(pts[list(edge)] * 16).astype(np.int32)], False, (0, 200, 0), 1, cv2.LINE_AA, shift=4
        )
    for p in pts:
        cv2.circle(img, (int(round(p[0] * 16)), int(round(p[1] * 16))), 2 * 16, (0, 0, 255), -1, cv2.LINE_AA, shift=4)
    cv2.putText(
        img, f"{clip_id} frame {frame}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
    )
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{out_png}: cannot write PNG")
    return out_png


def _write_manifest(root: Path, rows: list[dict]) -> None:
    cols = ["clip_id", "source_id", "status", "reason", "split", "variance", "origin", "video_id", "url", "source_path",
            "licence", "uploader", "title", "retrieved", "start_frame", "end_frame", "num_frames", "fps", "width",
            "height", "oracle_members", "oracle_tta", "oracle_passes", "detector", "scheme"]  # fmt: skip
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    df = df[cols + [c for c in df.columns if c not in cols]]
    for c in ("start_frame", "end_frame", "num_frames", "width", "height"):
        df[c] = pd.array(df[c], dtype="Int64")
    for c in ("variance", "fps"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: "" if v is None else str(v))
    with atomic_path(root / "manifest.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(root / "manifest.csv") as tmp:
        df.to_csv(tmp, index=False)


def publish(
    config: BuildConfig, acq: AcquireResult, scans: list[dict], items: list[dict], labels: list[dict], timings
) -> BuildSummary:
    root, work = Path(config.out), Path(config.work)
    recs = {r.source_id: r for r in acq.records}
    ok = {lab["clip_id"]: lab for lab in labels if lab["status"] == "ok"}
    scores = {cid: lab["variance"] for cid, lab in ok.items()}
    hard, easy = _select(scores, config.hard_k, config.easy_k)
    selected = set(hard) | set(easy)
    publish = [c for c in ok if c in selected or config.keep_unselected]
    schemes = {lab.get("scheme") for lab in ok.values()} - {None}
    scheme = schemes.pop() if len(schemes) == 1 else None
    if scheme is None and ok:
        scheme = scheme_for_num_points(next(iter(ok.values()))["num_points"]).name

    # clips of earlier runs of this build that are no longer published
    known = {p.stem for p in (work / "labels").glob("*.json")}
    for cid in known - set(publish):
        _remove_clip(root, cid)
    by_id = {it["clip_id"]: it for it in items}
    for cid in tqdm(publish, desc="publish", disable=None if config.progress and publish else True):
        _publish_clip(root, cid, Path(by_id[cid]["video"]), work / "labels" / f"{cid}.npz")
    write_split(root, "hard", hard)
    write_split(root, "easy", easy)

    rows: list[dict] = []
    oracle_cols = {"oracle_members": ",".join(config.members), "oracle_tta": config.tta or "none",
                   "oracle_combine": config.combine, "oracle_passes": config.passes, "detector": config.detector, "scheme": scheme or ""}  # fmt: skip

    def src_cols(rec: SourceRecord) -> dict:
        return {"source_id": rec.source_id, "origin": rec.origin, "video_id": rec.video_id, "url": rec.url,
                "source_path": rec.path if rec.origin == "local" else "", "licence": rec.licence,
                "uploader": rec.uploader, "title": rec.title, "retrieved": rec.retrieved, "fps": rec.fps,
                "width": rec.width, "height": rec.height}  # fmt: skip

    for p in acq.problems:
        rows.append({"clip_id": "", "source_id": p.source_id, "status": p.status, "reason": p.reason, "origin": p.origin,
                     "video_id": p.video_id, "url": p.url, "licence": p.licence, "uploader": p.uploader, "title": p.title})  # fmt: skip
    for s in scans:
        rec = recs[s["source_id"]]
        if s["status"] != "ok":
            rows.append({**src_cols(rec), "clip_id": "", "status": _STATUS_FAILED if s["status"] == "failed" else _STATUS_DROPPED,
                         "reason": s["reason"]})  # fmt: skip
    lab_by_id = {lab["clip_id"]: lab for lab in labels}
    split_of = {**{c: "hard" for c in hard}, **{c: "easy" for c in easy}}
    for it in items:
        cid = it["clip_id"]
        rec = recs[it["source_id"]]
        lab = lab_by_id[cid]
        row = {**src_cols(rec), **oracle_cols, "clip_id": cid, "start_frame": rec.frame_offset + it["start"],
               "end_frame": rec.frame_offset + it["stop"] - 1, "num_frames": it["stop"] - it["start"],
               "variance": lab.get("variance"), "split": split_of.get(cid, "")}  # fmt: skip
        if lab["status"] == "ok":
            if cid in selected or config.keep_unselected:
                row.update(status=_STATUS_KEPT, reason="")
            else:
                row.update(status=_STATUS_DROPPED, reason="not selected (variance between the hard and easy splits)")
        else:
            row.update(status=_STATUS_FAILED if lab["status"] == "failed" else _STATUS_DROPPED, reason=lab["reason"])
        rows.append(row)
    _write_manifest(root, rows)

    if scheme:
        write_dataset_info(root, scheme=scheme)
    write_dataset_info(root, source="wflwv build", oracle={"members": list(config.members), "tta": config.tta,
                       "combine": config.combine, "passes": config.passes, "box_smooth": config.box_smooth}, window_s=config.window, clips=len(publish))  # fmt: skip
    dropped = Counter(_reason_key(r["reason"]) for r in rows if r["status"] != _STATUS_KEPT)
    counts = {
        "sources": len(acq.records) + len(acq.problems),
        "sources_failed": sum(r["status"] in (_STATUS_FAILED, _STATUS_REJECTED) and not r["clip_id"] for r in rows),
        "candidate_clips": len(items),
        "labelled": len(ok),
        "kept": len(publish),
        "hard": len(hard),
        "easy": len(easy),
        "resumed_scans": sum(bool(s.get("resumed")) for s in scans),
        "resumed_labels": sum(bool(lab.get("resumed")) for lab in labels),
        "drop_reasons": dict(dropped.most_common()),
        "mean_variance_hard": float(np.mean([scores[c] for c in hard])) if hard else None,
        "mean_variance_easy": float(np.mean([scores[c] for c in easy])) if easy else None,
    }
    if config.previews:
        for cid in hard[: config.previews] + easy[: config.previews]:
            try:
                render_overlay(root, cid, 0, root / "previews" / f"{cid}.png")
            except Exception:  # a preview is a convenience; never fail the build over it
                pass
    return BuildSummary(root, rows, hard, easy, timings, counts, scheme)


def _reason_key(reason: str) -> str:
    """Group drop reasons for the summary: details in parentheses, URLs and per-video prefixes removed."""
    r = re.sub(r"\s*\(.*?\)", "", reason or "")
    r = re.sub(r"^(metadata|download) of \S+: ", "", r)
    r = re.sub(r"\[\w+\] [\w-]+: ", "", r)
    r = re.sub(r"\b[A-Za-z0-9_-]{11}: ", "", r)
    return r.strip() or "unknown"


def format_summary(s: BuildSummary) -> str:
    """A short human-readable report of a build."""
    c = s.counts
    t = s.timings
    lines = [
        f"dataset: {s.out} (scheme {s.scheme or 'none: no clip was kept'})",
        f"sources: {c['sources']} ({c['sources_failed']} failed or rejected)",
        f"clips: {c['candidate_clips']} candidates, {c['labelled']} labelled, {c['kept']} kept "
        f"(hard {c['hard']}, easy {c['easy']})",
    ]
    if c["mean_variance_hard"] is not None and c["mean_variance_easy"] is not None:
        lines.append(
            f"mean oracle variance: hard {c['mean_variance_hard']:.3f}, easy {c['mean_variance_easy']:.3f} (crop px^2)"
        )
    if c["resumed_scans"] or c["resumed_labels"]:
        lines.append(f"resumed from earlier runs: {c['resumed_scans']} scans, {c['resumed_labels']} labelled clips")
    if c["drop_reasons"]:
        lines.append("not kept:")
        lines += [f"  {n:4d}  {why}" for why, n in c["drop_reasons"].items()]
    if s.label_floor:
        lines.append(format_floor(s.label_floor))
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    lines.append(f"manifest: {s.out / 'manifest.csv'}")
    return "\n".join(lines)
