"""UniVTG's dense losses (showlab/UniVTG@32659ac, model/univtg.py ``SetCriterion``).

No Hungarian matching: every clip inside its nearest ground-truth window regresses that window
(smooth-L1 + gIoU), every valid clip is classified foreground/background with a weighted BCE,
and saliency is trained with two InfoNCE terms: across the batch (positive clip vs. the pooled
query of every sample) and within each video (the positive clip vs. clips rated lower).

Targets (a dict, as the official ``prepare_batch_inputs_mr`` builds it): ``timestamp`` (B, L, 2),
``timestamp_mask`` (B, L), ``timestamp_window`` (B, L), ``span_labels_nn`` (B, L, 2),
``saliency_scores`` (B, L), ``saliency_pos_labels`` (B, >=1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.spans import generalized_temporal_iou


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a / a.norm(dim=1, keepdim=True).clamp(min=eps)
    b = b / b.norm(dim=1, keepdim=True).clamp(min=eps)
    return a @ b.t()


class UniVTGCriterion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.weight_dict = {"loss_b": cfg.b_loss_coef, "loss_g": cfg.g_loss_coef, "loss_f": cfg.f_loss_coef,
                            "loss_s_intra": cfg.s_loss_intra_coef, "loss_s_inter": cfg.s_loss_inter_coef}
        # the official SetCriterion overwrites its temperature argument with 0.07
        self.temperature = 0.07
        self.register_buffer("empty_weight", torch.tensor([1.0, cfg.eos_coef]))

    def loss_spans(self, outputs, targets):
        src_spans = targets["timestamp"] + outputs["pred_spans"]
        gt_spans = targets["span_labels_nn"]
        inside = targets["timestamp_window"].bool()
        weight = targets["timestamp_window"].unsqueeze(2).repeat(1, 1, 2)
        loss_b = (F.smooth_l1_loss(src_spans, gt_spans, reduction="none") * weight).sum() / inside.sum()
        giou = torch.diag(generalized_temporal_iou(src_spans[inside], gt_spans[inside]))
        return {"loss_b": loss_b, "loss_g": (1 - giou).mean()}

    def loss_labels(self, outputs, targets):
        probs = outputs["pred_logits"].squeeze(-1)
        valid = targets["timestamp_mask"].bool()
        inside = targets["timestamp_window"].bool()
        target = inside.float()
        weights = torch.zeros_like(probs)
        weights[valid] = self.empty_weight[1]
        weights[inside] = self.empty_weight[0]
        loss = F.binary_cross_entropy(probs, target, weight=weights, reduction="none") * valid
        return {"loss_f": loss.sum() / valid.sum()}

    def loss_saliency(self, outputs, targets):
        if "saliency_pos_labels" not in targets or targets["saliency_scores"].sum() == 0:
            return {"loss_s_inter": 0.0, "loss_s_intra": 0.0}
        scores = targets["saliency_scores"]
        vid = outputs["vid_mem_proj"]
        txt = outputs["txt_mem_proj"].squeeze(1)
        pos = targets["saliency_pos_labels"][:, 0].long()
        batch = torch.arange(len(vid), device=vid.device)

        sim = _cosine_matrix(vid[batch, pos], txt) / self.temperature
        inter = -torch.diag(F.log_softmax(sim, dim=1)).mean() - torch.diag(F.log_softmax(sim.t(), dim=1)).mean()

        # within a video, only clips rated below the positive one compete with it
        candidates = scores < scores[batch, pos].unsqueeze(-1)
        candidates[batch, pos] = True
        candidates = candidates & targets["timestamp_mask"].bool()
        sim_in = F.cosine_similarity(vid, txt.unsqueeze(1), dim=-1) + (candidates + 1e-45).log()
        logsm_i = F.log_softmax(sim_in / self.temperature, dim=1)
        logsm_j = F.log_softmax(sim_in.t() / self.temperature, dim=1)
        intra = -logsm_i[batch, pos].mean() - logsm_j[pos, batch].mean()
        return {"loss_s_inter": inter, "loss_s_intra": intra}

    def forward(self, outputs: dict, targets: dict) -> dict:
        losses = {}
        losses.update(self.loss_spans(outputs, targets))
        losses.update(self.loss_labels(outputs, targets))
        losses.update(self.loss_saliency(outputs, targets))
        return losses

    def total(self, losses: dict) -> torch.Tensor:
        return sum(losses[k] * w for k, w in self.weight_dict.items() if k in losses)
