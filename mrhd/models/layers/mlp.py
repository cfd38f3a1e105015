"""Small feed-forward blocks of the DETR-family models (names match the official state_dicts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (DETR's box head): ``layers.{i}.*``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class Conv1D(nn.Module):
    """Conv1d along time over (B, L, C) tensors; key ``conv1d.*`` (VSLNet's ``Conv1D``, used with
    kernel 1 by TR-DETR's context-query fusion and VideoLights' projections and FRA mixer)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1):
        super().__init__()
        self.conv1d = nn.Conv1d(in_dim, out_dim, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class LinearLayer(nn.Module):
    """LayerNorm(in) -> Dropout -> Linear -> optional ReLU, as the official ``LinearLayer``.

    Keys: ``LayerNorm.*`` and ``net.1.*`` (``net.0`` is the dropout)."""

    def __init__(self, in_hsz: int, out_hsz: int, layer_norm: bool = True, dropout: float = 0.1,
                 relu: bool = True):
        super().__init__()
        self.relu = relu
        self.layer_norm = layer_norm
        if layer_norm:
            self.LayerNorm = nn.LayerNorm(in_hsz)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_hsz, out_hsz))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            x = self.LayerNorm(x)
        x = self.net(x)
        return F.relu(x) if self.relu else x


def input_projection(in_dim: int, hidden_dim: int, n_layers: int, dropout: float) -> nn.Sequential:
    """The official ``input_{vid,txt}_proj``: ``n_layers`` LinearLayers, ReLU on all but the last."""
    if not 1 <= n_layers <= 3:
        raise ValueError(f"n_input_proj must be 1..3, got {n_layers}")
    dims = [in_dim] + [hidden_dim] * n_layers
    return nn.Sequential(*[
        LinearLayer(dims[i], hidden_dim, layer_norm=True, dropout=dropout, relu=i < n_layers - 1)
        for i in range(n_layers)])
