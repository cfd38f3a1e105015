"""UniVTG's own layers: the drop-path encoder, the Conv1d heads and the weighted text pool.

Facts from showlab/UniVTG@32659ac (model/transformer_encoder_droppath.py, model/univtg.py): the
encoder is post-norm, has no dropout on its residual branches but per-sample drop path, uses GELU
(the ``Transformer`` default the builder never overrides) and no final norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.encoder import TransformerEncoder, TransformerEncoderLayer


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


def droppath_encoder_layer(d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                           droppath: float, activation: str = "gelu") -> TransformerEncoderLayer:
    """The shared post-norm layer with UniVTG's residual drop path instead of residual dropout.

    Upstream comments out the dropout inside the feed-forward block, so it becomes an identity.
    """
    layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation=activation)
    layer.dropout = nn.Identity()
    layer.dropout1 = DropPath(droppath)
    layer.dropout2 = DropPath(droppath)
    return layer


class UniVTGTransformer(nn.Module):
    """Encoder only; batch-first in and out, parameter names ``encoder.layers.N.*`` as upstream."""

    def __init__(self, d_model: int, num_layers: int, nhead: int, dim_feedforward: int, dropout: float,
                 droppath: float, activation: str = "gelu"):
        super().__init__()
        self.d_model = d_model
        layer = droppath_encoder_layer(d_model, nhead, dim_feedforward, dropout, droppath, activation)
        self.encoder = TransformerEncoder(layer, num_layers)
        for p in self.parameters():  # UniVTG's Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(src.transpose(0, 1), src_key_padding_mask=padding_mask, pos=pos.transpose(0, 1))
        return memory.transpose(0, 1)


class ConvHead(nn.Module):
    """Per-clip head: ``num_layers`` Conv1d (same padding) along time with ReLU in between."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 kernel_size: int = 3):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Conv1d(i, o, kernel_size, padding=kernel_size // 2)
                                    for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x.transpose(1, 2)


class WeightedPool(nn.Module):
    """Attention pooling of tokens with one learned score vector; padding gets -1e30 before softmax."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = torch.tensordot(x, self.weight, dims=1)                 # (B, L, 1)
        alpha = alpha + (1.0 - mask.float().unsqueeze(2)) * -1e30
        alpha = torch.softmax(alpha, dim=1)
        return torch.matmul(x.transpose(1, 2), alpha).squeeze(2)         # (B, D)
