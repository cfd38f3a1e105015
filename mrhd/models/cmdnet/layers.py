"""CMDNet's multi-scale difference perception module (MDP), sequence-first like the encoders.

The paper (Zhou et al., MMSP 2024, "Cross-modal Multiscale Difference-aware Network for Joint
Moment Retrieval and Highlight Detection"; poster MMSP-P5.11) gives the ingredients but not the
layer-level recipe; the choices made here are listed in the model card (``README.md`` in this folder).

Input: query-highlighted clip features (the T2V encoder's video tokens). Steps:

1. differences of adjacent clips ``x_t - x_{t-1}`` (0 for the first clip), projected and added back,
   so smooth transitions between events become visible to the layers that follow;
2. parallel temporal convolutions with several kernel sizes over that difference-aware sequence,
   averaged, for moments of very different durations;
3. a graph convolution whose adjacency is the row-softmax of clip-clip cosine similarity (self
   loops included, padded clips never neighbours), for dependencies across the whole video;
4. ``LayerNorm(x + Dropout(Linear([multi-scale | graph])))``.

Padded clips are zeroed before every temporal operation, so a valid clip's output does not depend
on how much padding follows it (the "same" zero padding of the convolutions sees the same zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adjacent_difference(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(L, B, d) masked features -> ``x_t - x_{t-1}`` with 0 at t = 0 and at padded clips."""
    diff = torch.zeros_like(x)
    diff[1:] = x[1:] - x[:-1]
    return diff * valid


class MultiScaleTemporalConv(nn.Module):
    """Parallel 1-D convolutions (kernel k, 'same' padding), ReLU, averaged over the scales."""

    def __init__(self, d_model: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"mdp_kernel_sizes must be odd and >= 1, got {list(kernel_sizes)}")
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, k, padding=k // 2) for k in kernel_sizes)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (L, B, d), valid (L, B, 1) -> (L, B, d), zero at padded clips."""
        h = (x * valid).permute(1, 2, 0)                       # (B, d, L)
        out = torch.stack([F.relu(conv(h)) for conv in self.convs]).mean(0)
        return out.permute(2, 0, 1) * valid


class SimilarityGraphConv(nn.Module):
    """One GCN layer ``ReLU(A X W)``; A = softmax over valid clips of scaled cosine similarity."""

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Linear(d_model, d_model)
        self.log_scale = nn.Parameter(torch.tensor(0.0))   # learnable sharpness of the adjacency

    def adjacency(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d), key_padding_mask (B, L) True = padding -> (B, L, L) row-stochastic."""
        xn = F.normalize(x, dim=-1)
        sim = torch.bmm(xn, xn.transpose(1, 2)) * self.log_scale.exp() * x.shape[-1] ** 0.5
        sim = sim.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
        return sim.softmax(dim=-1)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """x (L, B, d) -> (L, B, d)."""
        xb = x.transpose(0, 1)
        out = F.relu(torch.bmm(self.adjacency(xb, key_padding_mask), self.weight(xb)))
        return out.transpose(0, 1)


class MultiScaleDifferencePerception(nn.Module):
    """Difference-aware, multi-scale and graph views of the clips, fused residually."""

    def __init__(self, d_model: int, kernel_sizes: tuple[int, ...], gcn_layers: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.diff_proj = nn.Linear(d_model, d_model)
        self.multi_scale = MultiScaleTemporalConv(d_model, tuple(kernel_sizes))
        self.graph = nn.ModuleList(SimilarityGraphConv(d_model) for _ in range(gcn_layers))
        self.fuse = nn.Linear(2 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """x (L, B, d) video tokens, key_padding_mask (B, L) True = padding -> (L, B, d)."""
        valid = (~key_padding_mask).transpose(0, 1).unsqueeze(-1).to(x.dtype)   # (L, B, 1)
        x = x * valid
        h = x + self.diff_proj(adjacent_difference(x, valid)) * valid
        local = self.multi_scale(h, valid)
        glob = h
        for layer in self.graph:
            glob = layer(glob, key_padding_mask) * valid
        return self.norm(x + self.dropout(self.fuse(torch.cat([local, glob], dim=-1))))
