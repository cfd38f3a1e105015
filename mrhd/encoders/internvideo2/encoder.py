"""The ``internvideo2`` (video, 768) and ``internvideo2_text`` (query tokens) streams."""

from __future__ import annotations

import functools

import torch

from mrhd.encoders.base import (
    EncoderInfo,
    TextEncoder,
    VideoEncoder,
    pad_token_ids,
    require_words,
    resolve_encoder_weights,
)
from mrhd.encoders.internvideo2 import checkpoint as ckpt_io
from mrhd.encoders.internvideo2.config import CLIP6B, STAGE2, InternVideo2Config, variant_config
from mrhd.encoders.internvideo2.frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentMiddles,
    normalise,
    pick_frames,
)
from mrhd.encoders.internvideo2.model import build
from mrhd.encoders.internvideo2.text_llama import PREFIX
from mrhd.encoders.internvideo2.tokenizer import bert_tokenizer, llama_tokenizer
from mrhd.encoders.pixels import PIXELS_VERSION, WINDOW_PIXELS

DEFAULT_WEIGHTS = "internvideo2-1b-stage2"
VARIANT_OF_ID = {"internvideo2-1b-stage2": STAGE2, "internvideo2-clip-6b": CLIP6B}
SEED = 0   # --random-weights


def _place(model, device: torch.device, cuda_dtype: torch.dtype | None):
    """fp32 on CPU; on CUDA the authors' precision (bf16 for the CLIP configs, fp32 for stage 2)."""
    dtype = cuda_dtype if device.type == "cuda" and cuda_dtype is not None else torch.float32
    return model.eval().to(device=device, dtype=dtype)


class InternVideo2VideoEncoder(VideoEncoder):
    """A 2-s window's frames -> 8 picked frames -> the attention-pooled vector (768)."""

    input_kind = "window_frames"
    autocast_dtype = torch.bfloat16   # CLIP: the authors evaluate in bf16 (use_bf16=True in its configs)
    store_dtype = "float32"

    def __init__(self, model, info: EncoderInfo, device="cpu"):
        super().__init__(info, device)
        if model.cfg.variant == STAGE2:   # the stage-2 demo config runs fp32 (use_half_precision=False)
            self.autocast_dtype = None
        self.model = _place(model, self.device, self.autocast_dtype)
        self.num_frames = model.cfg.vision.num_frames
        self.size = model.cfg.vision.img_size
        # the decoder converts only these frames of a window (8 of ~60 at 30 fps)
        self.window_frame_picker = SegmentMiddles(self.num_frames)
        # picklable: the job runner's decode workers run it, so only 8 uint8 frames per window travel
        self.preprocessor = functools.partial(pick_frames, num_frames=self.num_frames, size=self.size)

    def preprocess(self, clips) -> torch.Tensor:
        """Windows of uint8 ``[n_k, 224, 224, 3]`` frames (whole, or already picked by the decoder)
        -> the 8 picked, uint8 ``[n, 8, 224, 224, 3]``."""
        return pick_frames(clips, self.num_frames, self.size)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """Picked uint8 frames -> the model's float input ``[n, 3, 8, 224, 224]`` on the device."""
        return normalise(batch.to(self.device))

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.vision_encoder(self.pixels(batch)).float()


class InternVideo2TextEncoder(TextEncoder):
    """Per-token last hidden states of the variant's text tower and one pooled row.

    Stage 2 (BERT): ``[L, 1024]`` for [CLS] ... [SEP], pooled = [CLS]. CLIP (LLaMA): ``[L, 4096]``
    for BOS, "summarize:" + query, EOS; pooled = the EOS row."""

    store_dtype = "float32"

    def __init__(self, model, tokenizer, info: EncoderInfo, device="cpu"):
        super().__init__(info, device)
        self.llama = model.cfg.variant == CLIP6B
        self.model = _place(model, self.device, torch.bfloat16 if self.llama else None)
        self.tokenizer = tokenizer
        self.max_length = model.cfg.text.max_length

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        require_words(texts)
        if not self.llama:
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
            return [list(ids) for ids in enc["input_ids"]]
        # LlamaTokenizer(add_eos_token=True) with truncation keeps BOS and EOS around 78 tokens
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        return [[bos] + self.tokenizer.encode(PREFIX + text, add_special_tokens=False)[: self.max_length - 2] + [eos]
                for text in texts]

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if not texts:
            return []
        ids = self.tokenize(texts)
        input_ids, mask = pad_token_ids(ids)
        with torch.autocast(device_type=self.device.type, enabled=False):
            states = self.model.text_encoder(input_ids.to(self.device), mask.to(self.device)).float().cpu()
        pooled_at = [len(seq) - 1 if self.llama else 0 for seq in ids]
        return [(states[row, :len(seq)].clone(), states[row, pooled_at[row]].clone())
                for row, seq in enumerate(ids)]


