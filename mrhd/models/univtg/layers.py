"""UniVTG's own layers: the drop-path encoder and the Conv1d heads (drop path and the weighted text
pool are shared blocks: :mod:`mrhd.models.layers.drop_path`, :mod:`mrhd.models.layers.pooling`).

Facts from showlab/UniVTG@32659ac (model/transformer_encoder_droppath.py, model/univtg.py): the
encoder is post-norm, has no dropout on its residual branches but per-sample drop path, uses GELU
(the ``Transformer`` default the builder never overrides) and no final norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.layers.drop_path import DropPath
from mrhd.models.layers.encoder import TransformerEncoder, TransformerEncoderLayer


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
