"""Charades-STA and TACoS: R1 and R5 at IoU 0.3 / 0.5 / 0.7 and mIoU, in percent.

Definitions follow showlab/UniVTG eval/eval.py (``compute_mr_r1`` with its mIoU, and
``compute_mr_r5``), which these benchmarks are usually reported with:

* R1@t: the *first* predicted window (list order, so predictions should be sorted best first) is
  compared with the GT window it overlaps most; a hit when that IoU >= t. mIoU is the mean of
  that IoU over queries;
* R5@t: among the first five predicted windows and all GT windows, the pair with the highest IoU
  (first such pair) decides; a hit when its IoU >= t.

Values are ``float(f"{100 * x:.2f}")`` like the QVHighlights evaluator.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from mrhd.pipeline.evaluate.moment_retrieval import recall_at, top1_ious, topk_best_ious
from mrhd.pipeline.evaluate.numeric import pct2

IOU_THRESHOLDS = [0.3, 0.5, 0.7]


def evaluate_charades(predictions: list[dict], ground_truth: list[dict]) -> dict:
    """``{"brief": {...}, "full": {"MR-R1": {...}, "MR-R5": {...}, "MR-mIoU": x}}``."""
    gt_by_qid = {g["qid"]: g for g in ground_truth}
    last = {p["qid"]: p for p in predictions}
    qids = list(last)
    pred_windows = [last[q]["pred_relevant_windows"] for q in qids]
    gt_windows = [gt_by_qid[q]["relevant_windows"] for q in qids]
    r1_ious = top1_ious(pred_windows, gt_windows)
    r5_ious = topk_best_ious(pred_windows, gt_windows, k=5)
    r1 = recall_at(r1_ious, IOU_THRESHOLDS)
    r5 = recall_at(r5_ious, IOU_THRESHOLDS)
    miou = pct2(np.mean(r1_ious)) if len(r1_ious) else float("nan")
    brief: OrderedDict = OrderedDict()
    for t in IOU_THRESHOLDS:
        brief[f"MR-full-R1@{t}"] = r1[str(t)]
    for t in IOU_THRESHOLDS:
        brief[f"MR-full-R5@{t}"] = r5[str(t)]
    brief["MR-full-mIoU"] = miou
    return OrderedDict(brief=brief, full=OrderedDict([("MR-R1", r1), ("MR-R5", r5), ("MR-mIoU", miou)]))
