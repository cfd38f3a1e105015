"""Stochastic depth (drop path) on residual branches, shared by UniVTG, CG-DETR and the layers built
on them.

Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016); the per-sample form of timm's
``drop_path``, as showlab/UniVTG@32659ac model/transformer_encoder_droppath.py and
wjun0830/CGDETR@212b2e4 cg_detr/transformer.py use it on sequence-first tensors.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float, training: bool, batch_dim: int = 0) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch while training."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = [1] * x.ndim
    shape[batch_dim] = x.shape[batch_dim]
    keep = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep_prob) * keep


class DropPath(nn.Module):
    """Drop path on sequence-first (L, B, d) tensors (one draw per sample, as upstream)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, batch_dim=1)
