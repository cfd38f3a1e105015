"""InternVideo2 streams: tiny random models, checkpoints written here under the released key names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrhd.encoders.factory import build_encoder
from mrhd.encoders.internvideo2 import frames as iv2_frames
from mrhd.encoders.internvideo2.config import CLIP6B, STAGE2, variant_config
from mrhd.encoders.internvideo2.model import InternVideo2Model
from mrhd.errors import MrhdError

WORDS = ["a", "man", "cook", "##s", "pizza", "in", "the", "kitchen", "dog", ".", "!"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _windows(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8) for n in lengths]


def _randomised(variant: str, seed: int) -> InternVideo2Model:
    """A tiny model whose every tensor is random (LayerScale, norms and biases included)."""
    torch.manual_seed(seed)
    model = InternVideo2Model(variant_config(variant, "tiny"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if ("norm" in name or "gamma" in name or "LayerNorm" in name) else 0.05
            p.copy_((1.0 if scale == 0.5 else 0.0) + scale * torch.randn_like(p))
    return model.eval()


def _write(state: dict, path, wrapper="module"):
    torch.save({wrapper: state} if wrapper else state, path)
    (path.parent / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    return path


# --- frames --------------------------------------------------------------------------------------

def test_frame_rule_is_segment_middles():
    for n in (8, 9, 30, 48, 59, 60, 61, 120):
        idx = iv2_frames.window_frame_indices(n, 8)
        edges = [int(np.floor(i * n / 8)) for i in range(9)]
        assert idx == [(edges[i] + edges[i + 1] - 1) // 2 for i in range(8)]
        assert all(edges[i] <= idx[i] < max(edges[i + 1], edges[i] + 1) for i in range(8))
    assert iv2_frames.window_frame_indices(60, 8) == [3, 10, 18, 25, 33, 40, 48, 55]   # 30 fps, 2 s
    assert iv2_frames.window_frame_indices(3, 8) == [0, 1, 2, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        iv2_frames.window_frame_indices(0, 8)


def test_preprocess_picks_frames_and_normalises():
    video = build_encoder("internvideo2", random_weights=True, size="tiny")
    n = 50
    window = np.zeros((n, 224, 224, 3), dtype=np.uint8)
    window[:] = np.arange(n, dtype=np.uint8)[:, None, None, None] * 5   # frame i has value 5 i
    picked = video.preprocess([window, window[:4]])
    assert picked.shape == (2, 8, 224, 224, 3) and picked.dtype == torch.uint8
    x = video.pixels(picked)
    assert x.shape == (2, 3, 8, 224, 224) and x.dtype == torch.float32
    assert video.preprocess([np.zeros((9, 180, 320, 3), dtype=np.uint8)]).shape == (1, 8, 224, 224, 3)
    mean = torch.tensor(iv2_frames.IMAGENET_MEAN).view(3, 1)
    std = torch.tensor(iv2_frames.IMAGENET_STD).view(3, 1)
    values = (x[:, :, :, 0, 0] * std + mean) * 255 / 5          # back to frame numbers
    torch.testing.assert_close(values[0], torch.tensor(iv2_frames.window_frame_indices(n)).float().expand(3, 8),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(values[1], torch.tensor([0., 1, 2, 3, 3, 3, 3, 3]).expand(3, 8), atol=1e-3, rtol=0)


# --- random tiny models: shapes, info ------------------------------------------------------------

@pytest.mark.parametrize("weights", [None, "internvideo2-clip-6b"])
def test_random_tiny_video_shapes_and_info(weights):
    video = build_encoder("internvideo2", weights=weights, random_weights=True, size="tiny")
    cfg = variant_config(CLIP6B if weights else STAGE2, "tiny")
    assert video.input_kind == "window_frames"
    assert (video.info.stream, video.info.dim, video.info.weights) == ("internvideo2", cfg.vision.clip_embed_dim,
                                                                       "random")
    recipe = json.loads(video.info.recipe_json())
    assert recipe["frames"] == 8 and recipe["mean"] == list(iv2_frames.IMAGENET_MEAN)
    assert "clip_projector" in recipe["layer"] and "middle" in recipe["frame_rule"]
    feats = video.encode(video.preprocess(_windows([60, 48, 3])))
    assert feats.shape == (3, cfg.vision.clip_embed_dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and not torch.allclose(feats[0], feats[1])
    again = build_encoder("internvideo2", weights=weights, random_weights=True, size="tiny")
    torch.testing.assert_close(again.encode(again.preprocess(_windows([60, 48, 3]))), feats)


@pytest.mark.slow
def test_random_tiny_text_shapes():
    text = build_encoder("internvideo2_text", random_weights=True, size="tiny")
    cfg = variant_config(STAGE2, "tiny")
    assert (text.info.stream, text.info.dim) == ("internvideo2_text", cfg.text.hidden_size)
    out = text.encode_texts(["a man", "dog"])
    assert [tuple(t.shape) for t, _ in out] == [(6, cfg.text.hidden_size), (5, cfg.text.hidden_size)]
    assert all(torch.equal(tokens[0], pooled) for tokens, pooled in out)     # BERT: pooled = [CLS]
    with pytest.raises(MrhdError, match="empty"):
        text.encode_texts([" "])

    llama = build_encoder("internvideo2_text", weights="internvideo2-clip-6b", random_weights=True, size="tiny")
    cfg = variant_config(CLIP6B, "tiny")
    assert llama.info.dim == cfg.text.hidden_size and "summarize:" in llama.info.recipe["tokenizer"]
    ids = llama.tokenize(["a man"])[0]          # byte stand-in tokenizer: BOS, "summarize:a man", EOS
    assert ids == [1] + [3 + b for b in b"summarize:a man"] + [2]
    long_ids = llama.tokenize(["word " * 100])[0]
    assert len(long_ids) == cfg.text.max_length and long_ids[0] == 1 and long_ids[-1] == 2
    out = llama.encode_texts(["a man", "dog"])
    assert [tuple(t.shape) for t, _ in out] == [(17, cfg.text.hidden_size), (15, cfg.text.hidden_size)]
    assert all(torch.equal(tokens[-1], pooled) for tokens, pooled in out)    # LLaMA: pooled = EOS


def test_full_size_key_names_and_shapes():
    """The full layouts hold the released names and shapes (built on the meta device: no memory)."""
    with torch.device("meta"):
        stage2 = InternVideo2Model(variant_config(STAGE2, "full")).state_dict()
        clip = InternVideo2Model(variant_config(CLIP6B, "full")).state_dict()
    shapes = {k: tuple(v.shape) for k, v in stage2.items()}
    assert shapes["vision_encoder.patch_embed.proj.weight"] == (1408, 3, 1, 14, 14)
    assert shapes["vision_encoder.blocks.39.mlp.fc1.weight"] == (6144, 1408)
    assert shapes["vision_encoder.blocks.39.attn.q_norm.weight"] == (1408,)
    assert "vision_encoder.blocks.40.norm1.weight" not in shapes
    assert shapes["vision_encoder.clip_projector.cross_attn.proj.weight"] == (768, 1408)
    assert shapes["vision_encoder.clip_decoder.5.head.weight"] == (3200, 1408)
    assert shapes["vision_encoder.final_clip_decoder.head.weight"] == (768, 768)
    assert shapes["vision_encoder.img_pos_embed"] == (1, 257, 1408)
    assert shapes["text_encoder.bert.encoder.layer.19.crossattention.self.key.weight"] == (1024, 1408)
    assert "text_encoder.bert.encoder.layer.18.crossattention.self.key.weight" not in shapes
    assert shapes["text_encoder.cls.predictions.decoder.weight"] == (30522, 1024)
    assert shapes["vision_proj.weight"] == (512, 768) and shapes["text_proj.weight"] == (512, 1024)
    assert tuple(clip["vision_encoder.blocks.47.mlp.fc2.weight"].shape) == (3200, 12800)
    assert tuple(clip["vision_encoder.pos_embed"].shape) == (1, 1 + 8 * 256, 3200)
    assert not any(k.startswith(("text_encoder.bert", "vision_encoder.clip_decoder")) for k in clip)
    assert tuple(clip["text_encoder.text_projection"].shape) == (4096, 768)
    assert tuple(clip["text_encoder.transformer.layers.31.mlp.gate_proj.weight"].shape) == (11008, 4096)
    assert tuple(clip["text_encoder.transformer.embed_tokens.weight"].shape) == (49954, 4096)


# --- checkpoints with the released key names -----------------------------------------------------

def _rms(x, w, eps=1e-6):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _heads(t, h):
    b, n, c = t.shape
    return t.reshape(b, n, h, c // h).transpose(1, 2)


def _attend(q, k, v, h, mask=None):
    d = q.shape[-1] // h
    q, k, v = _heads(q, h), _heads(k, h), _heads(v, h)
    scores = (q * d ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).flatten(2)


def reference_video(sd: dict, cfg, video: torch.Tensor) -> torch.Tensor:
    """The authors' forward written out from the raw state dict (internvideo2.py, naive path)."""
    v = cfg.vision
    p = "vision_encoder."
    x = F.conv3d(video, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"],
                 stride=(v.tubelet_size, v.patch_size, v.patch_size))
    x = x.flatten(3).permute(0, 2, 3, 1)                      # B, T, HW, C
    x = x.reshape(x.shape[0], -1, v.embed_dim)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[p + "pos_embed"]
    for i in range(v.depth):
        b = f"{p}blocks.{i}."
        h = _rms(x, sd[b + "norm1.weight"])
        q, k, val = (h @ sd[b + "attn.qkv.weight"].T).chunk(3, dim=-1)
        q, k = _rms(q, sd[b + "attn.q_norm.weight"]), _rms(k, sd[b + "attn.k_norm.weight"])
        att = _attend(q, k, val, v.num_heads) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        x = x + sd[b + "ls1.gamma"] * att
        h = _rms(x, sd[b + "norm2.weight"])
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + sd[b + "ls2.gamma"] * (h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"])
    c = p + "clip_projector."

    def ln(t, name):
        return F.layer_norm(t, (v.embed_dim,), sd[c + name + ".weight"], sd[c + name + ".bias"], 1e-5)

    q = ln(x.mean(1, keepdim=True), "norm1_q") @ sd[c + "cross_attn.q.weight"].T + sd[c + "cross_attn.q_bias"]
    k = ln(x, "norm1_k") @ sd[c + "cross_attn.k.weight"].T + sd[c + "cross_attn.k_bias"]
    val = ln(x, "norm1_v") @ sd[c + "cross_attn.v.weight"].T + sd[c + "cross_attn.v_bias"]
    out = _attend(q, k, val, v.attn_pool_heads)
    return (out @ sd[c + "cross_attn.proj.weight"].T + sd[c + "cross_attn.proj.bias"]).squeeze(1)


def reference_text(sd: dict, cfg, ids: list[int]) -> torch.Tensor:
    """xbert ``mode="text"`` written out: embeddings + LayerNorm, post-norm layers below fusion."""
    t = cfg.text
    p = "text_encoder.bert."
    ids_t = torch.tensor([ids])

    def ln(x, name):
        return F.layer_norm(x, (t.hidden_size,), sd[name + ".weight"], sd[name + ".bias"], t.layer_norm_eps)

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    x = (sd[p + "embeddings.word_embeddings.weight"][ids_t] + sd[p + "embeddings.token_type_embeddings.weight"][0]
         + sd[p + "embeddings.position_embeddings.weight"][: len(ids)])
    x = ln(x, p + "embeddings.LayerNorm")
    for i in range(t.fusion_layer):
        b = f"{p}encoder.layer.{i}."
        s = b + "attention.self."
        att = _attend(lin(x, s + "query"), lin(x, s + "key"), lin(x, s + "value"), t.num_heads)
        x = ln(lin(att, b + "attention.output.dense") + x, b + "attention.output.LayerNorm")
        h = F.gelu(lin(x, b + "intermediate.dense"))
        x = ln(lin(h, b + "output.dense") + x, b + "output.LayerNorm")
    return x[0]


@pytest.mark.slow
def test_stage2_checkpoint_loads_strictly_and_matches_reference(tmp_path):
    model = _randomised(STAGE2, seed=3)
    cfg = model.cfg
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["text_encoder.bert.embeddings.position_ids"] = torch.arange(cfg.text.max_position_embeddings)[None]
    path = _write(state, tmp_path / "InternVideo2-stage2_1b-224p-f4.pt")

    video = build_encoder("internvideo2", weights=str(path), size="tiny")
    assert video.info.weights == path.name
    picked = video.preprocess(_windows([60, 33], seed=4))
    with torch.no_grad():
        expected = reference_video(state, cfg, video.pixels(picked))
    torch.testing.assert_close(video.encode(picked), expected, atol=1e-5, rtol=1e-5)
    assert not hasattr(video.model, "text_encoder")          # the video stream holds no BERT

    text = build_encoder("internvideo2_text", weights=str(path), size="tiny")
    assert not hasattr(text.model, "vision_encoder")
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    ids = text.tokenize(["A man cooks pizza in the kitchen!", "dog"])
    assert ids[0] == [vocab[w] for w in ["[CLS]", "a", "man", "cook", "##s", "pizza", "in", "the", "kitchen",
                                         "!", "[SEP]"]]
    assert ids[1] == [vocab["[CLS]"], vocab["dog"], vocab["[SEP]"]]
    long_ids = text.tokenize([" ".join(["dog"] * 100)])[0]
    assert len(long_ids) == cfg.text.max_length and long_ids[-1] == vocab["[SEP]"]
    out = text.encode_texts(["A man cooks pizza in the kitchen!", "dog"])
    for (tokens, pooled), seq in zip(out, ids):
        with torch.no_grad():
            ref = reference_text(state, cfg, seq)
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)     # padding in the batch changes nothing
        torch.testing.assert_close(pooled, ref[0], atol=1e-5, rtol=1e-5)


