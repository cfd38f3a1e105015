"""VideoLights: equal to the authors' code on the golden fixture, plus properties of the model itself."""

from __future__ import annotations

import pytest
import torch

from mrhd.models.postprocess import postprocessor_for, prediction_lines
from mrhd.models.registry import create_model, get_spec
from mrhd.models.videolights.model import VideoLightsConfig, build, build_criterion, config_from_opt
from tests.conftest import open_case
from tests.helpers.model_fixtures import (
    assert_full_size_keys,
    assert_lines_close,
    assert_losses_match,
    assert_tree_close,
    first_and_last_loss,
    indices_as_lists,
    load_fixture_model,
    load_pt,
    loss_value,
    masked_batch,
    model_cases,
    params_without_grad,
    read_config,
    read_json,
    read_jsonl,
)

CASES = model_cases("videolights")


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_forward_losses_and_predictions_match_official(case):
    case, config, cfg, model, inputs = load_fixture_model(case, config_from_opt, build)
    assert (cfg.v_feat_dim, cfg.t_feat_dim) == (config["opt_small"]["v_feat_dim"], config["opt_small"]["t_feat_dim"])
    ref = load_pt(case, "outputs.pt")
    with torch.no_grad():
        out = model(**inputs)
    assert_tree_close(out, ref, relative=True, check_dtype=False)

    targets = load_pt(case, "targets.pt")
    ref_losses = read_json(case, "losses.json")
    criterion = build_criterion(cfg)
    assert criterion.weight_dict == ref_losses["weight_dict"]
    losses, indices = criterion(out, targets, return_indices=True)
    assert set(losses) == set(ref_losses["losses"])
    assert_losses_match(losses, ref_losses["losses"])
    assert loss_value(criterion.weighted_total(losses)) == pytest.approx(ref_losses["weighted_total"], abs=1e-5, rel=1e-6)
    assert indices_as_lists(indices) == ref_losses["matcher_indices"]

    # post-processing: exact from the official outputs; from ours equal up to one fp16 step of the
    # saliency (fp32 summation order differs across CPUs/BLAS builds)
    metas, mask = config["fixture_annotations"], inputs["src_vid_mask"]
    pp_ref = config["postprocessor"]
    pp = postprocessor_for(cfg.dset_name, cfg.clip_length, cfg.v_feat_dim)
    assert (pp.max_ts_val, pp.min_w_l, pp.max_w_l, list(pp.process_func_names)) == \
        (pp_ref["max_ts_val"], pp_ref["min_w_l"], pp_ref["max_w_l"], pp_ref["process_func_names"])
    if (case / "predictions_before_postprocess.jsonl").exists():
        assert prediction_lines(ref, mask, metas) == read_jsonl(case / "predictions_before_postprocess.jsonl")
    expected = read_jsonl(case / "predictions.jsonl")
    assert pp(prediction_lines(ref, mask, metas)) == expected
    assert_lines_close(pp(prediction_lines(out, mask, metas)), expected, ids=(), saliency_atol=1e-3)


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_full_size_keys_match_official(case):
    case = open_case(case, "keys_full.json")
    cfg = config_from_opt(read_config(case)["opt_full"])
    assert (cfg.v_feat_dim, cfg.t_feat_dim) == (3586, 1280)
    with torch.device("meta"):
        model = build(cfg)
    assert_full_size_keys(model, case)


def test_registered_with_official_defaults():
    spec = get_spec("videolights")
    assert spec.default_profile == "videolights"
    cfg = spec.config_cls()
    assert (cfg.v_feat_dim, cfg.t_feat_dim, cfg.bicmf_layers, cfg.enc_layers, cfg.dec_layers) == (3586, 1280, 1, 3, 3)
    assert cfg.mr_to_hd_loss and cfg.hard_pos_neg_loss and cfg.contrastive_align_loss


def _tiny(**kw) -> VideoLightsConfig:
    base = dict(v_feat_dim=10, t_feat_dim=6, hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2, bicmf_layers=1,
                dim_feedforward=24, max_q_l=8, contrastive_hdim=8)
    return VideoLightsConfig(**{**base, **kw})


def _batch(lengths_v=(9, 6, 7), lengths_t=(4, 3, 5), seed=0):
    return masked_batch(lengths_v, lengths_t, seed=seed, video_first=False)


def _targets(batch):
    b, lv = batch["src_vid_mask"].shape
    labels = torch.zeros(b, lv)
    labels[:, 1:4] = torch.tensor([2.0, 4.0, 3.0])
    return {"span_labels": [{"spans": torch.tensor([[0.3, 0.2]])} for _ in range(b)],
            "saliency_pos_labels": torch.tensor([[2, 3]] * b), "saliency_neg_labels": torch.tensor([[5, 0]] * b),
            "saliency_all_labels": labels, "saliency_pos_index": (labels >= 3).float()}


def _pad(batch, extra_v=0, extra_t=0):
    b = dict(batch)
    n = len(b["src_vid"])
    b["src_vid"] = torch.cat([b["src_vid"], torch.randn(n, extra_v, b["src_vid"].shape[2])], 1)
    b["src_vid_mask"] = torch.cat([b["src_vid_mask"], torch.zeros(n, extra_v)], 1)
    b["src_txt"] = torch.cat([b["src_txt"], torch.randn(n, extra_t, b["src_txt"].shape[2])], 1)
    b["src_txt_mask"] = torch.cat([b["src_txt_mask"], torch.zeros(n, extra_t)], 1)
    return b


