"""Evaluation of a network on still images: predictions, NME / FR / AUC per WFLW test subset, the paper's table."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wflwv.benchmark.metrics import ced_fr_auc, nme_per_frame
from wflwv.models.api import CROP_SIZE, imagenet_normalise, resolve_device
from wflwv.schemes import get_scheme

__all__ = ["TABLE_COLUMNS", "predict", "evaluate", "format_table"]

#: subset -> column title, in the order of the paper's tables 1 and 2
TABLE_COLUMNS: dict[str, str] = {
    "full": "Full",
    "pose": "Pose",
    "expression": "Exp.",
    "illumination": "Illum.",
    "makeup": "Mu.",
    "occlusion": "Occ.",
    "blur": "Blur",
}


@torch.no_grad()
def predict(
    net: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 16, workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net`` (eval mode) over ``dataset``.

    Returns:
        ``(pred, gt)``: (N, K, 2) float64 crop pixels each (unit keypoints x 256).
    """
    was_training = net.training
    net.eval()
    preds, gts = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    try:
        for batch in loader:
            out = net(imagenet_normalise(batch["image"].to(device)))
            kp = out["keypoints"] if isinstance(out, dict) else out
            preds.append(kp.detach().to("cpu", torch.float64).numpy() * CROP_SIZE)
            gts.append(batch["keypoints"].to(torch.float64).numpy() * CROP_SIZE)
    finally:
        net.train(was_training)
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    if pred.shape != gt.shape:
        raise ValueError(f"the network predicts keypoints of shape {pred.shape[1:]} but the data has {gt.shape[1:]}")
    return pred, gt


def evaluate(
    net: torch.nn.Module,
    dataset: Dataset,
    scheme: str = "wflw98",
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    threshold: float = 0.1,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """NME / FR / AUC of ``net`` on ``dataset``, per WFLW subset.

    NMEs use the inter-ocular normaliser of ``scheme`` (crop-pixel errors; the crop is a similarity of the
    image, so this equals the NME in image pixels).

    Returns:
        subset -> ``{"nme": percent, "fr": percent, "auc": fraction, "count": n}`` for ``"full"`` and every
        subset of ``dataset.subset_masks()`` (NaN values for an empty subset).
    """
    device = resolve_device(device)
    pred, gt = predict(net, dataset, device, batch_size, workers)
    nmes = nme_per_frame(pred, gt, get_scheme(scheme))
    masks = dataset.subset_masks() if hasattr(dataset, "subset_masks") else {"full": np.ones(len(nmes), bool)}
    out = {}
    for name, mask in masks.items():
        sel = nmes[np.asarray(mask, dtype=bool)]
        if sel.size == 0:
            out[name] = {"nme": float("nan"), "fr": float("nan"), "auc": float("nan"), "count": 0}
            continue
        fr, auc = ced_fr_auc(sel, threshold)
        out[name] = {"nme": float(sel.mean() * 100), "fr": fr * 100, "auc": auc, "count": int(sel.size)}
    return out


def format_table(metrics: dict[str, dict[str, float]], threshold: float = 0.1) -> str:
    """Metrics (as :func:`evaluate` returns) as a text table: rows NME (%), FR (%), AUC; columns subsets."""
    cols = [s for s in TABLE_COLUMNS if s in metrics] + [s for s in metrics if s not in TABLE_COLUMNS]
    x = f"{threshold * 100:g}"
    head = ["Metric"] + [TABLE_COLUMNS.get(s, s) for s in cols]
    rows = [head]
    for key, label, fmt in (
        ("nme", "NME (%)", "{:.2f}"),
        ("fr", f"FR_{x} (%)", "{:.2f}"),
        ("auc", f"AUC_{x}", "{:.3f}"),
    ):
        row = [label]
        for s in cols:
            v = metrics[s].get(key, float("nan"))
            row.append(fmt.format(v) if v is not None and math.isfinite(v) else "-")
        rows.append(row)
    row = ["Images"] + [str(int(metrics[s].get("count", 0))) for s in cols]
    rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )
