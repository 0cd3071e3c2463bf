"""The report's ``index.html``: one self-contained page (PNGs and GIFs embedded as base64, tables inline).

Only the MP4 and SVG files are linked (relative links, so the report folder can be moved or zipped as a whole).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from wflwv.reports.load import ReportRun, norm_text
from wflwv.reports.reading import Reading
from wflwv.reports.stats import CONFIDENCE, format_interval
from wflwv.reports.tables import Baseline, clip_cells, table_cells

__all__ = ["Figure", "Overlay", "PageContent", "render_html", "write_html", "data_uri"]

_MIME = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}h3{margin-bottom:.3em}
.sub{color:#666;margin-top:2px}.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:8px 12px;margin:6px 0}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:.9em}th,td{border:1px solid #ddd;padding:4px 8px}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:bold;background:#e8f4ea}tr.base td{background:#f0f4fb}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:10px 0 24px 0}figcaption{color:#555;font-size:.9em}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #555;margin-right:6px;vertical-align:middle}
code{background:#f5f5f5;padding:1px 4px;border-radius:3px}.files a{margin-right:12px}
"""


def data_uri(path: str | Path) -> str:
    """``data:<mime>;base64,...`` of a file (PNG, GIF, SVG, JPEG)."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass
class Figure:
    """A figure on the page: the PNG is embedded, the other files (SVG) are linked."""

    title: str
    png: Path
    links: list[Path] = field(default_factory=list)
    caption: str = ""


@dataclass
class Overlay:
    video_id: str
    gif: Path
    mp4: Path
    caption: str = ""


@dataclass
class PageContent:
    """Everything the page shows."""

    runs: Sequence[ReportRun]
    results: pd.DataFrame
    clips: pd.DataFrame
    baseline: Baseline | None
    scatter: list[Figure] = field(default_factory=list)
    flicker: list[Figure] = field(default_factory=list)
    trajectories: list[Figure] = field(default_factory=list)
    overlays: list[Overlay] = field(default_factory=list)
    table_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reading: Reading | None = None
    label_floor: float | None = None


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def _figure(fig: Figure, base: Path) -> str:
    links = " ".join(f'<a href="{_e(_rel(p, base))}">{_e(p.suffix.lstrip(".").upper())}</a>' for p in fig.links)
    cap = _e(fig.caption) + (f" &nbsp;Download: {links}" if links else "")
    return (
        f'<figure><h3>{_e(fig.title)}</h3><img src="{data_uri(fig.png)}" alt="{_e(fig.title)}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]], numeric_from: int, base_rows: Sequence[bool] = ()
) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, cells in enumerate(rows):
        cls = ' class="base"' if i < len(base_rows) and base_rows[i] else ""
        tds = []
        for j, (text, best) in enumerate(cells):
            classes = (["num"] if j >= numeric_from else []) + (["best"] if best else [])
            c = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{c}>{_e(text)}</td>")
        out.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _runs_table(runs: Sequence[ReportRun], base: Path) -> str:
    header = ["", "Label", "Model", "Arguments", "Result sets", "Clips (ok)", "Run folder", "Dataset", "Code"]
    rows = []
    for r in runs:
        args = ", ".join(f"{k}={v}" for k, v in r.args.items()) or "–"
        git = r.info.get("provenance", {}).get("git", {}) or {}
        commit = (git.get("commit") or "")[:10] + (" (modified)" if git.get("dirty") else "")
        ds = r.identity.get("dataset", {})
        rows.append(
            f'<tr><td><span class="swatch" style="background:{_e(r.colour)}"></span></td><td>{_e(r.label)}</td>'
            f"<td>{_e(r.model)}{' (RwR)' if r.rwr else ''}</td><td><code>{_e(args)}</code></td><td class=num>{len(r.sets)}</td>"
            f"<td class=num>{len(r.ok_clips())}</td><td><code>{_e(r.path)}</code></td>"
            f"<td><code>{_e(ds.get('root', '?'))}</code> ({_e(ds.get('scheme', '?'))}, {_e(str(ds.get('fingerprint', ''))[:10])})</td>"
            f"<td>{_e(commit or '–')}</td></tr>"
        )
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _reading(reading: Reading, baseline: Baseline | None) -> str:
    """The "How to read this" section: paragraphs, then each run's numbers with their intervals."""
    parts = ["<h2>How to read this</h2>"]
    parts += [f"<p><b>{_e(title)}.</b> {_e(text)}</p>" for title, text in reading.paragraphs]
    df = reading.intervals
    if df is None or df.empty:
        return "\n".join(parts)
    pct = f"{CONFIDENCE:.0%}"
    header = ["Model", "Split", "Clips", f"NME (%) [{pct} CI]", f"NMF [{pct} CI]"]
    with_diff = baseline is not None and "d_nme" in df
    if with_diff:
        header += [f"ΔNME vs {baseline.name}", f"ΔNMF vs {baseline.name}"]
    rows = []
    for _, r in df.iterrows():
        cells = [(str(r["run"]), False), (str(r["split"]), False), (str(int(r["clips"])), False)]
        cells += [(format_interval(r[k], r[f"{k}_low"], r[f"{k}_high"]), False) for k in ("nme", "nmf")]
        if with_diff:
            if r["run"] == baseline.run and r["filter"] == baseline.set:
                cells += [("baseline", False)] * 2
            else:
                for k in ("nme", "nmf"):
                    text = format_interval(r[f"d_{k}"], r[f"d_{k}_low"], r[f"d_{k}_high"], signed=True)
                    known = r[f"d_{k}_low"] == r[f"d_{k}_low"]  # not NaN
                    if known:
                        text += "" if r[f"d_{k}_significant"] else " (within noise)"
                    cells.append((text, False))
        rows.append(cells)
    parts.append(
        f"<p>Each run without a filter, per split: mean over clips with its {pct} bootstrap interval; differences "
        "are paired over the clips both runs scored (negative = lower than the baseline).</p>"
    )
    parts.append(_html_table(header, rows, numeric_from=2))
    return "\n".join(parts)


