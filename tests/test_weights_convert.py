"""`mrhd weights convert / info` and loading checkpoints for predict, on checkpoints written here in
the authors' layout ({"model": state_dict, "opt": argparse.Namespace, ...})."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from mrhd.cli import main
from mrhd.errors import MrhdError
from mrhd.inference.predict import load_model
from mrhd.models.convert import convert_checkpoint, profile_from_opt
from mrhd.models.registry import create_model
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint

# A small Moment-DETR run on CLIP-only features, with the official option names.
OPT = dict(dset_name="hl", v_feat_dirs=["features/clip_features"], t_feat_dir="features/clip_text_features/",
           v_feat_dim=514, t_feat_dim=512, hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2,
           dim_feedforward=32, num_queries=4, max_q_l=32, max_v_l=75, clip_length=2, n_input_proj=2,
           input_dropout=0.5, dropout=0.1, use_txt_pos=False, aux_loss=True, span_loss_type="l1",
           contrastive_align_loss=False, position_embedding="sine", pre_norm=False)


def _official(tmp_path, model="moment_detr", opt=OPT, name="official.ckpt"):
    cfg = {k: v for k, v in opt.items()}
    torch.manual_seed(0)
    net = create_model(model, cfg)
    path = tmp_path / name
    torch.save({"model": net.state_dict(), "optimizer": None, "epoch": 3, "opt": argparse.Namespace(**opt)}, path)
    return path, net


def test_profile_from_opt():
    assert profile_from_opt({"v_feat_dirs": ["x/slowfast_features", "x/clip_features"]}) == "slowfast_clip"
    assert profile_from_opt({"v_feat_dirs": ["../features/clip_features/"]}) == "clip"
    assert profile_from_opt({"v_feat_dirs": ["a/slowfast_features", "a/clip_features"],
                             "a_feat_dir": "a/pann_features"}) == "slowfast_clip_pann"
    assert profile_from_opt({"v_feat_dirs": ["weird"]}, default="d") == "d"


def test_convert_then_load_gives_the_same_network(tmp_path, capsys):
    src, net = _official(tmp_path)
    dst = tmp_path / "converted.ckpt"
    assert main(["weights", "convert", str(src), str(dst), "--model", "moment_detr"]) == 0
    ckpt = load_checkpoint(dst)
    assert ckpt["model"] == "moment_detr" and ckpt["profile"] == "clip"
    assert ckpt["config"]["hidden_dim"] == 16 and ckpt["source"]["file"] == "official.ckpt"
    assert torch.load(dst, weights_only=True)["format"] == "mrhd-checkpoint/1"  # no allow-list needed
    loaded = load_model(str(dst))
    assert loaded.name == "moment_detr" and loaded.profile.name == "clip"
    x = dict(src_txt=torch.randn(1, 5, 512), src_txt_mask=torch.ones(1, 5),
             src_vid=torch.randn(1, 9, 514), src_vid_mask=torch.ones(1, 9))
    with torch.no_grad():
        a, b = net.eval()(**x), loaded.net(**x)
    assert torch.allclose(a["pred_spans"], b["pred_spans"]) and torch.allclose(a["saliency_scores"], b["saliency_scores"])
    capsys.readouterr()
    assert main(["weights", "info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "moment_detr" in out and "profile:  clip" in out and "hidden_dim=16" in out
    n_keys = len(net.state_dict())
    assert f"keys:     {n_keys} tensors" in out
    assert main(["weights", "info", str(src)]) == 0  # the authors' file is described too
    assert "authors' checkpoint" in capsys.readouterr().out


def test_official_checkpoint_loads_directly_for_predict(tmp_path):
    src, _ = _official(tmp_path)
    loaded = load_model(str(src), model="moment_detr")
    assert loaded.profile.name == "clip" and loaded.weights == "official.ckpt"
    with pytest.raises(MrhdError, match="--model"):
        load_model(str(src))  # an unregistered authors' file: which model is it?


def test_convert_refuses_checkpoint_of_another_model(tmp_path, capsys):
    src, _ = _official(tmp_path)
    dst = tmp_path / "out.ckpt"
    assert main(["weights", "convert", str(src), str(dst), "--model", "qd_detr"]) != 0
    err = capsys.readouterr().err
    assert "qd_detr" in err and "another model" in err and err.count("\n") == 1
    assert not dst.exists()


def test_predict_refuses_checkpoint_of_another_model_or_profile(tmp_path):
    src, net = _official(tmp_path)
    conv = tmp_path / "m.ckpt"
    convert_checkpoint(src, conv, model="moment_detr")
    with pytest.raises(MrhdError, match="moment_detr checkpoint, not qd_detr"):
        load_model(str(conv), model="qd_detr")
    with pytest.raises(MrhdError, match="feature profile"):
        load_model(str(conv), profile="slowfast_clip")
    # a checkpoint whose weights do not fit the profile it claims
    wrong = tmp_path / "wrong.ckpt"
    save_checkpoint(wrong, model="moment_detr", config={**OPT}, state_dict=net.state_dict(), profile="slowfast_clip")
    with pytest.raises(MrhdError, match="another profile"):
        load_model(str(wrong))


def test_convert_without_opt_and_unknown_model(tmp_path, capsys):
    bare = tmp_path / "bare.ckpt"
    torch.save({"model": {"w": torch.ones(1)}}, bare)
    with pytest.raises(MrhdError, match="no saved options"):
        convert_checkpoint(bare, tmp_path / "x.ckpt", model="moment_detr")
    assert main(["weights", "convert", str(bare), str(tmp_path / "x.ckpt"), "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_convert_unwritable_destination(tmp_path):
    src, _ = _official(tmp_path)
    with pytest.raises(MrhdError, match="does not exist"):
        convert_checkpoint(src, tmp_path / "missing-dir" / "x.ckpt", model="moment_detr")


def test_weights_list_shows_every_entry(capsys):
    from mrhd.weights import entries

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for e in entries():
        assert e.id in out
    required = {"clip-vit-b32-openai", "slowfast-r50-8x8-k400-pyslowfast", "slowfast-r50-pytorchvideo",
                "panns-cnn14-32k", "blip2-pretrain", "internvideo2-1b-stage2", "internvideo2-clip-6b",
                "moment_detr-clip-qvhighlights"}
    assert required <= {e.id for e in entries()}
    assert json.dumps([e.sha256 for e in entries()])  # sha256 only where published; None elsewhere


def test_info_of_a_registry_id_not_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path))
    assert main(["weights", "info", "qd_detr-clip-qvhighlights"]) == 0
    out = capsys.readouterr().out
    assert "github.com/wjun0830/QD-DETR" in out and "MR-full-R1@0.5 60.58" in out and "cached:   no" in out
