"""Weighted fusion of the DETR head's and the ATSS head's spans (SG-DETR inference).

Weighted box fusion (Solovyev et al. 2021) anchored on the DETR predictions: each DETR span keeps
its slot and is replaced by the confidence-and-head-weighted mean of itself and every ATSS span of
a valid clip whose IoU with it exceeds ``iou_thr``. The DETR confidence (class x IoU) stays the
score, so the output has the DETR head's shape and ranking; ATSS spans that overlap no DETR span
are dropped (they would add windows the DETR head's query budget does not have).
"""

from __future__ import annotations

import torch

from mrhd.models.spans import span_cxw_to_xx


def pairwise_iou_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) and (B, M, 2) xx spans -> (B, N, M) IoU."""
    left = torch.max(a[..., :, None, 0], b[..., None, :, 0])
    right = torch.min(a[..., :, None, 1], b[..., None, :, 1])
    inter = (right - left).clamp(min=0)
    union = (a[..., 1] - a[..., 0])[..., :, None] + (b[..., 1] - b[..., 0])[..., None, :] - inter
    return inter / union.clamp(min=1e-6)


def fuse_spans(detr_spans: torch.Tensor, detr_conf: torch.Tensor, dense_spans: torch.Tensor,
               dense_conf: torch.Tensor, dense_mask: torch.Tensor, iou_thr: float = 0.5,
               detr_weight: float = 1.0, dense_weight: float = 1.0) -> torch.Tensor:
    """detr_spans (B, N, 2) cxw, detr_conf (B, N); dense_* (B, L, 2) / (B, L), dense_mask (B, L)
    float -> fused (B, N, 2) cxw."""
    d_xx = span_cxw_to_xx(detr_spans)
    a_xx = span_cxw_to_xx(dense_spans).clamp(0, 1)
    overlap = (pairwise_iou_batched(d_xx, a_xx) > iou_thr) & dense_mask.bool()[:, None, :]
    w_dense = overlap.float() * (dense_weight * dense_conf)[:, None, :]       # (B, N, L)
    w_detr = (detr_weight * detr_conf).unsqueeze(-1)                           # (B, N, 1)
    total = w_detr + w_dense.sum(-1, keepdim=True)
    fused_xx = (w_detr * d_xx + torch.bmm(w_dense, a_xx)) / total.clamp(min=1e-12)
    fused_xx = torch.where(total > 0, fused_xx, d_xx)   # no weight at all: keep the DETR span
    return torch.stack([fused_xx.mean(-1), fused_xx[..., 1] - fused_xx[..., 0]], dim=-1)
