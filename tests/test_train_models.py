"""`mrhd train` and the models' extra needs: annotation fields as forward() inputs (MESM's query
text for FW-MESM, SG-DETR's vid), the epoch handed to epoch-dependent criteria (VideoLights), and
each model's training config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mrhd.annotations import load_annotations
from mrhd.features.profiles import load_profile, open_stores
from mrhd.models.registry import get_spec
from mrhd.paths import config_dir
from mrhd.pipeline.collate import collate, prepare_batch
from mrhd.pipeline.datasets import DatasetConfig, MomentDataset, meta_inputs
from mrhd.training.config import load_train_config
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.training.validation import forward_kwargs

SMALL = SyntheticSpec(n_train=8, n_val=4, min_clips=8, max_clips=12, n_concepts=3)
MESM_TINY = dict(hidden_dim=32, nheads=4, dim_feedforward=64, enc_layers=1, dec_layers=2, t2v_layers=1,
                 num_recfw_layers=1, num_recss_layers=1, num_queries=5, vocab_size=12)
SG_TINY = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 2,
           "sgca_layers": 1, "atss_num_convs": 1, "dn_groups": 2}
VL_TINY = dict(hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2, bicmf_layers=1, dim_feedforward=24,
               contrastive_hdim=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(model: str, tmp_path, model_config: dict, **kw) -> Trainer:
    profile = load_profile(get_spec(model).default_profile)
    data = make_synthetic(tmp_path / "data", profile, SMALL)
    cfg = load_train_config(model, **{**dict(epochs=1, batch_size=4, num_workers=0, eval_every=100,
                                             progress=False, model_config=model_config), **kw})
    return Trainer(cfg, data["features"], data["train"], data["val"], tmp_path / "run", log=lambda m: None)


# ---- training configs -----------------------------------------------------------------------
def test_train_configs_of_cmdnet_sg_detr_and_mesm_are_picked_up():
    for model in ("cmdnet", "sg_detr", "mesm", "videolights"):
        assert (config_dir() / "train" / f"{model}.yaml").is_file(), model
    qd, cmd = load_train_config("qd_detr"), load_train_config("cmdnet")
    # CMDNet trains in QD-DETR's setting; CPU autocast is QD-DETR's alone (its learning was measured)
    assert qd.cpu_amp and not cmd.cpu_amp
    assert dataclasses.replace(cmd, model="qd_detr", cpu_amp=True) == qd
    sg = load_train_config("sg_detr")
    assert (sg.lr, sg.batch_size, sg.eval_every) == (5e-4, 128, 5)   # the paper's QVHighlights setting
    assert get_spec("sg_detr").labels == get_spec("cg_detr").labels   # CG-DETR's targets
    mesm = load_train_config("mesm")   # lntzm/MESM config/QVHighlights/C+SF_C.json, not the defaults
    assert (mesm.lr, mesm.batch_size, mesm.lr_gamma, mesm.eval_every) == (2e-4, 12, 0.5, 1)
    assert load_train_config("mesm", lr=5e-5).lr == 5e-5   # command-line overrides still win


# ---- annotation fields as forward() inputs --------------------------------------------------
def test_models_ask_for_annotation_fields_through_their_spec():
    assert meta_inputs(get_spec("mesm").forward_inputs) == ("vid", "query")
    assert meta_inputs(get_spec("sg_detr").forward_inputs) == ("vid",)
    assert meta_inputs(get_spec("cg_detr").forward_inputs) == ("vid", "qid")
    assert meta_inputs(get_spec("qd_detr").forward_inputs) == ()


def test_dataset_and_collate_pass_the_query_text(tmp_path):
    profile = load_profile("slowfast_clip")
    data = make_synthetic(tmp_path, profile, SMALL)
    lines = load_annotations(data["train"])
    del lines[1]["query"]
    ds = MomentDataset(lines, open_stores(data["features"], profile), profile,
                       DatasetConfig(labels="qd_detr", inputs=("vid", "query")))
    assert len(ds) == len(lines) - 1 and ds.skipped[0][0] == lines[1]["qid"] and "query" in ds.skipped[0][2]
    metas, batched = collate([ds[i] for i in range(3)])
    inputs, targets = prepare_batch(batched)
    assert inputs["query"] == [m["query"] for m in metas] and inputs["vid"] == [m["vid"] for m in metas]
    assert "query" not in targets and "qid" not in inputs
    plain = MomentDataset(lines, open_stores(data["features"], profile), profile, DatasetConfig(labels="qd_detr"))
    assert not {"vid", "qid", "query"} & set(plain[0]["model_inputs"])   # nothing unless asked


def test_mesm_trainer_step_computes_the_word_reconstruction_loss(tmp_path):
    trainer = _trainer("mesm", tmp_path, MESM_TINY)
    assert "query" in trainer.train_set[0]["model_inputs"]
    assert "query" not in trainer.val_set[0]["model_inputs"]   # only training targets read it
    metas, batched = next(iter(trainer.train_loader))
    trainer.model.train()
    total, losses = trainer.loss(batched)
    assert "loss_rec_fw" in losses and float(losses["loss_rec_fw"].detach()) > 0
    assert trainer.criterion.weight_dict["loss_rec_fw"] == trainer.model_cfg.loss_recfw_coef > 0
    # the term is part of the total: without the texts it disappears and the total drops by its weight
    torch.manual_seed(0)
    total, losses = trainer.loss(batched)
    torch.manual_seed(0)
    total_without, losses_without = trainer.loss({k: v for k, v in batched.items() if k != "query"})
    assert "loss_rec_fw" not in losses_without
    expected = float(total_without.detach()) + float(losses["loss_rec_fw"].detach()) * trainer.model_cfg.loss_recfw_coef
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(trainer.train_step(batched))


def test_sg_detr_batches_carry_vid_and_it_reaches_forward(tmp_path):
    trainer = _trainer("sg_detr", tmp_path, SG_TINY)
    assert trainer.train_set.recipe == get_spec("cg_detr").labels
    metas, batched = next(iter(trainer.train_loader))
    assert batched["vid"] == [m["vid"] for m in metas]
    inputs, targets = prepare_batch(batched)
    assert forward_kwargs(trainer.model, inputs, targets)["vid"] == [m["vid"] for m in metas]
    seen = []
    trainer.model.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("vid")),
                                            with_kwargs=True)
    trainer.train_step(batched)
    assert seen == [[m["vid"] for m in metas]]


# ---- epoch-dependent criteria ----------------------------------------------------------------
def _record_hard_scales(crit) -> list:
    """The factor (epoch + 1) each training-mode hard pos/neg loss was scaled with."""
    scales = []
    original = crit._hard_loss

    def recording(pred, gt, keep):
        out = original(pred, gt, keep)
        if crit.training:
            with torch.no_grad():
                base = torch.nn.functional.mse_loss(gt * keep, pred * keep) * crit.model_cfg.hard_pos_neg_loss_coef
                scales.append(round(float(out / base)) if float(base) > 0 else None)
        return out

    crit._hard_loss = recording
    return scales


def test_videolights_hard_losses_use_the_current_epoch(tmp_path):
    trainer = _trainer("videolights", tmp_path, VL_TINY, epochs=2)
    crit = trainer.criterion
    assert crit.model_cfg.hard_pos_neg_loss and crit.epoch == 0
    scales = _record_hard_scales(crit)
    trainer.run()
    steps = len(trainer.train_loader)
    assert len(scales) == 2 * 2 * steps   # hard pos + hard neg per step
    for k in range(2):
        values = scales[k * 2 * steps:(k + 1) * 2 * steps]
        assert {v for v in values if v is not None} == {k + 1}, (k, values)
    # a resumed run trains its next epoch (index 2) with that epoch's weights, not epoch 0's
    cfg = dataclasses.replace(trainer.cfg, epochs=3)
    resumed = Trainer(cfg, tmp_path / "data", tmp_path / "data" / "train.jsonl", tmp_path / "data" / "val.jsonl",
                      tmp_path / "run", resume=True, log=lambda m: None)
    scales = _record_hard_scales(resumed.criterion)
    resumed.run()
    assert len(scales) == 2 * steps and {v for v in scales if v is not None} == {3}
    assert resumed.criterion.epoch == 2
