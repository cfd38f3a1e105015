"""MESM: registration and configs, shapes and masks, padding and batch invariance, the frozen CLIP
text tower fed ids, every trainable parameter learning, checkpoints, and a short `mrhd train` run:
properties of the model itself (its equality with the authors' code: test_models_mesm_fidelity.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mrhd.errors import MrhdError
from mrhd.features.profiles import load_profile
from mrhd.models.mesm.criterion import moment_clip_mask, query_clip_mask
from mrhd.models.mesm.layers import mask_words
from mrhd.models.mesm.model import MESMConfig, build, build_criterion, config_from_opt, convert_state_dict
from mrhd.models.mesm.text import EOT_TOKEN, SOT_TOKEN, frequent_token_ids, tokenize_queries
from mrhd.models.registry import get_spec, make_config
from mrhd.training.config import load_train_config, model_defaults
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint

QUERIES = ["a man walks his dog along the beach at sunset", "a woman cooks pasta in a small kitchen",
           "the dog runs after a red ball", "two kids play chess"]
TINY = dict(hidden_dim=32, nheads=4, dim_feedforward=64, enc_layers=1, dec_layers=2, t2v_layers=1,
            num_recfw_layers=1, num_recss_layers=1, num_queries=5, vocab_size=12, v_feat_dim=24,
            t_feat_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> MESMConfig:
    return MESMConfig(**{**TINY, **kw})


def batch(cfg: MESMConfig, video_lengths=(12, 7, 9), text_lengths=(6, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    b, lv, lt = len(video_lengths), max(video_lengths), max(text_lengths)
    vmask, tmask = torch.zeros(b, lv), torch.zeros(b, lt)
    for i, (v, t) in enumerate(zip(video_lengths, text_lengths)):
        vmask[i, :v], tmask[i, :t] = 1, 1
    return {"src_txt": torch.randn(b, lt, cfg.t_feat_dim, generator=g) * tmask[..., None], "src_txt_mask": tmask,
            "src_vid": torch.randn(b, lv, cfg.v_feat_dim, generator=g) * vmask[..., None], "src_vid_mask": vmask}


def targets_for(n: int, clips: int) -> dict:
    spans = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.5, 0.2], [0.8, 0.1]]), torch.tensor([[0.25, 0.3]]),
             torch.tensor([[0.6, 0.4]])]
    return {"span_labels": [{"spans": spans[i % 4]} for i in range(n)],
            "saliency_pos_labels": torch.tensor([[1, 2]] * n), "saliency_neg_labels": torch.tensor([[0, 5]] * n),
            "saliency_all_labels": torch.arange(clips).float().remainder(5).repeat(n, 1)}


def test_registered_with_official_configs():
    spec = get_spec("mesm")
    assert spec.default_profile == "mesm" and spec.build_criterion is build_criterion
    profile = load_profile("mesm")
    assert profile.video == ("clip", "slowfast") and profile.text_keep_last
    cfg = make_config("mesm", model_defaults("mesm"))
    assert (cfg.v_feat_dim, cfg.t_feat_dim) == (profile.video_dim, profile.text_dim)
    assert (cfg.vocab_size, cfg.num_recss_layers, cfg.loss_recfw_coef, cfg.use_triplet) == (5000, 4, 0.5, True)
    # the official Charades options (config/charades/C+SF_C.json) as parse() saves them: v_feat_dim
    # 2816 + 2 for tef (utils/config.py:242), dataset_name charades (own-video SS-MESM)
    charades = config_from_opt({"dataset_name": "charades", "v_feat_dim": 2818, "use_tef": True, "t_feat_dim": 512, "max_words_l": 16,
                                "max_video_l": 194, "clip_len": 1, "vocab_size": 1111, "use_triplet": False,
                                "loss_saliency_coef": 4, "loss_recfw_coef": 0.1, "num_recss_layers": 4,
                                "span_loss_type": "l1", "position_embedding": "sine", "tokenizer_type": "CLIP"})
    assert (charades.v_feat_dim, charades.max_q_l, charades.max_v_l, charades.lw_saliency) == (2818, 16, 194, 4)
    assert not charades.youtube_groups and charades.text_input == "clip_states"
    yaml_cfg = make_config("mesm", model_defaults("mesm_charades"))
    for key in ("v_feat_dim", "max_q_l", "max_v_l", "clip_length", "vocab_size", "use_triplet", "lw_saliency",
                "loss_recfw_coef", "num_recss_layers", "youtube_groups"):
        assert getattr(yaml_cfg, key) == getattr(charades, key), key
    train = load_train_config("mesm")   # official C+SF_C.json training options
    assert (train.lr, train.batch_size, train.lr_drop, train.lr_gamma, train.grad_clip) == (2e-4, 12, 400, 0.5, 0.1)
    with pytest.raises(MrhdError, match="GloVe"):
        config_from_opt({"tokenizer_type": "GloVeSimple"})
    stored = config_from_opt({"tokenizer_type": "GloVeNLTK", "load_vocab_pkl": True, "vocab_size": 40})
    assert stored.text_input == "word_features" and stored.num_word_classes == 41
    with pytest.raises(MrhdError, match="share_MLP"):
        build(tiny(share_MLP=False))


def test_official_key_layout_and_conversion():
    cfg = tiny()
    model = build(cfg)
    sd = model.state_dict()
    d, v = cfg.hidden_dim, cfg.vocab_size
    expected = {  # names of lntzm/MESM model/model.py + runner.py build_* (share_MLP true)
        "enhance_encoder.t2v_encoder.layers.0.self_attn.in_proj_weight": (3 * d, d),
        "enhance_encoder.t2v_encoder.layers.0.activation.weight": (1,),
        "t2v_encoder.t2v_encoder.layers.0.linear1.weight": (cfg.dim_feedforward, d),
        "ss_reconstructor.masked_sent_token": (d,),
        "ss_reconstructor.recon_trans.layers.0.norm2.weight": (d,),
        "transformer.encoder.layers.0.self_attn.out_proj.weight": (d, d),
        "transformer.decoder.layers.1.ca_qpos_sine_proj.weight": (d, d),
        "transformer.decoder.bbox_embed.layers.2.weight": (2, d),
        "transformer.decoder.ref_anchor_head.layers.1.weight": (1, d),
        "txt_position_embed.position_embeddings.weight": (cfg.max_q_l + 1, d),
        "input_vid_proj.0.LayerNorm.weight": (cfg.v_feat_dim,),
        "input_txt_proj.1.net.1.weight": (d, d),
        "output_txt_proj.0.LayerNorm.weight": (d,),
        "output_txt_proj.1.weight": (v + 3, d),
        "masked_token": (cfg.t_feat_dim,), "unknown_token": (cfg.t_feat_dim,),
        "global_rep_token": (d,), "global_rep_pos": (d,), "query_embed.weight": (cfg.num_queries, 2),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "transformer.decoder.layers.1.ca_qpos_proj.weight" not in sd
    assert not any(k.startswith("text_encoder.") or k == "word_label_map" for k in sd)
    official = {**sd, "ss_reconstructor.output_sent_proj.0.LayerNorm.weight": torch.ones(d),
                "ss_reconstructor.output_sent_proj.1.net.1.weight": torch.ones(d, d)}
    build(cfg).load_state_dict(convert_state_dict(official), strict=True)


def test_shapes_and_masks_for_variable_lengths():
    cfg = tiny()
    model = build(cfg).eval()
    inputs = batch(cfg)
    with torch.no_grad():
        out = model(**inputs)
    b, lv = inputs["src_vid"].shape[:2]
    assert out["pred_logits"].shape == (b, cfg.num_queries, 2)
    assert out["pred_spans"].shape == (b, cfg.num_queries, 2)
    assert ((out["pred_spans"] > 0) & (out["pred_spans"] < 1)).all()
    assert out["saliency_scores"].shape == out["saliency_scores_neg"].shape == (b, lv)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    # the reconstructed sentence is one always-valid token in front of the words
    assert out["expanded_words_feat"].shape == (b, inputs["src_txt"].shape[1] + 1, cfg.hidden_dim)
    assert torch.equal(out["expanded_words_mask"][:, 1:], inputs["src_txt_mask"].bool())
    assert out["expanded_words_mask"][:, 0].all()
    with pytest.raises(MrhdError, match="no text tokens"):
        model(**{**inputs, "src_txt_mask": torch.zeros_like(inputs["src_txt_mask"])})


def _valid_outputs(out, i, length):
    return out["pred_logits"][i], out["pred_spans"][i], out["saliency_scores"][i, :length]


@pytest.mark.parametrize("rec", [(True, True), (False, False)])
def test_padding_and_other_queries_do_not_change_predictions(rec):
    cfg = tiny(rec_fw=rec[0], rec_ss=rec[1])
    model = build(cfg).eval()
    inputs = batch(cfg)
    padded = {k: v.clone() for k, v in inputs.items()}
    extra_v, extra_t = 5, 4
    padded["src_vid"] = torch.cat([inputs["src_vid"], torch.randn(3, extra_v, cfg.v_feat_dim) * 7], dim=1)
    padded["src_vid_mask"] = torch.cat([inputs["src_vid_mask"], torch.zeros(3, extra_v)], dim=1)
    padded["src_txt"] = torch.cat([inputs["src_txt"], torch.randn(3, extra_t, cfg.t_feat_dim)], dim=1)
    padded["src_txt_mask"] = torch.cat([inputs["src_txt_mask"], torch.zeros(3, extra_t)], dim=1)
    with torch.no_grad():
        a, b = model(**inputs), model(**padded)
        lengths = inputs["src_vid_mask"].sum(1).long().tolist()
        alone = model(**{k: v[1:2, : lengths[1]] if k.startswith("src_vid") else v[1:2, :3]
                         for k, v in inputs.items()})
    for i, n in enumerate(lengths):
        for x, y in zip(_valid_outputs(a, i, n), _valid_outputs(b, i, n)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    for x, y in zip(_valid_outputs(a, 1, lengths[1]), _valid_outputs(alone, 0, lengths[1])):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_video_groups_steer_negatives_and_rec_ss_positives():
    """Queries of one video (``vid``) are never each other's negative and are rec_ss positives when
    their moments agree (GIoU >= iou_gamma); the rebuilt sentence depends on the video only."""
    cfg = tiny()
    model, crit = build(cfg), build_criterion(cfg)
    group = torch.tensor([0, 0, 1, 2])
    for mode in (True, False):   # the official draws negatives in eval too (sample_outclass_neg)
        model.train(mode)
        for _ in range(20):
            neg = model.negative_index(group)
            assert (group[neg] != group).all()
    assert model.negative_index(torch.tensor([0, 0])).tolist() == [1, 0]   # one group: the next query
    # QVHighlights vids group by YouTube id; without youtube_groups by vid
    vids = ["yt_a_0.0_150.0", "yt_a_150.0_300.0", "other_0.0_10.0"]
    assert model.video_groups(vids, 3, "cpu").tolist() == [0, 0, 1]
    assert build(tiny(youtube_groups=False)).video_groups(vids, 3, "cpu").tolist() == [0, 1, 2]
    inputs = batch(cfg, video_lengths=(9, 9, 9), text_lengths=(4, 3, 5))
    inputs["src_vid"][1] = inputs["src_vid"][0]
    tg = targets_for(3, 9)
    tg["span_labels"][1] = tg["span_labels"][0]
    with torch.no_grad():
        apart = model(**inputs, vid=["a", "b", "c"])
        together = model(**inputs, vid=["a", "a", "c"])
        torch.testing.assert_close(together["expanded_words_feat"][0, 0], together["expanded_words_feat"][1, 0])
        assert not torch.allclose(together["expanded_words_feat"][0, 0], together["expanded_words_feat"][2, 0])
        assert crit.loss_rec_ss(apart, tg, None)["loss_rec_ss"] != crit.loss_rec_ss(together, tg, None)["loss_rec_ss"]
    assert together["video_group"].tolist() == [0, 0, 1]


@pytest.mark.slow   # first import of open_clip
def test_clip_ids_keep_eot_and_the_text_tower_stays_frozen():
    long_query = " ".join(["walking"] * 60)
    ids = tokenize_queries([long_query, "a dog"], max_words_l=32)
    assert ids.shape == (2, 77)
    assert ids[0, 0] == SOT_TOKEN and ids[0, 31] == EOT_TOKEN and (ids[0, 32:] == 0).all()
    assert ids[1, :4].tolist()[0] == SOT_TOKEN and ids[1, 3] == EOT_TOKEN
    vocab = frequent_token_ids([r[r > 0].tolist() for r in tokenize_queries(QUERIES, 32)], 12)
    assert len(vocab) == 12 and SOT_TOKEN not in vocab
    cfg = tiny(t_feat_dim=32, text_encoder="clip_tiny", word_vocab=vocab)
    model = build(cfg).train()
    assert not model.text_encoder.training
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    out = model(src_vid=torch.randn(2, 10, cfg.v_feat_dim), src_vid_mask=torch.ones(2, 10), words_id=ids,
                targets=targets_for(2, 10))
    assert out["words_mask"].sum(1).tolist() == [32, 4]
    labels = out["words_label"]
    assert labels[0, 0] == cfg.vocab_size + 1 and labels[0, 31] == cfg.vocab_size + 2   # <start>, <end>
    assert out["recfw_words_logit"].shape == (2, 32, cfg.vocab_size + 3)
    with pytest.raises(MrhdError, match="t_feat_dim"):
        build(tiny(text_encoder="clip_tiny"))   # a 32-d tower, 16-d text input
    with pytest.raises(MrhdError, match="text tower"):
        build(tiny()).eval()(src_vid=torch.randn(1, 5, 24), src_vid_mask=torch.ones(1, 5), words_id=ids[:1])


def test_word_masking_and_moment_clip_mask():
    words_mask = torch.tensor([[1] * 9 + [0] * 3, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]).bool()
    weight = words_mask.clone().long()
    weight[:, 0] = 0
    weight[0, 8] = 0
    for seed in range(5):
        masked = mask_words(words_mask, weight, np.random.RandomState(seed))
        assert masked[0].sum() == 3 and not masked[0, [0, 8]].any() and not masked[0, 9:].any()
        assert masked[1].tolist() == [False, True] + [False] * 10
    vmask = torch.tensor([[1.0] * 10, [1.0] * 5 + [0.0] * 5])
    spans = [{"spans": torch.tensor([[0.25, 0.1], [0.75, 0.1]])}, {"spans": torch.tensor([[0.5, 0.2]])}]
    clip = moment_clip_mask(spans, vmask)
    assert clip[0].nonzero().flatten().tolist() == list(range(2, 8))    # merged 0.2 .. 0.8 of 10 clips
    assert clip[1].nonzero().flatten().tolist() == [2]                  # 0.4 .. 0.6 of 5 clips
    labels = torch.zeros(2, 10)
    labels[0, [3, 5]] = 2.0
    labels[1, 7] = 4.0    # beyond the valid length: no labelled clip, the moment is used
    clip = query_clip_mask({"span_labels": spans, "saliency_all_labels": labels}, vmask)
    assert clip[0].nonzero().flatten().tolist() == [3, 5] and clip[1].nonzero().flatten().tolist() == [2]


def test_fw_loss_needs_word_labels():
    cfg = tiny()
    model, crit = build(cfg).train(), build_criterion(cfg)
    inputs = batch(cfg)
    tg = targets_for(3, inputs["src_vid"].shape[1])
    assert "loss_rec_fw" not in crit(model(**inputs, targets=tg), tg)
    tg["words_label"] = torch.randint(0, cfg.vocab_size + 3, inputs["src_txt_mask"].shape)
    losses = crit(model(**inputs, targets=tg), tg)
    assert {"loss_rec_fw", "loss_rec_ss", "loss_saliency", "loss_span_0"} <= set(losses)
    assert set(crit.weight_dict) >= {"loss_rec_fw", "loss_rec_ss"}


@pytest.mark.slow
def test_every_trainable_parameter_learns_and_loss_decreases():
    torch.manual_seed(0)
    ids = tokenize_queries(QUERIES, 32)
    vocab = frequent_token_ids([r[r > 0].tolist() for r in ids], 12)
    cfg = tiny(t_feat_dim=32, text_encoder="clip_tiny", word_vocab=vocab, use_txt_pos=True, dropout=0.0,
               input_dropout=0.0)
    model, crit = build(cfg).train(), build_criterion(cfg)
    vid = torch.randn(4, 12, cfg.v_feat_dim)
    vmask = torch.ones(4, 12)
    vmask[2, 8:] = 0
    tg = targets_for(4, 12)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for step in range(25):
        losses = crit(model(src_vid=vid, src_vid_mask=vmask, words_id=ids, targets=tg), tg)
        total = crit.weighted_total(losses)
        opt.zero_grad()
        total.backward()
        if step == 0:
            assert {"loss_rec_fw", "loss_rec_ss"} <= set(losses)
            assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
            # the first decoder layer's self-attention projects the all-zero target: zero weight grads
            zero_input = {f"transformer.decoder.layers.0.sa_{k}_proj.weight" for k in ("qcontent", "kcontent", "v")}
            dead = [n for n, p in model.named_parameters() if p.requires_grad and not p.grad.abs().sum() > 0]
            assert set(dead) <= zero_input, dead
        opt.step()
        totals.append(total.item())
    assert sum(totals[-5:]) / 5 < 0.8 * sum(totals[:5]) / 5


def test_checkpoint_round_trip(tmp_path):
    ids = tokenize_queries(QUERIES[:2], 32)
    cfg = tiny(t_feat_dim=32, text_encoder="clip_tiny", word_vocab=[320, 786, 8192])
    model = build(cfg).eval()
    save_checkpoint(tmp_path / "m.ckpt", model="mesm", config=dataclasses.asdict(cfg),
                    state_dict=model.state_dict(), profile="mesm")
    ckpt = load_checkpoint(tmp_path / "m.ckpt")
    again = get_spec(ckpt["model"]).build(make_config("mesm", ckpt["config"])).eval()
    again.load_state_dict(ckpt["state_dict"], strict=True)
    assert torch.equal(again.word_label_map, model.word_label_map)
    kwargs = {"src_vid": torch.randn(2, 8, cfg.v_feat_dim), "src_vid_mask": torch.ones(2, 8), "words_id": ids}
    with torch.no_grad():
        a, b = model(**kwargs), again(**kwargs)
    for key in ("pred_logits", "pred_spans", "saliency_scores"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_mrhd_train_runs_with_the_model(tmp_path):
    from mrhd.training.synthetic import SyntheticSpec, make_synthetic
    from mrhd.training.trainer import Trainer

    data = make_synthetic(tmp_path / "data", load_profile("mesm"),
                          SyntheticSpec(n_train=16, n_val=8, min_clips=8, max_clips=14, n_concepts=3))
    small = {k: v for k, v in TINY.items() if k not in ("v_feat_dim", "t_feat_dim")}
    cfg = load_train_config("mesm", epochs=2, batch_size=8, num_workers=0, eval_every=2, progress=False,
                            model_config=small)
    trainer = Trainer(cfg, data["features"], data["train"], data["val"], tmp_path / "run", log=lambda m: None)
    assert trainer.model_cfg.v_feat_dim == load_profile("mesm").video_dim
    result = trainer.run()
    assert result["epochs"] == 2 and len(trainer.step_losses) == 4
    assert all(torch.isfinite(torch.tensor(trainer.step_losses)))
    preds = [json.loads(x) for x in (tmp_path / "run" / "best_val_preds.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and preds[0]["pred_relevant_windows"]
    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["model"] == "mesm"


def test_official_checkpoint_converts(tmp_path):
    """A checkpoint as lntzm/MESM train.py saves it (``model`` without ``text_encoder.*``,
    ``opt`` Namespace with the official option names) converts and predicts as the source."""
    import argparse

    from mrhd.models.convert import convert_checkpoint

    opt = argparse.Namespace(dataset_name="qvhighlights", feat_files=["clip_image.hdf5", "slowfast.hdf5"],
                             use_tef=True, clip_len=2, max_words_l=32, max_video_l=75, tokenizer_type="CLIP",
                             vocab_size=12, hidden_dim=32, nheads=4, dim_feedforward=64, num_recfw_layers=1,
                             t2v_layers=1, enc_layers=1, dec_layers=2, num_recss_layers=1, v_feat_dim=22,
                             t_feat_dim=16, num_queries=5, rec_fw=True, rec_ss=True, share_MLP=True,
                             span_loss_type="l1", position_embedding="sine", loss_span_coef=10,
                             loss_saliency_coef=1, loss_recfw_coef=0.5, use_triplet=True, pre_norm=False)
    source = build(config_from_opt(vars(opt))).eval()
    d = source.hidden_dim
    sd = {**source.state_dict(), "ss_reconstructor.output_sent_proj.0.LayerNorm.weight": torch.ones(d),
          "ss_reconstructor.output_sent_proj.0.net.1.weight": torch.ones(d, d)}
    torch.save({"model": sd, "optimizer": {}, "lr_scheduler": {}, "epoch": 3, "opt": opt}, tmp_path / "best.ckpt")
    summary = convert_checkpoint(tmp_path / "best.ckpt", tmp_path / "mesm.ckpt", model="mesm")
    assert summary["profile"] == "mesm"
    ckpt = load_checkpoint(tmp_path / "mesm.ckpt")
    assert ckpt["config"]["v_feat_dim"] == 22 and ckpt["config"]["vocab_size"] == 12   # as parse() saved it
    model = build(make_config("mesm", ckpt["config"])).eval()
    model.load_state_dict(ckpt["state_dict"], strict=True)
    inputs = batch(model.cfg)
    with torch.no_grad():
        a, b = source(**inputs), model(**inputs)
    assert torch.equal(a["pred_spans"], b["pred_spans"]) and torch.equal(a["saliency_scores"], b["saliency_scores"])


def test_stored_clip_text_features_equal_the_token_id_path():
    """The profile ``mesm`` assembles stored ``clip_text`` states into what the frozen tower gives
    the model from ids (queries within 32 tokens), so both inputs predict the same."""

    from mrhd.encoders.clip import build_clip_text

    queries = QUERIES[:3]
    encoder = build_clip_text(random_weights=True, size="tiny")
    profile = load_profile("mesm")
    feats = [torch.from_numpy(profile.assemble_text({"clip_text": np.asarray(states)}))
             for states, _ in encoder.encode_texts(queries)]
    lt = max(len(f) for f in feats)
    src_txt, src_txt_mask = torch.zeros(len(feats), lt, feats[0].shape[1]), torch.zeros(len(feats), lt)
    for i, f in enumerate(feats):
        src_txt[i, : len(f)], src_txt_mask[i, : len(f)] = f, 1
    ids = tokenize_queries(queries, 32)
    cfg = tiny(t_feat_dim=32, text_encoder="clip_tiny", word_vocab=frequent_token_ids(ids.tolist(), 12))
    model = build(cfg).eval()
    video = {"src_vid": torch.randn(3, 9, cfg.v_feat_dim), "src_vid_mask": torch.ones(3, 9)}
    with torch.no_grad():
        from_ids = model(**video, words_id=ids)
        from_store = model(**video, src_txt=src_txt, src_txt_mask=src_txt_mask)
    for key in ("pred_logits", "pred_spans", "saliency_scores"):
        torch.testing.assert_close(from_ids[key], from_store[key], atol=1e-4, rtol=0)
    # with stored features, the query texts give FW-MESM its word classes
    stored = {**video, "src_txt": src_txt, "src_txt_mask": src_txt_mask, "targets": targets_for(3, 9)}
    out = model.train()(**stored, query=queries)
    assert torch.equal(out["words_label"], model.word_label_map[ids[:, :lt]])
    assert out["recfw_words_logit"].shape == (3, lt, cfg.vocab_size + 3)
    with pytest.raises(MrhdError, match="stored token counts"):
        model(**stored, query=["a", "b", "c"])


def test_text_tower_loads_mesm_clip_text_encoder_pth(tmp_path):
    """MESM ships the CLIP text tower alone (``pretrained_models/clip_text_encoder.pth``: OpenAI's
    text tensors in fp16, heads = width / 64); ``text_encoder_weights`` reads it."""
    from open_clip.model import CLIP, CLIPTextCfg

    from mrhd.models.mesm.text import ClipTokenEncoder

    torch.manual_seed(0)
    source = ClipTokenEncoder(CLIP(64, vision_cfg={"layers": 1, "width": 64, "patch_size": 32, "head_width": 64},
                                   text_cfg=CLIPTextCfg(width=128, heads=2, layers=1), quick_gelu=True))
    sd = {k: v.half() for k, v in source.state_dict().items()}
    torch.save({**sd, "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}, tmp_path / "t.pth")
    model = build(tiny(t_feat_dim=128, text_encoder="clip", text_encoder_weights=str(tmp_path / "t.pth")))
    ids = tokenize_queries(QUERIES, 32)
    source.half().float()
    assert torch.equal(model.text_encoder(ids), source(ids))
    torch.save({"ln_final.weight": torch.ones(8)}, tmp_path / "bad.pth")
    with pytest.raises(MrhdError, match="not a CLIP text tower"):
        build(tiny(text_encoder="clip", text_encoder_weights=str(tmp_path / "bad.pth")))
