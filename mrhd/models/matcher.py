"""Hungarian matching of predicted spans to ground-truth spans (DETR / Moment-DETR ``matcher.py``).

Cost = cost_span * L1(cxw) - cost_giou * GIoU(xx) - cost_class * p(foreground); foreground is class
index 0 (softmax over the 2 logits), solved per sample with scipy's ``linear_sum_assignment``.
With ``cost_iou`` (SG-DETR) the predicted IoU joins the cost: - cost_iou * sigmoid(pred_iou).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from mrhd.models.spans import generalized_temporal_iou, span_cxw_to_xx

FOREGROUND = 0


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 1, cost_span: float = 1, cost_giou: float = 1, cost_iou: float = 0):
        super().__init__()
        if cost_class == 0 and cost_span == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_span = cost_span
        self.cost_giou = cost_giou
        self.cost_iou = cost_iou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: dict,
                valid_queries: list[int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: pred_logits (B, nq, 2), pred_spans (B, nq, 2) cxw; targets["span_labels"]: list of
        {"spans": (n_i, 2) cxw}. Returns per sample (pred indices, target indices), int64.
        ``valid_queries``: per sample, only its first n queries take part (the rest is padding), as
        if each sample were matched alone on them; the costs are still computed in one batch."""
        bs, num_queries = outputs["pred_spans"].shape[:2]
        span_labels = targets["span_labels"]
        out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        tgt_spans = torch.cat([v["spans"] for v in span_labels])
        tgt_ids = torch.full([len(tgt_spans)], FOREGROUND, device=out_prob.device)
        cost_class = -out_prob[:, tgt_ids]
        out_spans = outputs["pred_spans"].flatten(0, 1)
        cost_span = torch.cdist(out_spans, tgt_spans, p=1)
        cost_giou = -generalized_temporal_iou(span_cxw_to_xx(out_spans), span_cxw_to_xx(tgt_spans))
        cost = self.cost_span * cost_span + self.cost_giou * cost_giou + self.cost_class * cost_class
        if self.cost_iou and "pred_iou" in outputs:   # (B, nq) IoU logits
            cost = cost - self.cost_iou * outputs["pred_iou"].flatten(0, 1).sigmoid()[:, None]
        cost = cost.view(bs, num_queries, -1).cpu()
        sizes = [len(v["spans"]) for v in span_labels]
        rows = valid_queries or [num_queries] * bs
        indices = [linear_sum_assignment(c[i][:rows[i]]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.from_numpy(i.astype(np.int64, copy=False)), torch.from_numpy(j.astype(np.int64, copy=False)))
                for i, j in indices]
