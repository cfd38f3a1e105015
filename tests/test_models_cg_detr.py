"""CG-DETR: equal to the authors' code on the golden fixture, plus properties of the model itself."""

from __future__ import annotations

import pytest
import torch

from mrhd.models.cg_detr.model import (
    CGDETRConfig,
    build,
    build_criterion,
    config_from_opt,
    real_negative_mask,
    source_video_ids,
)
from mrhd.models.cg_detr.postprocess import predict_lines, prediction_lines
from mrhd.models.postprocess import postprocessor_for
from mrhd.models.registry import create_model, get_spec
from tests.conftest import open_case
from tests.helpers.model_fixtures import (
    assert_full_size_keys,
    assert_losses_match,
    assert_tree_close,
    first_and_last_loss,
    indices_as_lists,
    load_fixture_model,
    load_pt,
    masked_batch,
    model_cases,
    params_without_grad,
    read_config,
    read_json,
    read_jsonl,
)

CASES = model_cases("cg_detr")


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_inference_outputs_and_predictions_match_official(case):
    case, config, cfg, model, inputs = load_fixture_model(case, config_from_opt, build)
    ref = load_pt(case, "outputs.pt")
    with torch.no_grad():
        out = model(**inputs)
    assert_tree_close(out, ref, relative=True)
    metas = config["fixture_annotations"]
    mask = inputs["src_vid_mask"]
    if (case / "predictions_before_postprocess.jsonl").exists():
        assert prediction_lines(ref, mask, metas) == read_jsonl(case / "predictions_before_postprocess.jsonl")
    pp = config["postprocessor"]
    ours_pp = postprocessor_for(cfg.dset_name, cfg.clip_length, cfg.v_feat_dim)
    assert (ours_pp.max_ts_val, ours_pp.min_w_l, ours_pp.max_w_l, list(ours_pp.process_func_names)) == \
        (pp["max_ts_val"], pp["min_w_l"], pp["max_w_l"], pp["process_func_names"])
    expected = read_jsonl(case / "predictions.jsonl")
    assert predict_lines(ref, mask, metas, cfg.dset_name, cfg.clip_length, cfg.v_feat_dim) == expected
    assert predict_lines(out, mask, metas, cfg.dset_name, cfg.clip_length, cfg.v_feat_dim) == expected
    # the hook the training loop's validation uses
    assert get_spec("cg_detr").postprocess(ref, mask, metas, cfg) == expected


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_training_branch_and_every_loss_match_official(case):
    case, config, cfg, model, inputs = load_fixture_model(case, config_from_opt, build)
    targets = load_pt(case, "targets.pt")
    with torch.no_grad():
        out = model(**inputs, targets=targets)
    assert_tree_close(out, load_pt(case, "outputs_with_targets.pt"), relative=True)

    ref = read_json(case, "losses.json")
    criterion = build_criterion(cfg)
    assert criterion.weight_dict == ref["weight_dict"]
    losses, indices = criterion(out, targets, return_indices=True)
    assert set(losses) == set(ref["losses"])
    assert_losses_match(losses, ref["losses"])
    assert float(criterion.weighted_total(losses).detach()) == pytest.approx(ref["weighted_total"], abs=1e-5, rel=1e-6)
    assert indices_as_lists(indices) == ref["matcher_indices"]
    # on the inference outputs the training-only terms are 0, the rest unchanged
    with torch.no_grad():
        inference = criterion(model(**inputs), targets)
    assert_losses_match(inference, ref["criterion_on_inference_outputs"])


@pytest.mark.fidelity
@pytest.mark.parametrize("case", CASES)
def test_full_size_keys_match_official(case):
    case = open_case(case, "keys_full.json")
    with torch.device("meta"):
        model = build(config_from_opt(read_config(case)["opt_full"]))
    assert_full_size_keys(model, case)


def test_registered_with_official_defaults():
    spec = get_spec("cg_detr")
    assert spec.default_profile == "slowfast_clip"
    cfg = spec.config_cls()
    assert (cfg.enc_layers, cfg.dec_layers, cfg.t2v_layers, cfg.num_dummies, cfg.total_prompts) == (3, 3, 2, 45, 10)


