"""Property tests of the grounding core and Moment-DETR / QD-DETR / TR-DETR (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from mrhd.errors import MrhdError
from mrhd.models.criterion import CriterionConfig, SetCriterion
from mrhd.models.postprocess import PostProcessorDETR, predict_lines, prediction_lines
from mrhd.models.registry import create_model, get_spec, make_config
from mrhd.models.spans import (
    generalized_temporal_iou,
    inverse_sigmoid,
    span_cxw_to_xx,
    span_xx_to_cxw,
    temporal_iou,
)
from mrhd.weights.checkpoint import load_checkpoint
from tests.helpers.model_fixtures import masked_batch, params_without_grad

MODELS = ("moment_detr", "qd_detr", "tr_detr")
TINY = dict(v_feat_dim=10, t_feat_dim=6, hidden_dim=16, nheads=2, dim_feedforward=24, num_queries=5,
            max_q_l=8, input_dropout=0.0, dropout=0.0)


def tiny(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **kw})


def batch(lv=(9, 6), lt=(4, 3), v_dim=10, t_dim=6, pad_v=0, pad_t=0, seed=1):
    return masked_batch(lv, lt, v_dim, t_dim, seed=seed, pad_v=pad_v, pad_t=pad_t, zero_padding=False)


def targets_for(inputs):
    b, lv = inputs["src_vid_mask"].shape
    labels = torch.zeros(b, lv)
    labels[:, 1:3] = torch.tensor([3.0, 1.0])
    return {
        "span_labels": [{"spans": torch.tensor([[0.3, 0.2], [0.7, 0.1]])}, {"spans": torch.tensor([[0.5, 0.4]])}],
        "saliency_pos_labels": torch.tensor([[1, 2], [1, 2]]),
        "saliency_neg_labels": torch.tensor([[4, 5], [4, 5]]),
        "saliency_all_labels": labels,
        "src_pos_mask": (labels > 0).float(),
    }


# ---- span utilities -------------------------------------------------------------------------------

def test_span_conversions_round_trip():
    xx = torch.tensor([[0.0, 1.0], [0.2, 0.4]])
    assert torch.allclose(span_xx_to_cxw(xx), torch.tensor([[0.5, 1.0], [0.3, 0.2]]))
    assert torch.allclose(span_cxw_to_xx(span_xx_to_cxw(xx)), xx)


def test_temporal_iou_and_giou_values():
    a = torch.tensor([[0, 0.2], [0.5, 1.0]])
    b = torch.tensor([[0, 0.3], [0.0, 1.0]])
    iou, _ = temporal_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[2 / 3, 0.2], [0.0, 0.5]]), atol=1e-6)
    assert torch.allclose(generalized_temporal_iou(a, b), torch.tensor([[2 / 3, 0.2], [-0.2, 0.5]]), atol=1e-6)
    with pytest.raises(ValueError):
        generalized_temporal_iou(torch.tensor([[0.5, 0.1]]), b)


def test_inverse_sigmoid_clamps_like_the_official_code():
    x = torch.tensor([0.0, 0.5, 1.0, 0.9])
    y = inverse_sigmoid(x)
    assert y[1] == 0 and torch.isfinite(y).all()
    assert torch.allclose(y[3].sigmoid(), torch.tensor(0.9), atol=1e-6)


# ---- models -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes(name):
    model = tiny(name).eval()
    inputs = batch()
    with torch.no_grad():
        out = model(**inputs)
    assert out["pred_logits"].shape == (2, 5, 2)
    assert out["pred_spans"].shape == (2, 5, 2)
    assert ((out["pred_spans"] >= 0) & (out["pred_spans"] <= 1)).all()
    assert out["saliency_scores"].shape == (2, 9)
    assert len(out["aux_outputs"]) == 1


@pytest.mark.parametrize("name", ["moment_detr", "qd_detr"])
def test_padding_invariance(name):
    """Extra padding on video and text changes nothing on valid positions (masks everywhere;
    the sine positions are normalised by the valid length)."""
    model = tiny(name).eval()
    a = batch()
    b = batch(pad_v=5, pad_t=3)
    b["src_vid"][:, :9] = a["src_vid"]
    b["src_txt"][:, :4] = a["src_txt"]
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    torch.testing.assert_close(oa["pred_logits"], ob["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(oa["pred_spans"], ob["pred_spans"], atol=1e-5, rtol=1e-5)
    for i, n in enumerate((9, 6)):
        torch.testing.assert_close(oa["saliency_scores"][i, :n], ob["saliency_scores"][i, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["moment_detr", "qd_detr"])
def test_padded_features_are_masked(name):
    model = tiny(name).eval()
    a = batch()
    b = {k: v.clone() for k, v in a.items()}
    b["src_vid"][1, 6:] = 100.0
    b["src_txt"][1, 3:] = -50.0
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    torch.testing.assert_close(oa["pred_spans"], ob["pred_spans"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(oa["saliency_scores"][1, :6], ob["saliency_scores"][1, :6], atol=1e-5, rtol=1e-5)


def test_tr_detr_is_not_padding_invariant_like_the_official():
    """TR-DETR's HD2MR softmax runs over padded positions too (official); padding changes outputs."""
    model = tiny("tr_detr").eval()
    a = batch()
    b = batch(pad_v=5)
    b["src_vid"][:, :9] = a["src_vid"]
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    assert not torch.allclose(oa["saliency_scores"], ob["saliency_scores"][:, :9], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_trainable_parameter(name):
    model = tiny(name).train()
    spec = get_spec(name)
    criterion = spec.build_criterion(model.cfg)
    inputs = batch()
    losses = criterion(model(**inputs), targets_for(inputs))
    criterion.weighted_total(losses).backward()
    # txt_position_embed exists only for checkpoint compatibility (use_txt_pos False, official)
    assert params_without_grad(model, ("txt_position_embed.",), trainable_only=True) == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_training_reduces_the_loss(name):
    model = tiny(name).train()
    criterion = get_spec(name).build_criterion(model.cfg)
    inputs = batch()
    targets = targets_for(inputs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(10):
        total = criterion.weighted_total(criterion(model(**inputs), targets))
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("name", ["qd_detr", "tr_detr"])
def test_audio_input(name):
    model = tiny(name, a_feat_dim=4).eval()
    assert model.input_vid_proj[0].LayerNorm.weight.shape == (14,)
    inputs = batch()
    inputs["src_aud"] = torch.randn(2, 9, 4)
    inputs["src_aud_mask"] = inputs["src_vid_mask"].clone()
    with torch.no_grad():
        out = model(**inputs)
    assert out["saliency_scores"].shape == (2, 9)
    opt = {"a_feat_dir": "x", "a_feat_dim": 2050, "hidden_dim": 256}
    assert get_spec(name).config_from_opt(opt).a_feat_dim == 2050
    assert get_spec(name).config_from_opt({"a_feat_dim": 2050}).a_feat_dim == 0


def test_qd_detr_negative_pass_uses_rolled_text():
    model = tiny("qd_detr").eval()
    inputs = batch()
    with torch.no_grad():
        out = model(**inputs)
        rolled = dict(inputs, src_txt=inputs["src_txt"].roll(-1, 0), src_txt_mask=inputs["src_txt_mask"].roll(-1, 0))
        out_rolled = model(**rolled)
    torch.testing.assert_close(out["saliency_scores_neg"], out_rolled["saliency_scores"], atol=1e-5, rtol=1e-5)


def test_tr_detr_negative_start_quirk_and_fix():
    """A top-1 span starting before 0 wraps around (empty slice, as the official code); the option
    clamps the start to 0 and uses the real moment."""
    quirk = tiny("tr_detr").eval()
    fixed = tiny("tr_detr", mr2hd_clamp_start=True).eval()
    fixed.load_state_dict(quirk.state_dict())
    lv = 9
    memory = torch.randn(1, lv, 16)
    src_vid_ed = torch.randn(1, lv, 16)
    logits = torch.tensor([[[5.0, -5.0]] + [[-5.0, 5.0]] * 4])
    spans = torch.full((1, 5, 2), 0.5)
    spans[0, 0] = torch.tensor([0.1, 0.6])  # [-0.2, 0.4] -> clips [-2, 3]
    assert quirk.top1_clip_span(logits, spans, lv).tolist() == [[-2.0, 3.0]]
    with torch.no_grad():
        s_quirk = quirk.mr2hd(logits, spans, memory, src_vid_ed)
        s_fixed = fixed.mr2hd(logits, spans, memory, src_vid_ed)
        empty = quirk.gru_extractor(torch.zeros(1, lv, 16)).unsqueeze(1)
        w = torch.matmul(empty, src_vid_ed.transpose(1, 2)).squeeze(1)
        expected = torch.sum(quirk.saliency_proj1(memory * w.unsqueeze(-1) + memory), -1) / 4.0
        moment = torch.nn.functional.pad(src_vid_ed[0, 0:4], (0, 0, 0, lv - 4)).unsqueeze(0)
        w2 = torch.matmul(quirk.gru_extractor(moment).unsqueeze(1), src_vid_ed.transpose(1, 2)).squeeze(1)
        expected_fixed = torch.sum(quirk.saliency_proj1(memory * w2.unsqueeze(-1) + memory), -1) / 4.0
    torch.testing.assert_close(s_quirk, expected)
    torch.testing.assert_close(s_fixed, expected_fixed)
    assert not torch.allclose(s_quirk, s_fixed)


def test_config_from_opt_rejects_unsupported_options():
    for name in MODELS:
        with pytest.raises(MrhdError):
            get_spec(name).config_from_opt({"span_loss_type": "ce"})
    with pytest.raises(MrhdError):
        get_spec("qd_detr").config_from_opt({"pre_norm": True})
    cfg = get_spec("tr_detr").config_from_opt({"CTC_loss_coef": 0.7, "VTC_loss_coef": 0.2, "hidden_dim": 64})
    assert (cfg.ctc_loss_coef, cfg.vtc_loss_coef, cfg.hidden_dim) == (0.7, 0.2, 64)


def test_registry_defaults_are_the_official_sizes():
    for name in MODELS:
        cfg = make_config(name)
        assert (cfg.hidden_dim, cfg.v_feat_dim, cfg.t_feat_dim, cfg.num_queries) == (256, 2818, 512, 10)
        assert get_spec(name).default_profile == "slowfast_clip"


def test_moment_detr_pre_norm_builds_and_runs():
    model = tiny("moment_detr", pre_norm=True).eval()
    assert "transformer.encoder.norm.weight" in model.state_dict()
    with torch.no_grad():
        assert torch.isfinite(model(**batch())["pred_spans"]).all()


# ---- criterion and post-processing ------------------------------------------------------------------

def test_tvsum_criterion_uses_saliency_only():
    model = tiny("qd_detr", dset_name="tvsum").eval()
    criterion = get_spec("qd_detr").build_criterion(model.cfg)
    inputs = batch()
    with torch.no_grad():
        losses = criterion(model(**inputs), targets_for(inputs))
    assert set(losses) == {"loss_saliency"}


def test_label_loss_ce_uses_plain_mean():
    crit = SetCriterion(CriterionConfig(eos_coef=0.1))
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    out = crit.loss_labels({"pred_logits": logits}, None, [(torch.tensor([0]), torch.tensor([0]))])
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([0, 1]), reduction="none")
    expected = (ce * torch.tensor([1.0, 0.1])).mean()
    assert torch.allclose(out["loss_label"], expected)
    assert out["class_error"] == 0


def test_postprocessor_clamps_to_150_unless_asked_for_the_duration():
    lines = [{"qid": 1, "query": "q", "vid": "v", "duration": 60,
              "pred_relevant_windows": [[-3.2, 71.0, 0.51234], [5.0, 200.0, 0.5], [3.0, 7.0, 0.4]]}]
    quirk = PostProcessorDETR()(lines)[0]["pred_relevant_windows"]
    assert quirk == [[0.0, 72.0, 0.5123], [4.0, 150.0, 0.5], [4.0, 8.0, 0.4]]  # half to even: 1.5->2, 3.5->4
    fixed = PostProcessorDETR(clamp_to_duration=True)(lines)[0]["pred_relevant_windows"]
    assert fixed == [[0.0, 60.0, 0.5123], [4.0, 60.0, 0.5], [4.0, 8.0, 0.4]]


def test_prediction_lines_sort_round_and_cut_saliency():
    outputs = {"pred_logits": torch.tensor([[[0.0, 1.0], [2.0, 0.0]]]),
               "pred_spans": torch.tensor([[[0.5, 0.2], [0.25, 0.5]]]),
               "saliency_scores": torch.tensor([[0.123456, -1.0, 5.0]])}
    meta = [{"qid": 7, "query": "a dog", "vid": "v_0.0_30.0", "duration": 30}]
    (line,) = prediction_lines(outputs, torch.tensor([[1.0, 1.0, 0.0]]), meta)
    assert line["pred_relevant_windows"][0][:2] == [0.0, 15.0]
    assert line["pred_relevant_windows"][1][:2] == [12.0, 18.0]
    assert line["pred_relevant_windows"][0][2] > line["pred_relevant_windows"][1][2]
    assert line["pred_saliency_scores"] == [float(torch.tensor(0.123456).half()), -1.0]
    (final,) = predict_lines(outputs, torch.tensor([[1.0, 1.0, 0.0]]), meta,
                             PostProcessorDETR(clamp_to_duration=True))
    assert "duration" not in final and final["pred_relevant_windows"][0][:2] == [0.0, 16.0]


@pytest.mark.parametrize("name", MODELS)
def test_official_checkpoint_format_round_trip(name, tmp_path):
    """An official checkpoint ({"model": state_dict, "opt": argparse.Namespace, ...}) rebuilds the same
    model through config_from_opt and loads strictly."""
    import argparse

    opt = {"hidden_dim": 16, "nheads": 2, "dim_feedforward": 24, "num_queries": 5, "v_feat_dim": 10,
           "t_feat_dim": 6, "max_q_l": 8, "enc_layers": 2, "dec_layers": 2, "span_loss_type": "l1",
           "a_feat_dir": None, "a_feat_dim": None, "device": "cuda", "results_dir": "x"}
    spec = get_spec(name)
    torch.manual_seed(3)
    model = spec.build(spec.config_from_opt(opt)).eval()
    path = tmp_path / "model_best.ckpt"
    torch.save({"model": model.state_dict(), "optimizer": None, "epoch": 3, "opt": argparse.Namespace(**opt)}, path)
    ckpt = load_checkpoint(path)   # the safe loader: the options Namespace is on its allow-list
    again = spec.build(spec.config_from_opt(vars(ckpt["opt"]))).eval()
    again.load_state_dict(ckpt["model"], strict=True)
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs)["pred_spans"], again(**inputs)["pred_spans"])
