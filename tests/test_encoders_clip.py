"""CLIP encoders: text token features against a hand-written forward, SOT/EOT and truncation,
pooled vs encode_text, pixels, and loading checkpoints written in OpenAI's formats."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrhd.encoders import clip as clip_mod
from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError

TEXTS = ["a man is cooking pasta in a small kitchen", "",
         "dog " * 100,   # 100 body tokens: must be cut to 77 with EOT last
         "Sunset!!"]


@pytest.fixture(scope="module")
def text_encoder():
    return build_encoder("clip_text", random_weights=True, size="tiny")


def _manual_ln_final(model, tokens: torch.Tensor) -> torch.Tensor:
    """Pre-LN causal transformer written out from the weights (OpenAI CLIP model.py layer order)."""
    x = model.token_embedding.weight[tokens] + model.positional_embedding
    n, length, width = x.shape
    causal = torch.full((length, length), float("-inf")).triu(1)
    for blk in model.transformer.resblocks:
        attn = blk.attn
        heads = attn.num_heads
        h = F.layer_norm(x, (width,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
        q, k, v = (h @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + causal
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
        x = x + a @ attn.out_proj.weight.T + attn.out_proj.bias
        h = F.layer_norm(x, (width,), blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps)
        h = blk.mlp.c_fc(h)
        h = h * torch.sigmoid(1.702 * h)   # QuickGELU (tiny config uses OpenAI's activation)
        x = x + blk.mlp.c_proj(h)
    return F.layer_norm(x, (width,), model.ln_final.weight, model.ln_final.bias, model.ln_final.eps)


def test_text_tokens_match_manual_forward(text_encoder):
    enc = text_encoder
    tokens = enc.tokenize(TEXTS)
    with torch.no_grad():
        manual = _manual_ln_final(enc.model, tokens)
    out = enc.encode_texts(TEXTS)
    assert len(out) == len(TEXTS)
    for i, (toks, pooled) in enumerate(out):
        body = enc.tokenizer.encode(TEXTS[i])
        length = min(len(body) + 2, 77)
        assert toks.shape == (length, enc.dim) and toks.dtype == torch.float32
        assert tokens[i, 0] == clip_mod.SOT_TOKEN and tokens[i, length - 1] == clip_mod.EOT_TOKEN
        torch.testing.assert_close(toks, manual[i, :length], atol=1e-5, rtol=1e-5)
        expected_pooled = manual[i, length - 1] @ enc.model.text_projection
        torch.testing.assert_close(pooled, expected_pooled, atol=1e-5, rtol=1e-5)


def test_truncation_keeps_eot_and_pooled_equals_encode_text(text_encoder):
    enc = text_encoder
    tokens = enc.tokenize(TEXTS)
    assert tokens.shape == (len(TEXTS), 77)
    long_ids = tokens[2]
    assert long_ids[-1] == clip_mod.EOT_TOKEN and (long_ids[1:-1] != clip_mod.EOT_TOKEN).all()
    out = enc.encode_texts(TEXTS)
    assert out[2][0].shape[0] == 77 and out[1][0].shape[0] == 2   # empty text: SOT + EOT
    with torch.no_grad():
        reference = enc.model.encode_text(tokens)
    for i, (_, pooled) in enumerate(out):
        torch.testing.assert_close(pooled, reference[i], atol=1e-5, rtol=1e-5)


def test_text_alone_equals_text_in_batch(text_encoder):
    alone = text_encoder.encode_texts([TEXTS[3]])[0]
    batched = text_encoder.encode_texts(TEXTS)[3]
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)
    assert text_encoder.encode_texts([]) == []


def test_video_pixels_and_encode_image():
    enc = build_encoder("clip", random_weights=True, size="tiny")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    batch = enc.preprocess(list(frames))   # workers ship uint8; pixels are made on the device
    assert batch.shape == (3, 224, 224, 3) and batch.dtype == torch.uint8
    mean = np.array(clip_mod.CLIP_MEAN, dtype=np.float32)
    std = np.array(clip_mod.CLIP_STD, dtype=np.float32)
    expected = ((frames.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    pixels = enc.pixels(batch)
    assert pixels.shape == (3, 3, 224, 224) and pixels.dtype == torch.float32
    np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-5)
    feats = enc.encode(batch)
    assert feats.shape == (3, enc.dim) and enc.dim == 32
    with torch.no_grad():
        reference = enc.model.encode_image(torch.from_numpy(expected))
    torch.testing.assert_close(feats, reference, atol=1e-5, rtol=1e-5)
    # the preprocessor goes to decoding workers on its own, without the model
    assert pickle.loads(pickle.dumps(enc.preprocessor))(frames[:1]).shape == (1, 224, 224, 3)
    with pytest.raises(ValueError):
        enc.preprocess([np.zeros((100, 224, 3), np.uint8)])


def test_info_and_recipe():
    enc = build_encoder("clip", random_weights=True, size="tiny")
    assert enc.name == "clip" and enc.info.weights == "random" and enc.input_kind == "clip_frame"
    recipe = json.loads(enc.info.recipe_json())
    assert recipe["mean"] == list(clip_mod.CLIP_MEAN) and recipe["std"] == list(clip_mod.CLIP_STD)
    assert recipe["fps"] == 0.5 and "encode_image" in recipe["layer"]
    assert enc.autocast_dtype == torch.float16 and not enc.model.training
    with pytest.raises(MrhdError):
        build_encoder("clip", random_weights=True, size="huge")


@pytest.mark.slow
def test_full_random_is_vit_b32():
    import open_clip

    enc = build_encoder("clip", random_weights=True)
    assert enc.dim == 512 and enc.info.recipe["arch"]["name"] == "ViT-B-32"
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32", pretrained=None).state_dict()
    ours = enc.model.state_dict()
    assert set(ours) == set(reference)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    frames = np.zeros((1, 224, 224, 3), np.uint8)
    assert enc.encode(enc.preprocess(frames)).shape == (1, 512)
    text = clip_mod.ClipTextEncoder(enc.model, clip_mod.ClipConfig(), "random")
    toks, pooled = text.encode_texts(["a cat"])[0]
    assert toks.shape == (4, 512) and pooled.shape == (512,)


def _openai_like_model():
    """Widths of 64 so the OpenAI loader's heads = width // 64 rule holds, as in the real file."""
    torch.manual_seed(1)
    cfg = clip_mod.ClipConfig(embed_dim=32, vision_width=64, vision_layers=1, text_width=64,
                              text_heads=1, text_layers=2, quick_gelu=True)
    model = clip_mod._create_open_clip(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _outputs(model, frames, tokens):
    with torch.no_grad():
        return model.encode_image(frames), model.encode_text(tokens)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("fmt", ["state_dict", "jit"])
def test_loads_openai_checkpoint(tmp_path, fmt):
    from open_clip.model import convert_weights_to_fp16

    source = _openai_like_model()
    path = tmp_path / "ViT-B-32.pt"
    if fmt == "state_dict":
        # OpenAI's state dict: weights of linear/conv/attention layers in fp16, plus the 3 ints
        half = copy.deepcopy(source)
        convert_weights_to_fp16(half)
        sd = half.state_dict()
        sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                  vocab_size=torch.tensor(49408))
        torch.save(sd, path)
        source = half.float()   # what the file holds, back in fp32
    else:
        example = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
        traced = torch.jit.trace_module(source, {"encode_image": example[:1], "encode_text": example[1:]})
        traced.save(str(path))

    video = build_encoder("clip", weights=str(path))
    text = build_encoder("clip_text", weights=str(path))
    assert video.info.weights == "ViT-B-32.pt" and video.dim == 32 and text.dim == 64
    loaded = {k: v for k, v in video.model.state_dict().items()}
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value.float()), key
    frames = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    tokens = text.tokenize(TEXTS[:2])
    img_ref, txt_ref = _outputs(source, clip_mod.clip_pixels(frames), tokens)
    torch.testing.assert_close(video.encode(frames), img_ref, atol=1e-5, rtol=1e-5)
    pooled = torch.stack([p for _, p in text.encode_texts(TEXTS[:2])])
    torch.testing.assert_close(pooled, txt_ref, atol=1e-5, rtol=1e-5)


