"""Sliding windows, temporal NMS, saliency stitching and the result formatting (no models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrhd.inference.results import Prediction, fmt_time, format_table, write_predictions
from mrhd.inference.windows import (
    Window,
    merge_nms,
    merge_window_moments,
    moment_iou,
    plan_windows,
    stitch_saliency,
)


@pytest.mark.parametrize("n,window", [(1, 75), (75, 75), (76, 75), (200, 75), (1000, 75), (31, 10)])
def test_windows_cover_the_video_with_full_windows(n, window):
    wins = plan_windows(n, window)
    assert wins[0].start == 0 and wins[-1].end == n
    covered = np.zeros(n, bool)
    for w in wins:
        covered[w.start:w.end] = True
        assert w.length == min(window, n)
    assert covered.all()
    for a, b in zip(wins, wins[1:]):
        assert a.start < b.start and b.start < a.end  # overlapping, increasing


def test_windows_overlap_is_respected():
    wins = plan_windows(200, 75, overlap=25)
    assert [w.start for w in wins] == [0, 50, 100, 125]


def test_merge_nms_keeps_best_and_drops_overlaps():
    rows = [[0, 10, 0.5], [1, 10, 0.9], [20, 30, 0.7], [0, 9, 0.8]]
    kept = merge_nms(rows, iou_threshold=0.7)
    assert kept == [[1, 10, 0.9], [20, 30, 0.7]]
    assert moment_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)


def test_merge_shifts_to_video_time_and_clamps():
    merged = merge_window_moments([(0.0, [[140, 150, 0.9]]), (100.0, [[40, 50, 0.8], [90, 160, 0.3]])],
                                  duration=200.0, iou_threshold=0.7)
    assert merged[0] == [140, 150, 0.9]          # the same moment seen by two windows: kept once
    assert [190.0, 200.0, 0.3] in merged          # shifted and clamped to the duration
    assert all(0 <= st < ed <= 200 for st, ed, _ in merged)
    assert [r[2] for r in merged] == sorted((r[2] for r in merged), reverse=True)


def test_stitch_single_window_is_identity_and_overlaps_blend():
    s = np.arange(5, dtype=float)
    assert np.allclose(stitch_saliency(5, [(Window(0, 5), s)]), s)
    out = stitch_saliency(6, [(Window(0, 4), [1, 1, 1, 1]), (Window(2, 6), [3, 3, 3, 3])])
    assert out[0] == 1 and out[-1] == 3 and 1 < out[2] < 3 and 1 < out[3] < 3
    with pytest.raises(ValueError):
        stitch_saliency(6, [(Window(0, 3), [0, 0, 0])])


def test_result_json_table_and_writer(tmp_path):
    pred = Prediction(query="a man", vid="v", duration=75.5, windows=[[2.0, 10.0, 0.9], [60.0, 74.0, 0.4]],
                      saliency=[0.1, 0.5, 0.2], model="qd_detr", weights="random", qid=0)
    obj = pred.to_json()
    assert set(obj) >= {"query", "vid", "duration", "pred_relevant_windows", "pred_saliency_scores",
                        "model", "weights"}
    assert pred.top_clips(2) == [(1, 0.5), (2, 0.2)]
    dup = Prediction(query="q", vid="v", duration=20, windows=[[2.0, 4.0, 0.9], [2.0, 4.0, 0.8], [6.0, 8.0, 0.7]],
                     saliency=[0.0] * 10, model="m", weights="w")
    assert "0:06-0:08" in format_table(dup, top_k=2).splitlines()[3]  # repeated window shown once
    table = format_table(pred, top_k=1)
    assert "0:02-0:10" in table and "0:00:00" not in table and "1:00" not in table.split("\n")[2]
    assert fmt_time(3725) == "1:02:05" and fmt_time(59.6) == "1:00"
    write_predictions(tmp_path / "p.json", [pred, pred])
    assert len(json.loads((tmp_path / "p.json").read_text())) == 2
    write_predictions(tmp_path / "p.jsonl", [pred, pred])
    assert [json.loads(x)["vid"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == ["v", "v"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.jsonl"]
