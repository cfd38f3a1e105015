"""CMDNet: the model's own properties (no reference code exists, so no fidelity fixture)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from mrhd.errors import MrhdError
from mrhd.features.profiles import load_profile
from mrhd.models.cmdnet.criterion import CMDNetCriterion, relevant_clip_mask
from mrhd.models.cmdnet.layers import MultiScaleDifferencePerception, adjacent_difference
from mrhd.models.cmdnet.model import CMDNetConfig, build, build_criterion
from mrhd.models.registry import create_model, get_spec, make_config
from mrhd.training.config import load_train_config, model_defaults
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint

TINY = dict(hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=24, max_q_l=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw) -> CMDNetConfig:
    return CMDNetConfig(**{**dict(v_feat_dim=10, t_feat_dim=6, **TINY), **kw})


def _batch(lengths_v=(9, 6, 7), lengths_t=(4, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    b, lv, lt = len(lengths_v), max(lengths_v), max(lengths_t)
    vmask, tmask = torch.zeros(b, lv), torch.zeros(b, lt)
    for i, (a, c) in enumerate(zip(lengths_v, lengths_t)):
        vmask[i, :a] = 1
        tmask[i, :c] = 1
    return {"src_txt": torch.randn(b, lt, 6, generator=g) * tmask[..., None], "src_txt_mask": tmask,
            "src_vid": torch.randn(b, lv, 10, generator=g) * vmask[..., None], "src_vid_mask": vmask}


def _targets(batch):
    b, lv = batch["src_vid_mask"].shape
    labels = torch.zeros(b, lv)
    labels[:, 1:4] = torch.tensor([2.0, 4.0, 3.0])
    return {"span_labels": [{"spans": torch.tensor([[0.3, 0.3]])} for _ in range(b)],
            "saliency_pos_labels": torch.tensor([[2, 3]] * b), "saliency_neg_labels": torch.tensor([[5, 0]] * b),
            "saliency_all_labels": labels}


def _pad(batch, extra_v=0, extra_t=0):
    b = dict(batch)
    n = len(b["src_vid"])
    g = torch.Generator().manual_seed(1)
    b["src_vid"] = torch.cat([b["src_vid"], torch.randn(n, extra_v, b["src_vid"].shape[2], generator=g)], 1)
    b["src_vid_mask"] = torch.cat([b["src_vid_mask"], torch.zeros(n, extra_v)], 1)
    b["src_txt"] = torch.cat([b["src_txt"], torch.randn(n, extra_t, b["src_txt"].shape[2], generator=g)], 1)
    b["src_txt_mask"] = torch.cat([b["src_txt_mask"], torch.zeros(n, extra_t)], 1)
    return b


def test_registered_with_qd_detr_setting_and_shipped_config():
    spec = get_spec("cmdnet")
    assert spec.default_profile == "slowfast_clip" and spec.build is build and spec.build_criterion is build_criterion
    shipped = model_defaults("cmdnet")   # what `mrhd train` starts from: the dataclass defaults
    cfg = make_config("cmdnet", shipped)
    assert load_profile(spec.default_profile).video_dim == cfg.v_feat_dim
    assert load_profile("slowfast_clip_pann").audio_dim == 2050
    fields = {f.name for f in dataclasses.fields(CMDNetConfig)}
    assert set(shipped) <= fields
    defaults = dataclasses.asdict(CMDNetConfig())
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()} == \
        {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    doc = __import__("mrhd.models.cmdnet.model", fromlist=["x"]).__doc__
    assert "46.69" in doc and "Design choices" in doc


def test_output_shapes_and_masks_for_variable_lengths():
    cfg = _tiny()
    model = create_model("cmdnet", cfg).eval()
    batch = _batch()
    with torch.no_grad():
        out = model(**batch)
    assert out["pred_logits"].shape == (3, cfg.num_queries, 2)
    assert out["pred_spans"].shape == (3, cfg.num_queries, 2)
    assert ((out["pred_spans"] > 0) & (out["pred_spans"] < 1)).all()
    assert out["saliency_scores"].shape == out["saliency_scores_neg"].shape == (3, 9)
    assert out["align_vid"].shape == (3, 9, 16) and out["align_txt"].shape == (3, 5, 16)
    assert torch.equal(out["video_mask"], batch["src_vid_mask"]) and torch.equal(out["src_txt_mask"], batch["src_txt_mask"])
    assert float(out["align_logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1


def test_padding_does_not_change_outputs():
    model = create_model("cmdnet", _tiny()).eval()
    a = _batch()
    n = a["src_vid_mask"].shape[1]
    with torch.no_grad():
        oa, ob = model(**a), model(**_pad(a, extra_v=4, extra_t=3))
    for key in ("pred_logits", "pred_spans"):
        torch.testing.assert_close(oa[key], ob[key], atol=1e-5, rtol=0)
    for key in ("saliency_scores", "saliency_scores_neg"):
        torch.testing.assert_close(oa[key] * a["src_vid_mask"], ob[key][:, :n] * a["src_vid_mask"], atol=1e-5, rtol=0)


def test_the_difference_module_sees_adjacent_differences_and_ignores_padding():
    x = torch.arange(12.0).reshape(4, 1, 3)          # (L, B, d), clip t = 3t + [0, 1, 2]
    valid = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(4, 1, 1)
    diff = adjacent_difference(x * valid, valid)
    assert torch.equal(diff[0], torch.zeros(1, 3)) and torch.equal(diff[1:3], torch.full((2, 1, 3), 3.0))
    assert torch.equal(diff[3], torch.zeros(1, 3))

    torch.manual_seed(0)
    mdp = MultiScaleDifferencePerception(8, (1, 3, 5), gcn_layers=1, dropout=0.0).eval()
    v = torch.randn(6, 2, 8)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    out = mdp(v, mask)
    v2 = v.clone()
    v2[4:, 1] = 100.0                                   # change only padded clips
    torch.testing.assert_close(mdp(v2, mask)[:4, 1], out[:4, 1])
    adjacency = mdp.graph[0].adjacency(v.transpose(0, 1), mask)
    assert torch.all(adjacency[1, :, 4:] == 0)
    torch.testing.assert_close(adjacency.sum(-1), torch.ones(2, 6))
    # a jump between two clips is visible to the neighbours of the jump only through the
    # difference path: zeroing diff_proj changes the output
    with torch.no_grad():
        mdp.diff_proj.weight.zero_()
        mdp.diff_proj.bias.zero_()
    assert not torch.allclose(mdp(v, mask), out)


def test_relevant_clips_come_from_the_spans():
    mask = torch.tensor([[1.0] * 10, [1.0] * 5 + [0.0] * 5])
    spans = [{"spans": torch.tensor([[0.25, 0.3], [0.9, 0.2]])},    # [0.1, 0.4] and [0.8, 1.0]
             {"spans": torch.tensor([[0.5, 0.01]])}]                 # covers no centre -> clip 2
    rel = relevant_clip_mask(spans, mask)
    assert rel[0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    assert rel[1].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def test_alignment_losses_reward_aligned_features():
    """Aligned clips/words give lower alignment losses than shuffled ones."""
    torch.manual_seed(0)
    b, lv, lt, d = 4, 8, 3, 16
    concepts = F.normalize(torch.randn(b, d), dim=-1)
    targets = {"span_labels": [{"spans": torch.tensor([[0.5, 0.5]])} for _ in range(b)]}
    vmask, tmask = torch.ones(b, lv), torch.ones(b, lt)
    rel = relevant_clip_mask(targets["span_labels"], vmask)
    noise = F.normalize(torch.randn(b, lv, d), dim=-1)
    aligned_vid = rel[..., None] * concepts[:, None] + (1 - rel[..., None]) * noise
    txt = concepts[:, None].repeat(1, lt, 1) + 0.05 * torch.randn(b, lt, d)
    crit = build_criterion(_tiny())
    assert isinstance(crit, CMDNetCriterion)

    def losses(vid):
        out = {"video_mask": vmask, "src_txt_mask": tmask, "align_vid": vid, "align_txt": txt,
               "align_logit_scale": torch.tensor(1 / 0.07)}
        return crit.loss_clip_text_alignment(out, targets, None)

    good, bad = losses(aligned_vid), losses(torch.randn(b, lv, d))
    # a one-clip video (no other clip to contrast with) keeps every loss and gradient finite
    vmask[0, 1:] = 0
    vid = torch.randn(b, lv, d, requires_grad=True)
    total = sum(losses(vid).values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(vid.grad).all()
    for name in ("loss_align_vt", "loss_align_ct", "loss_align_intra"):
        assert float(good[name]) < float(bad[name]), name
    assert float(good["loss_align_vt"]) < 1e-3
    assert set(crit.weight_dict) >= {"loss_align_vt", "loss_align_ct", "loss_align_intra", "loss_saliency"}


@pytest.mark.slow
def test_gradients_reach_every_trainable_parameter_and_loss_decreases():
    torch.manual_seed(0)
    cfg = _tiny()
    model = create_model("cmdnet", cfg).train()
    criterion = build_criterion(cfg)
    batch = _batch()
    targets = _targets(batch)
    criterion.weighted_total(criterion(model(**batch), targets)).backward()
    unused = ("txt_position_embed.",)   # use_txt_pos false, as QD-DETR
    assert [n for n, p in model.named_parameters() if p.grad is None and not n.startswith(unused)] == []
    # the anchor decoder starts from a zero target, so layer 0's content projections of it get
    # zero weight gradients (QD-DETR has the same); every other gradient is non-zero
    zero_target = {f"transformer.decoder.layers.0.{k}.weight" for k in ("sa_qcontent_proj", "sa_kcontent_proj",
                                                                          "sa_v_proj")}
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert set(zero) <= zero_target
    model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = criterion.weighted_total(criterion(model(**batch), targets))
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_audio_is_concatenated_and_checked():
    model = create_model("cmdnet", _tiny(a_feat_dim=4)).eval()
    batch = _batch()
    with pytest.raises(MrhdError, match="a_feat_dim 4"):
        model(**batch)
    batch["src_aud"] = torch.randn(3, batch["src_vid"].shape[1], 4)
    batch["src_aud_mask"] = batch["src_vid_mask"]
    with torch.no_grad():
        out = model(**batch)
    assert model.input_vid_proj[0].LayerNorm.normalized_shape == (14,)
    assert out["pred_spans"].shape == (3, 10, 2) and torch.isfinite(out["saliency_scores"]).all()


@pytest.mark.parametrize("bad, match", [(dict(pre_norm=True), "pre_norm"), (dict(nheads=3), "divisible"),
                                        (dict(mdp_kernel_sizes=(2,)), "odd"),
                                        (dict(align_temperature=0.0), "align_temperature")])
def test_bad_configs_are_one_line_errors(bad, match):
    cfg = _tiny(**{k: v for k, v in bad.items() if k != "pre_norm"})
    if "pre_norm" in bad:
        cfg.pre_norm = True
    with pytest.raises(MrhdError, match=match):
        build(cfg)


def test_checkpoint_round_trip(tmp_path):
    cfg = _tiny(mdp_kernel_sizes=(3, 5), mdp_gcn_layers=2)
    model = build(cfg).eval()
    path = save_checkpoint(tmp_path / "cmdnet.ckpt", model="cmdnet", config=dataclasses.asdict(cfg),
                           state_dict=model.state_dict(), profile="slowfast_clip")
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == "cmdnet"
    again = create_model("cmdnet", ckpt["config"]).eval()
    again.load_state_dict(ckpt["state_dict"], strict=True)
    batch = _batch()
    with torch.no_grad():
        a, b = model(**batch), again(**batch)
    for key in ("pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_mrhd_train_runs_with_the_model(tmp_path):
    d = make_synthetic(tmp_path / "data", load_profile("slowfast_clip"),
                       SyntheticSpec(n_train=16, n_val=8, min_clips=10, max_clips=16, n_concepts=4))
    cfg = load_train_config("cmdnet", epochs=2, batch_size=8, num_workers=0, eval_every=1, progress=False,
                            model_config={"hidden_dim": 16, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
                                          "dim_feedforward": 32})
    trainer = Trainer(cfg, d["features"], d["train"], d["val"], tmp_path / "run", log=lambda _: None)
    result = trainer.run()
    assert result["epochs"] == 2 and all(torch.isfinite(torch.tensor(trainer.step_losses)))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "MR-full-mAP" in rows[-1]
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["model"] == "cmdnet" and best["profile"] == "slowfast_clip"
    assert best["config"]["v_feat_dim"] == load_profile("slowfast_clip").video_dim
    assert any(k.startswith("transformer.mdp.") for k in best["state_dict"])


@pytest.mark.slow
def test_mrhd_train_cli_with_audio_profile(tmp_path):
    """`mrhd train --profile slowfast_clip_pann`: the trainer sizes the audio input from the profile."""
    from mrhd.cli import main

    d = make_synthetic(tmp_path / "data", load_profile("slowfast_clip_pann"),
                       SyntheticSpec(n_train=8, n_val=4, min_clips=8, max_clips=12, n_concepts=2))
    sets = ["hidden_dim=16", "nheads=2", "enc_layers=1", "dim_feedforward=32", "mdp_kernel_sizes=[3]"]
    rc = main(["train", "--model", "cmdnet", "--profile", "slowfast_clip_pann", "--features", str(d["features"]),
               "--train", str(d["train"]), "--val", str(d["val"]), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "4", "--num-workers", "0", "--quiet", *[x for s in sets for x in ("--set", s)]])
    assert rc in (0, None)
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["profile"] == "slowfast_clip_pann"
    assert best["config"]["a_feat_dim"] == load_profile("slowfast_clip_pann").audio_dim
    assert list(best["config"]["mdp_kernel_sizes"]) == [3]
    assert best["state_dict"]["input_vid_proj.0.LayerNorm.weight"].shape == (
        load_profile("slowfast_clip_pann").video_dim + load_profile("slowfast_clip_pann").audio_dim,)
