"""Dropout whose mask costs a third of ATen's on CPU: the training default there.

Why: on CPU, ``F.dropout`` draws its mask with ``bernoulli_(1 - p)``, which (outside MKL on Intel
processors) takes a double-precision Bernoulli sample per element from one serial Mersenne-Twister
stream; in DETR training at batch 32 that is about a quarter of a step. :class:`FastDropout` draws
a float32 uniform per element instead (one 32-bit draw, ``torch.rand_like``) and keeps the element
where it is at least ``p``, then scales by ``1 / (1 - p)`` exactly as ATen does. The keep
probability is ``1 - p`` up to the 2**-24 grid of float32 uniforms; the masks themselves differ from
ATen's, so training numbers change bit for bit (docs/training-speed.md), not in distribution.

Only ``nn.Dropout`` modules are swapped (:func:`use_fast_dropout`), in training and on CPU; dropout
inside attention (``F.dropout`` on attention weights) and every other device keep ATen's kernel,
and the model's state_dict is unchanged (dropout has no state).
"""

from __future__ import annotations

import torch
from torch import nn


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x * mask / (1 - p)`` with ``mask = uniform >= p``; autograd saves the scaled mask, as ATen."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * torch.zeros_like(x)
    noise = torch.rand_like(x).ge_(p).div_(1.0 - p)
    return x * noise


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout` on CPU tensors in training; ATen's kernel otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.inplace and x.device.type == "cpu" and x.is_floating_point():
            return fast_dropout(x, self.p)
        return super().forward(x)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` submodule of ``model`` (in place) by a :class:`FastDropout`
    with the same ``p``; returns how many were replaced."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped += 1
    return swapped
