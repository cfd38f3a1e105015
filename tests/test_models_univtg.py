"""UniVTG: equal to the authors' code on the golden fixture, plus properties of the model itself."""

from __future__ import annotations

import pytest
import torch

from mrhd.models.nms import apply_nms, temporal_nms
from mrhd.models.registry import create_model, get_spec
from mrhd.models.univtg.model import UniVTGConfig, build, build_criterion, config_from_opt
from mrhd.models.univtg.postprocess import clip_timestamps, predictions
from mrhd.pipeline.collate import pad_sequences
from mrhd.pipeline.datasets import univtg_dense_targets
from tests.conftest import open_case
from tests.helpers.model_fixtures import (
    assert_full_size_keys,
    assert_lines_close,
    assert_losses_match,
    assert_tree_close,
    first_and_last_loss,
    load_fixture_model,
    load_pt,
    masked_batch,
    model_cases,
    params_without_grad,
    read_config,
    read_json,
    read_jsonl,
)

CASES = model_cases("univtg")


def dense_targets(annotations: list[dict], lengths: list[int], clip_len: float) -> dict:
    """UniVTG's dense targets of a batch as mrhd train builds them: the dataset's per-sample
    targets, padded as the collate pads them (``timestamp_mask`` = valid clips)."""
    per_sample = [univtg_dense_targets(a, n, clip_len) for a, n in zip(annotations, lengths)]
    out = {}
    for key in ("timestamp", "span_labels_nn", "timestamp_window"):
        out[key], out["timestamp_mask"] = pad_sequences([s[key] for s in per_sample])
    return out


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_forward_losses_and_predictions_match_official(case):
    case, config, cfg, model, inputs = load_fixture_model(case, config_from_opt, build)
    ref_out = load_pt(case, "outputs.pt")
    with torch.no_grad():
        out = model(**inputs)
    assert_tree_close(out, ref_out, check_dtype=False)

    targets = load_pt(case, "targets.pt")
    ref_losses = read_json(case, "losses.json")
    assert ref_losses["matcher_indices"] is None  # dense model: no Hungarian matching
    criterion = build_criterion(cfg)
    losses = criterion(out, targets)
    assert_losses_match(losses, ref_losses["losses"])
    assert criterion.weight_dict == ref_losses["weight_dict"]
    assert float(criterion.total(losses)) == pytest.approx(ref_losses["weighted_total"], abs=1e-5, rel=1e-6)

    # the clip reference times the model adds its offsets to
    mask = inputs["src_vid_mask"]
    assert torch.equal(clip_timestamps(mask, cfg.clip_len), targets["timestamp"])
    # the dense targets mrhd train's dataset builds (per sample, then collated) are the official ones
    ours_targets = dense_targets(config["fixture_annotations"], mask.sum(1).long().tolist(), cfg.clip_len)
    assert ours_targets["timestamp_mask"].shape == mask.shape
    for key in ("timestamp", "timestamp_mask", "timestamp_window", "span_labels_nn"):
        assert torch.equal(ours_targets[key], targets[key].float()), key

    # post-processing on the official outputs: exactly the official lines (before and after NMS)
    metas = config["fixture_annotations"]
    ref_preds = read_jsonl(case / "predictions.jsonl")
    preds = predictions({k: v.clone() for k, v in ref_out.items()}, mask, metas, cfg.clip_len, cfg.eval_mode)
    assert preds == ref_preds
    assert apply_nms(preds, cfg.nms_thd, cfg.max_before_nms, cfg.max_after_nms) == \
        read_jsonl(case / "predictions_nms.jsonl")

    # end to end from our own forward: same windows up to the last printed decimal (fp32 summation
    # order differs across CPUs/BLAS builds, so a value on a rounding boundary may flip one digit;
    # saliency is cast to fp16 upstream, where one step is 2**-11 relative)
    ours = predictions(out, mask, metas, cfg.clip_len, cfg.eval_mode)
    assert_lines_close(ours, ref_preds, ids=("qid", "vid"), window_atol=2e-4, saliency_atol=1e-3)


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_full_size_keys_match_official(case):
    case = open_case(case, "keys_full.json")
    with torch.device("meta"):
        model = build(config_from_opt(read_config(case)["opt_full"]))
    assert_full_size_keys(model, case)


def test_registered_with_official_defaults():
    spec = get_spec("univtg")
    assert spec.default_profile == "univtg"  # slowfast_clip + tef, text not truncated
    cfg = spec.config_cls()
    assert (cfg.hidden_dim, cfg.enc_layers, cfg.v_feat_dim, cfg.t_feat_dim) == (1024, 4, 2818, 512)


def test_unsupported_official_options_are_one_line_errors():
    from mrhd.errors import MrhdError

    with pytest.raises(MrhdError, match="span_loss_type"):
        config_from_opt({"span_loss_type": "ce"})
    assert config_from_opt({"hidden_dim": 64, "clip_length": 1.0}).clip_len == 1.0


def _tiny(**kw) -> UniVTGConfig:
    return UniVTGConfig(v_feat_dim=10, t_feat_dim=6, hidden_dim=16, nheads=2, enc_layers=2,
                        dim_feedforward=24, **kw)


