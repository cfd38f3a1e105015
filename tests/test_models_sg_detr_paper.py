"""SG-DETR follows its paper (Gordeev et al., arXiv 2410.01615) wherever the paper states a value:
one test per statement (the model card, mrhd/models/sg_detr/README.md, cites each)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.registry import make_config
from mrhd.models.sg_detr.criterion import atss_assign
from mrhd.models.sg_detr.layers import AttentionPooling
from mrhd.models.sg_detr.model import SGDETRConfig, build, build_criterion
from mrhd.models.spans import span_cxw_to_xx
from mrhd.training.config import load_train_config, model_defaults
from mrhd.training.optim import WarmupMultiStepFactor, build_optimizer, build_scheduler
from tests.test_models_sg_detr import batch, targets_for, tiny_cfg

SHIPPED = make_config("sg_detr", model_defaults("sg_detr"))


@pytest.mark.parametrize("cfg", [SGDETRConfig(), SHIPPED], ids=["defaults", "configs/models/sg_detr.yaml"])
def test_architecture_values_the_paper_states(cfg):
    assert (cfg.enc_layers, cfg.dec_layers) == (3, 3)          # 3 encoder + 3 decoder layers
    assert cfg.num_queries == 25                               # 25 queries from the query selector
    assert cfg.sentence_pool_layers == 2                       # two attention-pooling layers
    assert cfg.input_dropout == 0.5                            # dropout 0.5 in the projection layers
    assert cfg.span_loss == "smooth_l1" and cfg.set_cost_iou > 0 and cfg.co_queries
    assert cfg.lw_ms_align > 0 and cfg.lw_momcls > 0


def test_built_model_has_those_layers():
    model = build(dataclasses.replace(SHIPPED, hidden_dim=32, nheads=4, dim_feedforward=32, v_feat_dim=10,
                                      t_feat_dim=6))
    assert len(model.encoder.layers) == 3 and len(model.detector.decoder.layers) == 3
    assert isinstance(model.sentence_pool, AttentionPooling) and len(model.sentence_pool.layers) == 2
    for proj in (model.input_vid_proj, model.input_txt_proj):
        drops = [m for m in proj.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(m.p == 0.5 for m in drops)


def test_query_selector_gives_25_queries():
    cfg = tiny_cfg(num_queries=25, dn_groups=0, co_queries=False)
    model = build(cfg).eval()
    with torch.no_grad():
        out = model(**batch(lengths=(30, 12), text_lengths=(5, 4)))
    assert out["pred_logits"].shape[1] == out["pred_spans"].shape[1] == 25
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1


def test_two_pooling_layers_refine_one_query_with_a_norm_between():
    torch.manual_seed(0)
    pool = AttentionPooling(16, 4, num_layers=2, dropout=0.0).eval()
    txt, pad = torch.randn(5, 2, 16), torch.zeros(2, 5, dtype=torch.bool)
    q = pool.query.reshape(1, 1, -1).expand(1, 2, -1)
    expect = pool.layers[1](pool.norm(pool.layers[0](q, txt, pad)), txt, pad)[0]
    torch.testing.assert_close(pool(txt, pad), expect)


def _matched_outputs(pred_spans, logits, iou):
    return {"pred_spans": pred_spans, "pred_logits": logits, "pred_iou": iou}


def test_span_loss_is_smooth_l1():
    cfg = tiny_cfg()
    crit = build_criterion(cfg)
    pred = torch.tensor([[[0.5, 0.3], [0.2, 0.1]]])
    tgt = {"span_labels": [{"spans": torch.tensor([[0.55, 0.2]])}]}
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    loss = crit.base.loss_spans({"pred_spans": pred}, tgt, indices)["loss_span"]
    expect = F.smooth_l1_loss(pred[0, :1], tgt["span_labels"][0]["spans"])
    assert torch.isclose(loss, expect) and not torch.isclose(loss, F.l1_loss(pred[0, :1], tgt["span_labels"][0]["spans"]))


def test_predicted_iou_enters_the_matching_cost():
    """Two queries equal in class and span: the one with the higher predicted IoU is matched (with
    ``set_cost_iou`` 0 the tie goes to the first)."""
    spans = torch.tensor([[[0.5, 0.2], [0.5, 0.2]]])
    logits = torch.zeros(1, 2, 2)
    iou = torch.tensor([[-2.0, 2.0]])
    tgt = {"span_labels": [{"spans": torch.tensor([[0.5, 0.2]])}]}
    matched = build_criterion(tiny_cfg()).matcher(_matched_outputs(spans, logits, iou), tgt)
    assert matched[0][0].tolist() == [1]
    unmatched = build_criterion(tiny_cfg(set_cost_iou=0.0)).matcher(_matched_outputs(spans, logits, iou), tgt)
    assert unmatched[0][0].tolist() == [0]


def test_span_confidence_uses_the_predicted_iou():
    model = build(tiny_cfg(fuse_at_inference=False)).eval()
    with torch.no_grad():
        out = model(**batch())
    expect = torch.sigmoid(out["pred_logits"][..., 0]) * torch.sigmoid(out["pred_iou"])
    torch.testing.assert_close(out["pred_confidence"], expect)


def test_moment_sentence_alignment_and_moment_token_losses():
    torch.manual_seed(0)
    cfg = tiny_cfg(dropout=0.0, input_dropout=0.0)
    model, crit = build(cfg).train(), build_criterion(cfg)
    inputs = batch()
    targets = targets_for(inputs)
    out = model(**inputs, targets=targets)
    bsz, lv = inputs["src_vid_mask"].shape
    assert out["moment_token"].shape == out["sentence_token"].shape == (bsz, cfg.hidden_dim)
    assert torch.equal(out["moment_mask"], targets["relevant_clips"].bool() & inputs["src_vid_mask"].bool())
    losses = crit(out, targets)
    # alignment: one-vs-rest focal (alpha 0.5, gamma 2) of moment/sentence cosines, own sentence positive
    sim = F.normalize(out["moment_token"], dim=1) @ F.normalize(out["sentence_token"], dim=1).T
    p = sim.sigmoid()
    eye = torch.eye(bsz)
    ce = F.binary_cross_entropy_with_logits(sim, eye, reduction="none")
    p_t = p * eye + (1 - p) * (1 - eye)
    focal = (0.5 * eye + 0.5 * (1 - eye)) * ce * (1 - p_t) ** 2
    torch.testing.assert_close(losses["loss_ms_align"], focal.mean(0).sum())
    # moment token: BCE of token . clip / sqrt(d) against clip relevance, masked, mean
    logits = (out["moment_clips"] @ out["moment_token"].unsqueeze(-1)).squeeze(-1) / cfg.hidden_dim ** 0.5
    bce = F.binary_cross_entropy_with_logits(logits, targets["relevant_clips"].clamp(0, 1), reduction="none")
    torch.testing.assert_close(losses["loss_momcls"], (bce * inputs["src_vid_mask"]).mean())
    # both are in the weighted total, and not computed without training targets
    assert {"loss_ms_align", "loss_momcls"} <= set(crit.weight_dict)
    assert "moment_token" not in model.eval()(**inputs)


def test_atss_positive_anchors_are_decoder_queries_in_training():
    torch.manual_seed(0)
    cfg = tiny_cfg(dn_groups=0)
    model, crit = build(cfg).train(), build_criterion(cfg)
    inputs = batch()
    targets = targets_for(inputs)
    out = model(**inputs, targets=targets)
    co = out["co_outputs"]
    n_pos = []
    for b, t in enumerate(targets["span_labels"]):
        pos, assigned = atss_assign(out["atss_anchors"][b], out["atss_mask"][b].bool(), out["atss_level_sizes"],
                                    t["spans"], cfg.atss_topk)
        n_pos.append(int(pos.sum()))
        k = n_pos[-1]
        assert co["labels"][b, :k].all() and not co["labels"][b, k:].any()
        torch.testing.assert_close(co["gt_spans"][b, :k], t["spans"][assigned[pos]])
    assert co["labels"].shape[1] == max(n_pos) > 0
    assert co["pred_spans"].shape[:3] == (cfg.dec_layers, len(n_pos), max(n_pos))
    losses = crit(out, targets)
    for layer in ("", "_0"):
        for term in ("span", "giou", "label"):
            assert f"loss_co_{term}{layer}" in losses and f"loss_co_{term}{layer}" in crit.weight_dict
    # span terms on (start, end) of the positives
    pos = co["labels"].bool()
    src, tgt = span_cxw_to_xx(co["pred_spans"][-1][pos]), span_cxw_to_xx(co["gt_spans"][pos])
    torch.testing.assert_close(losses["loss_co_span"], F.l1_loss(src, tgt))
    # inference has no collaborative queries
    with torch.no_grad():
        assert "co_outputs" not in model.eval()(**inputs)


def test_training_schedule_and_optimiser_the_paper_states():
    qvh = load_train_config("sg_detr")
    assert (qvh.epochs, qvh.batch_size, qvh.lr, qvh.weight_decay) == (150, 128, 5e-4, 1e-1)
    assert (qvh.lr_warmup, list(qvh.lr_milestones), qvh.lr_gamma) == (45, [100, 125], 0.5)
    charades = load_train_config("sg_detr", dataset="charades_sta")
    assert (charades.epochs, charades.batch_size) == (100, 64)
    assert charades.clip_len is None   # the 1-s clips are the store's clip_len, which training reads
    tacos = load_train_config("sg_detr", dataset="tacos")
    assert (tacos.epochs, tacos.batch_size) == (120, 32)
    assert charades.weight_decay == tacos.weight_decay == 1e-1
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, qvh)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 1e-1
    sched = build_scheduler(opt, qvh)
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(5e-4 / 3) and lrs[44] < lrs[45] == pytest.approx(5e-4)
    assert lrs[99] == pytest.approx(5e-4) and lrs[100] == pytest.approx(2.5e-4) and lrs[125] == pytest.approx(1.25e-4)


def test_warmup_multistep_factor():
    f = WarmupMultiStepFactor(4, [6, 8], 0.5, warmup_factor=0.25)
    assert [f(e) for e in range(10)] == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1, 1, 0.5, 0.5, 0.25, 0.25])
