"""The ``label_floor`` record of a dataset: how its labels' own flicker is written down and read.

A dataset's ``dataset.json`` (and a build's ``build.json``, a bench's ``summary.json``) may carry, under
:data:`FLOOR_KEY`, the NMF its labels score against the exact motion of real frames (measured by
:mod:`wflwv.build.floor`): ``{"nmf", "nmf_static", "nmf_slow", "clips", "method", "oracle": {members, tta,
passes}, ...}``. Datasets whose labels are exact by construction carry :data:`EXACT_MOTION_FLOOR`.

This module only reads the record (a one-line summary, the 2x rule); it imports nothing heavy, so a command that
prints a floor does not pay for the code that measures one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLOOR_KEY", "EXACT_MOTION_FLOOR", "FLOOR_FACTOR", "format_floor", "floor_dominates"]

#: the key under which dataset.json, build.json, the manifest and summary.json carry the floor
FLOOR_KEY = "label_floor"
#: the floor of a dataset whose labels are exact by construction
EXACT_MOTION_FLOOR = {"nmf": 0.0, "method": "exact-motion"}
#: an NMF within this factor of the label floor is at the level of the labels' own flicker. Independent flickers add
#: in quadrature, so at 2x the floor a quarter of the NMF's square is the labels' (docs/label-floor.md)
FLOOR_FACTOR = 2.0


def format_floor(floor: dict[str, Any] | None) -> str:
    """One line for a human: ``label floor: NMF 44.1 (static 40.2, slow 48.0; 6 clips, oracle dlib68 (flip,...))``."""
    if not floor or floor.get("nmf") is None:
        return "label floor: not measured (wflwv build --audit DIR measures it)"
    if floor.get("method") == "exact-motion":
        return "label floor: NMF 0 (exact-motion labels, exact by construction)"
    parts = [f"{k[4:]} {v:.1f}" for k, v in floor.items() if k.startswith("nmf_") and isinstance(v, (int, float))]
    o = floor.get("oracle") or {}
    who = "+".join(o.get("members", [])) or "?"
    tta = o.get("tta") or "no TTA"
    extra = f"; {floor.get('clips', '?')} clips, oracle {who} ({tta}, {o.get('passes', '?')} passes)"
    return f"label floor: NMF {floor['nmf']:.1f} ({', '.join(parts)}{extra})"


def floor_dominates(nmf: float | None, floor: dict[str, Any] | None, factor: float = FLOOR_FACTOR) -> bool:
    """Whether an NMF is within ``factor`` x a (non-zero) label floor; False when either is unknown."""
    f = (floor or {}).get("nmf")
    return isinstance(nmf, (int, float)) and nmf == nmf and isinstance(f, (int, float)) and f > 0 and nmf <= factor * f
