"""The InternVideo2 stage-2 text tower: xbert's BERT-large, run in its text-only mode.

Read from OpenGVLab/InternVideo ``InternVideo2/multi_modality/models/backbones/bert/xbert.py`` and
``bert/builder.py``: ``BertForMaskedLM`` (``bert`` without pooler + ``cls`` MLM head); embeddings
are word + token type (all 0) + absolute position, LayerNorm; layers from ``fusion_layer`` on carry
a cross-attention over the video tokens (keys/values from ``encoder_width``). Stage 2 encodes a
query with ``mode="text"``, which stops BEFORE the fusion layers, so the text features are the
output of layer ``fusion_layer - 1`` (19 of 24 layers for BERT-large); ``pooled = [CLS]``
(``internvideo2_stage2.py encode_text``). The fusion layers and the MLM head are built only so the
checkpoint loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from mrhd.encoders.internvideo2.config import BertConfig


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
             + self.position_embeddings(positions)[None])
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig, kv_width: int):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t):
            return t.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask)
        return out.transpose(1, 2).reshape(b, n, c)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig, in_width: int):
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig, kv_width: int):
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig, index: int):
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden_size)
        if index >= cfg.fusion_layer:   # video-text fusion: present in the checkpoint, unused here
            self.crossattention = BertAttention(cfg, cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg, i) for i in range(cfg.num_layers))


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)


class PredictionTransform(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class LMPredictionHead(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = PredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)   # bias shared with ``bias`` below
        self.bias = self.decoder.bias


class MLMHead(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.predictions = LMPredictionHead(cfg)


class BertTextEncoder(nn.Module):
    """``text_encoder.*`` of the stage-2 checkpoint; :meth:`forward` is xbert's ``mode="text"``."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.cls = MLMHead(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids and 0/1 mask -> ``[B, L, hidden]`` after layer ``fusion_layer - 1``."""
        x = self.bert.embeddings(input_ids)
        # xbert's extended mask: (1 - mask) * -10000 added to the scores
        additive = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0)
        for layer in self.bert.encoder.layer[: self.cfg.fusion_layer]:
            x = layer(x, additive)
        return x
