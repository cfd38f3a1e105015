"""TVSum (top-5 mAP) and YouTube Highlights (mAP), per category and their mean, in percent.

Definitions from wjun0830/QD-DETR qd_detr/inference.py (TVSum) and showlab/UniVTG
main/dataset.py ``DatasetHL.evaluate`` (TVSum and YouTube), which both follow TencentARC/UMT:

* TVSum: for each of the 20 annotators, a clip is positive when its score is above the median of
  that annotator's scores over the video (``torch.median``: the *lower* middle value for an even
  count); clips are ranked by predicted score and the first k = 5 are kept. With ``g`` positives
  among them (AP = 0 when ``g = 0``), AP accumulates ``(rec_j - rec_{j-1}) * (prc_{j-1} + prc_j) / 2``
  with ``rec = hits / g``, ``prc = hits / j`` and ``prc_0 = 1``. A video scores the mean over
  annotators; a category the mean over its videos;
* YouTube Highlights: one binary label per clip (``> 0``), the same AP over the whole ranking.

Equal predicted scores are ranked by clip order (a stable sort; torch.argsort leaves that open).
Predictions longer than the labels are cut, as in QD-DETR (``pred[:len(label)]``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

TOP_K = 5
TVSUM_ANNOTATORS = 20


def lower_median(values: np.ndarray) -> float:
    """``torch.median``: the lower of the two middle values for an even count."""
    ordered = np.sort(values)
    return float(ordered[(len(ordered) - 1) // 2])


def ranked_ap(ranked_labels: np.ndarray) -> float:
    """UMT's trapezoidal AP of binary labels listed in predicted order."""
    num_gt = float(np.sum(ranked_labels))
    if num_gt == 0:
        return 0.0
    hits = ap = rec = 0.0
    prc = 1.0
    for j, gt in enumerate(ranked_labels, start=1):
        hits += float(gt)
        new_rec, new_prc = hits / num_gt, hits / j
        ap += (new_rec - rec) * (prc + new_prc) / 2
        rec, prc = new_rec, new_prc
    return ap


def _rank(scores: list[float], n_labels: int) -> np.ndarray:
    pred = np.asarray(scores, dtype=float)[:n_labels]
    return np.argsort(-pred, kind="stable")


def tvsum_labels(gt: dict) -> np.ndarray:
    """``[n_clips, n_annotators]`` importance scores of a TVSum annotation (QD-DETR's ``label``)."""
    return np.asarray(gt["label"], dtype=float).reshape(len(gt["label"]), -1)


def youtube_labels(gt: dict) -> np.ndarray:
    """Per-clip highlight labels of a YouTube Highlights annotation (``label``, or UMT's ``match``)."""
    return np.asarray(gt["label"] if "label" in gt else gt["match"], dtype=float).reshape(-1)


def tvsum_video_ap(scores: list[float], gt: dict, k: int = TOP_K) -> float:
    """Top-k AP of one video averaged over its annotators."""
    label_arr = tvsum_labels(gt)
    order = _rank(scores, len(label_arr))
    aps = []
    for a in range(label_arr.shape[1]):
        col = label_arr[:, a]
        binary = (col > lower_median(col)).astype(float)
        aps.append(ranked_ap(binary[order][:k]))
    return float(np.mean(aps))


def youtube_video_ap(scores: list[float], gt: dict) -> float:
    """AP of one video over its whole ranking; a clip is a highlight when its label is > 0."""
    binary = (youtube_labels(gt) > 0).astype(float)
    return ranked_ap(binary[_rank(scores, len(binary))])


def _per_category(predictions: list[dict], ground_truth: list[dict], video_ap, key: str) -> dict:
    gt_by_qid = {g["qid"]: g for g in ground_truth}
    per_domain: dict[str, list[float]] = {}
    for p in {p["qid"]: p for p in predictions}.values():
        g = gt_by_qid[p["qid"]]
        per_domain.setdefault(str(g.get("domain", "all")), []).append(
            video_ap(p["pred_saliency_scores"], g))
    table = OrderedDict((d, float(np.mean(v))) for d, v in sorted(per_domain.items()))
    mean = float(np.mean(list(table.values()))) if table else float("nan")
    block = OrderedDict((d, round(100 * v, 2)) for d, v in table.items())
    block["mean"] = round(100 * mean, 2)
    brief = OrderedDict([(f"HL-{key}-mean", block["mean"])])
    brief.update((f"HL-{key}-{d}", v) for d, v in block.items() if d != "mean")
    return OrderedDict(brief=brief, **{f"HL-{key}": block})


def evaluate_tvsum(predictions: list[dict], ground_truth: list[dict]) -> dict:
    """Top-5 mAP per TVSum category (``domain``) and their mean."""
    return _per_category(predictions, ground_truth, tvsum_video_ap, "top5-mAP")


def evaluate_youtube(predictions: list[dict], ground_truth: list[dict]) -> dict:
    """mAP per YouTube Highlights category (``domain``) and their mean."""
    return _per_category(predictions, ground_truth, youtube_video_ap, "mAP")