def test_f4_position_table_is_resampled_to_8_frames(tmp_path):
    model = _randomised(STAGE2, seed=5)
    cfg = model.cfg
    g2 = cfg.vision.grid ** 2
    state = dict(model.state_dict())
    spatial = torch.randn(1, 1, g2, cfg.vision.embed_dim)
    for key in ("vision_encoder.pos_embed", "vision_encoder.clip_pos_embed"):   # a 4-frame table, constant in time
        state[key] = torch.cat([torch.randn(1, 1, cfg.vision.embed_dim),
                                spatial.expand(1, 4, g2, -1).reshape(1, 4 * g2, -1)], dim=1)
    path = _write(state, tmp_path / "f4.pt", wrapper="model")
    video = build_encoder("internvideo2", weights=str(path), size="tiny")
    table = video.model.vision_encoder.pos_embed.detach()
    assert table.shape == (1, 1 + 8 * g2, cfg.vision.embed_dim)
    torch.testing.assert_close(table[:, 1:].reshape(8, g2, -1), spatial[0].expand(8, g2, -1))
    torch.testing.assert_close(table[:, :1], state["vision_encoder.pos_embed"][:, :1])


def _peft_layout(state: dict, seed: int, base_layer: bool) -> tuple[dict, dict]:
    """The LLaMA tower's q/v projections as peft LoRA (r=16, alpha=32) leaves them, and the merged
    weights they stand for."""
    gen = torch.Generator().manual_seed(seed)
    out, merged = {}, {}
    for key, value in state.items():
        if key.startswith("text_encoder.transformer.") and key.endswith(("q_proj.weight", "v_proj.weight")):
            base = key[: -len(".weight")]
            a = torch.randn(16, value.shape[1], generator=gen) * 0.1
            b = torch.randn(value.shape[0], 16, generator=gen) * 0.1
            out[base + (".base_layer.weight" if base_layer else ".weight")] = value
            out[base + ".lora_A.default.weight"], out[base + ".lora_B.default.weight"] = a, b
            merged[key] = value + 2.0 * b @ a
        else:
            out[key] = value
    return out, merged


