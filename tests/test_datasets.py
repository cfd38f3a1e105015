"""Datasets on the public annotation formats, with features the tests make; bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mrhd.annotations import load_annotations
from mrhd.errors import MrhdError
from mrhd.features.profiles import load_profile, open_stores
from mrhd.features.write import write_store
from mrhd.pipeline.collate import collate, prepare_batch
from mrhd.pipeline.datasets import DatasetConfig, MomentDataset


def _stores_for(tmp_path, lines, profile, drop_vids=()):
    """Random raw features for every video/query of ``lines`` (clip count from the duration)."""
    rng = np.random.default_rng(0)
    n_clips = {}
    for a in lines:
        n_clips[a["vid"]] = max(1, int(np.ceil(float(a["duration"]) / 2)))
    for s in profile.video:
        dim = {"slowfast": 2304, "clip": 512}[s]
        write_store(tmp_path / f"{s}.h5", s, dtype="float16",
                    videos={v: rng.normal(size=(n, dim)) for v, n in n_clips.items() if v not in drop_vids})
    write_store(tmp_path / "clip_text.h5", "clip_text",
                texts={a["qid"]: rng.normal(size=(int(rng.integers(5, 40)), 512)) for a in lines})
    return open_stores(tmp_path, profile)


@pytest.fixture(scope="module")
def qvh_six(tmp_path_factory):
    """Six real QVHighlights training lines and stores with random features for them."""
    from tests.conftest import _shared_dir, require_dir

    data = require_dir(_shared_dir() / "data", "annotation data")
    lines = list(itertools.islice(load_annotations(data / "qvhighlights" / "highlight_train_release.jsonl"), 6))
    folder = tmp_path_factory.mktemp("qvh")
    _stores_for(folder, lines, load_profile("slowfast_clip"))
    return lines, folder


@pytest.mark.parametrize("labels", ["moment_detr", "qd_detr", "tr_detr", "cg_detr", "videolights", "univtg"])
def test_qvhighlights_lines_make_official_batches(qvh_six, labels):
    lines, folder = qvh_six
    lines = [dict(a) for a in lines]
    profile = load_profile("univtg" if labels == "univtg" else "slowfast_clip")
    ds = MomentDataset(lines, open_stores(folder, profile), profile, DatasetConfig(labels=labels))
    _, batched = collate([ds[i] for i in range(len(ds))])
    inputs, targets = prepare_batch(batched)
    b, lv, dv = inputs["src_vid"].shape
    assert b == 6 and dv == 2818 and lv <= 75
    assert inputs["src_txt"].shape[1] <= (10**9 if labels == "univtg" else 32)
    for i, a in enumerate(lines):
        spans = targets["span_labels"][i]["spans"]
        ctx = int(inputs["src_vid_mask"][i].sum())
        w = torch.tensor(a["relevant_windows"][:5], dtype=torch.float32) / (ctx * 2)
        torch.testing.assert_close(spans[:, 0], w.mean(1)) if len(a["relevant_windows"]) <= 5 else None
        pos = targets["saliency_pos_labels"][i].tolist()
        neg = targets["saliency_neg_labels"][i].tolist()
        assert all(p in a["relevant_clip_ids"] or p == ctx - 1 for p in pos)
        easy_neg = neg[-1]
        assert easy_neg not in a["relevant_clip_ids"] and 0 <= easy_neg < ctx
    if labels != "moment_detr" and labels != "univtg":
        assert targets["saliency_all_labels"].shape == (6, lv)
        a = lines[0]
        assert targets["saliency_all_labels"][0, a["relevant_clip_ids"][0]] == sum(a["saliency_scores"][0])
    if labels == "univtg":
        assert targets["timestamp_window"].shape == (6, lv)
        assert targets["saliency_pos_labels"].shape == (6, 1)


def test_charades_and_tacos_windows_only(tmp_path, data_dir):
    for name, path in [("charades", "charades_sta/charades_train_release.jsonl"),
                       ("tacos", "tacos/tacos_train_release.jsonl")]:
        lines = list(itertools.islice(load_annotations(data_dir / path), 4))
        profile = load_profile("slowfast_clip").replace(max_v_l=None if name == "tacos" else 75)
        folder = tmp_path / name
        folder.mkdir()
        ds = MomentDataset(lines, _stores_for(folder, lines, profile), profile, DatasetConfig(labels="cg_detr"))
        _, batched = collate([ds[i] for i in range(len(ds))])
        _, targets = prepare_batch(batched)
        for i in range(len(lines)):
            labels = targets["saliency_all_labels"][i]
            pos = targets["saliency_pos_labels"][i]
            assert labels[pos].eq(1).all()              # positives inside the first window
            assert labels.sum() >= 1


def test_tvsum_labels(tmp_path, data_dir):
    lines = load_annotations(data_dir / "tvsum" / "tvsum_train_release.jsonl")[:3]
    profile = load_profile("slowfast_clip")
    ds = MomentDataset(lines, _stores_for(tmp_path, lines, profile), profile, DatasetConfig(labels="qd_detr"))
    item = ds[0]["model_inputs"]
    label = np.asarray(lines[0]["label"])
    ctx = len(item["video_feat"])
    expect = (label - 1).sum(-1)[:ctx] / 80 * 12
    np.testing.assert_allclose(item["saliency_all_labels"][: len(expect)], expect)
    assert item["saliency_pos_labels"] == [int(np.argsort((label - 1).sum(-1)[:ctx])[-1])]


def test_missing_videos_are_listed_skipped_and_counted(tmp_path, data_dir):
    lines = list(itertools.islice(load_annotations(data_dir / "qvhighlights" / "highlight_val_release.jsonl"), 5))
    profile = load_profile("slowfast_clip")
    stores = _stores_for(tmp_path, lines, profile, drop_vids={lines[1]["vid"], lines[3]["vid"]})
    ds = MomentDataset(lines, stores, profile)
    assert len(ds) == 3 and len(ds.skipped) == 2
    assert {s[0] for s in ds.skipped} == {lines[1]["qid"], lines[3]["qid"]}
    assert "missing video" in ds.skipped[0][2]
    assert "3 lines used, 2 skipped" in ds.summary()


def test_empty_split_and_bad_files_are_user_errors(tmp_path, data_dir):
    lines = list(itertools.islice(load_annotations(data_dir / "qvhighlights" / "highlight_val_release.jsonl"), 2))
    profile = load_profile("slowfast_clip")
    stores = _stores_for(tmp_path, lines, profile, drop_vids={a["vid"] for a in lines})
    with pytest.raises(MrhdError, match="no usable lines"):
        MomentDataset(lines, stores, profile)
    with pytest.raises(MrhdError, match="no usable lines"):
        MomentDataset([], stores, profile)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1, "vid": "a"}\n{oops\n')
    with pytest.raises(MrhdError, match="bad.jsonl:2"):
        load_annotations(bad)
    with pytest.raises(MrhdError, match="not found"):
        load_annotations(tmp_path / "nope.jsonl")
