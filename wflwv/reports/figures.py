"""Report figures: NME vs NMF per split, per-landmark flicker maps, landmark trajectories.

Every figure is written as PNG (for the HTML page) and SVG (for papers), at a fixed size: ``FIG_DPI`` dots per
inch times the figure size in inches, so a PNG's pixel size is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from wflwv.benchmark.results import UNFILTERED  # noqa: E402
from wflwv.reports.load import ReportRun, norm_text  # noqa: E402
from wflwv.schemes import get_scheme, template_shape  # noqa: E402

__all__ = [
    "FIG_DPI",
    "NME_NMF_SIZE",
    "Sweep",
    "filter_sweeps",
    "save_figure",
    "place_labels",
    "plot_nme_nmf",
    "nme_nmf_figure",
    "plot_flicker_maps",
    "flicker_map_size",
    "plot_trajectories",
    "trajectory_figure",
    "run_line_style",
    "trajectory_size",
    "landmark_name",
]

FIG_DPI = 150
#: size in inches of the NME vs NMF figure
NME_NMF_SIZE = (10.0, 6.0)
NMF_AXIS = "NMF: flicker, released evaluation scale (lower is better)"

#: line style and marker of each filter family in the NME vs NMF figure (others cycle through the fallbacks)
#: marker of each filter family; lines of one family (e.g. one per fixed beta) differ by line style
_FILTER_MARKER = {"ema": "s", "one-euro": "^", "sg": "D", "sg-causal": "v"}
_FALLBACK_MARKERS = ("P", "X", "h", "p", "<", ">")
_LINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 1)))
_LEGEND_GREY = "#555555"
_FLOOR_GREY = "#9a9a9a"
#: a value below this fraction of the largest one on its axis counts as 0 (drawn at the axis' edge)
_NEGLIGIBLE = 1e-6


def save_figure(fig: plt.Figure, stem: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` (fixed size, no tight cropping) and close it."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=FIG_DPI, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        out.append(p)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------------------------
# label placement
def _text_box(ann: Text, renderer) -> np.ndarray:
    bb = Text.get_window_extent(ann, renderer)  # the text alone, not an annotation's leader line
    return np.array([bb.x0, bb.y0, bb.x1, bb.y1])


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Overlap (x, y) of two boxes [x0, y0, x1, y1]; both positive when they intersect."""
    return min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])


