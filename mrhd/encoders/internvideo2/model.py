"""The whole InternVideo2 checkpoint as one module tree, with the released top-level names.

Stage 2 (``internvideo2_stage2_visual.py InternVideo2_Stage2_visual``): ``vision_encoder``,
``text_encoder`` (xbert ``BertForMaskedLM``), ``vision_proj`` / ``text_proj`` (-> 512), ``itm_head``,
``temp``. CLIP (``internvideo2_clip.py InternVideo2_CLIP``): ``vision_encoder``, ``text_encoder``
(LLaMA + ``text_projection``) and ``temp``. Either tower can be left out (``parts``) so the video stream
does not hold BERT-large and the text stream does not hold the 1B ViT.
"""

from __future__ import annotations

import torch
from torch import nn

from mrhd.encoders.internvideo2.config import STAGE2, InternVideo2Config
from mrhd.encoders.internvideo2.text_bert import BertTextEncoder
from mrhd.encoders.internvideo2.text_llama import LlamaTextEncoder
from mrhd.encoders.internvideo2.vision import InternVideo2Vision


class InternVideo2Model(nn.Module):
    def __init__(self, cfg: InternVideo2Config, parts: tuple[str, ...] = ("vision", "text")):
        super().__init__()
        self.cfg = cfg
        if "vision" in parts:
            self.vision_encoder = InternVideo2Vision(cfg.vision)
        if "text" in parts:
            self.text_encoder = (BertTextEncoder(cfg.text) if cfg.variant == STAGE2
                                 else LlamaTextEncoder(cfg.text, cfg.vision.clip_embed_dim))
        if cfg.variant == STAGE2:
            self.vision_proj = nn.Linear(cfg.vision.clip_embed_dim, cfg.embed_dim)
            self.text_proj = nn.Linear(cfg.text.hidden_size, cfg.embed_dim)
            self.itm_head = nn.Linear(cfg.text.hidden_size, 2)
        self.temp = nn.Parameter(torch.ones([]) * 0.07)


def build(cfg: InternVideo2Config, parts: tuple[str, ...] = ("vision", "text")) -> InternVideo2Model:
    return InternVideo2Model(cfg, parts)
