"""SG-DETR's losses, one small method per term, on top of the shared :class:`SetCriterion`.

The shared criterion (label_loss="focal", span_loss="smooth_l1", the predicted IoU in the matching
cost) gives the DETR head's matched span / GIoU / focal-label losses on every decoder layer. Added here:

- ``loss_saliency`` (global scores) and ``loss_saliency_local`` (local scores), each the sum of the
  SG-DETR code's terms (``src/losses/saliency_losses.py``): BCE against clip relevance
  (label > 0), the negative-pair term -log(1 - sigmoid(neg)) averaged over valid clips, the
  margin hinge on SIGMOID scores (margin 0.15, x2 / #pairs), and QD-DETR's rank-contrastive loss
  over [scores, negative scores] times 0.25. The code's attention-map terms need CG-DETR's dummy
  tokens, which this model does not have.
- ``loss_iou`` (+ ``_i`` per aux layer): BCE of the IoU head against the detached IoU between each
  matched query's span and its ground truth.
- ``loss_{span,giou,label}_enc``: the query-selection proposals, Hungarian-matched per sample over
  ALL valid proposals (DINO supervises only the selected top-k; with few queries that lets
  never-trained proposals overtake the suppressed ones every step and the selection churns).
- ``loss_{span,giou,label}_dn`` (+ ``_i``): denoising groups; positives regress to and classify as
  their ground truth, negatives classify as background (DINO contrastive denoising); weighted
  0.5 x the matched terms' weights (the code's ``denoise_reducer``).
- ``loss_ms_align`` (paper's moment-sentence alignment; the code's Moment2TextLosses without dummy
  tokens, src/losses/mom2txt_losses.py): the cosine similarities of each moment token with every
  sentence token of the batch, one-vs-rest sigmoid focal loss (alpha 0.5, gamma 2, summed over the
  classes) with its own sentence as the class. ``loss_momcls`` (paper's moment-token loss): BCE of
  moment token . clip / sqrt(d) against clip relevance, times the video mask, mean.
- ``loss_co_{span,giou,label}`` (+ ``_i``): the collaborative (ATSS-positive) queries of every decoder
  layer (the code's AuxRefLosses): focal (no alpha) on all, L1 on (start, end) and GIoU on the
  positives; weighted ``co_reducer`` x the matched terms' weights.
- ``loss_atss_{cls,giou,ctr}``: the dense head with ATSS assignment (Zhang et al. 2020, 1-D):
  per ground truth and pyramid level, the ``atss_topk`` positions whose anchor centres are closest
  are candidates; those
  whose anchor IoU >= mean + std of the candidates' IoUs and whose centre lies inside the ground
  truth are positives (ties to the highest IoU). Focal classification normalised by the number of
  positives, GIoU weighted by the centerness target, BCE centerness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.criterion import SetCriterion, sigmoid_focal_loss
from mrhd.models.matcher import FOREGROUND
from mrhd.models.spans import generalized_temporal_iou, span_cxw_to_xx, temporal_iou

BACKGROUND = 1


def matched_iou(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of (N, 2) cxw spans."""
    if len(src) == 0:
        return src.new_zeros(0)
    return torch.diag(temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt))[0])


