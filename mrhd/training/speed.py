"""Which speed options a training run uses, resolved once from its TrainConfig and device.

The options and their defaults are explained in docs/training-speed.md. In short: what cannot change
a number (features kept in RAM, fewer host syncs, DataLoader workers sized to the machine) is always
on; what changes numbers bit for bit but not what is learned (fused AdamW, cheaper dropout masks on
CPU and a cheaper PReLU backward there, length-bucketed batches, bfloat16 autocast on CUDA, and on
CPUs with native bfloat16 where the model's training config asks for it) is on by default and off
with ``exact=True`` (``mrhd train --exact``), the eager path equal to the authors' code. Opt-in:
``torch.compile`` (``compile=True``; on CPU it took minutes to compile for a small gain).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mrhd.errors import MrhdError
from mrhd.training.config import TrainConfig

OPTIMIZERS = ("fused", "foreach", "loop")


@dataclass(frozen=True)
class SpeedPlan:
    optimizer: str                    # AdamW kernel: fused | foreach | loop
    fast_dropout: bool                # mrhd.training.fast_dropout on CPU
    fast_prelu: bool                  # mrhd.training.fast_prelu on CPU
    bucket_by_length: bool            # mrhd.training.buckets
    compile: bool
    amp_dtype: torch.dtype | None     # autocast dtype (None: float32)
    num_workers: int
    cache_features: bool              # features kept in RAM by the main process
    check_every: int                  # steps between host syncs for the loss (CPU: every step, free)

    def describe(self) -> str:
        on = [f"AdamW {self.optimizer}", f"{self.num_workers} loader workers"]
        on += [name for name, flag in (("fast dropout", self.fast_dropout), ("fast PReLU", self.fast_prelu),
                                       ("length buckets", self.bucket_by_length),
                                       ("torch.compile", self.compile), ("features in RAM", self.cache_features))
               if flag]
        if self.amp_dtype is not None:
            on.append(f"autocast {str(self.amp_dtype).removeprefix('torch.')}")
        return ", ".join(on)


def default_workers(device: torch.device) -> int:
    """DataLoader workers that fit the machine. CPU training: 0; the model's step uses every core
    and a batch assembled from features in RAM costs ~1 % of a step, so workers would only compete
    with it. CUDA: half the cores (at most 8) prepare batches while the GPU computes."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 2))


def cpu_has_native_bfloat16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 products at ~3x float32's rate (docs/training-speed.md). Without
    them oneDNN emulates bfloat16 and autocast would be slower than float32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """CUDA: bfloat16 where the GPU supports it (no loss scaling needed), else float16. CPU: bfloat16
    where the cores compute it natively, else None (float32)."""
    if not enabled:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bfloat16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def plan_speed(cfg: TrainConfig, device: torch.device) -> SpeedPlan:
    if cfg.optimizer not in OPTIMIZERS:
        raise MrhdError(f"unknown optimizer kernel {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    workers = default_workers(device) if cfg.num_workers is None else int(cfg.num_workers)
    if workers < 0:
        raise MrhdError(f"--num-workers {workers}: must be 0 or more")
    exact = bool(cfg.exact)
    return SpeedPlan(
        optimizer="loop" if exact else cfg.optimizer,
        fast_dropout=not exact and bool(cfg.fast_dropout) and device.type == "cpu",
        fast_prelu=not exact and bool(cfg.fast_prelu) and device.type == "cpu",
        bucket_by_length=not exact and bool(cfg.bucket_by_length),
        compile=not exact and bool(cfg.compile),
        amp_dtype=None if exact else amp_dtype(device, bool(cfg.amp) and (device.type != "cpu" or bool(cfg.cpu_amp))),
        num_workers=workers,
        cache_features=bool(cfg.cache_features) and workers == 0,
        check_every=1 if device.type == "cpu" else 25,
    )
