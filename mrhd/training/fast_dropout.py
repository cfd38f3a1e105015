"""Dropout at about a seventh of ATen's cost on CPU: the training default there.

Why: on CPU, ``F.dropout`` draws its mask with ``bernoulli_(1 - p)``, which (outside MKL on Intel
processors) takes a double-precision Bernoulli sample per element from one serial Mersenne-Twister
stream; in DETR training at batch 32 that is about a quarter of a step. :func:`fast_dropout` draws
16 random bits per element instead, four per 64-bit output of numpy's SFC64 generator (seeded for
each call from torch's global generator, so ``torch.manual_seed`` fixes the masks and a resumed run
continues them), keeps the element where those bits are at least ``round(p * 2**16)`` and scales the
kept ones by the inverse of the keep probability that threshold gives. For a QD-DETR feed-forward
activation the whole dropout takes about a seventh of ATen's time (figures in
docs/training-speed.md). The drop probability is ``p``
rounded to the 2**-16 grid (0.1 -> 0.100006; 0.5 exactly) and the output's expectation equals the
input; the masks differ from ATen's, so training numbers change bit for bit
(docs/training-speed.md), not in distribution.

:func:`use_fast_dropout` swaps the plain ``nn.Dropout`` modules and the attention-weight dropout of
our own attention modules (``drop_weights``), in training and on CPU; ``nn.MultiheadAttention``
and every other device keep ATen's kernel, and the model's state_dict is unchanged (dropout has no
state).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

GRID = 1 << 16        # a mask element compares 16 random bits with round(p * GRID)
_SEED_HIGH = 2 ** 63 - 1


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """``(bits >= round(p * GRID)) / keep probability`` of ``shape``: 0 or the scale, as ``dtype``."""
    threshold = round(p * GRID)
    if threshold >= GRID:
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    seed = int(torch.randint(0, _SEED_HIGH, (), dtype=torch.int64))
    bits = np.random.SFC64(seed).random_raw(-(-n // 4)).view(np.uint16)[:n]
    keep = torch.from_numpy(bits >= threshold).view(shape)
    return keep.to(dtype).mul_(GRID / (GRID - threshold))


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x * mask`` with the scaled mask of :func:`keep_mask`; autograd saves the mask, as ATen's."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * torch.zeros_like(x)
    return x * keep_mask(x.shape, p, x.dtype)


def dropout_function(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """``F.dropout``'s signature for ``drop_weights`` hooks: :func:`fast_dropout` on CPU in training."""
    if training and x.device.type == "cpu" and x.is_floating_point():
        return fast_dropout(x, p)
    return nn.functional.dropout(x, p=p, training=training)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout` on CPU tensors in training; ATen's kernel otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout_function(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` submodule of ``model`` (in place) by a :class:`FastDropout`
    with the same ``p`` and point every ``drop_weights`` hook (attention weights) at
    :func:`dropout_function`; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        if hasattr(parent, "drop_weights"):
            parent.drop_weights = dropout_function
            swapped += 1
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped += 1
    return swapped
