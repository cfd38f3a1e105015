"""Float32 islands inside a mixed-precision forward.

Some steps choose something discrete from close values (a top-k over prompts, a normalisation by a
small sum): under bfloat16 autocast, with 8 bits of mantissa, the choice flips and the loss follows
it. Such a step runs in float32 whatever the autocast; without autocast nothing changes (float32
inputs are passed as they are), so the exact path stays bit for bit.
"""

from __future__ import annotations

import functools

import torch


def _as_float32(x):
    return x.float() if torch.is_tensor(x) and x.is_floating_point() and x.dtype != torch.float32 else x


def float32_under_autocast(fn):
    """Decorator: ``fn`` runs with autocast off and its floating tensor arguments in float32."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
        device = tensors[0].device.type if tensors else "cpu"
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*[_as_float32(a) for a in args], **{k: _as_float32(v) for k, v in kwargs.items()})

    return run