def _batch(lengths_v=(9, 6), lengths_t=(4, 3), pad_v=0, pad_t=0, seed=0):
    return masked_batch(lengths_v, lengths_t, seed=seed, pad_v=pad_v, pad_t=pad_t)


def test_text_padding_does_not_change_outputs():
    model = create_model("univtg", _tiny()).eval()
    a = _batch()
    b = _batch()
    b["src_txt"] = torch.cat([a["src_txt"], torch.randn(2, 3, 6)], 1)   # garbage in padding
    b["src_txt_mask"] = torch.cat([a["src_txt_mask"], torch.zeros(2, 3)], 1)
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    for key in ("pred_logits", "pred_spans", "saliency_scores", "txt_mem_proj"):
        torch.testing.assert_close(oa[key], ob[key], atol=1e-5, rtol=0)


def test_video_padding_only_reaches_the_conv_heads_receptive_field():
    """Attention masks padded clips, but the 3-layer k=3 Conv1d heads see 3 clips past the end."""
    model = create_model("univtg", _tiny()).eval()
    a = _batch()
    b = _batch()
    b["src_vid"] = torch.cat([a["src_vid"], torch.randn(2, 4, 10)], 1)
    b["src_vid_mask"] = torch.cat([a["src_vid_mask"], torch.zeros(2, 4)], 1)
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    n = a["src_vid_mask"].shape[1]
    torch.testing.assert_close(oa["saliency_scores"], ob["saliency_scores"][:, :n], atol=1e-5, rtol=0)
    valid = int(a["src_vid_mask"][0].sum())   # sample 0 has no padding in batch a
    torch.testing.assert_close(oa["pred_spans"][0, :valid - 3], ob["pred_spans"][0, :valid - 3],
                               atol=1e-5, rtol=0)
    assert not torch.allclose(oa["pred_spans"][0, valid - 1], ob["pred_spans"][0, valid - 1])
    assert (ob["saliency_scores"][:, n:] < -100).all()   # log(0 + 1e-45)


def test_gradients_reach_every_trainable_parameter_and_loss_decreases():
    torch.manual_seed(0)
    cfg = _tiny()
    model = create_model("univtg", cfg).train()
    criterion = build_criterion(cfg)
    batch = _batch()
    lengths = batch["src_vid_mask"].sum(1).long().tolist()
    targets = dense_targets([{"relevant_windows": [[2, 8]]}, {"relevant_windows": [[0, 4], [8, 10]]}],
                            lengths, cfg.clip_len)
    targets["saliency_scores"] = targets["timestamp_window"].clone()
    targets["saliency_pos_labels"] = torch.tensor([[2], [0]])
    losses = criterion(model(**batch), targets)
    assert set(losses) == set(criterion.weight_dict)
    criterion.total(losses).backward()
    # the text position table exists only for checkpoint compatibility (use_txt_pos is False upstream)
    assert params_without_grad(model, ("txt_position_embed.",)) == []
    model.eval()  # no dropout / drop path: a deterministic objective
    first, last = first_and_last_loss(model, lambda: criterion.total(criterion(model(**batch), targets)), steps=15)
    assert last < first


def test_temporal_nms_keeps_the_best_of_overlapping_windows():
    windows = [[0.0, 10.0, 0.9], [1.0, 10.0, 0.8], [20.0, 30.0, 0.7], [0.0, 9.0, 0.6]]
    assert temporal_nms(windows, 0.7, max_after_nms=10) == [[0.0, 10.0, 0.9], [20.0, 30.0, 0.7]]
    assert temporal_nms(windows, 0.95, max_after_nms=1) == [[0.0, 10.0, 0.9]]


def test_predictions_clamp_to_duration_and_zero_padding_scores():
    model = create_model("univtg", _tiny()).eval()
    batch = _batch()
    with torch.no_grad():
        out = model(**batch)
    preds = predictions(out, batch["src_vid_mask"], [{"duration": 18, "qid": 1}, {"duration": 12}], 2.0)
    for p, dur, n in zip(preds, (18, 12), (9, 6)):
        w = torch.tensor(p["pred_relevant_windows"])
        assert w.shape == (9, 3) and (w[:, :2] >= 0).all() and (w[:, :2] <= dur).all()
        assert (w[:, 0] <= w[:, 1]).all() and (w[:-1, 2] >= w[1:, 2]).all()
        assert len(p["pred_saliency_scores"]) == n
    assert preds[1]["pred_relevant_windows"][-1][2] == 0.0   # padded clips score 0, ranked last


def test_drop_path_drops_whole_samples_only_in_training():
    from mrhd.models.layers.drop_path import DropPath

    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.ones(6, 16, 3)                       # sequence-first: (L, B, d)
    y = layer.train()(x)
    per_sample = y.permute(1, 0, 2).reshape(16, -1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert all(len(row.unique()) == 1 for row in per_sample)  # a sample is kept or dropped as a whole
    assert 0 < int((per_sample[:, 0] == 0).sum()) < 16
    assert torch.equal(layer.eval()(x), x)
