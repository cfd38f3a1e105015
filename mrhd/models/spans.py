"""Span conversions and temporal IoU, shared by matchers, losses, post-processing and models.

A span is either ``cxw`` (center, width) -- what the DETR heads predict, normalised to [0, 1] -- or
``xx`` (start, end). Follows ``span_utils.py`` of jayleicn/moment_detr (identical in QD-DETR / TR-DETR).
"""

from __future__ import annotations

import torch


def span_xx_to_cxw(xx_spans: torch.Tensor) -> torch.Tensor:
    """(..., 2) [start, end] -> (..., 2) [center, width]."""
    center = xx_spans.sum(-1) * 0.5
    width = xx_spans[..., 1] - xx_spans[..., 0]
    return torch.stack([center, width], dim=-1)


def span_cxw_to_xx(cxw_spans: torch.Tensor) -> torch.Tensor:
    """(..., 2) [center, width] -> (..., 2) [start, end]."""
    x1 = cxw_spans[..., 0] - 0.5 * cxw_spans[..., 1]
    x2 = cxw_spans[..., 0] + 0.5 * cxw_spans[..., 1]
    return torch.stack([x1, x2], dim=-1)


def temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU and union of (..., N, 2) and (..., M, 2) xx spans -> two (..., N, M) tensors
    (leading dimensions broadcast: a batch of samples at once)."""
    areas1 = spans1[..., 1] - spans1[..., 0]
    areas2 = spans2[..., 1] - spans2[..., 0]
    left = torch.max(spans1[..., :, None, 0], spans2[..., None, :, 0])
    right = torch.min(spans1[..., :, None, 1], spans2[..., None, :, 1])
    inter = (right - left).clamp(min=0)
    union = areas1[..., :, None] + areas2[..., None, :] - inter
    return inter / union, union


def generalized_temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of (N, 2) and (M, 2) xx spans -> (N, M).

    Spans with end < start are a bug upstream (the official code asserts the same)."""
    spans1 = spans1.float()
    spans2 = spans2.float()
    if not bool((spans1[:, 1] >= spans1[:, 0]).all()) or not bool((spans2[:, 1] >= spans2[:, 0]).all()):
        raise ValueError("generalized_temporal_iou: every span needs end >= start")
    iou, union = temporal_iou(spans1, spans2)
    left = torch.min(spans1[:, None, 0], spans2[:, 0])
    right = torch.max(spans1[:, None, 1], spans2[:, 1])
    enclosing = (right - left).clamp(min=0)
    return iou - (enclosing - union) / enclosing


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """logit with the official eps=1e-3 clamping (QD-DETR model.py / DAB-DETR)."""
    x = x.clamp(min=0, max=1)
    x1 = x.clamp(min=eps)
    x2 = (1 - x).clamp(min=eps)
    return torch.log(x1 / x2)
