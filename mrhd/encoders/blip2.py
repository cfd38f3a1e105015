"""BLIP-2 streams ``blip2`` (video, 768) and ``blip2_text`` (query tokens, 768) for VideoLights.

What VideoLights ran (nautilus-ai/VideoLights ``extract_feature/extract_query_blip_features_qvhl.py``):
LAVIS ``load_model_and_preprocess("blip2_feature_extractor", "pretrain")`` -- EVA ViT-g/14 (39 blocks)
+ Q-Former with 32 learned queries, stage-1 weights ``blip2_pretrained.pth`` -- then per 0.5-fps frame
``extract_features(mode="image").image_embeds[:, 0, :]`` (the FIRST query token of the Q-Former's
``last_hidden_state``, before ``vision_proj`` and unnormalised) and per query
``extract_features(mode="text").text_embeds`` (Q-Former text ``last_hidden_state`` incl. [CLS] and
[SEP]; pooled = the [CLS] row).

Which Hugging Face checkpoint and class hold these weights: ``Salesforce/blip2-itm-vit-g``
(``Blip2ForImageTextRetrieval``). transformers' ``convert_blip_2_original_to_pytorch.py`` makes it
from LAVIS ``blip2_image_text_matching`` / ``pretrain``, which is the same ``Blip2Qformer`` class
loading the same ``blip2_pretrained.pth`` as ``blip2_feature_extractor`` / ``pretrain``. The
``blip2-opt-*`` / ``blip2-flan-t5-*`` checkpoints are NOT usable: their Q-Former went on training in
stage 2 and has no text feed-forward. We load the video side with ``Blip2VisionModelWithProjection``
(keys ``vision_model.*``, ``query_tokens``, ``qformer.*``) and the text side with
``Blip2TextModelWithProjection`` (``embeddings.*``, ``qformer.*``): both read that checkpoint and each
ignores the other's keys; a missing key is an error (a wrong checkpoint must not run half-random).

Weights (``--weights blip2=...``): a folder in the Hugging Face format (``save_pretrained`` of
blip2-itm-vit-g: config.json, weights, vocab.txt), or LAVIS' own ``blip2_pretrained.pth`` (the
registry id ``blip2-pretrain`` downloads it), converted on load with the key map of transformers'
``convert_blip_2_original_to_pytorch.py``; LAVIS keeps the frozen EVA ViT-g in ``eva_vit_g.pth``,
which must then sit beside it (unless the .pth has ``visual_encoder.*``), as must bert-base-uncased's
``vocab.txt`` for the text stream. Sizes of a LAVIS file are read off its tensors (head counts by
LAVIS' rules: EVA ``dim // 88``, BERT 64-wide heads). ``--random-weights`` text uses a synthetic
character vocabulary (no tokenizer download).

Differences from LAVIS, all numerically neutral:
- LAVIS' EVA ViT has no final norm; it applies ``ln_vision`` to the ViT output. The conversion maps
  ``ln_vision`` to ``vision_model.post_layernorm``, so ``vision_model(...).last_hidden_state`` is
  exactly LAVIS' ``ln_vision(visual_encoder(image))``.
- LAVIS' EVA attention has ``q_bias`` and ``v_bias`` only; the conversion stores them as one qkv bias
  with zeros for k.
- LAVIS' BERT embeddings apply LayerNorm to word + position embeddings (no token types); transformers
  splits that into ``embeddings`` (word + position) and ``qformer.layernorm``. The text path runs
  the Q-Former with no query tokens (``query_length=0``), hence no cross-attention and the text
  feed-forward (``intermediate`` / ``output``), as LAVIS' ``Qformer.bert(input_ids, ...)``.
- Precision: LAVIS runs the ViT in fp16 under autocast on CUDA (``vit_precision="fp16"``) and casts
  its output to fp32 before the Q-Former, which runs in fp32; the text path is fp32. We do the same:
  on CUDA the ViT's weights are half and the Q-Former runs with autocast disabled.
- Frames: VideoLights' ``run_on_video/data_utils.py VideoProcessor(framerate=0.5, size=224,
  centercrop=True).read_raw_image_from_video_file`` runs HERO's CLIP command line (``fps``, the
  short-video rule, ``scale=W:H``, centre ``crop``, rgb24) and wraps each frame in a PIL image: the
  ``clip_frame`` stream, byte for byte (``mrhd.extract.pixels``; autorotation included).
- Pixels: LAVIS' ``blip_image_eval`` = Resize((224, 224), bicubic) + ToTensor + CLIP mean/std. Our
  input is the CLIP stream's 224x224 crop, so the resize is the identity there (PIL returns a copy
  for an equal size): the same pixels as VideoLights. Only other sizes (direct API use) are resized
  with torch bicubic (antialiased), not PIL.
- Text: LAVIS' ``blip_caption`` eval processor first lower-cases, replaces ``.!"()*#:;~`` by spaces,
  squeezes spaces and keeps 50 words; the BERT tokeniser (bert-base-uncased vocabulary) then adds
  [CLS]/[SEP] with no truncation (we cap at the 512 positions the model has).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.base import (
    EncoderInfo,
    TextEncoder,
    VideoEncoder,
    pad_token_ids,
    require_words,
    resolve_encoder_weights,
)
from mrhd.encoders.factory import register_encoder
from mrhd.encoders.pixels import (
    CLI_PIXELS,
    CLIP_MEAN,
    CLIP_STD,
    PIXELS_VERSION,
    normalise_pixels,
    resize_frames,
)
from mrhd.encoders.wordpiece import wordpiece_tokenizer
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import load_checkpoint, unwrap_state_dict

WEIGHTS_ID = "blip2-pretrain"
HF_CHECKPOINT = "Salesforce/blip2-itm-vit-g"
IMAGE_SIZE = 224
MAX_WORDS = 50          # LAVIS BlipCaptionProcessor default
SEED = 0                # --random-weights


@dataclass
class Blip2Config:
    """Sizes of the EVA ViT and the Q-Former; ``full`` is blip2-itm-vit-g, ``tiny`` a CPU test model."""

    vision_hidden: int = 1408
    vision_layers: int = 39
    vision_heads: int = 16
    vision_mlp: int = 6144
    patch_size: int = 14
    qformer_hidden: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_mlp: int = 3072
    num_query_tokens: int = 32
    vocab_size: int = 30523   # bert-base-uncased + LAVIS' added "[DEC]" bos token

    @classmethod
    def of_size(cls, size: str) -> Blip2Config:
        if size == "full":
            return cls()
        if size == "tiny":
            # widths keep LAVIS' head sizes (EVA 88, BERT 64) so a LAVIS file's sizes can be inferred
            return cls(vision_hidden=176, vision_layers=2, vision_heads=2, vision_mlp=256, patch_size=32,
                       qformer_hidden=128, qformer_layers=2, qformer_heads=2, qformer_mlp=256,
                       num_query_tokens=8)
        raise MrhdError(f"unknown encoder size {size!r}; use 'full' or 'tiny'")

    def to_hf(self):
        """The transformers ``Blip2Config`` of this size (Q-Former with its text feed-forward)."""
        from transformers import Blip2Config as HFBlip2Config

        vision = dict(hidden_size=self.vision_hidden, num_hidden_layers=self.vision_layers,
                      num_attention_heads=self.vision_heads, intermediate_size=self.vision_mlp,
                      patch_size=self.patch_size, image_size=IMAGE_SIZE, qkv_bias=True)
        qformer = dict(hidden_size=self.qformer_hidden, num_hidden_layers=self.qformer_layers,
                       num_attention_heads=self.qformer_heads, intermediate_size=self.qformer_mlp,
                       vocab_size=self.vocab_size, encoder_hidden_size=self.vision_hidden,
                       cross_attention_frequency=2, use_qformer_text_input=True)
        return HFBlip2Config(vision_config=vision, qformer_config=qformer,
                             num_query_tokens=self.num_query_tokens)


def pre_caption(text: str, max_words: int = MAX_WORDS) -> str:
    """LAVIS ``BlipCaptionProcessor.pre_caption``: the text normalisation VideoLights applied."""
    text = re.sub(r"([.!\"()*#:;~])", " ", text.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def _load_hf(model_cls, folder: Path):
    """``model_cls.from_pretrained`` that refuses a checkpoint lacking any of the class' weights."""
    try:
        model, info = model_cls.from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise MrhdError(f"cannot load BLIP-2 weights from {folder}: {err}".splitlines()[0]) from err
    _refuse_missing(folder, info["missing_keys"])
    return model