def _model(weights: str | None, random_weights: bool, size: str, parts: tuple[str, ...], device="cpu"):
    """(model, weights name, folder of the checkpoint or None)."""
    if random_weights:   # the registry id still picks the variant (stage 2 or CLIP-6B)
        cfg = variant_config(VARIANT_OF_ID.get(weights or DEFAULT_WEIGHTS, STAGE2), size)
        torch.manual_seed(SEED)
        with torch.device(device):   # a full-size random 6B model is built where it will run
            return build(cfg, parts), "random", None
    source = resolve_encoder_weights(weights, DEFAULT_WEIGHTS)
    cfg, state = ckpt_io.config_for(ckpt_io.read_state_dict(source.path), size)
    with torch.device("meta"):   # tensors are assigned from the file: no second full-size copy
        model = build(cfg, parts)
    ckpt_io.load_into(model, state, source=str(source.path))
    return model, source.label, source.path.parent


def video_recipe(cfg: InternVideo2Config, size: str) -> dict:
    v = cfg.vision
    return {
        "model": f"InternVideo2 {cfg.variant} video encoder", "size": size,
        "input": "window_frames", "window_s": 2.0, "frames": v.num_frames,
        "frame_rule": "native-rate frames of [2k, 2k+2); segment middles (InternVideo2 get_frame_indices 'middle'), "
                      "last repeated when fewer",
        "resize": [v.img_size, v.img_size], "interpolation": "bicubic", "scale": 1 / 255,
        "pixels": WINDOW_PIXELS, "pixels_version": PIXELS_VERSION,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "layer": "vision_encoder.clip_projector (attention pooling) output, before vision_proj, unnormalised",
        "pos_embed_frames": v.t_size, "precision": "bf16 on cuda" if cfg.variant == CLIP6B else "fp32",
    }


def text_recipe(cfg: InternVideo2Config, size: str) -> dict:
    if cfg.variant == CLIP6B:
        return {
            "model": "InternVideo2-CLIP LLaMA-7B text tower (InternVL, LoRA merged)", "size": size,
            "tokenizer": f"LLaMA sentencepiece: BOS + {PREFIX!r} + query + EOS", "max_length": cfg.text.max_length,
            "tokens": "transformer.last_hidden_state of every token incl. BOS, prefix and EOS",
            "pooled": "EOS row, before text_projection", "precision": "bf16 on cuda",
        }
    return {
        "model": f"InternVideo2 {cfg.variant} BERT text encoder, mode='text'", "size": size,
        "tokenizer": "bert-large-uncased WordPiece, [CLS] ... [SEP], no prefix",
        "max_length": cfg.text.max_length,
        "tokens": f"output of layer {cfg.text.fusion_layer - 1} (the last before the fusion layers), "
                  "incl. [CLS] and [SEP], before text_proj",
        "pooled": "[CLS] row", "precision": "fp32",
    }


def build_video(*, device="cpu", weights=None, random_weights=False, size="full") -> InternVideo2VideoEncoder:
    model, name, _ = _model(weights, random_weights, size, parts=("vision",), device=device)
    info = EncoderInfo(stream="internvideo2", dim=model.cfg.vision.clip_embed_dim, weights=name,
                       recipe=video_recipe(model.cfg, size))
    return InternVideo2VideoEncoder(model, info, device)


def build_text(*, device="cpu", weights=None, random_weights=False, size="full") -> InternVideo2TextEncoder:
    model, name, folder = _model(weights, random_weights, size, parts=("text",), device=device)
    llama = model.cfg.variant == CLIP6B
    tokenizer = llama_tokenizer(folder, model.cfg.text.vocab_size) if llama else bert_tokenizer(folder)
    info = EncoderInfo(stream="internvideo2_text", dim=model.cfg.text.hidden_size, weights=name,
                       recipe=text_recipe(model.cfg, size))
    return InternVideo2TextEncoder(model, tokenizer, info, device)
