"""Attention pooling of a token sequence into one vector with a learned score vector.

The ``WeightedPool`` of VSLNet (Zhang et al., ACL 2020), reused as is by TR-DETR
(mingyao1120/TR-DETR tr_detr/interaction/test_CQA.py), UniVTG (showlab/UniVTG model/univtg.py
``weightedpool``) and VideoLights (video_lights/feature_refinement.py): key ``weight`` (dim, 1),
xavier-uniform, padding pushed to -1e30 before the softmax.
"""

from __future__ import annotations

import torch
from torch import nn


def mask_logits(inputs: torch.Tensor, mask: torch.Tensor, mask_value: float = -1e30) -> torch.Tensor:
    """Add a large negative value where mask == 0 (additive, as the official code)."""
    return inputs + (1.0 - mask.float()) * mask_value


class WeightedPool(nn.Module):
    """(B, L, D) tokens, mask (B, L) 1 = valid -> (B, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = mask_logits(torch.matmul(x, self.weight), mask.unsqueeze(2))  # (B, L, 1); autocast casts both
        return torch.matmul(x.transpose(1, 2), torch.softmax(alpha, dim=1)).squeeze(2)
