"""Activations of the transformer feed-forward blocks, as modules so learnable ones keep their keys.

QD-DETR, TR-DETR, CG-DETR and VideoLights build their layers with ``activation='prelu'`` (one
learnable slope per layer, ``...activation.weight`` in the state_dict); Moment-DETR uses ReLU.
"""

from __future__ import annotations

from torch import nn


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r} (relu, prelu, gelu)")
