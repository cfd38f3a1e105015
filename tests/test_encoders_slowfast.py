"""SlowFast R50 8x8: architecture facts, the two checkpoint formats written by the test and loaded
back (every tensor, values, outputs), preprocessing and the encoder contract."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrhd.encoders import slowfast_convert as conv
from mrhd.encoders.factory import build_encoder
from mrhd.encoders.slowfast import (
    SlowFastEncoder,
    SlowFastR50,
    slow_indices,
    slowfast_config,
)
from mrhd.errors import MrhdError


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return SlowFastR50(slowfast_config("full"))


def _randomised_tiny(seed: int = 0) -> SlowFastR50:
    """Tiny model with non-trivial BN statistics, so a mix-up of BN tensors changes the output."""
    torch.manual_seed(seed)
    model = SlowFastR50(slowfast_config("tiny"))
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if ".bn" in name or "_bn" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return model.eval()


def test_full_architecture(full_model):
    # pytorchvideo model zoo (docs/source/model_zoo.md): SlowFast R50 8x8, 34.57 M parameters
    n_params = sum(p.numel() for p in full_model.parameters())
    assert round(n_params / 1e6, 2) == 34.57
    assert full_model.cfg.dim == 2304 and full_model.cfg.slow_dim == 2048
    assert slow_indices(32, 4).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


# Caffe2 blob -> PySlowFast key, written from the rules of facebookresearch/SlowFast
# slowfast/utils/c2_model_loading.py (the subset SLOWFAST_8x8_R50 uses), applied in this order.
_C2_RULES = [
    (r"^t_pool1_subsample_bn_", "s1_fuse.bn."),
    (r"^t_pool1_subsample_", "s1_fuse.conv_f2s."),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_bn_", r"s\1_fuse.bn."),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_", r"s\1_fuse.conv_f2s."),
    (r"^res(\d+)_(\d+)_branch(\d)([a-z])_", r"s\1.pathway0_res\2.branch\3.\4_"),
    (r"^t_res(\d+)_(\d+)_branch(\d)([a-z])_", r"s\1.pathway1_res\2.branch\3.\4_"),
    (r"^res(\d+)_(\d+)_branch(\d)_", r"s\1.pathway0_res\2.branch\3_"),
    (r"^t_res(\d+)_(\d+)_branch(\d)_", r"s\1.pathway1_res\2.branch\3_"),
    (r"^res_conv1_bn_", "s1.pathway0_stem.bn."),
    (r"^t_res_conv1_bn_", "s1.pathway1_stem.bn."),
    (r"^conv1_", "s1.pathway0_stem.conv."),
    (r"^t_conv1_", "s1.pathway1_stem.conv."),
    (r"^pred_", "head.projection."),
    (r"bn.b$", "bn.bias"), (r"bn.s$", "bn.weight"), (r"bn.rm$", "bn.running_mean"),
    (r"bn.riv$", "bn.running_var"), (r"[._]b$", ".bias"), (r"[._]w$", ".weight"),
]


def _caffe2_to_pyslowfast(name: str) -> str:
    for pattern, repl in _C2_RULES:
        name = re.sub(pattern, repl, name)
    return name


def _ours_to_pyslowfast(key: str) -> str:
    """Our module names -> PySlowFast's SlowFast module names (video_model_builder.py)."""
    m = re.match(r"stem_(slow|fast)\.(conv|bn)\.(.*)", key)
    if m:
        return f"s1.pathway{int(m[1] == 'fast')}_stem.{m[2]}.{m[3]}"
    m = re.match(r"fusions\.(\d)\.(conv|bn)\.(.*)", key)
    if m:
        return f"s{int(m[1]) + 1}_fuse.{'conv_f2s' if m[2] == 'conv' else 'bn'}.{m[3]}"
    m = re.match(r"(slow|fast)_stages\.(\d)\.(\d+)\.(\w+)\.(.*)", key)
    if m:
        part = {"conv_a": "branch2.a", "conv_b": "branch2.b", "conv_c": "branch2.c", "bn_a": "branch2.a_bn",
                "bn_b": "branch2.b_bn", "bn_c": "branch2.c_bn", "shortcut": "branch1",
                "shortcut_bn": "branch1_bn"}[m[4]]
        return f"s{int(m[2]) + 2}.pathway{int(m[1] == 'fast')}_res{m[3]}.{part}.{m[5]}"
    return key.replace("classifier.", "head.projection.")


def test_caffe2_names_follow_pyslowfast_conversion(full_model):
    names = conv.caffe2_names(full_model.cfg)
    tensors = {k for k in full_model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(names) == tensors and len(set(names.values())) == len(names) == 552
    for ours, blob in names.items():
        assert _caffe2_to_pyslowfast(blob) == _ours_to_pyslowfast(ours), blob
    sd = full_model.state_dict()
    shapes = {blob: tuple(sd[ours].shape) for ours, blob in names.items()}
    assert shapes["conv1_w"] == (64, 3, 1, 7, 7) and shapes["t_conv1_w"] == (8, 3, 5, 7, 7)
    assert shapes["t_pool1_subsample_w"] == (16, 8, 7, 1, 1)
    assert shapes["t_res4_5_branch2c_bn_subsample_w"] == (256, 128, 7, 1, 1)
    assert shapes["res2_0_branch1_w"] == (256, 80, 1, 1, 1)
    assert shapes["res4_0_branch2a_w"] == (256, 640, 3, 1, 1)
    assert shapes["res5_2_branch2c_bn_riv"] == (2048,) and shapes["pred_w"] == (400, 2304)


def test_pytorchvideo_names(full_model):
    names = conv.pytorchvideo_names(full_model.cfg)
    sd = full_model.state_dict()
    assert set(names) == set(sd) and len(set(names.values())) == 662
    shapes = {theirs: tuple(sd[ours].shape) for ours, theirs in names.items()}
    assert shapes["blocks.0.multipathway_blocks.0.conv.weight"] == (64, 3, 1, 7, 7)
    assert shapes["blocks.0.multipathway_blocks.1.norm.running_var"] == (8,)
    assert shapes["blocks.0.multipathway_fusion.conv_fast_to_slow.weight"] == (16, 8, 7, 1, 1)
    assert shapes["blocks.3.multipathway_fusion.norm.weight"] == (256,)
    assert shapes["blocks.1.multipathway_blocks.0.res_blocks.0.branch1_conv.weight"] == (256, 80, 1, 1, 1)
    assert shapes["blocks.4.multipathway_blocks.1.res_blocks.2.branch2.conv_b.weight"] == (64, 64, 1, 3, 3)
    assert shapes["blocks.4.multipathway_blocks.0.res_blocks.0.branch2.conv_a.weight"] == (512, 1280, 3, 1, 1)
    assert shapes["blocks.6.proj.weight"] == (400, 2304)
    assert "blocks.4.multipathway_fusion.conv_fast_to_slow.weight" not in shapes   # no fusion after res5


def _clip_batch(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, size, size, 3), dtype=np.uint8)


def _assert_same_model(loaded: SlowFastR50, source: SlowFastR50):
    got, want = loaded.state_dict(), source.state_dict()
    assert set(got) == set(want)
    for key in want:
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(got[key], want[key]), key
    assert not loaded.training
    batch = SlowFastEncoder(source, "x", "x").preprocess(_clip_batch(size=32))
    a = SlowFastEncoder(loaded, "x", "x").encode(batch)
    b = SlowFastEncoder(source, "x", "x").encode(batch)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():   # the Kinetics classifier arrived too
        torch.testing.assert_close(loaded.classifier(a), source.classifier(b), atol=1e-5, rtol=1e-5)


def test_caffe2_pickle_round_trip(tmp_path):
    source = _randomised_tiny()
    blobs = conv.to_caffe2_blobs(source)
    blobs["pred_w_momentum"] = np.zeros_like(blobs["pred_w"])   # solver state, skipped
    blobs["lr"] = np.array([0.1], np.float32)
    blobs["model_iter"] = np.array([1000], np.int64)
    blobs["pred_b"] = blobs["pred_b"].astype(np.float32)
    path = tmp_path / "SLOWFAST_8x8_R50.pkl"
    with open(path, "wb") as fh:   # Caffe2-era pickles: protocol 2, a 'blobs' table
        pickle.dump({"blobs": blobs}, fh, protocol=2)
    loaded, fmt = conv.load_slowfast(path, slowfast_config("tiny"))
    assert fmt == "caffe2"
    _assert_same_model(loaded, source)


