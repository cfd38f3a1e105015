"""Sizes of the InternVideo2 towers: the released variants and tiny random ones for CPU tests.

Constants come from OpenGVLab/InternVideo ``InternVideo2/multi_modality``:
``models/backbones/internvideo2/internvideo2.py`` (``pretrain_internvideo2_1b_patch14_224``),
``demo/internvideo2_stage2_config.py`` (1B stage 2: 4 frames, separate image/video position
embeddings, BERT-large text with ``fusion_layer`` 19, 512-d projections) and
``scripts/evaluation/clip/zero_shot/6B/config_*.py`` (CLIP-6B: 3200 wide, 48 blocks, 25 heads,
8 frames, ``init_values`` 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrhd.errors import MrhdError

STAGE2 = "1b-stage2"   # InternVideo2-Stage2_1B-224p-f4 (SG-DETR)
CLIP6B = "clip-6b"     # InternVideo2-CLIP-6B-224p-f8 (released QVHighlights features)


@dataclass
class VisionConfig:
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_hidden: int = 6144            # int(1408 * 48 / 11)
    patch_size: int = 14
    img_size: int = 224
    num_frames: int = 8               # frames the model runs on (pos_embed is interpolated to it)
    tubelet_size: int = 1
    qkv_bias: bool = False
    qk_norm: bool = True
    init_values: float = 1e-5
    attn_pool_heads: int = 16
    clip_embed_dim: int = 768         # width of the attention-pooled output = the stored feature
    # stage-2 pretraining extras present in its checkpoint (unused at inference)
    sep_image_video_pos_embed: bool = False
    clip_return_layer: int = 0        # number of ``clip_decoder`` heads; 0 = none
    clip_teacher_embed_dim: int = 3200
    clip_teacher_final_dim: int = 0   # ``final_clip_decoder`` width; 0 = none

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def t_size(self) -> int:
        return self.num_frames // self.tubelet_size


@dataclass
class BertConfig:
    """xbert BERT as InternVideo2 stage 2 uses it (``configs/config_bert_large.json``)."""

    vocab_size: int = 30522
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    fusion_layer: int = 19            # text-only mode runs layers [0, fusion_layer)
    encoder_width: int = 1408         # cross-attention input = vision ``d_model``
    max_length: int = 40              # ``max_txt_l``: 40 in demo/internvideo2_stage2_config.py (32 in pretraining)


@dataclass
class LlamaTextConfig:
    """The CLIP text tower: LLaMA-7B as InternVL-C ships it (chinese_alpaca_lora_7b sizes)."""

    vocab_size: int = 49954
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    intermediate_size: int = 11008
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    max_length: int = 80              # internvideo2_clip_text.py Tokenizer: max_length=80


@dataclass
class InternVideo2Config:
    variant: str
    vision: VisionConfig
    text: BertConfig | LlamaTextConfig | None = None
    embed_dim: int = 512              # stage-2 vision_proj / text_proj width
    heads: tuple[str, ...] = field(default_factory=tuple)   # extra top-level keys of the checkpoint


def variant_config(variant: str, size: str = "full") -> InternVideo2Config:
    if size not in ("full", "tiny"):
        raise MrhdError(f"unknown encoder size {size!r}; use 'full' or 'tiny'")
    if variant == STAGE2:
        if size == "full":
            vision = VisionConfig(sep_image_video_pos_embed=True, clip_return_layer=6,
                                  clip_teacher_final_dim=768)
            text = BertConfig()
        else:
            vision = VisionConfig(embed_dim=64, depth=2, num_heads=4, mlp_hidden=128, patch_size=32,
                                  attn_pool_heads=4, clip_embed_dim=48, sep_image_video_pos_embed=True,
                                  clip_return_layer=2, clip_teacher_embed_dim=40, clip_teacher_final_dim=24)
            text = BertConfig(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64,
                              max_position_embeddings=64, fusion_layer=2, encoder_width=64)
        return InternVideo2Config(STAGE2, vision, text, embed_dim=512 if size == "full" else 16,
                                  heads=("vision_proj", "text_proj", "itm_head", "temp"))
    if variant == CLIP6B:
        if size == "full":
            vision = VisionConfig(embed_dim=3200, depth=48, num_heads=25, mlp_hidden=12800, init_values=0.1)
            text = LlamaTextConfig()
        else:
            vision = VisionConfig(embed_dim=64, depth=2, num_heads=4, mlp_hidden=128, patch_size=32,
                                  attn_pool_heads=4, clip_embed_dim=48, init_values=0.1)
            text = LlamaTextConfig(vocab_size=320, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                                   max_position_embeddings=128)
        return InternVideo2Config(CLIP6B, vision, text, heads=("temp",))
    raise MrhdError(f"unknown InternVideo2 variant {variant!r}; use {STAGE2!r} or {CLIP6B!r}")