def place_labels(
    ax: plt.Axes,
    labels: Sequence[Any],
    obstacles: np.ndarray | None = None,
    pad: float = 2.0,
    iterations: int = 400,
    draw: bool = True,
) -> int:
    """Move annotation labels apart so no two overlap each other or a marker, keeping them inside the axes.

    Args:
        ax: the axes holding the annotations (created with ``textcoords="offset points"``).
        labels: the annotations to move.
        obstacles: (M, 3) marker centres and radii in display pixels that labels must not cover.
        pad: clearance between boxes, pixels.
        draw: draw the figure first (False when the caller just drew it, so the layout is final).
    Returns:
        The number of overlaps left (0 when every label found a free place).

    A simple repulsion: each overlapping pair is pushed apart along the axis where the overlap is smaller (a label
    against a marker moves alone), until nothing overlaps. Labels moved away from their point get a thin leader line.
    """
    if not labels:
        return 0
    fig = ax.figure
    if draw:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = np.array([_text_box(a, renderer) for a in labels], dtype=float)
    start = boxes.copy()
    frame = ax.get_window_extent(renderer)
    lim = np.array([frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2])
    obst = (
        np.zeros((0, 4))
        if obstacles is None or len(obstacles) == 0
        else np.column_stack(
            [
                obstacles[:, 0] - obstacles[:, 2],
                obstacles[:, 1] - obstacles[:, 2],
                obstacles[:, 0] + obstacles[:, 2],
                obstacles[:, 1] + obstacles[:, 2],
            ]
        )
    )
    n = len(boxes)
    rng = np.random.default_rng(0)
    left = 0
    upper = np.triu(np.ones((n, n), bool), 1)
    for it in range(iterations):
        padded = boxes + [-pad, -pad, pad, pad]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        # label against label: (n, n) overlaps, each pair counted once
        ox = np.minimum(padded[:, None, 2], boxes[None, :, 2]) - np.maximum(padded[:, None, 0], boxes[None, :, 0])
        oy = np.minimum(padded[:, None, 3], boxes[None, :, 3]) - np.maximum(padded[:, None, 1], boxes[None, :, 1])
        hit = (ox > 0) & (oy > 0) & upper
        # label against marker: (n, m) overlaps, only the label moves
        if len(obst):
            px = np.minimum(padded[:, None, 2], obst[None, :, 2]) - np.maximum(padded[:, None, 0], obst[None, :, 0])
            py = np.minimum(padded[:, None, 3], obst[None, :, 3]) - np.maximum(padded[:, None, 1], obst[None, :, 1])
            phit = (px > 0) & (py > 0)
        else:
            phit = np.zeros((n, 0), bool)
        left = int(hit.sum() + phit.sum())
        if left == 0:
            break
        move = np.zeros((n, 2))
        for i, j in zip(*np.nonzero(hit)):
            if ox[i, j] < oy[i, j]:
                sgn = np.sign(centre[i, 0] - centre[j, 0]) or rng.choice([-1.0, 1.0])
                step = sgn * (ox[i, j] / 2 + 0.5)
                move[i, 0] += step
                move[j, 0] -= step
            else:
                sgn = np.sign(centre[i, 1] - centre[j, 1]) or rng.choice([-1.0, 1.0])
                step = sgn * (oy[i, j] / 2 + 0.5)
                move[i, 1] += step
                move[j, 1] -= step
        for i, k in zip(*np.nonzero(phit)):
            oc = (obst[k, :2] + obst[k, 2:]) / 2
            if px[i, k] < py[i, k]:
                move[i, 0] += (np.sign(centre[i, 0] - oc[0]) or 1.0) * (px[i, k] + 0.5)
            else:
                move[i, 1] += (np.sign(centre[i, 1] - oc[1]) or 1.0) * (py[i, k] + 0.5)
        # a little jitter late on breaks symmetric dead-locks (two labels pushed into a wall from both sides)
        if it > iterations // 2:
            move += rng.normal(0, 1.0, move.shape)
        boxes[:, :2] += move
        boxes[:, 2:] += move
        size = boxes[:, 2:] - boxes[:, :2]  # stay inside the axes
        boxes[:, :2] = np.minimum(np.maximum(boxes[:, :2], lim[:2]), lim[2:] - size)
        boxes[:, 2:] = boxes[:, :2] + size
    scale = 72.0 / fig.dpi
    for a, b, s in zip(labels, boxes, start):
        dx, dy = (b[0] - s[0]) * scale, (b[1] - s[1]) * scale
        ox, oy = a.xyann
        a.xyann = (ox + dx, oy + dy)
        if a.arrow_patch is not None:
            # a leader line only when the label ended up away from its point
            a.arrow_patch.set_visible(math.hypot(ox + dx, oy + dy) > 14.0)
    return left


# ------------------------------------------------------------------------------------------------------------------
# NME vs NMF
@dataclass
class Sweep:
    """One line of a filter sweep: settings of the same filter where one parameter varies.

    Attributes:
        filter_name: e.g. ``"ema"``.
        param: the parameter that varies along the line (None for a single setting).
        fixed: other parameters that vary between lines of the same filter, with this line's values.
        sets: ``[(set label, parameter value), ...]`` ordered by the value.
        display: legend text overriding the generated one (used for a lone setting: its full label).
    """

    filter_name: str
    param: str | None
    fixed: dict[str, Any] = field(default_factory=dict)
    sets: list[tuple[str, Any]] = field(default_factory=list)
    display: str = ""

    @property
    def title(self) -> str:
        if self.display:
            return self.display
        fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in self.fixed.items())
        text = self.filter_name + (f" ({fixed})" if fixed else "")
        return text + (f" [{self.param}]" if self.param else "")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def filter_sweeps(run: ReportRun) -> list[Sweep]:
    """Group a run's filtered result sets into lines: same filter, one varying parameter, ordered by it.

    When several parameters of a filter vary (a grid), the one with the most values runs along the lines and the
    others split the lines (one line per combination).
    """
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for label, s in run.sets.items():
        if label == UNFILTERED or not s.get("filter"):
            continue
        f = s["filter"]
        groups.setdefault(f.get("name", label), []).append((label, dict(f.get("params") or {})))
    sweeps = []
    for name, members in groups.items():
        keys = list(dict.fromkeys(k for _, p in members for k in p))
        varying = [k for k in keys if len({repr(p.get(k)) for _, p in members}) > 1]
        if not varying:
            for label, _ in members:  # a single setting: no line, no number, its full label in the legend
                sweeps.append(Sweep(name, None, {}, [(label, None)], display=label))
            continue
        along = max(varying, key=lambda k: (len({repr(p.get(k)) for _, p in members}), -varying.index(k)))
        others = [k for k in varying if k != along]
        lines: dict[tuple, list[tuple[str, dict[str, Any]]]] = {}
        for label, p in members:
            lines.setdefault(tuple(repr(p.get(k)) for k in others), []).append((label, p))
        for line in lines.values():
            line.sort(
                key=lambda lp: (
                    lp[1].get(along) is None,
                    lp[1].get(along) if isinstance(lp[1].get(along), (int, float)) else 0,
                )
            )
            fixed = {k: line[0][1].get(k) for k in others}
            sweeps.append(Sweep(name, along, fixed, [(label, p.get(along)) for label, p in line]))
    return sweeps


