"""Validation of prediction files: each kind of problem is reported with its qid and line."""

from __future__ import annotations

import pytest

from mrhd.errors import MrhdError
from mrhd.pipeline.evaluate import evaluate, validate
from mrhd.pipeline.evaluate.validate import raise_on_errors


def _gt():
    return [{"qid": 1, "duration": 20, "relevant_windows": [[0, 4]], "relevant_clip_ids": [0, 1],
             "saliency_scores": [[4, 4, 4], [2, 2, 2]]},
            {"qid": 2, "duration": 30, "relevant_windows": [[10, 20]], "relevant_clip_ids": [5],
             "saliency_scores": [[3, 3, 3]]}]


def _pred(qid, windows=None, saliency=None, n=None):
    n = n if n is not None else (10 if qid == 1 else 15)
    return {"qid": qid,
            "pred_relevant_windows": windows if windows is not None else [[0, 4, 0.9], [6, 8, 0.1]],
            "pred_saliency_scores": saliency if saliency is not None else [0.1] * n}


def _only(issues, severity):
    return [i for i in issues if i.severity == severity]


def test_clean_file_has_no_issue():
    assert validate("qvhighlights", [_pred(1), _pred(2)], _gt()) == []


@pytest.mark.parametrize("preds, severity, words", [
    ([_pred(1), _pred(2), _pred(7)], "error", ["qid 7", "unknown qid", "line 3"]),
    ([_pred(1)], "error", ["qid 2", "no prediction", "ground-truth line 2"]),
    ([_pred(1), _pred(2), _pred(1)], "error", ["line 3", "qid 1", "duplicate", "line 1"]),
    ([_pred(1, windows=[[8, 4, 0.5]]), _pred(2)], "error", ["line 1", "qid 1", "start > end"]),
    ([_pred(1), _pred(2, windows=[[0, 40, 0.5]])], "warning", ["line 2", "qid 2", "outside the video"]),
    ([_pred(1, windows=[[0, 4, float("nan")]]), _pred(2)], "error", ["qid 1", "NaN"]),
    ([_pred(1, windows=[[0, float("inf"), 0.3]]), _pred(2)], "error", ["qid 1", "infinite"]),
    ([_pred(1, saliency=[0.1] * 9 + [float("inf")]), _pred(2)], "error", ["qid 1", "clip 9"]),
    ([_pred(1, n=7), _pred(2)], "warning", ["qid 1", "7 values", "10 clips"]),
    ([_pred(1, windows=[[0, 4, 0.1], [6, 8, 0.9]]), _pred(2)], "warning", ["not sorted by score"]),
    ([_pred(1, windows=[]), _pred(2)], "error", ["qid 1", "empty"]),
    ([_pred(1, windows=[[0, 4]]), _pred(2)], "error", ["qid 1", "expected [start, end, score]"]),
])
def test_each_problem_is_named(preds, severity, words):
    issues = validate("qvhighlights", preds, _gt())
    assert issues, "expected a problem"
    text = " | ".join(str(i) for i in _only(issues, severity))
    for w in words:
        assert w in text, text


def test_line_numbers_come_from_the_file():
    issues = validate("qvhighlights", [_pred(1), _pred(9)], _gt(), pred_lines=[3, 8])
    assert any(i.line == 8 and i.qid == 9 for i in issues)


def test_odd_duration_accepts_floor_and_ceil_clip_counts():
    gt = _gt()
    gt[1]["duration"] = 29  # 14.5 clips: the official grid has 14, extractors give 15
    for n in (14, 15):
        assert validate("qvhighlights", [_pred(1), _pred(2, n=n)], gt) == []
    assert _only(validate("qvhighlights", [_pred(1), _pred(2, n=16)], gt), "warning")


def test_strict_turns_warnings_into_errors():
    preds = [_pred(1, n=7), _pred(2)]
    issues = validate("qvhighlights", preds, _gt())
    raise_on_errors(issues, "p.jsonl")  # warnings only: fine
    with pytest.raises(MrhdError, match="--strict"):
        raise_on_errors(issues, "p.jsonl", strict=True)
    assert evaluate("qvhighlights", preds, _gt())["brief"]
    with pytest.raises(MrhdError, match="qid 1"):
        evaluate("qvhighlights", preds, _gt(), strict=True)


def test_evaluate_refuses_invalid_predictions_with_one_line():
    with pytest.raises(MrhdError) as err:
        evaluate("qvhighlights", [_pred(1, windows=[[8, 4, 0.5]]), _pred(2)], _gt())
    assert "\n" not in str(err.value) and "start > end" in str(err.value)


def test_other_datasets_check_their_own_fields():
    charades_gt = [{"qid": 5, "duration": 30.0, "relevant_windows": [[1.0, 5.0]]}]
    assert validate("charades", [{"qid": 5, "pred_relevant_windows": [[1.0, 5.0]]}], charades_gt) == []
    bad = validate("charades", [{"qid": 5, "pred_relevant_windows": [[6.0, 5.0, 1.0]]}], charades_gt)
    assert "start > end" in str(bad[0])
    tvsum_gt = [{"qid": "v", "label": [[1.0] * 20] * 4, "domain": "BK"}]
    assert validate("tvsum", [{"qid": "v", "pred_saliency_scores": [1, 2, 3, 4]}], tvsum_gt) == []
    short = validate("tvsum", [{"qid": "v", "pred_saliency_scores": [1, 2]}], tvsum_gt)
    assert short[0].severity == "warning" and "4 clips" in short[0].message


def test_wrong_ground_truth_file_is_named():
    # an unlabelled release (QVHighlights test) or another dataset's file cannot be scored against
    unlabelled = [{"qid": 1, "duration": 20}, {"qid": 2, "duration": 30}]
    issues = validate("qvhighlights", [_pred(1), _pred(2)], unlabelled)
    assert "ground-truth line 1: qid 1: has no relevant_windows" in str(issues[0])
    assert validate("qvhighlights", [_pred(1), _pred(2)], unlabelled, labels=False) == []
    gt = _gt()
    gt[0]["relevant_clip_ids"] = [0, 10]  # clip 10 is past the 10 clips of a 20-s video
    assert "outside the 10 clips" in str(validate("qvhighlights", [_pred(1), _pred(2)], gt)[0])
    charades_like = [{k: v for k, v in g.items() if k not in ("relevant_clip_ids", "saliency_scores")}
                     for g in _gt()]
    assert "wrong --dataset" in str(validate("qvhighlights", [_pred(1), _pred(2)], charades_like)[0])
    # without saliency predictions the same file is fine for moment retrieval
    mr_only = [{k: v for k, v in _pred(q).items() if k != "pred_saliency_scores"} for q in (1, 2)]
    assert validate("qvhighlights", mr_only, charades_like) == []