def test_pytorchvideo_round_trip(tmp_path):
    source = _randomised_tiny(1)
    path = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"epoch": 196, "model_state": conv.to_pytorchvideo(source), "cfg": "MODEL:\n  ARCH: slowfast\n"},
               path)
    loaded, fmt = conv.load_slowfast(path, slowfast_config("tiny"))
    assert fmt == "pytorchvideo"
    _assert_same_model(loaded, source)
    legacy = tmp_path / "legacy.pyth"   # torch < 1.6 wrote a plain pickle stream, not a zip
    torch.save({"model_state": conv.to_pytorchvideo(source)}, legacy, _use_new_zipfile_serialization=False)
    again, fmt = conv.load_slowfast(legacy, slowfast_config("tiny"))
    assert fmt == "pytorchvideo" and torch.equal(again.classifier.weight, source.classifier.weight)


def test_bad_checkpoints_are_user_errors(tmp_path):
    cfg = slowfast_config("tiny")
    blobs = conv.to_caffe2_blobs(_randomised_tiny())
    cases = {
        "missing": {k: v for k, v in blobs.items() if k != "t_res3_1_branch2b_bn_riv"},
        "unexpected": {**blobs, "nonlocal_conv4_5_out_w": np.zeros(1, np.float32)},
        "shape": {**blobs, "conv1_w": np.zeros((3, 3, 1, 7, 7), np.float32)},
    }
    for name, table in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps({"blobs": table}, protocol=2))
        with pytest.raises(MrhdError):
            conv.load_slowfast(path, cfg)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"blobs": {"x": Exploit()}}))
    with pytest.raises(MrhdError, match="not allowed"):
        conv.load_slowfast(evil, cfg)
    sd = conv.to_pytorchvideo(_randomised_tiny())
    del sd["blocks.6.proj.bias"]
    pyth = tmp_path / "partial.pyth"
    torch.save({"model_state": sd}, pyth)
    with pytest.raises(MrhdError, match="missing"):
        conv.load_slowfast(pyth, cfg)
    with pytest.raises(MrhdError):
        build_encoder("slowfast", weights=str(tmp_path / "evil.pkl"))


def test_preprocess_and_encoder_contract():
    enc = build_encoder("slowfast", random_weights=True, size="tiny")
    assert enc.input_kind == "slowfast_clip" and enc.info.weights == "random" and enc.dim == 288
    clips = _clip_batch(3)
    batch = enc.preprocess(list(clips))   # workers ship uint8; pixels are made on the device
    assert batch.shape == (3, 32, 64, 64, 3) and batch.dtype == torch.uint8
    expected = (clips.astype(np.float32) / 255.0 - 0.45) / 0.225
    np.testing.assert_allclose(enc.pixels(batch).numpy(), expected.transpose(0, 4, 1, 2, 3), atol=1e-5)
    feats = enc.encode(batch)
    assert feats.shape == (3, 288) and feats.dtype == torch.float32
    # eval-mode BatchNorm: a clip's features do not depend on its batch
    torch.testing.assert_close(enc.encode(batch[1:2])[0], feats[1], atol=1e-5, rtol=1e-5)
    assert pickle.loads(pickle.dumps(enc.preprocessor))(clips[:1]).shape == (1, 32, 64, 64, 3)
    with pytest.raises(ValueError):
        enc.preprocess([np.zeros((8, 64, 64, 3), np.uint8)])
    recipe = enc.info.recipe
    assert recipe["slow_index"] == [0, 4, 8, 13, 17, 22, 26, 31] and recipe["mean"] == [0.45] * 3


