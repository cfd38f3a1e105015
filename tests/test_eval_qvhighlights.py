"""QVHighlights metrics: hand-computed cases, the quirks of the official code, and a plain
per-query re-statement of the official definitions that the vectorised code must equal bit for bit."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from mrhd.io import read_jsonl
from mrhd.pipeline.evaluate import evaluate_qvhighlights
from mrhd.pipeline.evaluate.highlight import saliency_ap
from mrhd.pipeline.evaluate.moment_retrieval import MAP_IOU_THRESHOLDS, average_precision_detection
from mrhd.pipeline.evaluate.numeric import compact_left, numpy_sum_rows

# ---------------------------------------------------------------- numpy summation order


@pytest.mark.parametrize("width", [1, 5, 8, 11, 17, 75, 130, 300])
def test_rowwise_sum_is_bitwise_numpy_sum(width):
    rng = np.random.default_rng(width)
    values = rng.random((64, width)) * rng.choice([1e-3, 1.0, 1e4], size=(64, width))
    mask = rng.random((64, width)) < rng.random((64, 1))
    packed, counts = compact_left(values, mask)
    got = numpy_sum_rows(packed, counts)
    expected = np.array([np.sum(v[m]) for v, m in zip(values, mask)])
    assert np.array_equal(got, expected)


def test_naive_left_to_right_sum_would_differ():
    """Why the emulation exists: summing in another order changes last bits."""
    rng = np.random.default_rng(0)
    rows = rng.random((2000, 11))
    naive = np.zeros(2000)
    for j in range(11):
        naive = naive + rows[:, j]
    assert np.any(naive != rows.sum(axis=1))
    assert np.array_equal(numpy_sum_rows(rows, np.full(2000, 11)), rows.sum(axis=1))


# ---------------------------------------------------------------- hand-computed cases

def _gt(qid, windows, duration=150, clip_ids=(), scores=()):
    return {"qid": qid, "duration": duration, "relevant_windows": windows,
            "relevant_clip_ids": list(clip_ids), "saliency_scores": [list(s) for s in scores]}


def _ap(pred, gt):
    return average_precision_detection([pred], [gt])[0]


def test_ap_perfect_first_prediction():
    assert np.all(_ap([[0, 10, 0.9], [20, 30, 0.8]], [[0, 10]]) == 1.0)


def test_ap_correct_window_ranked_second():
    # ranks: fp, tp -> precision (0, 1/2), recall (0, 1) -> interpolated area 1 * 1/2
    assert np.all(_ap([[20, 30, 0.9], [0, 10, 0.8]], [[0, 10]]) == 0.5)


def test_ap_ranks_by_score_not_list_order_and_keeps_list_order_on_ties():
    assert np.all(_ap([[20, 30, 0.1], [0, 10, 0.8]], [[0, 10]]) == 1.0)
    assert np.all(_ap([[20, 30, 0.5], [0, 10, 0.5]], [[0, 10]]) == 0.5)


def test_ap_equal_iou_goes_to_the_last_gt_window():
    # [0, 10] has IoU 0.5 with both halves: the official argsort()[::-1] tries the last one first,
    # so [0, 5] still finds its own window: AP 1 at IoU 0.5. Above 0.5 only [0, 5] matches (rank 2,
    # recall 1/2): area 1/2 * 1/2.
    ap = _ap([[0, 10, 0.9], [0, 5, 0.8]], [[0, 5], [5, 10]])
    assert ap[0] == 1.0
    assert np.all(ap[1:] == 0.25)


def test_ap_iou_exactly_at_threshold_matches():
    ap = _ap([[0, 7, 1.0]], [[0, 10]])  # IoU 0.7
    thresholds = np.array(MAP_IOU_THRESHOLDS)
    assert np.array_equal(ap, (thresholds <= 0.7).astype(float))


def test_only_first_ten_windows_count():
    preds = [[100 + 2 * i, 101 + 2 * i, 1.0] for i in range(10)] + [[0, 10, 2.0]]
    sub = [{"qid": 1, "pred_relevant_windows": preds}]
    res = evaluate_qvhighlights(sub, [_gt(1, [[0, 10]])])
    assert res["full"]["MR-mAP"]["average"] == 0.0


def test_length_ranges_split_queries_by_gt_window_length():
    gt = [_gt(1, [[0, 8]]), _gt(2, [[0, 40]]), _gt(3, [[0, 20], [50, 54]])]
    sub = [{"qid": 1, "pred_relevant_windows": [[0, 8, 1.0]]},
           {"qid": 2, "pred_relevant_windows": [[100, 140, 1.0]]},
           {"qid": 3, "pred_relevant_windows": [[50, 54, 1.0], [0, 20, 0.5]]}]
    res = evaluate_qvhighlights(sub, gt)
    # short: q1 (hit) and q3 with only [50, 54] (hit)
    assert res["short"]["MR-mAP"]["average"] == 100.0
    assert res["short"]["MR-R1"]["0.5"] == 100.0
    # middle: only q3 with [0, 20]: ranked second after a miss -> AP 0.5, R1 misses
    assert res["middle"]["MR-mAP"]["0.5"] == 50.0
    assert res["middle"]["MR-R1"]["0.5"] == 0.0
    # long: q2 misses
    assert res["long"]["MR-mAP"]["average"] == 0.0
    # full: q1 1.0, q2 0.0, q3 both windows found in order -> 1.0
    assert res["full"]["MR-mAP"]["0.5"] == round(100 * 2 / 3, 2)
    assert res["full"]["MR-R1"]["0.7"] == round(100 * 2 / 3, 2)


def test_highlight_hand_case():
    gt = [_gt(1, [[2, 6]], duration=8, clip_ids=[1, 2], scores=[[4, 4, 4], [2, 2, 2]])]
    good = evaluate_qvhighlights([{"qid": 1, "pred_saliency_scores": [0.1, 0.9, 0.5, 0.2]}], gt)
    assert good["HL-min-Fair"] == {"HL-mAP": 100.0, "HL-Hit1": 100.0}
    assert good["HL-min-VeryGood"] == {"HL-mAP": 100.0, "HL-Hit1": 100.0}
    # ranking: clip 0 (-), 2 (+), 3 (-), 1 (+): precision 1/2 at both positives -> AP 0.5; top clip misses
    bad = evaluate_qvhighlights([{"qid": 1, "pred_saliency_scores": [0.9, 0.1, 0.5, 0.2]}], gt)
    assert bad["HL-min-Fair"] == {"HL-mAP": 50.0, "HL-Hit1": 0.0}
    assert list(bad["brief"]) == ["HL-min-Fair-mAP", "HL-min-Fair-Hit1", "HL-min-Good-mAP",
                                  "HL-min-Good-Hit1", "HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"]


def test_saliency_ap_ties_and_degenerate_labels():
    scores = np.array([[0.3, 0.3, 0.3, 0.3]])
    labels = np.array([[[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]]], dtype=float)
    ap = saliency_ap(scores, labels, np.array([4]))
    # all tied: one point, precision 2/4; no positive -> 0; all positive -> 1
    assert ap.tolist() == [[0.5, 0.0, 1.0]]


def test_saliency_list_is_cut_or_zero_padded_to_the_gt_grid():
    gt = [_gt(1, [[0, 4]], duration=8, clip_ids=[0, 1], scores=[[4, 4, 4], [4, 4, 4]])]
    short = evaluate_qvhighlights([{"qid": 1, "pred_saliency_scores": [0.5, 0.4]}], gt)
    long = evaluate_qvhighlights([{"qid": 1, "pred_saliency_scores": [0.5, 0.4, 0.0, 0.0, 9.0]}], gt)
    assert short["HL-min-Fair"]["HL-mAP"] == 100.0
    # the 9.0 beyond the grid is cut for AP but still taken as the top clip for Hit@1 (a miss)
    assert long["HL-min-Fair"] == {"HL-mAP": 100.0, "HL-Hit1": 0.0}


# ---------------------------------------------------------------- plain re-statement of the definitions

def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union else math.nan


def _ref_ap_detection(preds, gts, thresholds):
    preds = sorted(preds[:10], key=lambda w: -w[2])
    out = []
    for t in thresholds:
        locked, hits = set(), []
        for p in preds:
            ious = [_iou(p, g) for g in gts]
            order = sorted(range(len(gts)), key=lambda j: (-(math.inf if math.isnan(ious[j]) else ious[j]), -j))
            hit = False
            for j in order:
                if ious[j] < t:
                    break
                if j in locked:
                    continue
                locked.add(j)
                hit = True
                break
            hits.append(hit)
        tp = np.cumsum(hits).astype(float)
        fp = np.cumsum([not h for h in hits]).astype(float)
        prec = np.hstack([[0], tp / (tp + fp), [0]])
        rec = np.hstack([[0], tp / len(gts), [1]])
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        idx = np.where(rec[1:] != rec[:-1])[0] + 1
        out.append(np.sum((rec[idx] - rec[idx - 1]) * prec[idx]))
    return out


def _ref_saliency_ap(y_true, y_pred):
    if len(set(y_true.tolist())) == 1:
        return float(y_true[0] != 0)
    thresholds = sorted(set(y_pred.tolist()), reverse=True)
    precision, recall = [], []
    n_pos = y_true.sum()
    for t in thresholds:
        sel = y_pred >= t
        tp = y_true[sel].sum()
        precision.append(tp / sel.sum())
        recall.append(tp / n_pos)
        if tp == n_pos:
            break
    precision = np.array(precision[::-1] + [1.0])
    recall = np.array(recall[::-1] + [0.0]).astype(np.float32)
    for i in range(1, len(precision)):
        precision[i] = max(precision[i - 1], precision[i])
    return np.mean(precision[np.where(np.diff(recall))])


def _ref_evaluate(sub, gt):
    by_qid = {g["qid"]: g for g in gt}
    thds = MAP_IOU_THRESHOLDS
    out = {}
    for name, (lo, hi) in {"short": (0, 10), "middle": (10, 30), "long": (30, 150), "full": (0, 150)}.items():
        windows = {q: [w for w in g["relevant_windows"] if name == "full" or lo < w[1] - w[0] <= hi]
                   for q, g in by_qid.items()}
        preds = [p for p in sub if windows[p["qid"]]]
        ap = np.array([_ref_ap_detection(p["pred_relevant_windows"], windows[p["qid"]], thds) for p in preds])
        ap_t = ap.mean(0)
        mr_map = {str(t): float(f"{100 * v:.2f}") for t, v in zip(thds, ap_t)}
        mr_map["average"] = float(f"{100 * np.mean(ap_t):.2f}")
        ious = []
        for p in preds:
            top = p["pred_relevant_windows"][0]
            ws = windows[p["qid"]]
            cross = [_iou(top, w) for w in ws]
            best = ws[int(np.argmax(cross))]
            inter = max(0.0, min(top[1], best[1]) - max(top[0], best[0]))
            hull = max(top[1], best[1]) - min(top[0], best[0])
            ious.append(inter / hull if hull else 0.0)
        r1 = {str(t): float(f"{100 * np.mean(np.array(ious) >= t):.2f}") for t in thds}
        out[name] = {"MR-mAP": mr_map, "MR-R1": r1}
    for level, m in (("Fair", 2), ("Good", 3), ("VeryGood", 4)):
        aps, hits = [], []
        for p in sub:
            g = by_qid[p["qid"]]
            grid = np.zeros((int(g["duration"] / 2), 3))
            grid[g["relevant_clip_ids"]] = g["saliency_scores"]
            binary = (grid >= m).astype(float)
            pred = np.zeros(len(grid))
            s = np.array(p["pred_saliency_scores"], dtype=float)[: len(grid)]
            pred[: len(s)] = s
            aps.append([_ref_saliency_ap(binary[:, a], pred) for a in range(3)])
            top = int(np.argmax(p["pred_saliency_scores"]))
            hits.append(binary[top].max() if top < len(grid) else 0.0)
        out[f"HL-min-{level}"] = {"HL-mAP": float(f"{100 * np.mean(aps):.2f}"),
                                  "HL-Hit1": float(f"{100 * np.mean(hits):.2f}")}
    return out


def _random_submission(gt, rng: random.Random):
    sub = []
    for g in gt:
        dur = g["duration"]
        windows = []
        for _ in range(rng.randint(1, 13)):
            if rng.random() < 0.35:  # on, inside or around GT windows: exact and tied IoUs
                s, e = rng.choice(g["relevant_windows"])
                e = s + (e - s) * rng.choice([1, 0.5, 0.7, 0.75, 2])
            else:
                s = 2 * rng.randrange(0, max(1, int(dur) // 2))
                e = min(dur, s + 2 * rng.randrange(1, 30))
            windows.append([float(s), float(e), rng.choice([0.5, round(rng.random(), 1), rng.random()])])
        n_clips = int(dur / 2) + rng.choice([0, 0, 0, -1, 1, 2])
        sal = [rng.choice([0.0, round(rng.random(), 1), rng.random()]) for _ in range(max(n_clips, 1))]
        sub.append({"qid": g["qid"], "pred_relevant_windows": windows, "pred_saliency_scores": sal})
    rng.shuffle(sub)
    return sub


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_equals_plain_definitions_on_real_annotations(data_dir, seed):
    gt = read_jsonl(data_dir / "qvhighlights" / "highlight_val_release.jsonl")[:250]
    sub = _random_submission(gt, random.Random(seed))
    got = json.loads(json.dumps(evaluate_qvhighlights(sub, gt)))
    expected = _ref_evaluate(sub, gt)
    for key, block in expected.items():
        assert got[key] == block, key
    assert list(got) == ["brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood",
                         "full", "long", "middle", "short"]
    assert got["brief"]["MR-full-mAP"] == expected["full"]["MR-mAP"]["average"]
    assert got["brief"]["HL-min-Good-Hit1"] == expected["HL-min-Good"]["HL-Hit1"]