def render_html(content: PageContent, base: Path) -> str:
    """The whole page as a string; ``base`` is the folder the page is written to (for relative links)."""
    runs = content.runs
    norm = runs[0].norm if runs else "inter-ocular"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>wflwv report: {_e(', '.join(r.label for r in runs))}</title><style>{_CSS}</style></head><body>",
        "<h1>Landmark accuracy and flicker report</h1>",
        f"<p class=sub>{len(runs)} run{'s' * (len(runs) != 1)}, generated {now} by <code>wflwv report</code>. "
        f"NME: mean landmark error in % of the {_e(norm_text(norm))}; NMF: frame-to-frame change of the error "
        "(flicker) on the released evaluation code's scale. Lower is better for both.</p>",
    ]
    for w in content.warnings:
        parts.append(f"<div class=warn><b>Warning:</b> {_e(w)}</div>")
    parts.append("<h2>Runs</h2>" + _runs_table(runs, base))
    if content.reading is not None:
        parts.append(_reading(content.reading, content.baseline))
    if content.scatter:
        parts.append("<h2>Accuracy vs flicker</h2>")
        band = (
            f" The grey band is NMF below the labels' own flicker (label floor {content.label_floor:.4g})."
            if content.label_floor
            else ""
        )
        parts.append(
            "<p>Each run without a filter is a large marker (a star for RwR). A filter sweep is a line through its "
            f"settings in the run's colour, its points labelled with the swept parameter's value.{band}</p>"
        )
        parts += [_figure(f, base) for f in content.scatter]
    parts.append("<h2>Results</h2>")
    if content.baseline is not None:
        parts.append(
            f"<p>ΔNME / ΔNMF: relative change against <b>{_e(content.baseline.name)}</b> on the same split "
            "(negative = better). Best value per column in bold.</p>"
        )
    df = content.results
    for split in [s for s in ("hard", "easy", "all") if not df.empty and s in set(df["split"])]:
        part = df[df["split"] == split].reset_index(drop=True)
        header, rows = table_cells(df, split, content.baseline)
        base_rows = [
            content.baseline is not None and r["run"] == content.baseline.run and r["filter"] == content.baseline.set
            for _, r in part.iterrows()
        ]
        parts.append(f"<h3>Split: {_e(split)} ({int(part['videos'].max())} videos)</h3>")
        parts.append(_html_table(header, rows, numeric_from=2, base_rows=base_rows))
    if content.table_files:
        parts.append(
            "<p class=files>Tables as files: "
            + " ".join(f'<a href="{_e(_rel(p, base))}">{_e(p.name)}</a>' for p in content.table_files)
            + "</p>"
        )
    if content.flicker:
        parts.append(
            "<h2>Where the flicker is</h2><p>Each landmark drawn at its mean position, coloured by its NMF "
            "(same colour scale in every panel); the ringed landmark flickers most.</p>"
        )
        parts += [_figure(f, base) for f in content.flicker]
    if content.trajectories:
        parts.append(
            "<h2>Trajectories</h2><p>x and y of single landmarks over time, ground truth (black) against "
            "each run: flicker shows as fast wiggles around the black line, lag as a delayed copy of it.</p>"
        )
        parts += [_figure(f, base) for f in content.trajectories]
    if content.overlays:
        parts.append("<h2>Overlay video</h2>")
        for ov in content.overlays:
            parts.append(
                f'<figure><h3>Clip {_e(ov.video_id)}</h3><img src="{data_uri(ov.gif)}" alt="overlay of clip {_e(ov.video_id)}">'
                f"<figcaption>{_e(ov.caption)} Preview (GIF, reduced frame rate and size); full video: "
                f'<a href="{_e(_rel(ov.mp4, base))}">{_e(ov.mp4.name)}</a></figcaption></figure>'
            )
    if not content.clips.empty:
        header, rows = clip_cells(content.clips, [r.label for r in runs], limit=30)
        total = content.clips["video_id"].nunique()
        parts.append(
            "<h2>Per clip (no filter)</h2><p>NME / NMF of each clip in each run, clips where the runs differ "
            f"most first{f' (30 of {total}; all in per_clip.csv)' if total > 30 else ''}.</p>"
        )
        parts.append(_html_table(header, [[(c, False) for c in row] for row in rows], numeric_from=2))
    for n in content.notes:
        parts.append(f"<p class=sub>{_e(n)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(content: PageContent, path: str | Path) -> Path:
    """Write the page to ``path`` (usually ``OUT/index.html``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(content, path.parent), encoding="utf-8")
    return path