def test_bad_checkpoints_are_user_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(MrhdError):
        build_encoder("clip", weights=str(garbage))
    sd = _openai_like_model().state_dict()
    del sd["ln_final.weight"]
    partial = tmp_path / "partial.pt"
    torch.save(sd, partial)
    with pytest.raises(MrhdError):
        build_encoder("clip", weights=str(partial))
    sd = _openai_like_model().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    extra = tmp_path / "extra.pt"
    torch.save(sd, extra)
    with pytest.raises(MrhdError, match="unexpected"):
        build_encoder("clip", weights=str(extra))
    sd = _openai_like_model().state_dict()
    sd["ln_final.bias"] = torch.zeros(3)
    wrong = tmp_path / "wrong.pt"
    torch.save(sd, wrong)
    with pytest.raises(MrhdError, match="does not match"):
        build_encoder("clip", weights=str(wrong))


def test_default_weights_come_from_the_registry_cache(tmp_path, monkeypatch):
    """No weights given: the registry id resolves to the cached file (no network involved)."""
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path))
    cached = tmp_path / "weights" / clip_mod.WEIGHTS_ID / "ViT-B-32.pt"
    cached.parent.mkdir(parents=True)
    source = _openai_like_model()
    torch.save(source.state_dict(), cached)
    enc = build_encoder("clip")
    assert enc.info.weights == clip_mod.WEIGHTS_ID and enc.info.recipe["weights"] == clip_mod.WEIGHTS_ID
    assert torch.equal(enc.model.visual.proj, source.visual.proj)
    with pytest.raises(MrhdError):
        build_encoder("clip", weights="no-such-weights-id")