@pytest.mark.parametrize("base_layer", [True, False])
def test_clip_checkpoint_video_and_llama_text(tmp_path, base_layer):
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = _randomised(CLIP6B, seed=6)
    state, merged = _peft_layout(dict(model.state_dict()), seed=7, base_layer=base_layer)
    state["text_encoder.transformer.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)   # old transformers
    path = _write(state, tmp_path / "InternVideo2_CLIP_6B.pth", wrapper=None)
    words = ["<unk>", "<s>", "</s>", "summarize", ":", "a", "man", "cooks", "pizza"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))

    video = build_encoder("internvideo2", weights=str(path), size="tiny")
    picked = video.preprocess(_windows([40], seed=7))
    with torch.no_grad():
        expected = reference_video(state, model.cfg, video.pixels(picked))
    torch.testing.assert_close(video.encode(picked), expected, atol=1e-5, rtol=1e-5)

    text = build_encoder("internvideo2_text", weights=str(path), size="tiny")
    ids = text.tokenize(["a man cooks pizza", "a dog"])
    assert ids[0] == [1, 3, 4, 5, 6, 7, 8, 2] and ids[1] == [1, 3, 4, 5, 0, 2]   # BOS summarize : ... EOS
    from transformers import LlamaModel

    from mrhd.encoders.internvideo2.text_llama import hf_config

    reference = LlamaModel(hf_config(model.cfg.text)).eval()
    prefix = "text_encoder.transformer."
    own = {k[len(prefix):]: merged.get(k, v) for k, v in model.state_dict().items() if k.startswith(prefix)}
    reference.load_state_dict(own, strict=True)
    out = text.encode_texts(["a man cooks pizza", "a dog"])
    for (tokens, pooled), seq in zip(out, ids):
        with torch.no_grad():
            ref = reference(input_ids=torch.tensor([seq])).last_hidden_state[0]
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, ref[-1], atol=1e-5, rtol=1e-5)
    clip_embed = text.model.text_encoder.embed(tokens[None], torch.ones(1, len(ids[1]), dtype=torch.long))
    torch.testing.assert_close(clip_embed[0], ref[-1] @ state["text_encoder.text_projection"])

    vision_only = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
    only = build_encoder("internvideo2", weights=str(_write(vision_only, tmp_path / "v.pth")), size="tiny")
    torch.testing.assert_close(only.encode(picked), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(MrhdError, match="missing"):
        build_encoder("internvideo2_text", weights=str(tmp_path / "v.pth"), size="tiny")


def test_mismatched_checkpoints_are_refused(tmp_path):
    state = dict(_randomised(STAGE2, seed=8).state_dict())
    missing = {k: v for k, v in state.items() if k != "vision_encoder.blocks.1.ls2.gamma"}
    with pytest.raises(MrhdError, match="1 missing"):
        build_encoder("internvideo2", weights=str(_write(missing, tmp_path / "missing.pt")), size="tiny")
    extra = dict(state, **{"vision_encoder.blocks.9.norm1.weight": torch.ones(64)})
    with pytest.raises(MrhdError, match="unexpected"):
        build_encoder("internvideo2", weights=str(_write(extra, tmp_path / "extra.pt")), size="tiny")
    with pytest.raises(MrhdError, match="shape"):   # a full-size file read as tiny
        bad = dict(state, **{"vision_encoder.cls_token": torch.zeros(1, 1, 1408)})
        build_encoder("internvideo2", weights=str(_write(bad, tmp_path / "bad.pt")), size="tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MrhdError, match="not an InternVideo2 checkpoint at all: it is a text file"):
        build_encoder("internvideo2", weights=str(tmp_path / "junk.pt"), size="tiny")
    torch.save({"model": {"encoder.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(MrhdError, match="not an InternVideo2 checkpoint"):
        build_encoder("internvideo2", weights=str(tmp_path / "other.pt"), size="tiny")


# --- through the job runner (mrhd extract) -------------------------------------------------------

@pytest.mark.slow
def test_extract_job_stores_what_the_encoders_compute(tmp_path, monkeypatch):
    """The job decodes with the encoder's window_frame_picker (only 8 frames per window converted) and
    stores what the encoder computes from the whole windows of the old path."""
    from mrhd.extract import decode
    from mrhd.extract.decode import VideoDecoder
    from mrhd.extract.job import ExtractJob
    from mrhd.extract.sources import expand_inputs
    from mrhd.extract.synthetic import write_video
    from mrhd.features.store import FeatureStore, store_path

    video_path = write_video(tmp_path / "vid_a.mp4", duration=5.0, fps=10, width=64, height=48, audio=False)
    (tmp_path / "ann.jsonl").write_text('{"qid": 7, "query": "a man cooks", "vid": "vid_a"}\n')
    video = build_encoder("internvideo2", random_weights=True, size="tiny")
    text = build_encoder("internvideo2_text", random_weights=True, size="tiny")
    job = ExtractJob([video], tmp_path / "out", text_encoders=[text], batch_size=2, num_workers=0, progress=False)
    converted = []
    real_to_rgb = decode.to_rgb
    monkeypatch.setattr(decode, "to_rgb", lambda frame, size=224: converted.append(frame.pts) or real_to_rgb(frame, size))
    job.run_videos(expand_inputs([video_path]).sources)
    monkeypatch.undo()
    assert len(converted) == 8 + 8 + 8   # the picked frames only, of 20 + 20 + 10
    job.run_queries(tmp_path / "ann.jsonl")
    assert not job.summary.failures

    windows = [array for kind, _, array in VideoDecoder(video_path, ["window_frames"])]
    assert len(windows) == 3 and all(len(w) == 20 for w in windows[:2])       # 10 fps, [0,2) [2,4) [4,5)
    expected = video.encode(video.preprocess(windows)).numpy()
    store = FeatureStore(store_path(tmp_path / "out", "internvideo2"), "r")
    np.testing.assert_allclose(store.read("vid_a"), expected, atol=1e-5, rtol=1e-5)
    assert store.read_attrs("vid_a")["n_clips"] == 3
    tokens, pooled = FeatureStore(store_path(tmp_path / "out", "internvideo2_text"), "r").read_text(7)
    ref_tokens, ref_pooled = text.encode_texts(["a man cooks"])[0]
    np.testing.assert_allclose(tokens, ref_tokens.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), atol=1e-5, rtol=1e-5)
