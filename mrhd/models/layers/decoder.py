"""DETR's transformer decoder (Moment-DETR), sequence-first.

Learned query positions are added to queries and keys of the self-attention and to the queries of
the cross-attention; every layer's output goes through the final ``norm`` (the official decoder
returns all intermediate layers normed), so ``forward`` returns (num_layers, nq, B, d).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mrhd.models.layers.activation import make_activation
from mrhd.models.layers.encoder import with_pos


class TransformerDecoderLayer(nn.Module):
    """Keys ``self_attn``, ``multihead_attn``, ``linear1/2``, ``norm1/2/3`` (official names)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = make_activation(activation)
        self.normalize_before = normalize_before

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        if self.normalize_before:
            t2 = self.norm1(tgt)
            q = k = with_pos(t2, query_pos)
            tgt = tgt + self.dropout1(self.self_attn(q, k, value=t2)[0])
            t2 = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(
                query=with_pos(t2, query_pos), key=with_pos(memory, pos), value=memory,
                key_padding_mask=memory_key_padding_mask)[0])
            return tgt + self.dropout3(self.feed_forward(self.norm3(tgt)))
        q = k = with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt)[0]))
        tgt2 = self.multihead_attn(query=with_pos(tgt, query_pos), key=with_pos(memory, pos), value=memory,
                                   key_padding_mask=memory_key_padding_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        return self.norm3(tgt + self.dropout3(self.feed_forward(tgt)))


class TransformerDecoder(nn.Module):
    """Stack of decoder layers; returns every layer's output after the shared final ``norm``."""

    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        out = tgt
        intermediate = []
        for layer in self.layers:
            out = layer(out, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos,
                        query_pos=query_pos)
            intermediate.append(self.norm(out))
        return torch.stack(intermediate)
