"""BLIP-2 streams: tiny random models, a Hugging Face checkpoint written here, a test-written vocab."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrhd.encoders import blip2
from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError

WORDS = ["a", "man", "cook", "##s", "pizza", "in", "the", "kitchen", "dog", "run", ",", "'"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny ``Blip2ForImageTextRetrieval`` saved like Salesforce/blip2-itm-vit-g, plus a vocab.txt."""
    from transformers import Blip2ForImageTextRetrieval

    folder = tmp_path_factory.mktemp("blip2") / "blip2-itm-tiny"
    torch.manual_seed(123)
    model = Blip2ForImageTextRetrieval(blip2.Blip2Config.of_size("tiny").to_hf()).eval()
    with torch.no_grad():   # the HF init leaves query tokens at zero; give them content
        model.query_tokens.normal_(0, 0.5)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    return folder, model


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


@pytest.mark.slow
def test_random_tiny_shapes_and_store_info():
    video = build_encoder("blip2", random_weights=True, size="tiny")
    text = build_encoder("blip2_text", random_weights=True, size="tiny")
    cfg = blip2.Blip2Config.of_size("tiny")
    assert video.input_kind == "clip_frame" and video.autocast_dtype == torch.float16
    assert (video.info.stream, video.info.dim, video.info.weights) == ("blip2", cfg.qformer_hidden, "random")
    assert (text.info.stream, text.info.dim, text.info.weights) == ("blip2_text", cfg.qformer_hidden, "random")
    recipe = json.loads(video.info.recipe_json())
    assert recipe["mean"] == list(blip2.CLIP_MEAN) and recipe["std"] == list(blip2.CLIP_STD)
    assert recipe["interpolation"] == "bicubic" and "first query token" in recipe["layer"]
    assert "[CLS]" in json.loads(text.info.recipe_json())["pooled"]

    feats = video.encode(video.preprocess(_frames(3)))
    assert feats.shape == (3, cfg.qformer_hidden) and feats.dtype == torch.float32
    assert not torch.allclose(feats[0], feats[1])
    out = text.encode_texts(["a man cooks", "dog"])
    assert [tuple(t.shape) for t, _ in out] == [(11, cfg.qformer_hidden), (5, cfg.qformer_hidden)]  # char pieces
    assert all(torch.equal(tokens[0], pooled) for tokens, pooled in out)
    # same seed -> same random weights (the --random-weights contract)
    again = build_encoder("blip2", random_weights=True, size="tiny")
    torch.testing.assert_close(again.encode(again.preprocess(_frames(3))), feats)


def test_preprocess_is_clip_normalised():
    video = build_encoder("blip2", random_weights=True, size="tiny")
    frames = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    frames[1] = 255
    assert video.preprocess(frames).dtype == torch.uint8
    x = video.pixels(video.preprocess(frames))
    assert x.shape == (2, 3, 224, 224)
    for c in range(3):
        assert x[0, c].allclose(torch.tensor(-blip2.CLIP_MEAN[c] / blip2.CLIP_STD[c]))
        assert x[1, c].allclose(torch.tensor((1 - blip2.CLIP_MEAN[c]) / blip2.CLIP_STD[c]))
    assert video.preprocess(np.zeros((1, 180, 320, 3), dtype=np.uint8)).shape == (1, 224, 224, 3)