def test_video_ids_are_parsed_to_find_real_negatives():
    vids = ["abc_def_10.0_160.0", "abc_def_20.0_170.0", "xyz_0.0_150.0", "plain"]
    assert source_video_ids(vids, "hl") == ["abc_def", "abc_def", "xyz", "plain"]
    assert source_video_ids(vids, "charadesSTA") == vids
    # sample i borrows the text of sample i+1: 0 -> 1 is the same video, a false negative
    assert real_negative_mask(vids, "hl").tolist() == [False, True, True, True]
    assert real_negative_mask(vids, "charadesSTA").tolist() == [True, True, True, True]


def _tiny(**kw) -> CGDETRConfig:
    base = dict(v_feat_dim=10, t_feat_dim=6, hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2, t2v_layers=1,
                moment_layers=1, dummy_layers=1, sent_layers=1, dim_feedforward=24, num_dummies=3,
                total_prompts=4, num_prompts=2, max_q_l=8)
    return CGDETRConfig(**{**base, **kw})


def _batch(lengths_v=(9, 6, 7), lengths_t=(4, 3, 5), pad_v=0, pad_t=0, seed=0):
    b = len(lengths_v)
    return {**masked_batch(lengths_v, lengths_t, seed=seed, pad_v=pad_v, pad_t=pad_t, video_first=False),
            "vid": ["a_0_10", "b_0_10", "c_0_10"][:b], "qid": list(range(b))}


def _targets(batch):
    mask = batch["src_vid_mask"]
    b, lv = mask.shape
    relevant = torch.zeros(b, lv)
    relevant[:, 1:4] = 1
    labels = relevant * 3
    return {"span_labels": [{"spans": torch.tensor([[0.3, 0.2]])} for _ in range(b)],
            "saliency_pos_labels": torch.tensor([[1, 2]] * b), "saliency_neg_labels": torch.tensor([[4, 5]] * b),
            "saliency_all_labels": labels, "relevant_clips": relevant}


def test_padding_does_not_change_outputs():
    model = create_model("cg_detr", _tiny()).eval()
    a = _batch()
    b = _batch()
    b["src_txt"] = torch.cat([a["src_txt"], torch.randn(3, 2, 6)], 1)
    b["src_txt_mask"] = torch.cat([a["src_txt_mask"], torch.zeros(3, 2)], 1)
    b["src_vid"] = torch.cat([a["src_vid"], torch.randn(3, 3, 10)], 1)
    b["src_vid_mask"] = torch.cat([a["src_vid_mask"], torch.zeros(3, 3)], 1)
    with torch.no_grad():
        oa, ob = model(**a), model(**b)
    for key in ("pred_logits", "pred_spans"):
        torch.testing.assert_close(oa[key], ob[key], atol=1e-5, rtol=0)
    n = a["src_vid_mask"].shape[1]
    for key in ("saliency_scores", "saliency_scores_neg", "t2vattnvalues"):
        torch.testing.assert_close(oa[key] * a["src_vid_mask"], ob[key][:, :n] * a["src_vid_mask"],
                                   atol=1e-5, rtol=0)


def test_false_negatives_skip_the_negative_pass_and_the_loss_still_trains():
    model = create_model("cg_detr", _tiny()).eval()
    batch = _batch()
    batch["vid"] = ["same_0_10", "same_10_20", "other_0_10"]   # sample 0 would borrow its own video's text
    out = model(**batch)
    assert out["real_neg_mask"].tolist() == [False, True, True]
    assert out["saliency_scores_neg"].shape == (2, batch["src_vid"].shape[1])
    losses = build_criterion(_tiny())(out, _targets(batch))
    assert torch.isfinite(losses["loss_saliency"])

    batch["vid"] = ["same_0_10", "same_10_20", "same_20_30"]   # no real negative at all
    out = model(**batch)
    assert out["saliency_scores_neg"] is None and out["t2vattnvalues_neg"] is None
    assert torch.isfinite(build_criterion(_tiny())(out, _targets(batch))["loss_saliency"])