def _refuse_missing(source: Path, missing) -> None:
    if missing:
        missing = sorted(missing)
        raise MrhdError(f"{source} lacks {len(missing)} BLIP-2 weights (e.g. {missing[0]}); use "
                        f"{HF_CHECKPOINT} or LAVIS' blip2_pretrained.pth with eva_vit_g.pth beside it")


# --- LAVIS checkpoints (registry id blip2-pretrain = LAVIS blip2_pretrained.pth) -----------------
# Key mapping read from transformers' convert_blip_2_original_to_pytorch.py (huggingface/transformers).
_LAVIS_VISION_RENAMES = (
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embedding."),
    ("ln_vision.", "vision_model.post_layernorm."),
)
_LAVIS_BLOCK_RENAMES = (("norm1.", "layer_norm1."), ("norm2.", "layer_norm2."), ("attn.qkv.", "self_attn.qkv."),
                        ("attn.proj.", "self_attn.projection."), ("mlp.", "mlp."))
LAVIS_VIT_FILE = "eva_vit_g.pth"   # LAVIS keeps the frozen EVA ViT-g in its own file
LAVIS_VIT_DEPTH = 39               # eva_vit.py create_eva_vit_g(depth=39): EVA-g minus its last block


def _read_torch(path: Path) -> dict:
    """A LAVIS checkpoint's state dict (``{"model": ...}`` or bare), loaded tensors-only."""
    ckpt = load_checkpoint(path, what="BLIP-2 checkpoint",
                           fix="expected LAVIS' blip2_pretrained.pth (with eva_vit_g.pth beside it)")
    return unwrap_state_dict(ckpt, ("model",))