class _FilterStyles:
    """Marker per filter family, line style per distinct sweep title within a family (shared by all runs)."""

    def __init__(self) -> None:
        self.markers: dict[str, str] = {}
        self.styles: dict[str, tuple[Any, str]] = {}

    def __call__(self, sweep: Sweep) -> tuple[Any, str]:
        if sweep.title not in self.styles:
            fam = sweep.filter_name
            if fam not in self.markers:
                extra = sum(1 for f in self.markers if f not in _FILTER_MARKER)
                self.markers[fam] = _FILTER_MARKER.get(fam) or _FALLBACK_MARKERS[extra % len(_FALLBACK_MARKERS)]
            used = sum(1 for t, st in self.styles.items() if st[1] == self.markers[fam])
            self.styles[sweep.title] = (_LINE_STYLES[used % len(_LINE_STYLES)], self.markers[fam])
        return self.styles[sweep.title]


def _axis_scale(values: np.ndarray) -> str:
    """``"log"`` when the values span a wide range or a few outliers would squash the rest, else ``"linear"``."""
    v = values[np.isfinite(values)]
    if len(v) < 2 or v.min() <= 0:
        return "linear"
    ratio = v.max() / v.min()
    squashed = (np.median(v) - v.min()) / (v.max() - v.min()) < 0.15
    return "log" if ratio > 30 or (ratio > 4 and squashed) else "linear"


