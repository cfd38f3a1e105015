"""bfloat16 products computed as a CPU with AVX512-BF16 computes them, on a CPU without it.

Native bfloat16 matmul multiplies bfloat16 inputs (exact in float32: 8 x 8 mantissa bits),
accumulates in float32 and rounds the result to bfloat16 once. oneDNN's emulation of that on an
AVX2 core is ~28x slower than float32 (docs/training-speed.md), too slow for a learning run; this
dispatch mode computes the same products in float32 on the upcast inputs and rounds the result,
which differs from the native kernel only in the order of the float32 accumulation. Everything
else (autocast's casts, the bfloat16 elementwise work) runs as it would. For learning checks
(``vs_authors.py --learn --emulate-native-bf16``), never for timing.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
_PRODUCTS = {_aten.mm.default, _aten.bmm.default, _aten.addmm.default, _aten.baddbmm.default}


class NativeBFloat16Products(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PRODUCTS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            upcast = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a for a in args]
            return func(*upcast, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)
