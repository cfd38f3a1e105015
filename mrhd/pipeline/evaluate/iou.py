"""Temporal IoU in the two forms the official evaluator uses.

jayleicn/moment_detr standalone_eval/utils.py has a true IoU (``compute_temporal_iou_batch_cross``,
used for mAP matching and to pick the GT window for R1) and a "paired" one whose union is the hull
``max(ends) - min(starts)`` (used for R1 itself). They differ only for degenerate windows, but we
keep both so that every number is computed the way the official code computes it.
"""

from __future__ import annotations

import numpy as np


def iou_cross(spans1: np.ndarray, spans2: np.ndarray) -> np.ndarray:
    """IoU of every span in ``spans1 [..., N, 2]`` with every span in ``spans2 [..., M, 2]``.

    Returns ``[..., N, M]``; 0/0 (two empty spans) gives NaN, as in the official code.
    """
    s1, e1 = spans1[..., :, None, 0], spans1[..., :, None, 1]
    s2, e2 = spans2[..., None, :, 0], spans2[..., None, :, 1]
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0, None)
    union = (e1 - s1) + (e2 - s2) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def iou_paired_hull(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of ``pred[i]`` with ``gt[i]`` using the hull as union; 0 where the hull is empty."""
    inter = np.maximum(0, np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0]))
    hull = np.maximum(pred[..., 1], gt[..., 1]) - np.minimum(pred[..., 0], gt[..., 0])
    return np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)