def _limits(values: Sequence[float], scale: str, margin: float) -> tuple[float, float]:
    """Axis limits around ``values`` with a margin (a fraction of the span, in log space on a log axis)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if scale == "log":
        v = np.log10(v[v > 0])
    if not len(v):
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * margin if hi > lo else (0.3 if scale == "log" else max(abs(hi) * 0.2, 0.5))
    lo, hi = lo - pad, hi + pad
    return (10**lo, 10**hi) if scale == "log" else (lo, hi)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """At least two round tick values inside ``[lo, hi]`` (1-2-5 steps, then every integer step, then 4 values
    evenly spaced in log space rounded to two significant digits)."""
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in decades for m in mantissas]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) > 12:  # many decades: powers of ten only, every few of them
            powers = [10.0**e for e in decades if lo <= 10.0**e <= hi]
            return powers[:: math.ceil(len(powers) / 8)]
        if len(ticks) >= 2:
            return ticks
    return [float(f"{t:.2g}") for t in np.geomspace(lo, hi, 6)[1:-1]]


def plot_nme_nmf(
    runs: Sequence[ReportRun],
    split: str,
    stem: str | Path,
    max_labels_per_line: int = 6,
    label_floor: float | None = None,
) -> list[Path]:
    """:func:`nme_nmf_figure` saved as ``stem.png`` and ``stem.svg``; returns the two paths."""
    return save_figure(nme_nmf_figure(runs, split, max_labels_per_line, label_floor), stem)


def nme_nmf_figure(
    runs: Sequence[ReportRun],
    split: str,
    max_labels_per_line: int = 6,
    label_floor: float | None = None,
) -> plt.Figure:
    """NME against NMF on one split: a marker per run (unfiltered), a line per filter sweep labelled by parameter.

    Runs with RwR get a star, other runs a circle; each run has its colour, its filter sweeps use the same colour
    with a dashed/dotted line and a small marker per filter family. The axes are fitted to the positive values: a
    run at NME = NMF = 0 (the ``oracle``) is drawn at the axes' lower-left corner and says so in the legend, so it
    neither hides the tick labels of a log axis nor squeezes the other runs into a corner. ``label_floor``: the
    dataset's label-flicker NMF, shaded as a band (NMF below it cannot be told from the labels' own flicker).
    """
    fig, ax = plt.subplots(figsize=NME_NMF_SIZE, layout="constrained")
    styles = _FilterStyles()
    floor = label_floor if label_floor is not None and math.isfinite(label_floor) and label_floor > 0 else None
    # ---- what is drawn: filter sweeps first (under the run markers), then each run's unfiltered result
    lines: list[tuple[ReportRun, Sweep, list[tuple[float, float, Any]]]] = []
    for r in runs:
        for sw in filter_sweeps(r):
            pts = []
            for label, value in sw.sets:
                agg = r.split_stats(label, split)
                if agg and _finite(agg.get("nmf")) and _finite(agg.get("nme")):
                    pts.append((agg["nmf"], agg["nme"], value))
            if pts:
                lines.append((r, sw, pts))
    marks: list[tuple[ReportRun, float, float]] = []
    videos = 0
    for r in runs:
        agg = r.split_stats(UNFILTERED, split)
        if agg and _finite(agg.get("nmf")) and _finite(agg.get("nme")):
            marks.append((r, agg["nmf"], agg["nme"]))
            videos = max(videos, int(agg.get("videos", 0)))
    all_x = [p[0] for _, _, pts in lines for p in pts] + [m[1] for m in marks]
    all_y = [p[1] for _, _, pts in lines for p in pts] + [m[2] for m in marks]

    # ---- axes fitted to the positive values (and the label floor)
    norm = runs[0].norm if runs else "inter-ocular"
    ax.set_xlabel(NMF_AXIS)
    ax.set_ylabel(f"NME: % of {norm_text(norm)} (lower is better)")
    ax.set_title(
        f"Accuracy vs flicker, {split} split" + (f" ({videos} videos)" if videos else "") + ": lower left is better"
    )
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    # values that are zero for practical purposes (the oracle's 1e-14) are off the scale, not its low end
    tiny_x = _NEGLIGIBLE * max([abs(v) for v in all_x] + [floor or 0.0], default=0.0)
    tiny_y = _NEGLIGIBLE * max([abs(v) for v in all_y], default=0.0)
    pos_x = [x for x in all_x if x > tiny_x] + ([floor] if floor else [])
    pos_y = [y for y in all_y if y > tiny_y]
    scales = {"x": _axis_scale(np.asarray(pos_x, float)), "y": _axis_scale(np.asarray(pos_y, float))}
    if not all_x:
        ax.text(0.5, 0.5, f"no results on the {split} split", ha="center", va="center", transform=ax.transAxes)
    for name, values, margin in (("x", pos_x or all_x, 0.12), ("y", pos_y or all_y, 0.15)):
        axis = ax.xaxis if name == "x" else ax.yaxis
        lo, hi = _limits(values, scales[name], margin)
        if name == "x":
            ax.set_xscale(scales[name])
            ax.set_xlim(lo, hi)
        else:
            ax.set_yscale(scales[name])
            ax.set_ylim(lo, hi)
        if scales[name] == "log":
            axis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
            axis.label.set_text(axis.label.get_text() + ", log scale")
    (x0, _), (y0, _) = ax.get_xlim(), ax.get_ylim()

    def place(x: float, y: float) -> tuple[float, float, bool]:
        """Where a point is drawn: values off the axes' low end (about 0 on a log axis) go to the axes' edge."""
        px = x0 if (x < x0 or (pos_x and x <= tiny_x and x0 > 0)) else x
        py = y0 if (y < y0 or (pos_y and y <= tiny_y and y0 > 0)) else y
        return px, py, (px, py) != (x, y)

    # ---- the label floor band
    extra: list[tuple[Any, str]] = []
    if floor:
        ax.axvspan(x0, floor, color=_FLOOR_GREY, alpha=0.28, lw=0, zorder=0)
        ax.axvline(floor, color=_FLOOR_GREY, lw=1.0, ls=(0, (2, 2)), zorder=1)
        extra.append(
            (Patch(facecolor=_FLOOR_GREY, alpha=0.28), f"NMF below the labels' own flicker\n(label floor {floor:.3g})")
        )

    # ---- filter sweeps
    anns: list[Any] = []
    centres: list[tuple[float, float, float]] = []  # drawn x, y, marker size (points)
    for r, sw, pts in lines:
        ls, mk = styles(sw)
        drawn = [place(x, y) for x, y, _ in pts]
        ax.plot(
            [d[0] for d in drawn], [d[1] for d in drawn], linestyle=ls, marker=mk, color=r.colour, lw=1.4, ms=5.5,
            alpha=0.85, mfc="white", mew=1.3, zorder=2, clip_on=False,
        )  # fmt: skip
        idx = (
            range(len(pts))
            if len(pts) <= max_labels_per_line
            else sorted(set(np.linspace(0, len(pts) - 1, max_labels_per_line).round().astype(int)))
        )
        centres += [(d[0], d[1], 5.5) for d in drawn]
        for i in idx:
            if sw.param is None:
                continue
            ann = ax.annotate(
                _fmt(pts[i][2]),
                xy=drawn[i][:2],
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=8,
                color=r.colour,
                ha="left",
                va="bottom",
                arrowprops=dict(arrowstyle="-", color=r.colour, lw=0.6, alpha=0.7, shrinkA=1, shrinkB=3),
                zorder=5,
            )
            anns.append(ann)

    # ---- runs without a filter
    handles: list[Any] = []
    labels: list[str] = []
    for r, x, y in marks:
        px, py, moved = place(x, y)
        size = 17 if r.marker == "*" else 11
        (pt,) = ax.plot(
            [px], [py], linestyle="none", marker=r.marker, ms=size, color=r.colour, mec="black", mew=0.8, zorder=4,
            clip_on=False,
        )  # fmt: skip
        handles.append(pt)
        text = r.label
        if moved:
            off = [n for n, v, d in (("NME", y, py), ("NMF", x, px)) if v != d]
            text += f"\n({' = '.join(off)} = 0: drawn at the axes' edge)"
        labels.append(text)
        centres.append((px, py, size))
    if handles or styles.styles or extra:
        _legend(fig, handles, labels, styles, extra)
    if anns:
        fig.canvas.draw()
        pix = ax.transData.transform(np.array([(c[0], c[1]) for c in centres]))
        radius = np.array([c[2] for c in centres]) * fig.dpi / 72.0 / 2 + 1.0
        place_labels(ax, anns, np.column_stack([pix, radius]), draw=False)
        fig.set_layout_engine("none")  # the layout is final: saving twice need not redo it
    return fig


def _legend(
    fig: plt.Figure,
    run_handles: list[Any],
    run_labels: list[str],
    styles: _FilterStyles,
    extra: Sequence[tuple[Any, str]] = (),
) -> None:
    """One legend in two parts: runs (colour; big marker = no filter) and filters (line style and small marker),
    then any ``extra`` entries (e.g. the label floor band)."""
    blank = Line2D([], [], linestyle="none", marker="")
    handles, labels, headers = [], [], []
    if run_handles:
        headers.append(len(handles))
        handles.append(blank)
        labels.append("Runs, no filter (colour = run)")
        handles += run_handles
        labels += run_labels
    if styles.styles:
        headers.append(len(handles))
        handles.append(blank)
        labels.append("Filters (same colour = same run)")
        for title, (ls, mk) in styles.styles.items():
            handles.append(
                Line2D([], [], linestyle=ls, marker=mk, color=_LEGEND_GREY, lw=1.4, ms=5.5, mfc="white", mew=1.3)
            )
            labels.append(title)
        if any("[" in t for t in styles.styles):
            handles.append(blank)
            labels.append("numbers on a filter line: value of\nthe parameter in [brackets]")
    for handle, text in extra:
        handles.append(handle)
        labels.append(text)
    leg = fig.legend(handles, labels, loc="outside right upper", fontsize=8.5, frameon=False, handlelength=2.6)
    texts = leg.get_texts()
    for i in headers:
        texts[i].set_fontweight("bold")
    for t in texts:
        if t.get_text().startswith("numbers on"):
            t.set_color(_LEGEND_GREY)
            t.set_fontsize(8)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# ------------------------------------------------------------------------------------------------------------------
# per-landmark flicker map
def flicker_map_size(n_runs: int) -> tuple[float, float]:
    """Figure size (inches) of the flicker map for ``n_runs`` panels."""
    cols = min(max(n_runs, 1), 4)
    rows = math.ceil(max(n_runs, 1) / cols)
    return (3.3 * cols + 1.2, 3.1 * rows + 0.6)


def landmark_name(index: int, scheme: str) -> str:
    """``"8 (jaw)"``: a landmark's index with its region name."""
    sch = get_scheme(scheme)
    for name, idx in sch.groups.items():
        if index in idx:
            return f"{index} ({name.replace('_', ' ')})"
    return str(index)


def plot_flicker_maps(
    runs: Sequence[ReportRun], split: str, stem: str | Path, shape: np.ndarray | None = None, scheme: str | None = None
) -> list[Path]:
    """Per-landmark NMF drawn on a face: one panel per run (unfiltered), shared colour scale and colour bar.

    Args:
        shape: (K, 2) mean face layout (x right, y down, any unit); default :func:`template_shape` of the scheme.
        scheme: landmark scheme of the data (default: the first run's).
    """
    scheme = scheme or runs[0].scheme or "wflw98"
    sch = get_scheme(scheme)
    shape = template_shape(sch) if shape is None else np.asarray(shape, float)
    values = []
    for r in runs:
        agg = r.split_stats(UNFILTERED, split) or {}
        v = agg.get("nmf_per_landmark")
        values.append(np.asarray(v, float) if v is not None and len(v) == sch.num_points else None)
    finite = [v[np.isfinite(v)] for v in values if v is not None]
    vmin = min((float(v.min()) for v in finite if len(v)), default=0.0)
    vmax = max((float(v.max()) for v in finite if len(v)), default=1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    cnorm = Normalize(vmin=vmin, vmax=vmax)
    cmap = plt.get_cmap("plasma")
    n = len(runs)
    cols = min(max(n, 1), 4)
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=flicker_map_size(n), layout="constrained", squeeze=False)
    sc = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        r, v = runs[i], values[i]
        for edge in sch.edges:
            ax.plot(shape[list(edge), 0], shape[list(edge), 1], color="#cccccc", lw=1.0, zorder=1)
        if v is None:
            ax.scatter(shape[:, 0], shape[:, 1], s=14, color="#bbbbbb", zorder=2)
            ax.set_title(f"{r.label}\n(no per-landmark NMF on {split})", fontsize=9)
        else:
            order = np.argsort(v)  # draw the worst landmarks last, on top
            sc = ax.scatter(
                shape[order, 0],
                shape[order, 1],
                c=v[order],
                cmap=cmap,
                norm=cnorm,
                s=34,
                edgecolors="#333333",
                linewidths=0.4,
                zorder=3,
            )
            worst = int(np.nanargmax(v))
            ax.scatter(
                [shape[worst, 0]],
                [shape[worst, 1]],
                s=150,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=4,
            )
            agg = r.split_stats(UNFILTERED, split) or {}
            ax.set_title(
                f"{r.label}\nNMF {float(agg.get('nmf', np.nan)):.4g}; most flicker (ringed): {landmark_name(worst, sch.name)}",
                fontsize=9,
                color=r.colour,
            )
        ax.set_aspect("equal")
        span = shape.max(axis=0) - shape.min(axis=0)
        ax.set_xlim(shape[:, 0].min() - 0.08 * span[0], shape[:, 0].max() + 0.08 * span[0])
        ax.set_ylim(shape[:, 1].max() + 0.12 * span[1], shape[:, 1].min() - 0.06 * span[1])
    if sc is None:
        sc = plt.cm.ScalarMappable(norm=cnorm, cmap=cmap)
    fig.colorbar(sc, ax=axes, shrink=0.85, label="per-landmark NMF (lower is better)")
    fig.suptitle(f"Where the flicker is: per-landmark NMF, {split} split, no filter", fontsize=11)
    return save_figure(fig, stem)


