"""QVHighlights highlight-detection metrics (HL-mAP, HL-Hit1), vectorised over queries.

Definitions from jayleicn/moment_detr standalone_eval/eval.py (``eval_highlight``,
``compute_hl_ap``, ``compute_hl_hit1``, ``mk_gt_scores``) and utils.py ``get_ap``:

* the GT score grid has ``int(duration / 2)`` clips x 3 annotators, zeros outside
  ``relevant_clip_ids``; a clip is positive for a threshold when its score >= 2 (Fair), 3 (Good)
  or 4 (VeryGood);
* predicted scores are cut, or padded with zeros, to that many clips;
* AP per (query, annotator) is the interpolated AP of sklearn's ``precision_recall_curve``:
  one point per distinct predicted score, precision made monotone from the full-recall end, the
  mean of the precision at each point where recall changes. An annotator with no positive clip
  scores 0 and one whose clips are all positive scores 1;
* Hit@1 takes the first highest predicted clip (over the *uncut* list) and counts a hit when any
  annotator marks it positive; a clip beyond the GT grid is a miss.

We compute AP for all queries at once from sorted score arrays; the final per-row mean and the
means over queries use NumPy's own summation order, so the numbers are bit-identical.
"""

from __future__ import annotations

import numpy as np

from mrhd.pipeline.evaluate.numeric import compact_left, numpy_sum_rows, pct2

CLIP_LENGTH = 2.0
SALIENCY_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}


def gt_score_grid(gt: dict, clip_length: float = CLIP_LENGTH) -> np.ndarray:
    """``[int(duration / clip_length), 3]`` annotator scores (0-4), zeros outside the relevant clips."""
    n = int(gt["duration"] / clip_length)
    grid = np.zeros((n, 3))
    ids = np.asarray(gt.get("relevant_clip_ids") or [], dtype=int)
    if len(ids):
        grid[ids] = np.asarray(gt["saliency_scores"], dtype=float)
    return grid


def saliency_ap(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``get_ap(labels[q, :n, a], scores[q, :n])`` for every query q and annotator a.

    ``scores [Q, L]``, ``labels [Q, L, A]`` in {0, 1}, ``lengths [Q]`` (entries beyond are padding).
    Returns ``[Q, A]``.
    """
    n_q, width = scores.shape
    n_a = labels.shape[2]
    pos = np.arange(width)
    inside = pos[None, :] < lengths[:, None]
    # Sort scores descending (padding last); order within ties does not matter: only group ends are used.
    key = np.where(inside, -scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    s_sorted = np.take_along_axis(scores, order, axis=1)
    y_sorted = np.take_along_axis(labels, order[..., None], axis=1)  # [Q, L, A]
    # A group of equal scores ends where the next score differs, or at the last real clip.
    nxt = np.concatenate([s_sorted[:, 1:], np.zeros((n_q, 1))], axis=1)
    group_end = inside & ((s_sorted != nxt) | (pos[None, :] == lengths[:, None] - 1))
    tps = np.cumsum(y_sorted, axis=1)  # [Q, L, A], exact small integers in float64
    fps = (pos[None, :, None] + 1) - tps
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tps / (tps + fps)
    ge = group_end[..., None]
    # Interpolate: best precision at this or any later (higher recall) group end.
    prec_at_ends = np.where(ge, precision, -np.inf)
    interp = np.maximum.accumulate(prec_at_ends[:, ::-1], axis=1)[:, ::-1]
    # Recall changes at a group end whose group holds a positive.
    prev_tps = np.maximum.accumulate(np.where(ge, tps, 0.0), axis=1)
    prev_tps = np.concatenate([np.zeros((n_q, 1, n_a)), prev_tps[:, :-1]], axis=1)
    changed = ge & (tps > prev_tps)
    # get_ap averages from the full-recall end down, i.e. over group ends in reverse order.
    vals = np.moveaxis(interp[:, ::-1], 1, -1)  # [Q, A, L]
    mask = np.moveaxis(changed[:, ::-1], 1, -1)
    packed, counts = compact_left(np.where(mask, vals, 0.0), mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = numpy_sum_rows(packed, counts) / counts

    n_true = np.where(inside[..., None], labels, 0.0).sum(axis=1)  # [Q, A]
    ap = np.where(n_true == 0, 0.0, ap)
    ap = np.where(n_true == lengths[:, None], 1.0, ap)
    return ap


def highlight_metrics(predictions: list[dict], gt_by_qid: dict) -> dict[str, dict[str, float]]:
    """The official ``HL-min-{Fair,Good,VeryGood}`` blocks: ``{"HL-mAP": .., "HL-Hit1": ..}``."""
    qid2pred = {d["qid"]: d for d in predictions}
    qids = list(qid2pred)
    grids = [gt_score_grid(gt_by_qid[q]) for q in qids]
    lengths = np.asarray([len(g) for g in grids], dtype=int)
    width = max(int(lengths.max(initial=0)), 1)
    scores = np.zeros((len(qids), width))  # cut or zero-padded to the GT grid (compute_ap_from_tuple)
    grid = np.zeros((len(qids), width, 3))
    top_clip = np.zeros(len(qids), dtype=int)
    for i, q in enumerate(qids):
        pred = np.asarray(qid2pred[q]["pred_saliency_scores"], dtype=float)
        top_clip[i] = int(np.argmax(pred))
        n = min(len(pred), lengths[i])
        scores[i, :n] = pred[:n]
        grid[i, : lengths[i]] = grids[i]

    # One sort serves every level: the three levels' binary labels are stacked as 9 annotator columns.
    levels = list(SALIENCY_LEVELS.items())
    binary = np.concatenate([(grid >= m).astype(float) for _, m in levels], axis=2)  # [Q, L, 3 * levels]
    ap_all = saliency_ap(scores, binary, lengths)
    in_grid = top_clip < lengths
    out = {}
    for k, (name, _) in enumerate(levels):
        cols = slice(3 * k, 3 * k + 3)
        hit_rows = np.zeros((len(qids), 3))
        hit_rows[in_grid] = binary[np.nonzero(in_grid)[0], top_clip[in_grid], cols]
        hit1 = pct2(np.mean(np.max(hit_rows, 1)))
        ap = np.ascontiguousarray(ap_all[:, cols])  # [Q, 3], the official (#queries, 3) layout
        out[f"HL-min-{name}"] = {"HL-mAP": pct2(np.mean(ap)), "HL-Hit1": hit1}
    return out