def _tower_positions(enc) -> list[int]:
    """The positions of each run of ``enc``'s tower from now on (its ``token_states`` wrapped on the
    instance; ``del enc.token_states`` unwraps it)."""
    positions: list[int] = []
    run = enc.token_states

    def counting(tokens):
        positions.append(tokens.shape[1])
        return run(tokens)

    enc.token_states = counting
    return positions


@pytest.mark.parametrize("size", ["tiny", pytest.param("full", marks=pytest.mark.slow)])
def test_packed_tower_equals_open_clips_forward(size):
    """On a CPU the tower runs with its linear weights packed once for oneDNN
    (:class:`~mrhd.encoders.clip.PackedTextTower`): the same features as open_clip's own blocks to
    1e-5, for padded batches, the real length and all 77 positions."""
    enc = build_encoder("clip_text", random_weights=True, size=size)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: open_clip's forward runs, nothing to compare")
    assert enc.packed is not None
    tokens = enc.tokenize(["a man opens the fridge", "dog", "a white bar sweeps across a colourful screen, then stops",
                           "dog " * 100])
    m = enc.model
    with torch.inference_mode():
        for length in (77, 16, 3):
            ids = tokens[:, :length]
            x = m.token_embedding(ids) + m.positional_embedding[:length]
            reference = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
            torch.testing.assert_close(enc.token_states(ids), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", ["tiny", pytest.param("full", marks=pytest.mark.slow)])
def test_text_tower_runs_on_the_real_length_and_equals_the_77_position_run(size):
    """The tower is causal: a batch runs only as far as its longest EOT, with the same features
    (to fp tolerance) as the run over all 77 positions that Moment-DETR's extractor made."""
    enc = build_encoder("clip_text", random_weights=True, size=size)
    texts = ["a man opens the fridge", "dog", "a white bar sweeps across a colourful screen, then stops"]
    lengths = [len(enc.tokenizer.encode(t)) + 2 for t in texts]
    positions = _tower_positions(enc)
    out = enc.encode_texts(texts)
    assert positions == [max(lengths)] and max(lengths) < 20   # one run, not 77 positions
    tokens = enc.tokenize(texts)
    with torch.no_grad():
        full_run = enc.token_states(tokens)          # all 77 positions
        pooled_ref = enc.model.encode_text(tokens)   # open_clip's own 77-position forward
    assert full_run.shape[1] == 77
    for i, (toks, pooled) in enumerate(out):
        assert toks.shape == (lengths[i], enc.dim)
        torch.testing.assert_close(toks, full_run[i, : lengths[i]], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, pooled_ref[i], atol=2e-5, rtol=1e-5)


def test_text_batches_are_grouped_by_length(text_encoder, monkeypatch):
    """More texts than one batch holds: each batch runs to its own longest text, and every text
    gets the features it has alone."""
    monkeypatch.setattr(clip_mod, "TEXT_BATCH", 2)
    texts = ["dog", "a man is cooking pasta in a small kitchen while the dog waits", "a cat", "red car"]
    positions = _tower_positions(text_encoder)
    try:
        together = text_encoder.encode_texts(texts)
    finally:
        del text_encoder.token_states   # the module-scoped fixture's own method again
    lengths = sorted(len(text_encoder.tokenizer.encode(t)) + 2 for t in texts)
    assert positions == [lengths[1], lengths[3]]
    for text, (toks, pooled) in zip(texts, together):
        alone_toks, alone_pooled = text_encoder.encode_texts([text])[0]
        torch.testing.assert_close(toks, alone_toks, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, alone_pooled, atol=1e-5, rtol=1e-5)
