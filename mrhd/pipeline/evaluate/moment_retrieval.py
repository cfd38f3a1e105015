"""Moment-retrieval metrics (mAP over IoU thresholds, R@k, mIoU), vectorised over queries.

Definitions follow jayleicn/moment_detr standalone_eval/eval.py and utils.py (mAP, R1) and
showlab/UniVTG eval/eval.py (R5, mIoU). The official mAP loops over queries, predictions, IoU
thresholds and GT windows in Python (with a process pool); here one query is one row of padded
arrays and only the 10 prediction ranks are looped, which keeps every float identical:

* only the first ``max_pred_windows`` (10) windows of each prediction list count, in list order;
  they are then ranked by score with a *stable* sort (Python's ``list.sort``), so ties keep list order;
* a prediction is matched to the unmatched GT window of highest IoU, provided that IoU >= threshold;
  equal IoUs are tried from the last GT window to the first (``argsort()[::-1]`` of NumPy's
  insertion sort, which is what small arrays got when the published numbers were made);
  a NaN IoU (two empty windows) sorts first and is never "< threshold", so it counts as a match;
* AP is the VOC-style interpolated area (``interpolated_precision_recall``), summed the way
  ``np.sum`` sums (see :mod:`numeric`), and queries without any predicted window are left out of
  the mean, as ``compute_mr_ap`` only iterates over queries that have predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrhd.pipeline.evaluate.iou import iou_cross, iou_paired_hull
from mrhd.pipeline.evaluate.numeric import compact_left, iou_threshold_keys, numpy_sum_rows, pct2

MAP_IOU_THRESHOLDS = iou_threshold_keys(0.5, 0.95, 10)
R1_IOU_THRESHOLDS = iou_threshold_keys(0.5, 0.95, 10)


@dataclass
class PaddedWindows:
    """Windows of many queries as one array: ``spans [Q, W, 2]``, ``scores [Q, W]``, ``valid [Q, W]``."""

    spans: np.ndarray
    scores: np.ndarray
    valid: np.ndarray

    @classmethod
    def from_lists(cls, windows: list[list], with_scores: bool) -> PaddedWindows:
        """Pad per-query lists of ``[start, end(, score)]`` into arrays, in one conversion."""
        lengths = np.fromiter((len(w) for w in windows), dtype=int, count=len(windows))
        q, width = len(windows), max(int(lengths.max(initial=0)), 1)
        spans = np.zeros((q, width, 2))
        scores = np.zeros((q, width))
        valid = np.arange(width)[None, :] < lengths[:, None]
        n_values = 3 if with_scores else 2
        flat = np.asarray([w[:n_values] for ws in windows for w in ws], dtype=float).reshape(-1, n_values)
        spans[valid] = flat[:, :2]
        if with_scores:
            scores[valid] = flat[:, 2]
        return cls(spans, scores, valid)


def average_precision_detection(pred_windows: list[list], gt_windows: list[list],
                                thresholds: list[float] = MAP_IOU_THRESHOLDS) -> np.ndarray:
    """AP per query and IoU threshold, ``[Q, T]`` (one query per list entry, each non-empty)."""
    preds = PaddedWindows.from_lists(pred_windows, with_scores=True)
    gts = PaddedWindows.from_lists(gt_windows, with_scores=False)
    n_q, n_p = preds.valid.shape
    n_g = gts.valid.shape[1]
    thr = np.asarray(thresholds, dtype=float)
    n_t = len(thr)

    # Rank predictions by score, best first, stable; padding goes last.
    order = np.lexsort((-preds.scores, ~preds.valid), axis=-1)
    spans = np.take_along_axis(preds.spans, order[..., None], axis=1)
    pvalid = np.take_along_axis(preds.valid, order, axis=1)

    iou = iou_cross(spans, gts.spans)  # [Q, P, G]
    nan = np.isnan(iou)
    # Visiting order of GT windows per prediction: NaN first, then IoU descending, ties last index first.
    sort_key = np.where(nan, np.inf, iou)
    sort_key = np.where(gts.valid[:, None, :], sort_key, -np.inf)
    g_index = np.broadcast_to(np.arange(n_g), sort_key.shape)
    visit = np.lexsort((-g_index, -sort_key), axis=-1)
    rank = np.empty_like(visit)
    np.put_along_axis(rank, visit, np.broadcast_to(np.arange(n_g), visit.shape), axis=-1)

    # eligible[q, p, t, g]: the official loop reaches GT g before breaking on IoU < threshold.
    eligible = (nan[..., None, :] | (iou[..., None, :] >= thr[:, None])) & gts.valid[:, None, None, :]
    big = n_g + 1
    locked = np.zeros((n_q, n_t, n_g), dtype=bool)
    tp = np.zeros((n_q, n_t, n_p), dtype=bool)
    rows_q = np.arange(n_q)[:, None]
    rows_t = np.arange(n_t)[None, :]
    for p in range(n_p):
        free = eligible[:, p] & ~locked  # [Q, T, G]
        key = np.where(free, rank[:, p, None, :], big)
        best = key.argmin(axis=-1)  # [Q, T]
        hit = (key.min(axis=-1) < big) & pvalid[:, p, None]
        tp[:, :, p] = hit
        locked[rows_q, rows_t, best] |= hit
    fp = pvalid[:, None, :] & ~tp

    n_pos = gts.valid.sum(axis=1).astype(float)[:, None, None]
    tp_cum = np.cumsum(tp, axis=-1).astype(float)
    fp_cum = np.cumsum(fp, axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp_cum / n_pos
        precision = tp_cum / (tp_cum + fp_cum)
    return _interpolated_ap(precision, recall, pvalid.sum(axis=1))


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray, n_preds: np.ndarray) -> np.ndarray:
    """``interpolated_precision_recall`` (VOC 2011) for rows of different lengths, ``[Q, T, P]`` -> ``[Q, T]``."""
    n_q, n_t, n_p = precision.shape
    pos = np.arange(n_p + 2)
    n = n_preds[:, None, None]
    inside = (pos >= 1) & (pos <= n)
    mprec = np.zeros((n_q, n_t, n_p + 2))
    mrec = np.ones((n_q, n_t, n_p + 2))
    mprec[..., 1:-1] = precision
    mrec[..., 1:-1] = recall
    mprec = np.where(inside, mprec, 0.0)
    mrec = np.where(inside, mrec, 1.0)
    mrec[..., 0] = 0.0
    mprec = np.maximum.accumulate(mprec[..., ::-1], axis=-1)[..., ::-1]
    with np.errstate(invalid="ignore"):
        step = mrec[..., 1:] - mrec[..., :-1]
        changed = mrec[..., 1:] != mrec[..., :-1]
        terms = step * mprec[..., 1:]
    packed, counts = compact_left(terms, changed)
    return numpy_sum_rows(packed, counts)


def mean_ap_by_threshold(ap: np.ndarray, thresholds: list[float] = MAP_IOU_THRESHOLDS) -> dict[str, float]:
    """The official ``MR-mAP`` block: mean AP per threshold and their average, in percent."""
    ap_thds = ap.mean(0) if len(ap) else np.full(len(thresholds), np.nan)
    out = dict(zip([str(t) for t in thresholds], ap_thds))
    out["average"] = np.mean(ap_thds)
    return {k: pct2(v) for k, v in out.items()}


def top1_ious(pred_windows: list[list], gt_windows: list[list]) -> np.ndarray:
    """IoU of each query's first predicted window with the GT window it overlaps most (``compute_mr_r1``)."""
    preds = np.asarray([w[0][:2] for w in pred_windows], dtype=float).reshape(-1, 2)
    gts = PaddedWindows.from_lists(gt_windows, with_scores=False)
    iou = iou_cross(preds[:, None, :], gts.spans)[:, 0, :]  # [Q, G]
    # np.argmax picks the first maximum, and the first NaN if there is one.
    key = np.where(np.isnan(iou), np.inf, iou)
    key = np.where(gts.valid, key, -np.inf)
    best = key.argmax(axis=1)
    chosen = np.take_along_axis(gts.spans, best[:, None, None], axis=1)[:, 0]
    return iou_paired_hull(preds, chosen)