def test_pathway_shapes_at_224():
    """At 224 px the res5 maps are slow [T/4=8, 7, 7] and fast [32, 7, 7]; the feature is their mean."""
    enc = build_encoder("slowfast", random_weights=True, size="tiny")
    seen = {}
    enc.model.slow_stages[3].register_forward_hook(lambda m, i, o: seen.__setitem__("slow", o))
    enc.model.fast_stages[3].register_forward_hook(lambda m, i, o: seen.__setitem__("fast", o))
    feats = enc.encode(enc.preprocess(_clip_batch(1, 224)))
    cfg = enc.model.cfg
    assert seen["slow"].shape == (1, cfg.slow_dim, 8, 7, 7) and seen["fast"].shape == (1, cfg.fast_dim, 32, 7, 7)
    expected = torch.cat([seen["slow"].mean(dim=(2, 3, 4)), seen["fast"].mean(dim=(2, 3, 4))], dim=1)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)


def _pyslowfast_forward(w: dict, slow: torch.Tensor, fast: torch.Tensor, depths, alpha: int) -> torch.Tensor:
    """SlowFast.forward of facebookresearch/SlowFast video_model_builder.py written functionally on
    PySlowFast-named weights: s1, s1_fuse, s2, s2_fuse, (identity pool), s3, s3_fuse, s4, s4_fuse, s5,
    then each pathway averaged and concatenated."""
    def bn(x, name):
        return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"], w[f"{name}.weight"],
                            w[f"{name}.bias"], False, 0.0, 1e-5)

    xs = []
    for p, x in enumerate((slow, fast)):
        k = w[f"s1.pathway{p}_stem.conv.weight"]
        x = F.conv3d(x, k, stride=(1, 2, 2), padding=(k.shape[2] // 2, 3, 3))
        xs.append(F.max_pool3d(F.relu(bn(x, f"s1.pathway{p}_stem.bn")), (1, 3, 3), (1, 2, 2), (0, 1, 1)))
    for stage in range(1, 6):
        if stage > 1:
            for p in range(2):
                for i in range(depths[stage - 2]):
                    pre = f"s{stage}.pathway{p}_res{i}"
                    stride = 2 if (i == 0 and stage > 2) else 1
                    x = xs[p]
                    ka = w[f"{pre}.branch2.a.weight"]
                    y = F.relu(bn(F.conv3d(x, ka, padding=(ka.shape[2] // 2, 0, 0)), f"{pre}.branch2.a_bn"))
                    y = F.relu(bn(F.conv3d(y, w[f"{pre}.branch2.b.weight"], stride=(1, stride, stride),
                                           padding=(0, 1, 1)), f"{pre}.branch2.b_bn"))
                    y = bn(F.conv3d(y, w[f"{pre}.branch2.c.weight"]), f"{pre}.branch2.c_bn")
                    if f"{pre}.branch1.weight" in w:
                        x = bn(F.conv3d(x, w[f"{pre}.branch1.weight"], stride=(1, stride, stride)), f"{pre}.branch1_bn")
                    xs[p] = F.relu(x + y)
        if stage < 5:
            k = w[f"s{stage}_fuse.conv_f2s.weight"]
            f = F.conv3d(xs[1], k, stride=(alpha, 1, 1), padding=(k.shape[2] // 2, 0, 0))
            xs[0] = torch.cat([xs[0], F.relu(bn(f, f"s{stage}_fuse.bn"))], dim=1)
    return torch.cat([xs[0].mean(dim=(2, 3, 4)), xs[1].mean(dim=(2, 3, 4))], dim=1)


def test_forward_matches_pyslowfast_layer_order():
    model = _randomised_tiny(5)
    w = {_ours_to_pyslowfast(k): v for k, v in model.state_dict().items()}
    enc = SlowFastEncoder(model, "x", "x")
    batch = enc.preprocess(_clip_batch(2, size=32))
    fast = enc.pixels(batch)
    slow = fast.index_select(2, torch.linspace(0, 31, 8).long())
    with torch.no_grad():
        expected = _pyslowfast_forward(w, slow, fast, model.cfg.depths, model.cfg.alpha)
    torch.testing.assert_close(enc.encode(batch), expected, atol=1e-5, rtol=1e-5)