def padded_spans(span_labels: list, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``{"spans": (m, 2)}`` -> spans (B, M, 2) float32 zero-padded, valid (B, M) bool."""
    m = max(1, max(len(t["spans"]) for t in span_labels))
    spans = torch.zeros(len(span_labels), m, 2, device=device)
    valid = torch.zeros(len(span_labels), m, dtype=torch.bool, device=device)
    for b, t in enumerate(span_labels):
        spans[b, :len(t["spans"])] = t["spans"].to(device=device, dtype=torch.float32)
        valid[b, :len(t["spans"])] = True
    return spans, valid


@torch.no_grad()
def atss_assign_batch(anchors: torch.Tensor, valid: torch.Tensor, level_sizes: list, gt: torch.Tensor,
                      gt_valid: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """anchors (B, L, 2) cxw of all pyramid levels concatenated (sizes ``level_sizes``), valid (B, L)
    bool, gt (B, M, 2) cxw with gt_valid (B, M) -> (positive (B, L) bool, assigned gt index (B, L)).
    Candidates: per ground truth and level the ``topk`` valid anchors with the closest centres
    (equal distances: the lower index first)."""
    g_xx = span_cxw_to_xx(gt)
    iou = temporal_iou(span_cxw_to_xx(anchors), g_xx)[0]                                 # (B, L, M)
    distance = (anchors[:, :, None, 0] - gt[:, None, :, 0]).abs().masked_fill(~valid[:, :, None], float("inf"))
    is_cand = torch.zeros_like(iou, dtype=torch.bool)
    start = 0
    for size in level_sizes:                                   # the k closest centres per level
        k = min(topk, size)
        n_valid = valid[:, start:start + size].sum(1).clamp(max=k)                       # (B,)
        order = distance[:, start:start + size].sort(dim=1, stable=True).indices[:, :k] + start   # (B, k, M)
        keep = torch.arange(k, device=anchors.device)[None, :, None] < n_valid[:, None, None]
        is_cand.scatter_(1, order, keep.expand_as(order))
        start += size
    cand_iou = torch.where(is_cand, iou, torch.zeros_like(iou))
    n_cand = is_cand.sum(1).clamp(min=1)                                                 # (B, M)
    mean = cand_iou.sum(1) / n_cand
    std = torch.sqrt((((iou - mean[:, None]) ** 2) * is_cand).sum(1) / (n_cand - 1).clamp(min=1))   # unbiased
    inside = (anchors[:, :, None, 0] > g_xx[:, None, :, 0]) & (anchors[:, :, None, 0] < g_xx[:, None, :, 1])
    ok = is_cand & (iou >= (mean + std)[:, None]) & inside & valid[:, :, None] & gt_valid[:, None, :]
    best = torch.where(ok, iou, torch.full_like(iou, -1.0)).max(2)
    return best.values >= 0, best.indices


def atss_assign(anchors: torch.Tensor, valid: torch.Tensor, level_sizes: list, gt: torch.Tensor, topk: int):
    """One sample: anchors (L, 2), valid (L,), gt (M, 2) cxw -> (positive (L,), assigned (L,))."""
    if len(gt) == 0:
        return torch.zeros_like(valid, dtype=torch.bool), torch.zeros(len(anchors), dtype=torch.long,
                                                                          device=anchors.device)
    pos, assigned = atss_assign_batch(anchors[None], valid[None], level_sizes, gt[None].to(anchors),
                                      torch.ones(1, len(gt), dtype=torch.bool, device=anchors.device), topk)
    return pos[0], assigned[0]


class SGDETRCriterion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.base = SetCriterion(cfg.criterion_config(label_loss="focal"))
        self.base.losses = ["spans", "labels"]       # saliency is computed here (both score kinds)
        self.matcher = self.base.matcher
        self.weight_dict = self.build_weight_dict()

    def build_weight_dict(self) -> dict[str, float]:
        c = self.cfg
        w = dict(self.base.weight_dict)
        per_layer = {"loss_iou": c.iou_loss_coef}
        if c.dn_groups > 0:
            r = c.denoise_reducer
            per_layer.update({"loss_span_dn": r * c.span_loss_coef, "loss_giou_dn": r * c.giou_loss_coef,
                              "loss_label_dn": r * c.label_loss_coef})
        w.update(per_layer)
        if c.aux_loss:
            for i in range(c.dec_layers - 1):
                w.update({f"{k}_{i}": v for k, v in per_layer.items()})
        if c.co_queries:
            r = c.co_reducer
            co = {"loss_co_span": r * c.span_loss_coef, "loss_co_giou": r * c.giou_loss_coef,
                  "loss_co_label": r * c.label_loss_coef}
            w.update(co)
            if c.aux_loss:
                for i in range(c.dec_layers - 1):
                    w.update({f"{k}_{i}": v for k, v in co.items()})
        w.update({"loss_ms_align": c.lw_ms_align, "loss_momcls": c.lw_momcls})
        w.update({"loss_saliency_local": c.lw_local_saliency,
                  "loss_span_enc": c.span_loss_coef, "loss_giou_enc": c.giou_loss_coef,
                  "loss_label_enc": c.label_loss_coef,
                  "loss_atss_cls": c.atss_cls_coef, "loss_atss_giou": c.atss_giou_coef,
                  "loss_atss_ctr": c.atss_ctr_coef})
        return w

    # ---- terms -------------------------------------------------------------------------------
    def saliency_bce(self, scores, mask, targets):
        relevant = targets["saliency_all_labels"].clamp(0, 1)
        bce = F.binary_cross_entropy_with_logits(scores, relevant, reduction="none")
        return bce[mask.bool()].mean()

    @staticmethod
    def saliency_neg_pair(scores_neg, mask, real_neg):
        loss = -torch.log((1.0 - torch.sigmoid(scores_neg)).clamp(min=1e-7))
        valid = mask.bool() & real_neg[:, None]
        return loss[valid].mean() if valid.any() else scores_neg.sum() * 0

    def saliency_margin(self, scores, targets):
        """Hinge on sigmoid scores of sampled (positive, negative) clip pairs."""
        prob = torch.sigmoid(scores)
        pos = torch.gather(prob, 1, targets["saliency_pos_labels"])
        neg = torch.gather(prob, 1, targets["saliency_neg_labels"])
        return torch.clamp(self.cfg.saliency_margin + neg - pos, min=0).sum() / pos.numel() * 2

    def saliency_rank(self, scores, scores_neg, mask, labels, real_neg):
        """Rank-contrastive over [scores, negative scores] for real-negative samples, over the
        scores alone for the others (the code adds the two)."""
        rank = scores.sum() * 0
        if real_neg.any():
            r = real_neg
            rank = rank + self.base.saliency_rank_contrastive(
                torch.cat([scores[r], scores_neg[r]], dim=1),
                torch.cat([labels[r], torch.zeros_like(labels[r])], dim=1), mask[r].repeat(1, 2))
        if (~real_neg).any():
            f = ~real_neg
            rank = rank + self.base.saliency_rank_contrastive(scores[f], labels[f], mask[f])
        return rank

    def saliency_terms(self, scores, scores_neg, mask, targets, real_neg=None):
        labels = targets["saliency_all_labels"]
        if real_neg is None:
            real_neg = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
        rank = self.saliency_rank(scores, scores_neg, mask, labels, real_neg)
        return (self.saliency_bce(scores, mask, targets) + self.saliency_neg_pair(scores_neg, mask, real_neg)
                + self.saliency_margin(scores, targets) + self.cfg.contrastive_reducer * rank)

    def loss_saliency(self, outputs, targets):
        if "saliency_pos_labels" not in targets:
            return {}
        if "saliency_scores_neg" not in outputs:
            raise MrhdError("sg_detr: the saliency losses need the training forward (model.train())")
        mask, real_neg = outputs["video_mask"], outputs["real_neg_mask"]
        return {"loss_saliency": self.saliency_terms(outputs["saliency_scores"], outputs["saliency_scores_neg"],
                                                     mask, targets, real_neg),
                "loss_saliency_local": self.saliency_terms(outputs["local_saliency_scores"],
                                                           outputs["local_saliency_scores_neg"], mask, targets,
                                                           real_neg)}

    def loss_iou(self, outputs, targets, indices, suffix=""):
        idx = self.base.src_permutation_idx(indices)
        src = outputs["pred_spans"][idx]
        tgt = torch.cat([t["spans"][i] for t, (_, i) in zip(targets["span_labels"], indices)], dim=0)
        target_iou = matched_iou(src.detach(), tgt)
        loss = F.binary_cross_entropy_with_logits(outputs["pred_iou"][idx], target_iou) if len(src) \
            else outputs["pred_iou"].sum() * 0
        return {f"loss_iou{suffix}": loss}

    def loss_enc(self, outputs, targets):
        """Hungarian-matched span / GIoU / focal losses over every valid proposal of each sample
        (valid proposals are a prefix: clip-major order); the mean over samples of each sample's
        mean, computed for the whole batch at once (one matcher call, no per-sample graph)."""
        enc = outputs["enc_outputs"]
        valid = enc["mask"].bool()
        n_valid = valid.sum(1)
        bsz = len(n_valid)
        indices = self.matcher({"pred_logits": enc["pred_logits"], "pred_spans": enc["pred_spans"]}, targets,
                               valid_queries=n_valid.tolist())
        batch_idx, src_idx = self.base.src_permutation_idx(indices)
        batch_idx, src_idx = batch_idx.to(valid.device), src_idx.to(valid.device)
        src = enc["pred_spans"][batch_idx, src_idx]
        tgt = torch.cat([t["spans"][j] for t, (_, j) in zip(targets["span_labels"], indices)], dim=0)
        matched = torch.bincount(batch_idx, minlength=bsz).clamp(min=1)[batch_idx]   # per pair: its sample's count
        span_loss = F.smooth_l1_loss if self.base.cfg.span_loss == "smooth_l1" else F.l1_loss
        loss_span = (span_loss(src, tgt, reduction="none").sum(1) / (2 * matched)).sum() / bsz
        giou = 1 - torch.diag(generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))
        loss_giou = (giou / matched).sum() / bsz
        target = torch.full(valid.shape, BACKGROUND, dtype=torch.int64, device=valid.device)
        target[batch_idx, src_idx] = FOREGROUND
        onehot = F.one_hot(target, num_classes=2).permute(0, 2, 1).float()
        logits = enc["pred_logits"].float().masked_fill(~valid[..., None], 0).transpose(1, 2)   # (B, 2, L)
        focal = sigmoid_focal_loss(logits, onehot).sum(1) * valid                             # (B, L)
        loss_label = (focal.sum(1) / (2 * n_valid)).sum() / bsz
        return {"loss_span_enc": loss_span, "loss_giou_enc": loss_giou, "loss_label_enc": loss_label}

    def loss_dn(self, outputs):
        dn = outputs["dn_outputs"]
        valid = dn["valid"].bool()                                   # (B, 2n)
        pos = valid & dn["positive"][None, :]
        layers = dn["pred_logits"].shape[0]
        target_classes = torch.full(valid.shape, BACKGROUND, dtype=torch.long, device=valid.device)
        target_classes[pos] = FOREGROUND
        onehot = F.one_hot(target_classes, 2).float()
        losses = {}
        for layer in range(layers):
            suffix = "" if layer == layers - 1 else f"_{layer}"
            logits = dn["pred_logits"][layer]                        # (G, B, 2n, 2)
            spans = dn["pred_spans"][layer][:, pos]                  # (G, P, 2)
            gt = dn["gt_spans"][pos].unsqueeze(0).expand_as(spans)
            focal = sigmoid_focal_loss(logits[:, valid], onehot[valid].unsqueeze(0).expand(logits.shape[0], -1, -1))
            if spans.shape[1]:
                src, tgt = spans.reshape(-1, 2), gt.reshape(-1, 2)
                l1 = F.l1_loss(src, tgt)
                giou = (1 - torch.diag(generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))).mean()
            else:
                l1 = giou = logits.sum() * 0
            losses.update({f"loss_span_dn{suffix}": l1, f"loss_giou_dn{suffix}": giou,
                           f"loss_label_dn{suffix}": focal.mean()})
        return losses

    def loss_ms_align(self, outputs):
        moment = F.normalize(outputs["moment_token"], dim=1)
        sentence = F.normalize(outputs["sentence_token"], dim=1)
        sim = moment @ sentence.T                                            # (B, B)
        onehot = torch.eye(len(sim), device=sim.device)
        return {"loss_ms_align": sigmoid_focal_loss(sim, onehot, alpha=0.5, gamma=2.0).mean(0).sum()}

    def loss_momcls(self, outputs, targets):
        token = outputs["moment_token"]
        logits = torch.einsum("bd,bld->bl", token, outputs["moment_clips"]) * token.shape[1] ** -0.5
        label = targets["relevant_clips"].clamp(0, 1).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, label, reduction="none") * outputs["video_mask"]
        return {"loss_momcls": bce.mean()}

    def loss_co(self, outputs):
        co = outputs["co_outputs"]
        layers = co["pred_logits"].shape[0]
        pos = co["labels"].bool()
        losses = {}
        for layer in range(layers):
            suffix = "" if layer == layers - 1 else f"_{layer}"
            focal = sigmoid_focal_loss(co["pred_logits"][layer][..., FOREGROUND], co["labels"], alpha=-1)
            src, tgt = span_cxw_to_xx(co["pred_spans"][layer][pos]), span_cxw_to_xx(co["gt_spans"][pos])
            giou = 1 - torch.diag(generalized_temporal_iou(src, tgt))
            losses.update({f"loss_co_label{suffix}": focal.mean(), f"loss_co_span{suffix}": F.l1_loss(src, tgt),
                           f"loss_co_giou{suffix}": giou.mean()})
        return losses

    def loss_atss(self, outputs, targets):
        anchors = outputs["atss_anchors"]
        mask = outputs["atss_mask"]
        gt_all, gt_valid = padded_spans(targets["span_labels"], anchors.device)
        pos, assigned = atss_assign_batch(anchors, mask.bool(), outputs["atss_level_sizes"], gt_all, gt_valid,
                                          self.cfg.atss_topk)                  # (B, L)
        gt = torch.gather(gt_all, 1, assigned[..., None].expand(-1, -1, 2))   # (B, L, 2) cxw
        num_pos = pos.sum().clamp(min=1).float()
        focal = sigmoid_focal_loss(outputs["atss_logits"], pos.float()) * mask
        loss_cls = focal.sum() / num_pos
        if not pos.any():
            zero = outputs["atss_spans"].sum() * 0 + outputs["atss_centerness"].sum() * 0
            return {"loss_atss_cls": loss_cls, "loss_atss_giou": zero, "loss_atss_ctr": zero}
        centre = anchors[pos][:, 0]
        gt_xx = span_cxw_to_xx(gt[pos])
        left, right = centre - gt_xx[:, 0], gt_xx[:, 1] - centre
        ctr_target = torch.minimum(left, right) / torch.maximum(left, right)
        pred = outputs["atss_spans"][pos]
        giou = torch.diag(generalized_temporal_iou(span_cxw_to_xx(pred), gt_xx))
        loss_giou = ((1 - giou) * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(outputs["atss_centerness"][pos], ctr_target)
        return {"loss_atss_cls": loss_cls, "loss_atss_giou": loss_giou, "loss_atss_ctr": loss_ctr}

    # ---- all ---------------------------------------------------------------------------------
    def forward(self, outputs: dict, targets: dict, return_indices: bool = False):
        """Raw loss terms (weight with ``weight_dict``)."""
        losses, indices = self.base(outputs, targets, return_indices=True)
        losses.update(self.loss_saliency(outputs, targets))
        losses.update(self.loss_iou(outputs, targets, indices["final"]))
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            losses.update(self.loss_iou(aux, targets, indices[f"aux_{i}"], f"_{i}"))
        losses.update(self.loss_enc(outputs, targets))
        if "dn_outputs" in outputs:
            losses.update(self.loss_dn(outputs))
        losses.update(self.loss_atss(outputs, targets))
        if "moment_token" in outputs:
            losses.update(self.loss_ms_align(outputs))
            losses.update(self.loss_momcls(outputs, targets))
        if "co_outputs" in outputs:
            losses.update(self.loss_co(outputs))
        return (losses, indices) if return_indices else losses

    def weighted_total(self, losses: dict) -> torch.Tensor:
        return sum(losses[k] * self.weight_dict[k] for k in losses if k in self.weight_dict)
