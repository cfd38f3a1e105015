"""The set criterion of the DETR-family grounding models, one small method per loss term.

Shared by Moment-DETR, QD-DETR and TR-DETR (and reusable by the other DETR models), configured by
:class:`CriterionConfig`:

- ``loss_spans``: L1 (``span_loss="smooth_l1"``: smooth L1, beta 1, SG-DETR) on matched (center,
  width) + 1 - GIoU.
- ``loss_labels``: Moment-DETR / QD-DETR: cross-entropy with ``empty_weight`` [1, eos_coef] and
  reduction 'none' then a plain mean (not the weighted mean); TR-DETR (``label_loss="focal"``):
  sigmoid focal loss (alpha 0.25, gamma 2, torchvision's formula) of both logits against one-hot
  targets, mean over everything. ``class_error`` = 100 - top-1 accuracy of matched queries.
- ``loss_saliency``: the Moment-DETR hinge (margin, sum / (B * #pairs) * 2), plus QD-DETR's
  rank-contrastive term (thresholds 1..11, tau 0.5, divided by 12) and negative-pair term
  (``neg_pair``), or TR-DETR's rank-contrastive term without negatives.
- ``loss_alignment``: TR-DETR's CTC (clip-text) and VTC (video-text) losses, which its official train
  loop adds outside the criterion (tr_detr/loss_fun); here they are named terms ``loss_ctc`` /
  ``loss_vtc`` with their coefficients in ``weight_dict``. They need ``targets["src_pos_mask"]``
  (relevant clips) and the text mask (``targets["src_txt_mask"]``, else ``outputs["src_txt_mask"]``).
Aux decoder layers get spans / labels (not saliency or alignment), suffixed ``_{i}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.matcher import FOREGROUND, HungarianMatcher
from mrhd.models.spans import generalized_temporal_iou, span_cxw_to_xx

BACKGROUND = 1
PER_LAYER_LOSSES = ("spans", "labels")


@dataclass
class CriterionConfig:
    set_cost_class: float = 4
    set_cost_span: float = 10
    set_cost_giou: float = 1
    span_loss_coef: float = 10
    giou_loss_coef: float = 1
    label_loss_coef: float = 4
    lw_saliency: float = 1.0
    eos_coef: float = 0.1
    saliency_margin: float = 0.2
    dec_layers: int = 2
    aux_loss: bool = True
    label_loss: str = "ce"            # "ce" (empty_weight) | "focal" (TR-DETR)
    rank_contrastive: bool = False    # QD-DETR / TR-DETR
    neg_pair: bool = False            # QD-DETR (needs saliency_scores_neg)
    alignment: bool = False           # TR-DETR CTC / VTC
    ctc_loss_coef: float = 0.5
    vtc_loss_coef: float = 0.3
    alignment_temperature: float = 0.07
    use_matcher: bool = True          # False for TVSum in QD-DETR / TR-DETR (saliency only)
    set_cost_iou: float = 0           # SG-DETR: predicted IoU in the matching cost
    span_loss: str = "l1"             # "l1" | "smooth_l1" (SG-DETR)


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Elementwise focal loss (Lin et al. 2017), the formula of torchvision.ops.sigmoid_focal_loss."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


@torch.no_grad()
def top1_accuracy(logits: torch.Tensor, target: int) -> torch.Tensor:
    """Percentage of rows whose arg-max is ``target`` (official misc.accuracy, k=1)."""
    pred = logits.topk(1, 1, True, True)[1].t()
    return pred.eq(target).view(-1).float().sum(0) * (100.0 / logits.size(0))


class SetCriterion(nn.Module):
    def __init__(self, cfg: CriterionConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.span_loss not in ("l1", "smooth_l1"):
            raise MrhdError(f"span_loss {cfg.span_loss!r} is unknown; choose l1 or smooth_l1")
        self.matcher = HungarianMatcher(cfg.set_cost_class, cfg.set_cost_span, cfg.set_cost_giou, cfg.set_cost_iou)
        self.losses = ["spans", "labels", "saliency"] + (["alignment"] if cfg.alignment else [])
        empty_weight = torch.ones(2)
        empty_weight[-1] = cfg.eos_coef  # background (index 1) down-weighted
        self.register_buffer("empty_weight", empty_weight)
        self.weight_dict = self.build_weight_dict()

    def build_weight_dict(self) -> dict[str, float]:
        c = self.cfg
        w = {"loss_span": c.span_loss_coef, "loss_giou": c.giou_loss_coef,
             "loss_label": c.label_loss_coef, "loss_saliency": c.lw_saliency}
        if c.aux_loss:
            for i in range(c.dec_layers - 1):
                w.update({f"{k}_{i}": v for k, v in list(w.items())
                          if k in ("loss_span", "loss_giou", "loss_label")})
        if c.alignment:
            w.update({"loss_ctc": c.ctc_loss_coef, "loss_vtc": c.vtc_loss_coef})
        return w

    @staticmethod
    def src_permutation_idx(indices):
        src_idx = torch.cat([src for src, _ in indices])
        sizes = torch.tensor([len(src) for src, _ in indices], device=src_idx.device)
        batch_idx = torch.repeat_interleave(torch.arange(len(indices), device=src_idx.device), sizes)
        return batch_idx, src_idx

    def loss_spans(self, outputs, targets, indices):
        idx = self.src_permutation_idx(indices)
        src_spans = outputs["pred_spans"][idx]
        tgt_spans = torch.cat([t["spans"][i] for t, (_, i) in zip(targets["span_labels"], indices)], dim=0)
        span_loss = F.smooth_l1_loss if self.cfg.span_loss == "smooth_l1" else F.l1_loss
        loss_span = span_loss(src_spans, tgt_spans, reduction="none")
        loss_giou = 1 - torch.diag(generalized_temporal_iou(span_cxw_to_xx(src_spans), span_cxw_to_xx(tgt_spans)))
        return {"loss_span": loss_span.mean(), "loss_giou": loss_giou.mean()}

    def loss_labels(self, outputs, targets, indices):
        src_logits = outputs["pred_logits"]
        idx = self.src_permutation_idx(indices)
        target_classes = torch.full(src_logits.shape[:2], BACKGROUND, dtype=torch.int64, device=src_logits.device)
        target_classes[idx] = FOREGROUND
        if self.cfg.label_loss == "focal":
            onehot = F.one_hot(target_classes, num_classes=2).permute(0, 2, 1).float()
            loss = sigmoid_focal_loss(src_logits.float().transpose(1, 2), onehot).mean()
        else:
            loss = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight,
                                   reduction="none").mean()
        return {"loss_label": loss, "class_error": 100 - top1_accuracy(src_logits[idx], FOREGROUND)}

    def saliency_hinge(self, scores, targets):
        """Margin ranking of sampled (positive, negative) clip pairs (Moment-DETR)."""
        pos_indices = targets["saliency_pos_labels"]
        neg_indices = targets["saliency_neg_labels"]
        num_pairs = pos_indices.shape[1]
        batch = torch.arange(len(scores), device=scores.device)
        pos = torch.stack([scores[batch, pos_indices[:, c]] for c in range(num_pairs)], dim=1)
        neg = torch.stack([scores[batch, neg_indices[:, c]] for c in range(num_pairs)], dim=1)
        return torch.clamp(self.cfg.saliency_margin + neg - pos, min=0).sum() / (len(pos) * num_pairs) * 2

    @staticmethod
    def saliency_rank_contrastive(scores, labels, vid_mask, tau: float = 0.5):
        """QD-DETR's rank-contrastive loss: for each threshold r in 1..11, clips with label >= r are
        positives of a softmax over all clips (padding pushed to -1e3); mean over the batch, / 12."""
        scores = vid_mask * scores + (1.0 - vid_mask) * -1e3
        total = 0.0
        for rand_idx in range(1, 12):
            drop_mask = ~(labels > 100)  # no drop (official)
            pos_mask = labels >= rand_idx
            if torch.sum(pos_mask) == 0:
                continue
            batch_drop_mask = torch.sum(pos_mask, dim=1) > 0
            cur = scores * drop_mask / tau + ~drop_mask * -1e3
            logits = cur - torch.max(cur, dim=1, keepdim=True)[0]
            log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True) + 1e-6)
            mean_log_prob_pos = (pos_mask * log_prob * vid_mask).sum(1) / (pos_mask.sum(1) + 1e-6)
            total = total + (-mean_log_prob_pos * batch_drop_mask).mean()
        return total / 12

    def loss_saliency(self, outputs, targets, indices):
        if "saliency_pos_labels" not in targets:
            return {"loss_saliency": 0}
        scores = outputs["saliency_scores"]
        loss = self.saliency_hinge(scores, targets)
        if self.cfg.rank_contrastive:
            vid_mask = outputs["video_mask"]
            labels = targets["saliency_all_labels"]
            if self.cfg.neg_pair:
                neg = outputs["saliency_scores_neg"]
                loss_neg_pair = (-torch.log(1.0 - torch.sigmoid(neg)) * vid_mask).sum(dim=1).mean()
                rank = self.saliency_rank_contrastive(torch.cat([scores, neg], dim=1),
                                                      torch.cat([labels, torch.zeros_like(labels)], dim=1),
                                                      vid_mask.repeat([1, 2]))
                loss = loss + rank + loss_neg_pair
            else:
                loss = loss + self.saliency_rank_contrastive(scores, labels, vid_mask)
        return {"loss_saliency": loss}

    def loss_alignment(self, outputs, targets, indices):
        """TR-DETR CTC (clip-text, BCE of clip/sentence cosine / T vs relevant clips) and VTC
        (symmetric InfoNCE of mean video vs mean text), tr_detr/loss_fun/{CTCLoss,VTCLoss}.py."""
        t = self.cfg.alignment_temperature
        vid = F.normalize(outputs["src_vid_ed"], dim=2)
        txt = F.normalize(outputs["src_txt_ed"], dim=2)
        if "src_pos_mask" not in targets:
            raise MrhdError("TR-DETR's CTC loss needs targets['src_pos_mask'] (relevant clips of each query)")
        txt_mask = targets.get("src_txt_mask", outputs.get("src_txt_mask"))
        if txt_mask is None:
            raise MrhdError("TR-DETR's CTC loss needs the text mask (targets or outputs 'src_txt_mask')")
        txt_mask = txt_mask.unsqueeze(-1)
        txt_global = torch.sum(txt * txt_mask, dim=1) / torch.sum(txt_mask, dim=1)
        sim = torch.bmm(vid, txt_global.unsqueeze(-1)).squeeze(-1) * outputs["video_mask"]
        loss_ctc = F.binary_cross_entropy_with_logits(sim / t, targets["src_pos_mask"].long().float())
        txt_cls = F.normalize(outputs["src_txt_cls_ed"], dim=1)
        vid_cls = F.normalize(outputs["src_vid_cls_ed"], dim=1)
        logits = torch.mm(txt_cls, vid_cls.t()) / t
        labels = torch.arange(len(logits), device=logits.device)
        loss_vtc = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        return {"loss_ctc": loss_ctc, "loss_vtc": loss_vtc}

    def get_loss(self, name, outputs, targets, indices):
        return {"spans": self.loss_spans, "labels": self.loss_labels, "saliency": self.loss_saliency,
                "alignment": self.loss_alignment}[name](outputs, targets, indices)

    def forward(self, outputs: dict, targets: dict, return_indices: bool = False):
        """Raw (unweighted) loss terms; weight with ``weight_dict`` (see :meth:`weighted_total`).
        With ``return_indices`` also the matcher indices: {"final": [...], "aux_0": [...], ...}."""
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        all_indices = {}
        losses = {}
        names = self.losses if self.cfg.use_matcher else ["saliency"]
        indices = self.matcher(main, targets) if self.cfg.use_matcher else None
        all_indices["final"] = indices
        for name in names:
            losses.update(self.get_loss(name, outputs, targets, indices))
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            if not self.cfg.use_matcher:
                break
            indices = self.matcher(aux, targets)
            all_indices[f"aux_{i}"] = indices
            for name in PER_LAYER_LOSSES:
                losses.update({f"{k}_{i}": v for k, v in self.get_loss(name, aux, targets, indices).items()})
        return (losses, all_indices) if return_indices else losses

    def weighted_total(self, losses: dict) -> torch.Tensor:
        """sum(loss[k] * weight_dict[k]) over the terms present, as the official train loop does."""
        return sum(losses[k] * self.weight_dict[k] for k in losses if k in self.weight_dict)
