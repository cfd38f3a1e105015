"""Position encodings of the DETR-family grounding models.

- :class:`PositionEmbeddingSine`: 1-D sine/cosine positions of the video clips, normalised by the
  number of valid clips (the cumulative sum of the mask), as in ``position_encoding.py`` of
  jayleicn/moment_detr (num_pos_feats = hidden_dim, sin/cos interleaved).
- :class:`TrainablePositionalEncoding`: learned text positions (``txt_position_embed.*`` keys). The
  official checkpoints carry it even though ``use_txt_pos`` is False and text positions are zeros.
- :func:`anchor_sine_embedding`: the sine embedding of (center, width) anchors used by the anchor
  decoder of QD-DETR / TR-DETR (``gen_sineembed_for_position``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine positions over valid clips: x_t = cumsum(mask)_t / (cumsum(mask)_L + 1e-6) * 2pi."""

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = True,
                 scale: float | None = None):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d) only gives the device; mask (B, L) with 1 = valid -> (B, L, num_pos_feats)."""
        x_embed = mask.cumsum(1, dtype=torch.float32)
        if self.normalize:
            x_embed = x_embed / (x_embed[:, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, None] / dim_t
        return torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)


class TrainablePositionalEncoding(nn.Module):
    """LayerNorm(x + learned position) then dropout; names match the official state_dict."""

    def __init__(self, max_position_embeddings: int, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_feat: torch.Tensor) -> torch.Tensor:
        bsz, seq_length = input_feat.shape[:2]
        position_ids = torch.arange(seq_length, dtype=torch.long, device=input_feat.device)
        position_ids = position_ids.unsqueeze(0).repeat(bsz, 1)
        return self.dropout(self.LayerNorm(input_feat + self.position_embeddings(position_ids)))


def anchor_sine_embedding(anchors: torch.Tensor, half_dim: int) -> torch.Tensor:
    """(nq, B, 2) sigmoid anchors (center, width) -> (nq, B, 2 * half_dim) sine embedding.

    The official QD-DETR / TR-DETR / VideoLights ``gen_sineembed_for_position`` hard-codes
    ``half_dim = 128`` (= hidden_dim / 2 at the released hidden_dim 256); callers pass
    ``hidden_dim // 2``, which equals the official code at 256 and is what the golden fixtures use
    at small sizes (see fixtures/models/qd_detr/README.md, "Source edit").
    """
    scale = 2 * math.pi
    dim_t = torch.arange(half_dim, dtype=torch.float32, device=anchors.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / half_dim)
    parts = []
    for coord in (0, 1):  # center, then width
        p = (anchors[:, :, coord] * scale)[:, :, None] / dim_t
        parts.append(torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2))
    return torch.cat(parts, dim=2)
