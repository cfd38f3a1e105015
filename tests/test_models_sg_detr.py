"""SG-DETR (no reference code, no fixture): properties of the model, its losses and its parts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mrhd.features.profiles import load_profile
from mrhd.models.registry import get_spec, make_config
from mrhd.models.sg_detr.criterion import atss_assign
from mrhd.models.sg_detr.detector import level_anchors
from mrhd.models.sg_detr.fusion import fuse_spans
from mrhd.models.sg_detr.layers import SaliencyAmplifier, SaliencyGuidedCrossAttentionLayer
from mrhd.models.sg_detr.model import SGDETRConfig, build, build_criterion
from mrhd.models.spans import span_cxw_to_xx
from mrhd.training.config import load_train_config, model_defaults
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint

TINY = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 2,
        "sgca_layers": 1, "atss_num_convs": 1, "dn_groups": 2}


def tiny_cfg(**kw) -> SGDETRConfig:
    return SGDETRConfig(**{**TINY, "v_feat_dim": 20, "t_feat_dim": 12, **kw})


def batch(lengths=(30, 22, 15), text_lengths=(8, 5, 7), v_dim=20, t_dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    bsz, lv, lt = len(lengths), max(lengths), max(text_lengths)
    vmask, tmask = torch.zeros(bsz, lv), torch.zeros(bsz, lt)
    for i, (n, m) in enumerate(zip(lengths, text_lengths)):
        vmask[i, :n], tmask[i, :m] = 1, 1
    return {"src_txt": torch.randn(bsz, lt, t_dim, generator=g) * tmask[..., None], "src_txt_mask": tmask,
            "src_vid": torch.randn(bsz, lv, v_dim, generator=g) * vmask[..., None], "src_vid_mask": vmask}


def targets_for(inputs, seed=0):
    """Span labels, saliency pairs and per-clip labels inside each sample's valid length."""
    g = torch.Generator().manual_seed(seed)
    spans, pos, neg = [], [], []
    lengths = inputs["src_vid_mask"].sum(1).long().tolist()
    labels = torch.zeros_like(inputs["src_vid_mask"])
    for i, n in enumerate(lengths):
        st = int(torch.randint(0, n // 2, (1,), generator=g))
        ed = st + max(2, n // 4)
        spans.append({"spans": torch.tensor([[(st + ed) / 2 / n, (ed - st) / n]])})
        labels[i, st:ed] = torch.randint(1, 5, (ed - st,), generator=g).float()
        pos.append([st, ed - 1])
        neg.append([(ed + 1) % n, (ed + 2) % n])
    return {"span_labels": spans, "saliency_pos_labels": torch.tensor(pos),
            "saliency_neg_labels": torch.tensor(neg), "saliency_all_labels": labels, "relevant_clips": labels}


def test_registered_with_the_internvideo2_profile():
    spec = get_spec("sg_detr")
    assert spec.config_cls is SGDETRConfig and spec.build_criterion is not None
    assert spec.default_profile == "internvideo2"
    profile = load_profile(spec.default_profile)
    cfg = make_config("sg_detr", model_defaults("sg_detr"))
    assert (cfg.v_feat_dim, cfg.t_feat_dim) == (profile.video_dim, profile.text_dim)
    known = {f.name for f in dataclasses.fields(SGDETRConfig)}
    assert set(model_defaults("sg_detr")) <= known      # the YAML names only real fields
    assert cfg == SGDETRConfig()                          # and repeats the dataclass defaults


def test_shapes_masks_and_confidence(one_thread):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build(cfg).eval()
    inputs = batch()
    with torch.no_grad():
        out = model(**inputs)
    bsz, lv = inputs["src_vid_mask"].shape
    assert out["pred_spans"].shape == (bsz, cfg.num_queries, 2)
    assert out["pred_logits"].shape == (bsz, cfg.num_queries, 2)
    for key in ("saliency_scores", "local_saliency_scores"):
        assert out[key].shape == (bsz, lv), key
    dense = 2 * lv + lv + -(-lv // 2) + -(-lv // 4)      # pyramid levels of strides 0.5, 1, 2, 4
    assert out["atss_logits"].shape == out["atss_mask"].shape == (bsz, dense)
    assert out["atss_level_sizes"] == [2 * lv, lv, -(-lv // 2), -(-lv // 4)]
    n = inputs["src_vid_mask"].sum(1)
    assert out["atss_mask"].sum(1).tolist() == (2 * n + n + torch.ceil(n / 2) + torch.ceil(n / 4)).tolist()
    assert "saliency_scores_neg" not in out            # the negative pass runs in training only
    assert out["atss_spans"].shape == (bsz, dense, 2)
    # the shared post-processor's softmax(...)[0] is the class x IoU confidence
    conf = torch.sigmoid(out["detr_logits"][..., 0]) * torch.sigmoid(out["pred_iou"])
    torch.testing.assert_close(out["pred_logits"].softmax(-1)[..., 0], conf, atol=1e-5, rtol=0)
    # dense anchors of valid positions lie inside their video; query selection picks valid proposals
    centres = out["atss_anchors"][..., 0][out["atss_mask"].bool()]
    assert (centres > 0).all() and (centres < 1).all()
    assert torch.isfinite(out["enc_outputs"]["pred_logits"]).all()
    # a sample's predictions depend on its own query: swapping the query changes them
    other = dict(inputs, src_txt=inputs["src_txt"].roll(1, dims=0), src_txt_mask=inputs["src_txt_mask"].roll(1, dims=0))
    with torch.no_grad():
        out2 = model(**other)
    assert not torch.allclose(out["saliency_scores"], out2["saliency_scores"])
    # training: negatives from the next sample's query, except pairs from one source video
    model.train()
    vids = ["abc_30.0_180.0", "abc_60.0_210.0", "xyz_0.0_150.0"]
    with torch.no_grad():
        out3 = model(**inputs, vid=vids)
    assert out3["real_neg_mask"].tolist() == [False, True, True]
    assert out3["saliency_scores_neg"].shape == out3["local_saliency_scores_neg"].shape == (bsz, lv)


@pytest.mark.parametrize("fuse", [True, False])
def test_padding_does_not_change_predictions(fuse, one_thread):
    torch.manual_seed(0)
    model = build(tiny_cfg(fuse_at_inference=fuse)).eval()
    inputs = batch(lengths=(30, 17), text_lengths=(6, 9))      # odd: the stride-2/4 levels end mid-way
    n, m = 17, 9
    alone = {"src_txt": inputs["src_txt"][1:, :m], "src_txt_mask": inputs["src_txt_mask"][1:, :m],
             "src_vid": inputs["src_vid"][1:, :n], "src_vid_mask": inputs["src_vid_mask"][1:, :n]}
    with torch.no_grad():
        padded, single = model(**inputs), model(**alone)
    for key in ("pred_logits", "pred_spans", "pred_iou"):
        torch.testing.assert_close(padded[key][1:], single[key], atol=1e-5, rtol=1e-5, msg=key)
    for key in ("saliency_scores", "local_saliency_scores"):
        torch.testing.assert_close(padded[key][1:, :n], single[key], atol=1e-5, rtol=1e-5, msg=key)
    valid, valid1 = padded["atss_mask"][1].bool(), single["atss_mask"][0].bool()
    assert valid1.all()
    for key in ("atss_logits", "atss_centerness", "atss_spans", "atss_anchors"):
        torch.testing.assert_close(padded[key][1][valid], single[key][0], atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.slow
def test_loss_decreases_and_every_parameter_gets_a_gradient(one_thread):
    torch.manual_seed(0)
    cfg = tiny_cfg(dropout=0.0, input_dropout=0.0)
    model, criterion = build(cfg).train(), build_criterion(cfg)
    inputs = batch()
    targets = targets_for(inputs)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for step in range(12):
        losses = criterion(model(**inputs, targets=targets), targets)
        assert set(losses) - {k for k in losses if k.startswith("class_error")} == set(criterion.weight_dict)
        total = criterion.weighted_total(losses)
        opt.zero_grad()
        total.backward()
        if step == 1:   # step 0 has zero grads behind the decoder's zero-initialised refinement layer
            silent = [n for n, p in model.named_parameters()
                      if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
            assert not silent, silent
        opt.step()
        totals.append(float(total.detach()))
    assert all(torch.isfinite(torch.tensor(totals)))
    assert sum(totals[-3:]) / 3 < 0.8 * sum(totals[:3]) / 3, totals


def test_denoising_groups_noise_within_bounds():
    torch.manual_seed(0)
    cfg = tiny_cfg(dn_groups=3, dn_span_noise=0.4, dn_label_noise=0.0)
    model = build(cfg)
    gt = torch.tensor([[0.5, 0.2], [0.3, 0.1]])
    dn = model.detector.denoising_queries([{"spans": gt}, {"spans": gt[:1]}], "cpu")
    assert dn["content"].shape == (3, 2, 4, cfg.hidden_dim)
    assert dn["valid"].tolist() == [[1, 1, 1, 1], [1, 0, 1, 0]]
    spans = dn["refs_unsig"].sigmoid()
    gt2 = torch.cat([gt, gt])                                # positives, then negatives
    noisy, clean = span_cxw_to_xx(spans[:, 0]), span_cxw_to_xx(gt2)
    shift = (noisy - clean).abs() / (gt2[:, 1:] / 2)         # (groups, 4, 2) in half widths
    pos, neg = shift[:, :2], shift[:, 2:]
    assert (pos <= 0.4 + 1e-4).all()
    # negatives move an endpoint by [0.4, 0.8) half widths unless clamped to the video
    assert (neg.max(-1).values >= 0.4 - 1e-4).all()
    # no label noise: every content query is the foreground label embedding
    torch.testing.assert_close(dn["content"], model.detector.label_enc.weight[0].expand_as(dn["content"]))


def test_atss_assignment_picks_anchors_inside_the_moment():
    mask = torch.ones(1, 20)
    fine, coarse = level_anchors(mask, mask, 1, 4)[0], level_anchors(mask, mask[:, ::2], 2, 8)[0]
    anchors, sizes = torch.cat([fine, coarse]), [20, 10]
    valid = torch.ones(30, dtype=torch.bool)
    gt = torch.tensor([[0.5, 0.3]])                          # clips 7..12
    pos, assigned = atss_assign(anchors, valid, sizes, gt, topk=9)
    centres = anchors[pos, 0]
    assert pos[:20].any() and (centres > 0.35).all() and (centres < 0.65).all()
    assert (assigned[pos] == 0).all()
    # with two moments each anchor goes to the one it overlaps
    gt2 = torch.tensor([[0.2, 0.2], [0.8, 0.2]])
    pos2, assigned2 = atss_assign(anchors, valid, sizes, gt2, topk=5)
    centres = anchors[:, 0]
    assert (assigned2[pos2 & (centres < 0.5)] == 0).all() and (assigned2[pos2 & (centres > 0.5)] == 1).all()
    assert pos2[centres < 0.5].any() and pos2[centres > 0.5].any()
    # invalid (padded) anchors are never positive
    valid3 = valid.clone()
    valid3[10:20] = False
    pos3, _ = atss_assign(anchors, valid3, sizes, torch.tensor([[0.6, 0.6]]), topk=9)
    assert not pos3[10:20].any() and pos3.any()


def test_span_fusion_is_a_weighted_mean_of_overlapping_spans():
    detr = torch.tensor([[[0.5, 0.4], [0.1, 0.1]]])          # [0.3, 0.7], [0.05, 0.15]
    conf = torch.tensor([[0.6, 0.9]])
    dense = torch.tensor([[[0.52, 0.4], [0.9, 0.1], [0.5, 0.38]]])
    dense_conf = torch.tensor([[0.3, 1.0, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])                  # the third dense span is padding
    fused = fuse_spans(detr, conf, dense, dense_conf, mask, iou_thr=0.5, detr_weight=1.0, dense_weight=2.0)
    expect_xx = (0.6 * torch.tensor([0.3, 0.7]) + 0.6 * torch.tensor([0.32, 0.72])) / 1.2
    torch.testing.assert_close(span_cxw_to_xx(fused[0, 0]), expect_xx)
    torch.testing.assert_close(fused[0, 1], detr[0, 1])      # nothing overlaps: unchanged


def test_save_load_round_trip(tmp_path, one_thread):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build(cfg).eval()
    path = save_checkpoint(tmp_path / "sg.ckpt", model="sg_detr", config=dataclasses.asdict(cfg),
                           state_dict=model.state_dict(), profile="internvideo2")
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == "sg_detr"
    loaded = get_spec("sg_detr").build(make_config("sg_detr", ckpt["config"])).eval()
    loaded.load_state_dict(ckpt["state_dict"], strict=True)
    inputs = batch()
    with torch.no_grad():
        a, b = model(**inputs), loaded(**inputs)
    for key in ("pred_logits", "pred_spans", "saliency_scores"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("profile", ["internvideo2", "slowfast_clip"])
@pytest.mark.slow
def test_mrhd_train_runs_on_a_synthetic_store(profile, tmp_path, one_thread):
    data = make_synthetic(tmp_path / "data", load_profile(profile),
                          SyntheticSpec(n_train=16, n_val=8, min_clips=12, max_clips=16, n_concepts=4))
    cfg = load_train_config("sg_detr", profile=profile, epochs=2, batch_size=8, num_workers=0,
                            eval_every=100, progress=False, model_config=TINY)
    trainer = Trainer(cfg, data["features"], data["train"], data["val"], tmp_path / "run", log=lambda m: None)
    result = trainer.run()
    assert result["epochs"] == 2 and len(trainer.step_losses) == 4
    assert all(torch.isfinite(torch.tensor(trainer.step_losses)))
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["model"] == "sg_detr" and best["profile"] == profile
    assert best["config"]["v_feat_dim"] == load_profile(profile).video_dim
    preds = [json.loads(x) for x in (tmp_path / "run" / "best_val_preds.jsonl").read_text().splitlines()]
    n_queries = make_config("sg_detr", best["config"]).num_queries
    assert len(preds) == 8 and all(len(p["pred_relevant_windows"]) == n_queries for p in preds)


def test_saliency_gate_and_amplifier():
    torch.manual_seed(0)
    layer = SaliencyGuidedCrossAttentionLayer(16, 4, 32, dropout=0.0).eval()
    vid, pos = torch.randn(6, 2, 16), torch.randn(6, 2, 16)
    txt_a, txt_b = torch.randn(5, 2, 16), torch.randn(5, 2, 16)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    closed = torch.zeros(2, 6)
    # a closed gate: the video takes nothing from the text
    torch.testing.assert_close(layer(vid, txt_a, pad, closed, pos), layer(vid, txt_b, pad, closed, pos))
    assert not torch.allclose(layer(vid, txt_a, pad, closed + 1, pos), layer(vid, txt_b, pad, closed + 1, pos))
    # the global head starts at zero: global scores = local scores, memory x (1 + sigmoid(local))
    amp = SaliencyAmplifier(16)
    memory, local = torch.randn(2, 6, 16), torch.randn(2, 6)
    scores, amplified = amp(memory, local)
    torch.testing.assert_close(scores, local)
    torch.testing.assert_close(amplified, memory * (1 + torch.sigmoid(local))[..., None])


def test_saliency_loss_prefers_the_annotated_clips():
    cfg = tiny_cfg()
    criterion = build_criterion(cfg)
    inputs = batch()
    targets = targets_for(inputs)
    mask = inputs["src_vid_mask"]
    relevant = (targets["saliency_all_labels"] > 0).float()
    good = (relevant * 2 - 1) * 6 + targets["saliency_all_labels"]     # ranked like the labels
    neg = torch.full_like(good, -6.0)
    right = criterion.saliency_terms(good, neg, mask, targets)
    wrong = criterion.saliency_terms(-good, -neg, mask, targets)
    assert 0 < right < 0.5 * wrong
    # padded clips do not count: changing their scores changes nothing
    noisy = good + (1 - mask) * torch.randn_like(good) * 100
    torch.testing.assert_close(criterion.saliency_terms(noisy, neg, mask, targets), right)


def test_eval_outputs_feed_the_shared_post_processor(one_thread):
    from mrhd.models.postprocess import PostProcessorDETR, predict_lines

    torch.manual_seed(0)
    model = build(tiny_cfg()).eval()
    inputs = batch()
    with torch.no_grad():
        out = model(**inputs)
    lengths = inputs["src_vid_mask"].sum(1).tolist()
    metas = [{"qid": i, "query": "q", "vid": f"v{i}", "duration": 2.0 * n} for i, n in enumerate(lengths)]
    lines = predict_lines(out, inputs["src_vid_mask"], metas, PostProcessorDETR(clamp_to_duration=True))
    for line, meta, conf in zip(lines, metas, out["pred_confidence"]):
        windows = line["pred_relevant_windows"]
        assert len(windows) == model.cfg.num_queries
        scores = [w[2] for w in windows]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(conf.max()), abs=1e-4)   # ranked by class x IoU
        assert all(0 <= st <= ed <= meta["duration"] for st, ed, _ in windows)
        assert len(line["pred_saliency_scores"]) == meta["duration"] / 2


def _enc_loss_one_sample_at_a_time(criterion, enc, targets):
    """The definition of the proposal losses: each sample matched and scored alone on its valid
    proposals (shared matcher and span / label losses), then the mean over samples."""
    totals = {}
    n_valid = enc["mask"].sum(1).long().tolist()
    for b, (n, t) in enumerate(zip(n_valid, targets["span_labels"])):
        one = {"pred_logits": enc["pred_logits"][b:b + 1, :n], "pred_spans": enc["pred_spans"][b:b + 1, :n]}
        indices = criterion.matcher(one, {"span_labels": [t]})
        terms = {**criterion.base.loss_spans(one, {"span_labels": [t]}, indices),
                 **criterion.base.loss_labels(one, {"span_labels": [t]}, indices)}
        for k in ("loss_span", "loss_giou", "loss_label"):
            totals[k + "_enc"] = totals.get(k + "_enc", 0) + terms[k] / len(n_valid)
    return totals


def test_proposal_losses_batched_equal_each_sample_alone(one_thread):
    """loss_enc matches and scores the whole batch at once; values and gradients equal those of
    each sample matched alone on its valid proposals (padding proposals get no gradient)."""
    g = torch.Generator().manual_seed(3)
    criterion = build_criterion(tiny_cfg())
    bsz, length = 5, 24
    n_valid = torch.tensor([24, 17, 9, 20, 3])
    mask = (torch.arange(length)[None] < n_valid[:, None]).float()
    logits = torch.randn(bsz, length, 2, generator=g).requires_grad_()
    spans_unsig = torch.randn(bsz, length, 2, generator=g).requires_grad_()
    span_labels = [{"spans": torch.rand(m, 2, generator=g) * 0.4 + 0.1} for m in (1, 3, 2, 1, 2)]
    targets = {"span_labels": span_labels}
    # sample 4 has 3 valid proposals for 2 ground truths; padding holds large values
    with torch.no_grad():
        logits[mask == 0] = 50.0

    def run(fn):
        enc = {"pred_logits": logits, "pred_spans": spans_unsig.sigmoid(), "mask": mask}
        losses = fn(enc)
        grads = torch.autograd.grad(sum(losses.values()), [logits, spans_unsig])
        return {k: float(v.detach()) for k, v in losses.items()}, grads

    batched, g_batched = run(lambda enc: criterion.loss_enc({"enc_outputs": enc}, targets))
    alone, g_alone = run(lambda enc: _enc_loss_one_sample_at_a_time(criterion, enc, targets))
    assert batched.keys() == alone.keys() == {"loss_span_enc", "loss_giou_enc", "loss_label_enc"}
    for k in alone:
        assert batched[k] == pytest.approx(alone[k], rel=1e-6, abs=1e-7), k
    for a, b in zip(g_batched, g_alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert torch.equal(a[mask == 0], torch.zeros_like(a[mask == 0]))


def test_matcher_on_valid_prefixes_equals_matching_each_prefix_alone():
    g = torch.Generator().manual_seed(0)
    criterion = build_criterion(tiny_cfg())
    logits, spans = torch.randn(4, 30, 2, generator=g), torch.rand(4, 30, 2, generator=g)
    span_labels = [{"spans": torch.rand(m, 2, generator=g)} for m in (2, 1, 3, 2)]
    n = [30, 7, 12, 2]
    together = criterion.matcher({"pred_logits": logits, "pred_spans": spans}, {"span_labels": span_labels},
                                 valid_queries=n)
    for b in range(4):
        (i, j), = criterion.matcher({"pred_logits": logits[b:b + 1, :n[b]], "pred_spans": spans[b:b + 1, :n[b]]},
                                    {"span_labels": [span_labels[b]]})
        assert torch.equal(together[b][0], i) and torch.equal(together[b][1], j)
        assert int(together[b][0].max()) < n[b]


def _atss_by_the_rules(anchors, valid, sizes, gt, topk):
    """ATSS for one sample written out in Python (Zhang et al. 2020, 1-D): per ground truth and level
    the topk valid anchors with the closest centres (ties: lower index), threshold mean + std
    (unbiased) of their IoUs, centre strictly inside; each anchor to the gt of highest IoU."""
    import math

    a, g = anchors.tolist(), gt.tolist()

    def iou(x, y):
        (s1, e1), (s2, e2) = (x[0] - x[1] / 2, x[0] + x[1] / 2), (y[0] - y[1] / 2, y[0] + y[1] / 2)
        inter = max(0.0, min(e1, e2) - max(s1, s2))
        return inter / ((e1 - s1) + (e2 - s2) - inter)

    ok = [[False] * len(g) for _ in a]
    for m, box in enumerate(g):
        cand, start = [], 0
        for size in sizes:
            level = [i for i in range(start, start + size) if valid[i]]
            cand += sorted(level, key=lambda i: (abs(a[i][0] - box[0]), i))[:topk]
            start += size
        ious = [iou(a[i], box) for i in cand]
        mean = sum(ious) / max(len(ious), 1)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / max(len(ious) - 1, 1))
        for i in cand:
            inside = box[0] - box[1] / 2 < a[i][0] < box[0] + box[1] / 2
            ok[i][m] = inside and iou(a[i], box) >= mean + std - 1e-6
    positive, assigned = [], []
    for i in range(len(a)):
        scores = [iou(a[i], g[m]) if ok[i][m] else -1.0 for m in range(len(g))]
        positive.append(max(scores) >= 0)
        assigned.append(scores.index(max(scores)))
    return positive, assigned


def test_atss_batch_assigns_as_the_rules_say_per_sample():
    """The whole batch in one call (padded ground truths, padded anchors) gives each sample what the
    rules give it alone, including equal centre distances (centres on a regular grid)."""
    from mrhd.models.sg_detr.criterion import atss_assign_batch, padded_spans

    lengths, topk = [20, 13, 20, 6], 5
    mask = (torch.arange(20)[None] < torch.tensor(lengths)[:, None]).float()
    fine, coarse = level_anchors(mask, mask, 1, 4), level_anchors(mask, mask[:, ::2], 2, 8)
    anchors, sizes = torch.cat([fine, coarse], 1), [20, 10]
    valid = torch.cat([mask, mask[:, ::2]], 1).bool()
    # centres half-way between two fine anchors: their distances tie
    span_labels = [{"spans": torch.tensor([[0.5, 0.3]])}, {"spans": torch.tensor([[0.2, 0.2], [0.75, 0.3]])},
                   {"spans": torch.tensor([[0.3, 0.45], [0.65, 0.2], [0.9, 0.1]])},
                   {"spans": torch.tensor([[0.55, 0.5]])}]
    gt, gt_valid = padded_spans(span_labels)
    positive, assigned = atss_assign_batch(anchors, valid, sizes, gt, gt_valid, topk)
    for b, t in enumerate(span_labels):
        want_pos, want_assigned = _atss_by_the_rules(anchors[b], valid[b].tolist(), sizes, t["spans"], topk)
        assert positive[b].tolist() == want_pos, b
        assert [x for x, p in zip(assigned[b].tolist(), want_pos) if p] == \
            [x for x, p in zip(want_assigned, want_pos) if p], b
        assert positive[b].any() and not positive[b][~valid[b]].any()
        one_pos, one_assigned = atss_assign(anchors[b], valid[b], sizes, t["spans"], topk)
        assert torch.equal(one_pos, positive[b]) and torch.equal(one_assigned[one_pos], assigned[b][one_pos])
