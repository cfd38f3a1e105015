"""Charades-STA / TACoS (R1, R5, mIoU) and TVSum / YouTube Highlights (mAP per category):
hand-computed cases, and runs on the real annotation files (oracle scores perfect, shifted lower)."""

from __future__ import annotations

import numpy as np
import pytest

from mrhd.io import read_jsonl
from mrhd.pipeline.evaluate import evaluate
from mrhd.pipeline.evaluate.tvsum import lower_median, ranked_ap, tvsum_video_ap, youtube_video_ap

# ---------------------------------------------------------------- Charades-STA / TACoS


def test_charades_hand_case():
    gt = [{"qid": 1, "duration": 30.0, "relevant_windows": [[0.0, 10.0]]},
          {"qid": 2, "duration": 30.0, "relevant_windows": [[10.0, 20.0]]}]
    preds = [
        # top-1 IoU 0.6 ([0, 6]); a later window ([0, 10]) is exact -> R5 IoU 1
        {"qid": 1, "pred_relevant_windows": [[0.0, 6.0, 0.9], [20.0, 30.0, 0.5], [0.0, 10.0, 0.4]]},
        # top-1 IoU 0.25 ([16, 26] vs [10, 20]: 4 / 16 hull); the 6th window would be exact but R5 stops at 5
        {"qid": 2, "pred_relevant_windows": [[16.0, 26.0, 0.9]] + [[0.0, 1.0, 0.1]] * 4 + [[10.0, 20.0, 0.0]]},
    ]
    res = evaluate("charades", preds, gt)
    assert res["full"]["MR-R1"] == {"0.3": 50.0, "0.5": 50.0, "0.7": 0.0}
    assert res["full"]["MR-R5"] == {"0.3": 50.0, "0.5": 50.0, "0.7": 50.0}
    assert res["full"]["MR-mIoU"] == round(100 * (0.6 + 0.25) / 2, 2)
    assert list(res["brief"]) == ["MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-R5@0.3",
                                  "MR-full-R5@0.5", "MR-full-R5@0.7", "MR-full-mIoU"]


@pytest.mark.parametrize("dataset, path", [("charades", "charades_sta/charades_test_release.jsonl"),
                                           ("tacos", "tacos/tacos_test_release.jsonl")])
def test_real_annotations_oracle_is_perfect_and_shift_scores_lower(data_dir, dataset, path):
    gt = read_jsonl(data_dir / path)
    oracle = [{"qid": g["qid"], "pred_relevant_windows": [[*g["relevant_windows"][0], 1.0]]} for g in gt]
    perfect = evaluate(dataset, oracle, gt)["brief"]
    assert set(perfect.values()) == {100.0}

    def shifted(g, by):
        s, e = g["relevant_windows"][0]
        shift = by * (e - s)  # a fixed fraction of the moment: IoU (1 - by) / (1 + by)
        return [s + shift, e + shift, 1.0]

    worse = evaluate(dataset, [{"qid": g["qid"], "pred_relevant_windows": [shifted(g, 0.25)]} for g in gt],
                     gt)["brief"]
    # IoU 0.6 everywhere: R@0.3 and R@0.5 stay at 100, R@0.7 drops to 0, mIoU 60
    assert worse["MR-full-R1@0.5"] == 100.0 and worse["MR-full-R1@0.7"] == 0.0
    assert worse["MR-full-mIoU"] == pytest.approx(60.0, abs=0.01)
    # R5 recovers the truth when it is among the first five
    both = [{"qid": g["qid"], "pred_relevant_windows": [shifted(g, 0.25), [*g["relevant_windows"][0], 0.5]]}
            for g in gt]
    assert evaluate(dataset, both, gt)["brief"]["MR-full-R5@0.7"] == 100.0


# ---------------------------------------------------------------- TVSum / YouTube Highlights


def test_ranked_ap_hand_values():
    assert ranked_ap(np.array([1.0, 1.0, 0.0])) == 1.0
    assert ranked_ap(np.array([0.0, 0.0])) == 0.0
    # [0, 1]: at j=2 recall 0->1, precision 0 -> 1/2: (1 - 0) * (0 + 0.5) / 2
    assert ranked_ap(np.array([0.0, 1.0])) == 0.25
    # [1, 0, 1]: (0.5)(1 + 1)/2 + 0 + (0.5)(0.5 + 2/3)/2
    assert ranked_ap(np.array([1.0, 0.0, 1.0])) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)


def test_lower_median_matches_torch_median():
    import torch

    for values in ([3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 2.0], [4.0]):
        assert lower_median(np.array(values)) == float(torch.tensor(values).median())


