"""benchmarks/native_bf16.py: bfloat16 products as native AVX512-BF16 computes them, for learning
checks on CPUs without it (vs_authors.py --emulate-native-bf16)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "native_bf16.py"
_spec = importlib.util.spec_from_file_location("native_bf16", _path)
native_bf16 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(native_bf16)


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in bfloat16 steps between two bfloat16 tensors of the same signs."""
    return int((a.view(torch.int16).int() - b.view(torch.int16).int()).abs().max())


def test_products_equal_torchs_own_bfloat16_kernels():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 64, generator=g).bfloat16(), torch.randn(64, 29, generator=g).bfloat16()
    bias = torch.randn(29, generator=g).bfloat16()
    x, y = torch.randn(3, 17, 64, generator=g).bfloat16(), torch.randn(3, 64, 11, generator=g).bfloat16()
    own = {"mm": a @ b, "addmm": torch.addmm(bias, a, b), "bmm": torch.bmm(x, y)}
    with native_bf16.NativeBFloat16Products():
        emulated = {"mm": a @ b, "addmm": torch.addmm(bias, a, b), "bmm": torch.bmm(x, y)}
    for k in own:
        assert emulated[k].dtype == torch.bfloat16
        # float32 products of the inputs, rounded once; torch's kernel may accumulate in another order
        assert _ulps(emulated[k], own[k]) <= 1, k
    assert torch.equal(emulated["mm"], (a.float() @ b.float()).bfloat16())


def test_autocast_forward_and_backward_run_through_it():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 8, generator=g, requires_grad=True)
    x = torch.randn(5, 8, generator=g, requires_grad=True)
    seen = []

    class Counting(native_bf16.NativeBFloat16Products):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in native_bf16._PRODUCTS:
                seen.append(func)
            return super().__torch_dispatch__(func, types, args, kwargs)

    with Counting(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = F.linear(x, w)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
    assert len(seen) >= 3   # the forward product and both gradients'
    assert w.grad.dtype == x.grad.dtype == torch.float32
    ref_w, ref_x = w.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.linear(ref_x, ref_w).float().square().sum().backward()
    torch.testing.assert_close(w.grad, ref_w.grad, rtol=2e-2, atol=2e-2)
