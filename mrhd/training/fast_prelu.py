"""PReLU with a backward of plain vectorised kernels: the CPU training default.

Why: ATen's CPU backward of a one-slope PReLU (``_prelu_kernel_backward``) takes ~8 ms for a
QD-DETR/CG-DETR feed-forward activation (76 x 32 x 1024) in float32 or bfloat16, about five times
the cost of the same arithmetic spelled as ReLU's backward plus an ``addcmul``. The input gradient
is bit for bit ATen's (``g`` where ``x > 0``, else ``g * a`` rounded once); the slope's gradient
sums the same products ``x * g`` over ``x <= 0`` in float32 in another order, so it differs in the
last bits (and under bfloat16 autocast it is not rounded to bfloat16, as ATen's is). Figures in docs/training-speed.md.

:func:`use_fast_prelu` swaps the one-slope ``nn.PReLU`` modules of a model in place (the class
only: the parameter and its state_dict key stay); every other device keeps ATen's kernel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _PReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        slope_x = slope.to(x.dtype)
        ctx.save_for_backward(x, slope_x)
        ctx.slope_dtype = slope.dtype
        return F.prelu(x, slope_x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, slope = ctx.saved_tensors
        positive = torch.ops.aten.threshold_backward(grad, x, 0)      # grad where x > 0, else 0
        grad_x = torch.addcmul(positive, grad - positive, slope)       # + grad * slope where x <= 0
        grad_slope = None
        if ctx.needs_input_grad[1]:
            # products and sum in float32 (bfloat16 products would lose ~1e-2 of the sum)
            grad_slope = torch.dot(x.clamp(max=0).flatten().float(), grad.flatten().float())
            grad_slope = grad_slope.reshape(1).to(ctx.slope_dtype)
        return grad_x, grad_slope


class FastPReLU(nn.PReLU):
    """``nn.PReLU`` (one slope) whose backward is :class:`_PReLU`'s on CPU tensors in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.device.type == "cpu" and torch.is_grad_enabled():
            if torch.is_autocast_enabled("cpu"):   # PReLU runs in the autocast dtype, as ATen's does
                x = x.to(torch.get_autocast_dtype("cpu"))
                with torch.autocast("cpu", enabled=False):
                    return _PReLU.apply(x, self.weight)
            return _PReLU.apply(x, self.weight)
        return super().forward(x)


def use_fast_prelu(model: nn.Module) -> int:
    """Give every one-slope ``nn.PReLU`` of ``model`` the :class:`FastPReLU` class (in place); returns
    how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.PReLU and module.num_parameters == 1:
            module.__class__ = FastPReLU
            swapped += 1
    return swapped
