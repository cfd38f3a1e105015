"""Optimiser and learning-rate schedule of the official training scripts.

All models: AdamW over every trainable parameter, one group (moment_detr ``inference.py
setup_model``), weight decay ``wd``. ``kernel`` picks torch's implementation: ``loop`` (one tensor at
a time, the official default and bit-exact), ``foreach`` (grouped) or ``fused`` (one kernel for all
parameters: on CPU a sixth of the loop's time at QD-DETR's 7.6M parameters); the update rule is the
same, the rounding of fused/foreach differs in the last bits. Schedule stepped once per epoch:
StepLR(lr_drop, gamma); UniVTG adds a linear warm-up (``main/config.py WarmupStepLR``); SG-DETR uses
WarmupMultiStepLR (warm-up, then x gamma at each of ``lr_milestones``; arXiv 2410.01615).
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch import nn

from mrhd.training.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, kernel: str = "loop") -> torch.optim.Optimizer:
    params = [{"params": [p for _, p in model.named_parameters() if p.requires_grad]}]
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[kernel]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **impl)


class WarmupStepFactor:
    """LR factor of UniVTG's WarmupStepLR as its per-epoch ``step()`` produces it: ``(e+1)/W``
    during warm-up, 1 at ``e == W``, then x gamma at every later multiple of ``step_size``.
    (A picklable callable, so the scheduler state can be saved and restored.)"""

    def __init__(self, warmup: int, step_size: int, gamma: float):
        self.warmup, self.step_size, self.gamma = warmup, step_size, gamma

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return float(epoch + 1) / float(self.warmup)
        n_drops = sum(1 for e in range(self.warmup + 1, epoch + 1) if e % self.step_size == 0)
        return self.gamma ** n_drops


class WarmupMultiStepFactor:
    """LR factor of WarmupMultiStepLR (maskrcnn-benchmark's ``solver/lr_scheduler.py``, the form
    detection code uses) at epoch ``e``: gamma ** (number of milestones <= e), times the linear
    warm-up ``warmup_factor * (1 - e / W) + e / W`` while ``e < W``. Picklable, as WarmupStepFactor."""

    def __init__(self, warmup: int, milestones, gamma: float, warmup_factor: float = 1 / 3):
        self.warmup, self.gamma, self.warmup_factor = warmup, gamma, warmup_factor
        self.milestones = sorted(int(m) for m in milestones)

    def __call__(self, epoch: int) -> float:
        factor = 1.0
        if epoch < self.warmup:
            alpha = epoch / self.warmup
            factor = self.warmup_factor * (1 - alpha) + alpha
        return factor * self.gamma ** bisect_right(self.milestones, epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_milestones:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupMultiStepFactor(int(cfg.lr_warmup), cfg.lr_milestones, cfg.lr_gamma,
                                             cfg.lr_warmup_factor))
    if cfg.lr_warmup and cfg.lr_warmup > 0:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupStepFactor(int(cfg.lr_warmup), int(cfg.lr_drop), cfg.lr_gamma))
    return torch.optim.lr_scheduler.StepLR(optimizer, int(cfg.lr_drop), gamma=cfg.lr_gamma)