def test_video_feature_is_first_query_token_of_checkpoint(checkpoint):
    folder, reference = checkpoint
    video = build_encoder("blip2", weights=str(folder))
    assert video.info.weights == folder.name
    frames = video.preprocess(_frames(2, seed=1))
    feats = video.encode(frames)
    pixels = video.pixels(frames)
    with torch.no_grad():   # manual forward through the transformers modules of the saved model
        image_embeds = reference.vision_model(pixel_values=pixels).last_hidden_state
        queries = reference.qformer(query_embeds=reference.query_tokens.expand(2, -1, -1),
                                    encoder_hidden_states=image_embeds).last_hidden_state
        # and HF's own retrieval head: normalize(vision_projection(all query tokens))
        itc = reference(pixel_values=pixels, input_ids=torch.tensor([[2, 5, 3]]))
    torch.testing.assert_close(feats, queries[:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(feats, queries[:, 1], atol=1e-3)
    projected = F.normalize(reference.vision_projection(feats), dim=-1)
    torch.testing.assert_close(projected, itc.image_embeds[:, 0], atol=1e-5, rtol=1e-5)


def test_text_tokens_and_pooled_from_checkpoint(checkpoint):
    from transformers import Blip2TextModelWithProjection

    folder, _ = checkpoint
    text = build_encoder("blip2_text", weights=str(folder))
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    # LAVIS caption normalisation: lower case, '.' and '!' dropped; [CLS] ... [SEP] kept
    ids = text.tokenize(["A man COOKS pizza, in the kitchen!", "dog."])
    expected = ["[CLS]", "a", "man", "cook", "##s", "pizza", ",", "in", "the", "kitchen", "[SEP]"]
    assert ids[0] == [vocab[w] for w in expected]
    assert ids[1] == [vocab["[CLS]"], vocab["dog"], vocab["[SEP]"]]
    assert text.tokenize(["a cat"])[0] == [vocab["[CLS]"], vocab["a"], vocab["[UNK]"], vocab["[SEP]"]]

    out = text.encode_texts(["A man cooks pizza, in the kitchen!", "dog."])
    hf = Blip2TextModelWithProjection.from_pretrained(folder).eval()
    for (tokens, pooled), seq in zip(out, ids):
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor([seq])).last_hidden_state[0]
        assert tokens.shape == (len(seq), text.dim)
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)   # batch padding changes nothing
        torch.testing.assert_close(pooled, ref[0], atol=1e-5, rtol=1e-5)