# ------------------------------------------------------------------------------------------------------------------
# trajectories
def trajectory_size(n_landmarks: int) -> tuple[float, float]:
    return (11.0, 2.6 * max(n_landmarks, 1) + 1.0)


#: line style and marker of the n-th run in trajectory plots: two runs that coincide still both show (the dashes of
#: the one on top let the other through, their markers sit at different frames)
_RUN_LINES = (
    ("-", "o"),
    ("--", "s"),
    ("-.", "^"),
    (":", "D"),
    ((0, (6, 2, 1, 2, 1, 2)), "v"),
    ((0, (1, 1)), "P"),
    ((0, (8, 3)), "X"),
)


def run_line_style(index: int, n_runs: int, n_frames: int) -> dict[str, Any]:
    """Matplotlib keyword arguments of run ``index`` (of ``n_runs``) in a trajectory plot of ``n_frames`` frames."""
    ls, mk = _RUN_LINES[index % len(_RUN_LINES)]
    step = max(1, n_frames // 8)
    return dict(
        linestyle=ls,
        marker=mk,
        markevery=(min(index * step // max(n_runs, 1), n_frames - 1) if n_frames else 0, step),
        lw=1.5,
        ms=5.0,
        mfc="white",
        mew=1.2,
        alpha=0.95,
        zorder=4 + index,
    )


def trajectory_figure(
    video_id: str,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    colours: Mapping[str, str],
    landmarks: Sequence[int],
    fps: float = 0.0,
    scheme: str = "wflw98",
    nmf: Mapping[str, Sequence[float]] | None = None,
) -> plt.Figure:
    """The figure of :func:`plot_trajectories` (not saved): the legend sits above the panels, wrapped into as
    many rows as it needs to stay inside the figure."""
    t_len = gt.shape[0]
    t = np.arange(t_len) / fps if fps and fps > 0 else np.arange(t_len)
    fig, axes = plt.subplots(
        len(landmarks), 2, figsize=trajectory_size(len(landmarks)), layout="constrained", squeeze=False, sharex=True
    )
    handles = []
    for row, lm in enumerate(landmarks):
        for col, coord in enumerate("xy"):
            ax = axes[row, col]
            (h,) = ax.plot(t, gt[:, lm, col], color="black", lw=2.6, label="ground truth", zorder=3)
            if row == 0 and col == 0:
                handles.append(h)
            for i, (label, p) in enumerate(preds.items()):
                n = min(len(p), t_len)
                style = run_line_style(i, len(preds), n)
                (h,) = ax.plot(t[:n], p[:n, lm, col], color=colours.get(label, None), **style)
                if row == 0 and col == 0:
                    text = label
                    if nmf is not None and label in nmf and len(landmarks) == 1:
                        text += f" (NMF of this landmark: {float(nmf[label][lm]):.3g})"
                    h.set_label(text)
                    handles.append(h)
            ax.set_ylabel(f"{coord} (pixels)")
            ax.set_title(
                f"landmark {landmark_name(lm, scheme)}: {coord}"
                + (", image y grows downwards" if coord == "y" else ""),
                fontsize=9,
            )
            ax.grid(True, color="#e5e5e5", lw=0.6)
            if coord == "y":
                ax.invert_yaxis()  # up in the plot is up in the image
    for ax in axes[-1]:
        ax.set_xlabel("time (s)" if fps and fps > 0 else "frame")
    _fitted_legend(fig, handles, f"Landmark trajectories in clip {video_id}")
    return fig


def _fitted_legend(fig: plt.Figure, handles: list[Any], title: str) -> None:
    """A legend above the axes with as many columns as fit in the figure's width (one entry per row at worst)."""
    width = fig.get_figwidth() * fig.dpi
    for ncol in range(min(len(handles), 4), 0, -1):
        leg = fig.legend(
            handles,
            [h.get_label() for h in handles],
            loc="outside upper center",
            ncol=ncol,
            fontsize=9,
            frameon=False,
            title=title,
            title_fontsize=10.5,
        )
        fig.canvas.draw()
        if leg.get_window_extent().width <= 0.98 * width or ncol == 1:
            return
        leg.remove()


def plot_trajectories(
    video_id: str,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    colours: Mapping[str, str],
    landmarks: Sequence[int],
    stem: str | Path,
    fps: float = 0.0,
    scheme: str = "wflw98",
    nmf: Mapping[str, Sequence[float]] | None = None,
) -> list[Path]:
    """x and y of chosen landmarks over time: ground truth and each run (as in the paper's figure 2).

    Args:
        gt: (T, K, 2) ground truth of the clip, frame pixels.
        preds: ``{run label: (T, K, 2)}`` predictions.
        colours: ``{run label: colour}``.
        landmarks: indices to plot, one row each.
        fps: frame rate (time axis in seconds when > 0, else frame numbers).
        nmf: optional ``{run label: (K,) per-landmark NMF of this clip}`` shown in the legend.
    Each run has its own line style and markers (:func:`run_line_style`), so runs that coincide stay visible.
    """
    fig = trajectory_figure(video_id, gt, preds, colours, landmarks, fps, scheme, nmf)
    return save_figure(fig, stem)
