"""QVHighlights: the official metrics with the official keys, nesting, order and rounding.

Mirrors ``eval_submission`` of jayleicn/moment_detr standalone_eval/eval.py:

* moment retrieval per GT-length range ``short (0, 10]``, ``middle (10, 30]``, ``long (30, 150]``
  and ``full`` (everything, unfiltered). For a range, only GT windows whose length is in it are
  kept, and queries left without a window are dropped (from GT and predictions);
* each range has ``MR-mAP`` (IoU 0.5:0.05:0.95 and ``average``) and ``MR-R1`` (same thresholds);
* highlight detection ``HL-min-{Fair,Good,VeryGood}`` with ``HL-mAP`` and ``HL-Hit1``;
* ``brief``: the 8 MR headline numbers sorted by key, then ``HL-min-<level>-{mAP,Hit1}``;
  the other blocks follow sorted by key. All values are percentages rounded to 2 decimals.

MR is computed when the first prediction has ``pred_relevant_windows`` and HL when it has
``pred_saliency_scores``, as in the official code.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from mrhd.pipeline.evaluate.highlight import highlight_metrics
from mrhd.pipeline.evaluate.moment_retrieval import (
    MAP_IOU_THRESHOLDS,
    R1_IOU_THRESHOLDS,
    average_precision_detection,
    mean_ap_by_threshold,
    recall_at,
    top1_ious,
)

LENGTH_RANGES = {"short": (0, 10), "middle": (10, 30), "long": (30, 150), "full": (0, 150)}
MAX_PRED_WINDOWS = 10


def _in_range(predictions: list[dict], gt_by_qid: dict, low: float, high: float):
    """Predictions (in order) and their GT windows restricted to lengths in ``(low, high]``."""
    if (low, high) == LENGTH_RANGES["full"]:
        return predictions, {q: g["relevant_windows"] for q, g in gt_by_qid.items()}
    windows = {}
    for q, g in gt_by_qid.items():
        kept = [w for w in g["relevant_windows"] if low < w[1] - w[0] <= high]
        if kept:
            windows[q] = kept
    return [p for p in predictions if p["qid"] in windows], windows


def moment_retrieval_metrics(predictions: list[dict], gt_by_qid: dict) -> dict[str, dict]:
    """``{range: {"MR-mAP": {...}, "MR-R1": {...}}}`` for the four length ranges."""
    out = {}
    for name, (low, high) in LENGTH_RANGES.items():
        preds, gt_windows = _in_range(predictions, gt_by_qid, low, high)
        # mAP: one row per qid that has predicted windows, in first-seen order (compute_mr_ap).
        pred_rows: dict = {}
        for p in preds:
            ws = p["pred_relevant_windows"][:MAX_PRED_WINDOWS]
            if ws:
                pred_rows.setdefault(p["qid"], []).extend(ws)
        qids = list(pred_rows)
        if qids:
            ap = average_precision_detection([pred_rows[q] for q in qids],
                                             [gt_windows.get(q, []) for q in qids], MAP_IOU_THRESHOLDS)
        else:
            ap = np.zeros((0, len(MAP_IOU_THRESHOLDS)))
        mr_map = mean_ap_by_threshold(ap, MAP_IOU_THRESHOLDS)
        # R1: one row per distinct qid, the last prediction of a qid wins (dict in compute_mr_r1).
        last = {p["qid"]: p for p in preds}
        r1_qids = list(last)
        ious = top1_ious([last[q]["pred_relevant_windows"] for q in r1_qids],
                         [gt_windows[q] for q in r1_qids])
        out[name] = {"MR-mAP": mr_map, "MR-R1": recall_at(ious, R1_IOU_THRESHOLDS)}
    return out


def evaluate_qvhighlights(predictions: list[dict], ground_truth: list[dict]) -> dict:
    """Official QVHighlights metrics: ``{"brief": {...}, "HL-min-Fair": ..., "full": ..., ...}``.

    ``predictions`` and ``ground_truth`` are lists of dicts in the submission / annotation formats
    and must cover the same qids (use :func:`mrhd.pipeline.evaluate.validate.validate` first).
    """
    gt_by_qid = {g["qid"]: g for g in ground_truth}
    blocks: dict = {}
    brief: OrderedDict = OrderedDict()
    if predictions and "pred_relevant_windows" in predictions[0]:
        mr = moment_retrieval_metrics(predictions, gt_by_qid)
        blocks.update(mr)
        headline = {
            "MR-full-mAP": mr["full"]["MR-mAP"]["average"],
            "MR-full-mAP@0.5": mr["full"]["MR-mAP"]["0.5"],
            "MR-full-mAP@0.75": mr["full"]["MR-mAP"]["0.75"],
            "MR-short-mAP": mr["short"]["MR-mAP"]["average"],
            "MR-middle-mAP": mr["middle"]["MR-mAP"]["average"],
            "MR-long-mAP": mr["long"]["MR-mAP"]["average"],
            "MR-full-R1@0.5": mr["full"]["MR-R1"]["0.5"],
            "MR-full-R1@0.7": mr["full"]["MR-R1"]["0.7"],
        }
        brief.update(sorted(headline.items()))
    if predictions and "pred_saliency_scores" in predictions[0]:
        hl = highlight_metrics(predictions, gt_by_qid)
        blocks.update(hl)
        for level, values in hl.items():
            for key, value in values.items():
                brief[f"{level}-{key.split('-')[1]}"] = value
    result: OrderedDict = OrderedDict(brief=brief)
    result.update(sorted(blocks.items()))
    return result
