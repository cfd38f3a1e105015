"""Multi-head attention without input projections (Conditional-DETR / DAB-DETR style).

The anchor decoder of QD-DETR / TR-DETR / CG-DETR projects content and position separately with its
own Linear layers and concatenates them per head before attending, so the attention itself must not
project again, and queries/keys may be wider (2 * d for the cross-attention) than values (d). Only
``out_proj`` carries weights. Math follows ``attention.py`` of wjun0830/QD-DETR: q scaled by
head_dim**-0.5 (head_dim of the query width), boolean masks fill -inf, softmax of (x - max).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionFreeAttention(nn.Module):
    """Sequence-first (L, B, E) attention; ``embed_dim`` = query/key width, ``vdim`` = value width."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, vdim: int | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        self.embed_dim = embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.out_proj = nn.Linear(self.vdim, self.vdim)
        nn.init.constant_(self.out_proj.bias, 0.0)
        # how attention weights are dropped in training: ``F.dropout``; training may swap in a
        # cheaper kernel of the same signature (mrhd.training.fast_dropout.use_fast_dropout)
        self.drop_weights = F.dropout

    def masked_logits(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      key_padding_mask: torch.Tensor | None = None,
                      attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled q.k per head with the masks applied as -inf -> logits (B*H, Lq, Lk), values
        (B*H, Lk, V/H); subclasses differ only in what they do after (CG-DETR's dummy attention)."""
        tgt_len, bsz, embed_dim = query.shape
        heads = self.num_heads
        head_dim = embed_dim // heads
        v_head_dim = self.vdim // heads
        q = (query * float(head_dim) ** -0.5).contiguous().view(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = key.contiguous().view(-1, bsz * heads, head_dim).transpose(0, 1)
        v = value.contiguous().view(-1, bsz * heads, v_head_dim).transpose(0, 1)
        src_len = k.size(1)
        weights = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                attn_mask = attn_mask.unsqueeze(0)
            if attn_mask.dtype == torch.bool:
                weights = weights.masked_fill(attn_mask, float("-inf"))
            else:
                weights = weights + attn_mask
        if key_padding_mask is not None:
            weights = weights.view(bsz, heads, tgt_len, src_len)
            weights = weights.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
            weights = weights.view(bsz * heads, tgt_len, src_len)
        return weights, v

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (Lq, B, E), key (Lk, B, E), value (Lk, B, V); key_padding_mask (B, Lk) True = pad."""
        tgt_len, bsz, _ = query.shape
        weights, v = self.masked_logits(query, key, value, key_padding_mask, attn_mask)
        weights = torch.softmax(weights - weights.max(dim=-1, keepdim=True)[0], dim=-1)
        weights = self.drop_weights(weights, p=self.dropout, training=self.training)
        out = torch.bmm(weights, v).transpose(0, 1).contiguous().view(tgt_len, bsz, self.vdim)
        return self.out_proj(out)