def topk_best_ious(pred_windows: list[list], gt_windows: list[list], k: int) -> np.ndarray:
    """IoU of the best (prediction, GT) pair among each query's first k windows (UniVTG ``compute_mr_r5``).

    UniVTG takes the first position of the maximum cross IoU (NaN set to 0) and then scores that
    pair with the hull IoU, which we reproduce.
    """
    preds = PaddedWindows.from_lists([w[:k] for w in pred_windows], with_scores=False)
    gts = PaddedWindows.from_lists(gt_windows, with_scores=False)
    iou = iou_cross(preds.spans, gts.spans)  # [Q, K, G]
    iou = np.where(np.isnan(iou), 0.0, iou)
    iou = np.where(preds.valid[:, :, None] & gts.valid[:, None, :], iou, -np.inf)
    n_q, n_k, n_g = iou.shape
    flat = iou.reshape(n_q, -1).argmax(axis=1)
    pi, gi = np.divmod(flat, n_g)
    rows = np.arange(n_q)
    return iou_paired_hull(preds.spans[rows, pi], gts.spans[rows, gi])


def recall_at(ious: np.ndarray, thresholds: list[float]) -> dict[str, float]:
    """Share of queries whose IoU reaches each threshold, in percent (official formatting).

    With no query at all (an empty length range) the official code gives NaN; so do we, quietly.
    """
    if len(ious) == 0:
        return {str(t): float("nan") for t in thresholds}
    return {str(t): pct2(np.mean(ious >= t)) for t in thresholds}