def test_video_padding_does_not_change_predictions():
    """Every video path masks padded clips (the MR->HD feedback uses the padded length, so
    ``saliency_scores_mr`` is excluded, as upstream)."""
    model = create_model("videolights", _tiny()).eval()
    a = _batch()
    with torch.no_grad():
        oa, ob = model(**a), model(**_pad(a, extra_v=3))
    for key in ("pred_logits", "pred_spans"):
        torch.testing.assert_close(oa[key], ob[key], atol=1e-5, rtol=0)
    n = a["src_vid_mask"].shape[1]
    for key in ("saliency_scores", "saliency_scores_neg"):
        torch.testing.assert_close(oa[key] * a["src_vid_mask"], ob[key][:, :n] * a["src_vid_mask"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fra", [True, False])
def test_text_padding_does_not_change_predictions(fra):
    """FRA's word softmax sees padded words, but every word carries the same learned weight, so the
    mixture is the same; the text masks do the rest."""
    a = _batch()
    b = _pad(a, extra_t=2)
    model = create_model("videolights", _tiny(fra=fra)).eval()
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    for key in ("pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg", "saliency_scores_mr",
                "src_vid"):
        torch.testing.assert_close(oa[key], ob[key], atol=1e-5, rtol=0)


def test_audio_is_concatenated_to_the_video():
    model = create_model("videolights", _tiny(a_feat_dim=4)).eval()
    batch = _batch()
    batch["src_aud"] = torch.randn(3, batch["src_vid"].shape[1], 4)
    batch["src_aud_mask"] = batch["src_vid_mask"]
    with torch.no_grad():
        out = model(**batch)
    assert model.input_vid_proj[0].LayerNorm.normalized_shape == (14,)
    assert out["pred_spans"].shape == (3, 10, 2) and torch.isfinite(out["saliency_scores_mr"]).all()


def test_hard_losses_grow_with_the_epoch():
    cfg = _tiny()
    model = create_model("videolights", cfg).eval()
    batch = _batch()
    targets = _targets(batch)
    with torch.no_grad():
        out = model(**batch)
    crit = build_criterion(cfg)
    at0 = float(crit(out, targets)["loss_saliency"])
    crit.epoch = 2
    at2 = float(crit(out, targets)["loss_saliency"])
    without = float(build_criterion(_tiny(hard_pos_neg_loss=False))(out, targets)["loss_saliency"])
    assert at2 - without == pytest.approx(3 * (at0 - without), rel=1e-4)
    assert at0 > without


@pytest.mark.slow
def test_gradients_reach_every_trainable_parameter_and_loss_decreases():
    torch.manual_seed(0)
    cfg = _tiny()
    model = create_model("videolights", cfg).train()
    criterion = build_criterion(cfg)
    batch = _batch()
    targets = _targets(batch)
    losses = criterion(model(**batch), targets)
    criterion.weighted_total(losses).sum().backward()
    # unused upstream, kept for checkpoints: text positions (off), BiCMF's norm2, and the video
    # projection of the contrastive head (proj_vid_mem is output but no loss reads it)
    def unused(name: str) -> bool:
        return (name.startswith(("txt_position_embed.", "contrastive_align_projection_vid."))
                or (name.startswith("transformer.t2v_encoder.") and ".norm2." in name))
    assert params_without_grad(model, unused) == []
    model.eval()
    first, last = first_and_last_loss(
        model, lambda: criterion.weighted_total(criterion(model(**batch), targets)).sum(), steps=4)
    assert last < first


def test_negative_start_wraps_unless_clamped():
    """A top-1 span starting before 0 slices src_vid[-k:end+1] upstream (usually empty)."""
    cfg = _tiny()
    model = create_model("videolights", cfg).eval()
    fixed = create_model("videolights", _tiny(mr2hd_clamp_start=True)).eval()
    fixed.load_state_dict(model.state_dict())
    src_vid, vid_mem = torch.randn(1, 8, 16), torch.randn(1, 8, 16)
    logits = torch.tensor([[[5.0, 0.0]] + [[0.0, 5.0]] * 9])
    spans = torch.tensor([[[0.05, 0.5]] + [[0.5, 0.1]] * 9])        # top-1 window [-0.2, 0.3]
    with torch.no_grad():
        quirk = model.top_moment_saliency(src_vid, vid_mem, logits, spans)
        clamped = fixed.top_moment_saliency(src_vid, vid_mem, logits, spans)
        empty = model.gru_extractor(torch.zeros(1, 8, 16)).unsqueeze(1)
        weight = torch.matmul(empty, src_vid.transpose(1, 2)).squeeze(1)
        expected = torch.sum(model.saliency_proj_mr(vid_mem * weight.unsqueeze(-1) + vid_mem), -1) / 4.0
    torch.testing.assert_close(quirk, expected)        # start -2, end 2: src_vid[-2:3] is empty
    assert not torch.allclose(quirk, clamped)