def lavis_to_hf(state: dict) -> dict:
    """LAVIS ``Blip2Qformer`` keys -> transformers ``Blip2ForImageTextRetrieval`` keys.

    EVA's separate q/v biases become one qkv bias with zeros for k (EVA has no k bias); the Q-Former's
    ``attention.self`` becomes ``attention.attention``; the MLM head (``Qformer.cls``), ``temp`` and
    buffers are dropped; ViT blocks beyond those present are not invented."""
    out: dict = {}
    for key, value in state.items():
        new = None
        if key.startswith("Qformer.bert.embeddings."):
            rest = key[len("Qformer.bert.embeddings."):]
            if rest.startswith("LayerNorm."):
                new = "qformer.layernorm." + rest[len("LayerNorm."):]
            elif rest.startswith(("word_embeddings.", "position_embeddings.")):
                new = "embeddings." + rest
        elif key.startswith("Qformer.bert.encoder."):
            new = "qformer." + key[len("Qformer.bert."):].replace(".self.", ".attention.")
        elif key in ("query_tokens",):
            new = key
        elif key.startswith(("vision_proj.", "text_proj.", "itm_head.")):
            head, rest = key.split(".", 1)
            new = {"vision_proj": "vision_projection", "text_proj": "text_projection"}.get(head, head) + "." + rest
        elif key.startswith("visual_encoder.blocks."):
            _, _, idx, rest = key.split(".", 3)
            if rest in ("attn.q_bias", "attn.v_bias"):
                continue
            for old, repl in _LAVIS_BLOCK_RENAMES:
                if rest.startswith(old):
                    new = f"vision_model.encoder.layers.{idx}." + repl + rest[len(old):]
        else:
            for old, repl in _LAVIS_VISION_RENAMES:
                if key == old or (old.endswith(".") and key.startswith(old)):
                    new = repl + key[len(old):]
        if new is not None:
            out[new] = value
    for key, q_bias in state.items():
        if key.startswith("visual_encoder.blocks.") and key.endswith(".attn.q_bias"):
            idx = key.split(".")[2]
            v_bias = state[key.replace("q_bias", "v_bias")]
            out[f"vision_model.encoder.layers.{idx}.self_attn.qkv.bias"] = torch.cat(
                [q_bias, torch.zeros_like(v_bias), v_bias])
    return out


