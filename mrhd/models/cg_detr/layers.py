"""CG-DETR's variants of the shared transformer blocks (wjun0830/CGDETR@212b2e4, cg_detr/transformer.py,
cg_detr/crossattention.py).

- Every residual branch of every CG-DETR layer uses drop path (``DropPath(dropout)``) instead of
  dropout; in eval both are identities. :func:`with_drop_path` swaps them on the shared layers.
- :class:`DummyAwareAttention`: the text-to-video attention has no input projections, scales q by
  head_dim**-0.5, applies a plain softmax, returns the head-averaged weights, and (``dummy=True``)
  reads values only from the real text tokens, so attention mass given to the dummy tokens is
  discarded (the paper's "dummy tokens absorb irrelevant attention"). With zero keys (the context
  token pass, see :class:`CGDETRTransformer`) the output is ``out_proj.bias``, as upstream.
- :class:`DummyT2VEncoderLayer`: video queries attend to [dummies, text]; keys ``self_attn.out_proj``,
  ``linear1/2``, ``norm1/2``, ``activation`` (PReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.layers.attention import ProjectionFreeAttention
from mrhd.models.layers.drop_path import DropPath
from mrhd.models.layers.encoder import (
    T2VEncoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    t2v_attention_mask,
    with_pos,
)


def with_drop_path(layer: nn.Module, drop_prob: float) -> nn.Module:
    """Replace the residual dropouts ``dropout1..3`` of a shared layer by drop path (CG-DETR)."""
    for name in ("dropout1", "dropout2", "dropout3"):
        if hasattr(layer, name):
            setattr(layer, name, DropPath(drop_prob))
    return layer


def helper_encoder(d_model: int, dim_feedforward: int, num_layers: int, dropout: float = 0.1) -> TransformerEncoder:
    """``txtproj_encoder`` / ``scls_encoder``: upstream hard-codes 8 heads, dropout 0.1 and PReLU."""
    layer = with_drop_path(TransformerEncoderLayer(d_model, 8, dim_feedforward, dropout, "prelu"), dropout)
    return TransformerEncoder(layer, num_layers)


class DummyAwareAttention(ProjectionFreeAttention):
    """Projection-free attention that can drop the first ``num_dummies`` values (see module doc)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, num_dummies: int = 3):
        super().__init__(embed_dim, num_heads, dropout=dropout)
        self.num_dummies = num_dummies

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, dummy: bool = True):
        """(Lq, B, E), (Lk, B, E), (Lk, B, E) -> output (Lq, B, E), weights (B, Lq, Lk) head mean."""
        tgt_len, bsz, embed_dim = query.shape
        heads = self.num_heads
        weights, v = self.masked_logits(query, key, value, key_padding_mask, attn_mask)  # bool attn_mask
        src_len = weights.size(-1)
        weights = F.softmax(weights, dim=-1)
        dropped = self.drop_weights(weights, p=self.dropout, training=self.training)
        if dummy:
            out = torch.bmm(dropped[:, :, self.num_dummies:], v[:, self.num_dummies:])
        else:
            out = torch.bmm(dropped, v)
        out = self.out_proj(out.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim))
        return out, weights.view(bsz, heads, tgt_len, src_len).sum(dim=1) / heads


class DummyT2VEncoderLayer(T2VEncoderLayer):
    """Video tokens (the first ``video_length``) attend to everything after them; no global prefix."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 num_dummies: int = 3):
        super().__init__(d_model, nhead, dim_feedforward, dropout, "prelu", n_prefix=0)
        self.self_attn = DummyAwareAttention(d_model, nhead, dropout=dropout, num_dummies=num_dummies)
        with_drop_path(self, dropout)

    def forward(self, src, src_key_padding_mask, pos, video_length: int, dummy: bool = True):
        pos_src = with_pos(src, pos)
        q, k, v = pos_src[:video_length], pos_src[video_length:], src[video_length:]
        attn_mask = t2v_attention_mask(src_key_padding_mask, slice(None, video_length), slice(video_length, None),
                                       self.nhead)
        src2, weights = self.self_attn(q, k, v, attn_mask=attn_mask,
                                       key_padding_mask=src_key_padding_mask[:, video_length:], dummy=dummy)
        vid = src[:video_length] + self.dropout1(src2)
        vid = self.norm2(vid + self.dropout2(self.feed_forward(self.norm1(vid))))
        return torch.cat([vid, src[video_length:]]), weights


class DummyT2VEncoder(TransformerEncoder):
    """Stack of :class:`DummyT2VEncoderLayer`; returns the output and the layer-mean attention."""

    def forward(self, src, src_key_padding_mask=None, pos=None, video_length: int = 0, dummy: bool = True):
        weights = None
        for layer in self.layers:
            src, w = layer(src, src_key_padding_mask, pos, video_length=video_length, dummy=dummy)
            weights = w if weights is None else weights + w
        return src, weights / self.num_layers