def test_single_false_negative_quirk_and_its_fix():
    """Upstream's extra unsqueeze makes the one-sample false-negative term ~1e-6 whatever the scores."""
    cfg = _tiny()
    crit, fixed = build_criterion(cfg), build_criterion(_tiny(fix_single_false_negative=True))
    scores = torch.randn(3, 6)
    labels = torch.tensor([[0, 4, 4, 1, 0, 0.]] * 3)
    mask = torch.ones(3, 6)
    one = torch.tensor([True, False, False])
    quirk = crit._false_negative_rank(scores, labels, mask, one)
    assert 0 < float(quirk) < 1e-5
    assert float(quirk) == pytest.approx(float(crit._false_negative_rank(scores * 7, labels, mask, one)))
    expected = crit.saliency_rank_contrastive(scores[one], labels[one], mask[one])
    assert float(fixed._false_negative_rank(scores, labels, mask, one)) == pytest.approx(float(expected))
    assert float(expected) > 1e-3


def test_attention_false_negative_rank_is_dropped_unless_kept():
    model = create_model("cg_detr", _tiny()).eval()
    batch = _batch()
    batch["vid"] = ["same_0_10", "same_10_20", "other_0_10"]
    with torch.no_grad():
        out = model(**batch)
    targets = _targets(batch)
    base = float(build_criterion(_tiny())(out, targets)["loss_saliency"])
    kept = float(build_criterion(_tiny(keep_attn_false_negative_rank=True))(out, targets)["loss_saliency"])
    crit = build_criterion(_tiny())
    extra = crit._false_negative_rank(out["t2vattnvalues"], targets["saliency_all_labels"], out["video_mask"],
                                      ~out["real_neg_mask"])
    assert kept == pytest.approx(base + float(extra), abs=1e-5)


@pytest.mark.slow
def test_gradients_reach_every_trainable_parameter_and_loss_decreases():
    torch.manual_seed(0)
    cfg = _tiny()
    model = create_model("cg_detr", cfg).train()
    criterion = build_criterion(cfg)
    batch = _batch()
    targets = _targets(batch)
    losses = criterion(model(**batch, targets=targets), targets)
    assert all(float(losses[k].detach()) != 0 for k in ("loss_ms_align", "loss_distill", "loss_orthogonal_dummy"))
    criterion.weighted_total(losses).backward()
    # never used by the official forward; kept for checkpoint compatibility
    unused = ("txt_proj_linear.", "txt_position_embed.")
    assert params_without_grad(model, unused) == []
    model.eval()
    first, last = first_and_last_loss(
        model, lambda: criterion.weighted_total(criterion(model(**batch, targets=targets), targets)), steps=4)
    assert last < first


def test_saliency_token_is_computed_in_float32_under_autocast():
    """The prompt choice (top-k over close similarities) runs in float32 even under bfloat16
    autocast: the same inputs give the float32 result bit for bit, and the exact path (no autocast)
    is the undecorated computation."""
    model = create_model("cg_detr", _tiny()).eval()
    t = model.transformer
    torch.manual_seed(0)
    b, lv, n_text, d = 3, 9, t.num_dummies + 5, model.hidden_dim
    src = torch.randn(lv + n_text, b, d)
    attn = torch.softmax(torch.randn(b, lv, n_text), dim=-1)
    ctx = torch.randn(b, 1, d)
    vlen = torch.tensor([9, 6, 7])
    args = (src, attn, ctx, model.global_rep_token, vlen, lv)
    with torch.no_grad():
        plain = t.saliency_token(*args)
        assert torch.equal(plain, type(t).saliency_token.__wrapped__(t, *args))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = t.saliency_token(*args)
            rounded = t.saliency_token(src.bfloat16(), attn.bfloat16(), ctx.bfloat16(), *args[3:])
        direct = t.saliency_token(src.bfloat16().float(), attn.bfloat16().float(), ctx.bfloat16().float(), *args[3:])
    assert mixed.dtype == rounded.dtype == torch.float32
    assert torch.equal(mixed, plain)
    assert torch.equal(rounded, direct)