def test_user_errors(checkpoint, tmp_path):
    from transformers import Blip2VisionModelWithProjection

    folder, _ = checkpoint
    text = build_encoder("blip2_text", weights=str(folder))
    with pytest.raises(MrhdError, match="empty query"):
        text.encode_texts(["  "])
    with pytest.raises(MrhdError, match="config.json"):
        build_encoder("blip2", weights=str(tmp_path))
    # a vision-only checkpoint has no Q-Former text embeddings: refuse, do not run half-random
    vision_only = tmp_path / "vision_only"
    torch.manual_seed(0)
    Blip2VisionModelWithProjection(blip2.Blip2Config.of_size("tiny").to_hf()).save_pretrained(vision_only)
    (vision_only / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    with pytest.raises(MrhdError, match="lacks"):
        build_encoder("blip2_text", weights=str(vision_only))
    with pytest.raises(MrhdError, match="size"):
        build_encoder("blip2", random_weights=True, size="huge")


def _to_lavis(hf_state: dict) -> tuple[dict, dict]:
    """HF ITM keys -> (LAVIS blip2_pretrained.pth state, eva_vit_g.pth state), LAVIS' own names."""
    qformer, vit = {"temp": torch.tensor(0.07)}, {}
    for key, value in hf_state.items():
        if key.startswith("vision_model.encoder.layers."):
            _, _, _, idx, rest = key.split(".", 4)
            rest = (rest.replace("layer_norm1", "norm1").replace("layer_norm2", "norm2")
                    .replace("self_attn.projection", "attn.proj").replace("self_attn.qkv", "attn.qkv"))
            if rest == "attn.qkv.bias":
                dim = value.shape[0] // 3
                vit[f"blocks.{idx}.attn.q_bias"], vit[f"blocks.{idx}.attn.v_bias"] = value[:dim], value[2 * dim:]
            else:
                vit[f"blocks.{idx}.{rest}"] = value
        elif key.startswith("vision_model.embeddings."):
            rest = key[len("vision_model.embeddings."):]
            vit[{"class_embedding": "cls_token", "position_embedding": "pos_embed"}.get(rest) or
                rest.replace("patch_embedding", "patch_embed.proj")] = value
        elif key.startswith("vision_model.post_layernorm."):
            qformer["ln_vision." + key.split(".")[-1]] = value
        elif key.startswith("embeddings."):
            qformer["Qformer.bert." + key] = value
        elif key.startswith("qformer.layernorm."):
            qformer["Qformer.bert.embeddings.LayerNorm." + key.split(".")[-1]] = value
        elif key.startswith("qformer.encoder."):
            qformer["Qformer.bert." + key[len("qformer."):].replace("attention.attention", "attention.self")
                    .replace("crossattention.attention", "crossattention.self")] = value
        else:
            qformer[key.replace("vision_projection", "vision_proj").replace("text_projection", "text_proj")] = value
    qformer["Qformer.cls.predictions.bias"] = torch.zeros(3)   # LAVIS' MLM head: not used here
    return qformer, vit


def test_lavis_checkpoint_matches_hf_weights(checkpoint, tmp_path):
    folder, reference = checkpoint
    reference = copy.deepcopy(reference)
    with torch.no_grad():   # EVA has q and v biases but no k bias
        for layer in reference.vision_model.encoder.layers:
            dim = layer.self_attn.embed_dim
            layer.self_attn.qkv.bias.normal_()
            layer.self_attn.qkv.bias[dim:2 * dim] = 0
    qformer_state, vit_state = _to_lavis(reference.state_dict())
    torch.save({"model": qformer_state}, tmp_path / "blip2_pretrained.pth")
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    with pytest.raises(MrhdError, match="eva_vit_g.pth"):
        build_encoder("blip2", weights=str(tmp_path / "blip2_pretrained.pth"))
    torch.save(vit_state, tmp_path / "eva_vit_g.pth")

    video = build_encoder("blip2", weights=str(tmp_path / "blip2_pretrained.pth"))
    assert video.info.weights == "blip2_pretrained.pth"
    frames = video.preprocess(_frames(2, seed=2))
    pixels = video.pixels(frames)
    with torch.no_grad():
        image_embeds = reference.vision_model(pixel_values=pixels).last_hidden_state
        expected = reference.qformer(query_embeds=reference.query_tokens.expand(2, -1, -1),
                                     encoder_hidden_states=image_embeds).last_hidden_state[:, 0]
    torch.testing.assert_close(video.encode(frames), expected, atol=1e-5, rtol=1e-5)

    text = build_encoder("blip2_text", weights=str(tmp_path / "blip2_pretrained.pth"))
    from_hf = build_encoder("blip2_text", weights=str(folder))
    for (tokens, pooled), (ref_tokens, ref_pooled) in zip(text.encode_texts(["a man cooks pizza"]),
                                                          from_hf.encode_texts(["a man cooks pizza"])):
        torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)


def test_lavis_conversion_drops_what_lavis_drops():
    """EVA-g's 40th block (LAVIS builds depth 39), the MLM head, temp and buffers are not loaded;
    EVA's q/v biases become one qkv bias with zeros for k."""
    assert blip2._beyond_lavis_depth("visual_encoder.blocks.39.mlp.fc1.weight")
    assert not blip2._beyond_lavis_depth("visual_encoder.blocks.38.mlp.fc1.weight")
    state = {"visual_encoder.blocks.0.attn.q_bias": torch.ones(4), "visual_encoder.blocks.0.attn.v_bias": 2 * torch.ones(4),
             "Qformer.cls.predictions.bias": torch.zeros(3), "temp": torch.tensor(0.07),
             "Qformer.bert.embeddings.position_ids": torch.arange(5),
             "Qformer.bert.encoder.layer.0.crossattention.self.key.weight": torch.zeros(2, 2)}
    out = blip2.lavis_to_hf(state)
    assert set(out) == {"vision_model.encoder.layers.0.self_attn.qkv.bias",
                        "qformer.encoder.layer.0.crossattention.attention.key.weight"}
    assert out["vision_model.encoder.layers.0.self_attn.qkv.bias"].tolist() == [1.0] * 4 + [0.0] * 4 + [2.0] * 4