def test_tvsum_top5_uses_only_the_first_five_ranked_clips():
    # 8 clips, all annotators agree: clips 0-2 above the median (lower median of 8 values = 1.0)
    column = [3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    gt = {"qid": "v", "label": [[c] * 20 for c in column], "domain": "BK"}
    assert tvsum_video_ap([8, 7, 6, 5, 4, 3, 2, 1], gt) == 1.0
    # the positives ranked 6th-8th: nothing in the top 5 -> 0
    assert tvsum_video_ap([1, 2, 3, 8, 7, 6, 5, 4], gt) == 0.0
    # recall counts only the positives inside the top 5: one at rank 1 (two more outside) -> 1
    assert tvsum_video_ap([1, 8, 2, 7, 6, 5, 4, 3], gt) == 1.0
    # one positive at rank 2 in the top 5: g = 1 -> (1 - 0) * (0 + 1/2) / 2
    assert tvsum_video_ap([7, 1, 2, 8, 6, 5, 4, 3], gt) == 0.25


def test_tvsum_per_category_and_mean():
    column = [3.0, 1.0, 1.0, 1.0]
    gts = [{"qid": "a", "label": [[c] * 20 for c in column], "domain": "BK"},
           {"qid": "b", "label": [[c] * 20 for c in column], "domain": "BK"},
           {"qid": "c", "label": [[c] * 20 for c in column], "domain": "VT"}]
    preds = [{"qid": "a", "pred_saliency_scores": [4, 3, 2, 1]},   # AP 1
             {"qid": "b", "pred_saliency_scores": [1, 4, 3, 2]},   # positive ranked 4th: 1 * (0 + 1/4) / 2
             {"qid": "c", "pred_saliency_scores": [2, 1, 0, 0]}]   # AP 1
    res = evaluate("tvsum", preds, gts)
    assert res["HL-top5-mAP"]["BK"] == round(100 * (1 + 0.125) / 2, 2)
    assert res["HL-top5-mAP"]["VT"] == 100.0
    assert res["HL-top5-mAP"]["mean"] == round(100 * ((1 + 0.125) / 2 + 1) / 2, 2)
    assert res["brief"]["HL-top5-mAP-mean"] == res["HL-top5-mAP"]["mean"]


def test_tvsum_real_annotations(data_dir):
    gt = read_jsonl(data_dir / "tvsum" / "tvsum_train_release.jsonl") + \
        read_jsonl(data_dir / "tvsum" / "tvsum_val_release.jsonl")
    consensus = [{"qid": g["qid"], "pred_saliency_scores": np.mean(g["label"], 1).tolist()} for g in gt]
    reversed_ = [{"qid": g["qid"], "pred_saliency_scores": (-np.mean(g["label"], 1)).tolist()} for g in gt]
    good = evaluate("tvsum", consensus, gt)["HL-top5-mAP"]
    bad = evaluate("tvsum", reversed_, gt)["HL-top5-mAP"]
    assert sorted(good) == sorted({g["domain"] for g in gt} | {"mean"})
    assert good["mean"] > 70 and bad["mean"] < 30
    assert all(good[d] > bad[d] for d in good)
    # each single annotator's own scores are a perfect ranking for that annotator
    one = gt[0]
    ann = np.asarray(one["label"])[:, 0]
    ap = tvsum_video_ap(ann.tolist(), {"label": ann[:, None].tolist()})
    assert ap == 1.0


def test_youtube_full_ranking_ap():
    gt = [{"qid": "y1", "label": [0, 1, 0, 1], "domain": "dog"},
          {"qid": "y2", "match": [1, 0, 0, 0, 0, 0], "domain": "skiing"}]
    assert youtube_video_ap([0, 1, 0, 1], gt[0]) == 1.0
    preds = [{"qid": "y1", "pred_saliency_scores": [0.9, 0.8, 0.1, 0.7]},  # ranks: -, +, +
             {"qid": "y2", "pred_saliency_scores": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}]  # positive last (6th)
    res = evaluate("youtube", preds, gt)
    y1 = 0.5 * (0 + 0.5) / 2 + 0.5 * (0.5 + 2 / 3) / 2
    y2 = 1 * (0 + 1 / 6) / 2
    assert res["HL-mAP"]["dog"] == round(100 * y1, 2)
    assert res["HL-mAP"]["skiing"] == round(100 * y2, 2)
    assert res["HL-mAP"]["mean"] == round(100 * (y1 + y2) / 2, 2)