def config_from_lavis(hf_state: dict) -> Blip2Config:
    """Sizes read off the converted tensors; head counts follow LAVIS (EVA: ``dim // 88`` in
    ``eva_vit.py create_eva_vit_g``; Q-Former: BERT's 64-wide heads)."""
    def count(prefix):
        return len({k[len(prefix):].split(".")[0] for k in hf_state if k.startswith(prefix)})

    # the cross-attention keys read the ViT's width, so the text side needs no ViT weights
    vision_hidden = hf_state["qformer.encoder.layer.0.crossattention.attention.key.weight"].shape[1]
    qformer_hidden = hf_state["query_tokens"].shape[-1]
    cfg = Blip2Config(
        vision_hidden=vision_hidden, vision_heads=max(1, vision_hidden // 88),
        qformer_hidden=qformer_hidden, qformer_layers=count("qformer.encoder.layer."),
        qformer_heads=max(1, qformer_hidden // 64),
        qformer_mlp=hf_state["qformer.encoder.layer.0.intermediate_query.dense.weight"].shape[0],
        num_query_tokens=hf_state["query_tokens"].shape[1],
        vocab_size=hf_state["embeddings.word_embeddings.weight"].shape[0],
    )
    if "vision_model.embeddings.patch_embedding.weight" in hf_state:
        cfg.vision_layers = count("vision_model.encoder.layers.")
        cfg.vision_mlp = hf_state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
        cfg.patch_size = hf_state["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    return cfg


def _beyond_lavis_depth(key: str) -> bool:
    """LAVIS builds EVA ViT-g with ``depth=39`` (``eva_vit.py create_eva_vit_g``) and loads the ViT
    file non-strictly, so a 40th block in the file is ignored; we drop it the same way."""
    if not key.startswith("visual_encoder.blocks."):
        return False
    return int(key.split(".")[2]) >= LAVIS_VIT_DEPTH


def _load_lavis(model_cls, path: Path, need_vision: bool):
    """A LAVIS checkpoint converted into ``model_cls``; the ViT comes from ``eva_vit_g.pth`` beside
    it when the checkpoint itself has no ``visual_encoder`` weights."""
    state = _read_torch(path)
    if need_vision and not any(k.startswith("visual_encoder.") for k in state):
        vit_file = path.parent / LAVIS_VIT_FILE
        if not vit_file.is_file():
            raise MrhdError(f"{path} has no EVA ViT-g weights; put LAVIS' {LAVIS_VIT_FILE} beside it "
                            f"({vit_file}) or use the {HF_CHECKPOINT} folder")
        state = dict(state)
        state.update({"visual_encoder." + k: v for k, v in _read_torch(vit_file).items()})
    state = {k: v for k, v in state.items() if not _beyond_lavis_depth(k)}
    hf_state = lavis_to_hf(state)
    try:
        cfg = config_from_lavis(hf_state)
    except (KeyError, IndexError) as err:
        raise MrhdError(f"{path} is not a LAVIS BLIP-2 checkpoint (no {err}); "
                        "expected blip2_pretrained.pth") from None
    if not need_vision:
        cfg.vision_layers = 1
    model = model_cls(cfg.to_hf())
    keep = {k: v for k, v in hf_state.items() if k in model.state_dict()}
    missing, _ = model.load_state_dict(keep, strict=False)
    _refuse_missing(path, [k for k in missing if not k.endswith("position_ids")])
    return model, cfg


def _load_model(model_cls, path: Path, need_vision: bool):
    """(model, tokenizer folder) from a Hugging Face folder or a LAVIS file."""
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MrhdError(f"{path} is not a BLIP-2 checkpoint folder (no config.json); pass the folder of "
                            f"{HF_CHECKPOINT} saved with save_pretrained, or LAVIS' blip2_pretrained.pth")
        return _load_hf(model_cls, path), path
    model, _ = _load_lavis(model_cls, path, need_vision)
    return model, path.parent


def _random_model(model_cls, cfg: Blip2Config):
    torch.manual_seed(SEED)
    return model_cls(cfg.to_hf())


def video_recipe(cfg: Blip2Config, size: str) -> dict:
    return {
        "model": "BLIP-2 pretrain feature extractor (EVA ViT-g/14 + Q-Former)",
        "checkpoint": HF_CHECKPOINT, "size": size, "num_query_tokens": cfg.num_query_tokens,
        "input": "clip_frame", "frames": "ffmpeg fps=0.5, one frame per 2-s clip, short side 224 + centre crop",
        "pixels": CLI_PIXELS, "pixels_version": PIXELS_VERSION,
        "resize": [IMAGE_SIZE, IMAGE_SIZE], "interpolation": "bicubic", "scale": 1 / 255,
        "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
        "layer": "qformer.last_hidden_state[:, 0] (first query token), before vision_proj, unnormalised",
        "precision": "vit fp16 on cuda, q-former fp32",
    }


def text_recipe(cfg: Blip2Config, size: str) -> dict:
    return {
        "model": "BLIP-2 pretrain Q-Former text path (no query tokens)", "checkpoint": HF_CHECKPOINT,
        "size": size, "text_preprocess": f"LAVIS blip_caption: lower, strip .!\"()*#:;~, {MAX_WORDS} words",
        "tokenizer": "bert-base-uncased WordPiece, [CLS] ... [SEP]",
        "tokens": "qformer.last_hidden_state incl. [CLS] and [SEP]", "pooled": "[CLS] row",
        "precision": "fp32",
    }


def frames_224(clips) -> torch.Tensor:
    """uint8 frames ``[n, H, W, 3]`` (array or list) -> uint8 ``[n, 224, 224, 3]``, bicubic-resized
    (and rounded, as LAVIS' PIL ``Resize`` would) only where the size differs. Runs in the decode
    workers; uint8 keeps the batches that travel to the main process 4x smaller than pixels."""
    frames = torch.from_numpy(np.ascontiguousarray(np.stack(list(clips)) if not isinstance(clips, np.ndarray)
                                                   else clips))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"blip2 expects uint8 frames [n, H, W, 3], got {tuple(frames.shape)}")
    return resize_frames(frames, IMAGE_SIZE)


class Blip2VideoEncoder(VideoEncoder):
    """One 0.5-fps frame per 2-s clip -> the first Q-Former query token (768)."""

    input_kind = "clip_frame"
    autocast_dtype = torch.float16
    store_dtype = "float32"     # VideoLights stored these float32

    def __init__(self, model, info: EncoderInfo, device="cpu"):
        super().__init__(info, device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":   # LAVIS vit_precision="fp16"; norms stay fp32 under autocast
            self.model.vision_model.half()
        self.model.qformer.float()
        self.model.query_tokens.data = self.model.query_tokens.data.float()
        self.preprocessor = frames_224   # picklable: the job runner's decode workers run it

    def preprocess(self, clips) -> torch.Tensor:
        """uint8 ``[n, H, W, 3]`` frames -> uint8 ``[n, 224, 224, 3]``."""
        return frames_224(clips)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> the ViT's input ``[n, 3, 224, 224]`` (CLIP mean/std) on the device."""
        return normalise_pixels(batch.to(self.device), CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.model
        pixels = self.pixels(batch).to(model.vision_model.embeddings.patch_embedding.weight.dtype)
        image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state.float()
        with torch.autocast(device_type=self.device.type, enabled=False):
            queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
            out = model.qformer(query_embeds=queries, encoder_hidden_states=image_embeds,
                                encoder_attention_mask=image_mask).last_hidden_state
        return out[:, 0, :].float()


class Blip2TextEncoder(TextEncoder):
    """A sentence -> Q-Former text states ``[L, 768]`` ([CLS] ... [SEP]) and the [CLS] row."""

    store_dtype = "float32"

    def __init__(self, model, tokenizer, info: EncoderInfo, device="cpu"):
        super().__init__(info, device)
        self.model = model.eval().float().to(self.device)
        self.tokenizer = tokenizer
        self.max_length = model.config.qformer_config.max_position_embeddings

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text after LAVIS' caption normalisation, [CLS] and [SEP] included."""
        require_words(texts)
        enc = self.tokenizer([pre_caption(t) for t in texts], truncation=True, max_length=self.max_length)
        return [list(ids) for ids in enc["input_ids"]]

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if not texts:
            return []
        ids = self.tokenize(texts)
        input_ids, mask = pad_token_ids(ids)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.autocast(device_type=self.device.type, enabled=False):
            embeds = self.model.embeddings(input_ids=input_ids)
            states = self.model.qformer(query_embeds=embeds, query_length=0,
                                        attention_mask=mask).last_hidden_state.float().cpu()
        return [(states[row, :len(seq)].clone(), states[row, 0].clone()) for row, seq in enumerate(ids)]


def load_tokenizer(folder: Path | None):
    """The bert-base-uncased WordPiece tokenizer from ``folder`` (None: the synthetic vocabulary)."""
    return wordpiece_tokenizer(folder, saved_ok=True,
                               missing=f"{folder} has no vocab.txt or tokenizer.json; put bert-base-uncased's "
                                       "vocab.txt (the BLIP-2 tokenizer) beside the checkpoint")


def build_video(*, device="cpu", weights=None, random_weights=False, size="full") -> Blip2VideoEncoder:
    from transformers import Blip2VisionModelWithProjection

    cfg = Blip2Config.of_size(size)
    source = resolve_encoder_weights(weights, WEIGHTS_ID, random_weights=random_weights, folders=True)
    if source.path is None:
        model = _random_model(Blip2VisionModelWithProjection, cfg)
    else:
        model, _ = _load_model(Blip2VisionModelWithProjection, source.path, need_vision=True)
        cfg = Blip2Config(num_query_tokens=model.config.num_query_tokens,
                          qformer_hidden=model.config.qformer_config.hidden_size)
    info = EncoderInfo(stream="blip2", dim=cfg.qformer_hidden, weights=source.label, recipe=video_recipe(cfg, size))
    return Blip2VideoEncoder(model, info, device)


def build_text(*, device="cpu", weights=None, random_weights=False, size="full") -> Blip2TextEncoder:
    from transformers import Blip2TextModelWithProjection

    cfg = Blip2Config.of_size(size)
    source = resolve_encoder_weights(weights, WEIGHTS_ID, random_weights=random_weights, folders=True)
    if source.path is None:
        model, tokenizer = _random_model(Blip2TextModelWithProjection, cfg), load_tokenizer(None)
    else:
        model, folder = _load_model(Blip2TextModelWithProjection, source.path, need_vision=False)
        tokenizer = load_tokenizer(folder)
        cfg = Blip2Config(num_query_tokens=model.config.num_query_tokens,
                          qformer_hidden=model.config.qformer_config.hidden_size)
    info = EncoderInfo(stream="blip2_text", dim=cfg.qformer_hidden, weights=source.label,
                       recipe=text_recipe(cfg, size))
    return Blip2TextEncoder(model, tokenizer, info, device)


register_encoder("blip2", build_video)
register_encoder("blip2_text", build_text)
