"""Transformer encoder layers of the DETR-family grounding models (sequence-first, (L, B, d)).

- :class:`TransformerEncoderLayer`: DETR's layer; positions are added to queries and keys only.
  Post-norm by default, pre-norm with ``normalize_before`` (Moment-DETR ``--pre_norm``).
- :class:`T2VEncoderLayer`: QD-DETR's text-to-video layer: video tokens attend to the text tokens
  only, then the feed-forward block; text (and the optional leading global token) pass unchanged.
- :class:`TransformerEncoder`: a stack of deep copies of one layer plus an optional final norm.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mrhd.models.layers.activation import make_activation


def with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward; keys ``self_attn``, ``linear1/2``, ``norm1/2``, ``activation``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = make_activation(activation)
        self.normalize_before = normalize_before

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, src, src_key_padding_mask=None, pos=None, attn_mask=None):
        if self.normalize_before:
            src2 = self.norm1(src)
            q = k = with_pos(src2, pos)
            src = src + self.dropout1(self.self_attn(q, k, value=src2, attn_mask=attn_mask,
                                                     key_padding_mask=src_key_padding_mask)[0])
            return src + self.dropout2(self.feed_forward(self.norm2(src)))
        q = k = with_pos(src, pos)
        src2 = self.self_attn(q, k, value=src, attn_mask=attn_mask, key_padding_mask=src_key_padding_mask)[0]
        src = self.norm1(src + self.dropout1(src2))
        return self.norm2(src + self.dropout2(self.feed_forward(src)))


def t2v_attention_mask(src_key_padding_mask: torch.Tensor, video: slice, text: slice, nhead: int) -> torch.Tensor:
    """The official T2V attention mask: outer product of the video and text padding flags, per head
    (redundant with the key padding mask, kept for exactness)."""
    qmask = src_key_padding_mask[:, video].unsqueeze(2).float()
    kmask = src_key_padding_mask[:, text].unsqueeze(1).float()
    return torch.matmul(qmask, kmask).bool().repeat(nhead, 1, 1)


class T2VEncoderLayer(TransformerEncoderLayer):
    """Video queries attend to text keys/values only (QD-DETR ``T2V_TransformerEncoderLayer``).

    The sequence is ``[global?, video (video_length), text]``; ``n_prefix`` is 1 when a global token
    leads (QD-DETR) and 0 without (TR-DETR ``..._no_global``). Queries = video + pos, keys = text +
    pos, values = text. The attention mask is the official outer product of video-padding and
    text-padding flags (redundant with the key padding mask, kept for exactness).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "prelu", n_prefix: int = 1):
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation)  # same modules and keys
        self.nhead = nhead
        self.n_prefix = n_prefix

    def forward(self, src, src_key_padding_mask, pos, video_length: int):
        a, b = self.n_prefix, self.n_prefix + video_length
        pos_src = with_pos(src, pos)
        q, k, v = pos_src[a:b], pos_src[b:], src[b:]
        attn_mask = t2v_attention_mask(src_key_padding_mask, slice(a, b), slice(b, None), self.nhead)
        src2 = self.self_attn(q, k, value=v, attn_mask=attn_mask,
                              key_padding_mask=src_key_padding_mask[:, b:])[0]
        vid = src[a:b] + self.dropout1(src2)
        vid = self.norm2(vid + self.dropout2(self.feed_forward(self.norm1(vid))))
        return torch.cat([src[:a], vid, src[b:]], dim=0)


class TransformerEncoder(nn.Module):
    """``num_layers`` deep copies of ``layer``; extra keyword arguments go to every layer."""

    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, src_key_padding_mask=None, pos=None, **kwargs):
        out = src
        for layer in self.layers:
            out = layer(out, src_key_padding_mask=src_key_padding_mask, pos=pos, **kwargs)
        return self.norm(out) if self.norm is not None else out
