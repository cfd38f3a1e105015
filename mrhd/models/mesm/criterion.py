"""MESM's losses (lntzm/MESM ``model/criterion.py``) on top of the shared :class:`SetCriterion`.

- spans / labels / aux layers: the shared terms (same matcher, CE with ``eos_coef``).
- ``loss_saliency``: rank-contrastive over [positive, negative-pair] scores (thresholds 1..11,
  tau 0.5) divided by ``rank_coef`` (12), + the negative-pair term, + the hinge on sampled pairs
  only with ``use_triplet`` (QVHighlights yes, Charades no). Rank labels: ``saliency_all_labels``
  where the data has them, else the moment's clip mask (the official Charades branch).
- ``loss_rec_fw`` (FW-MESM): label-smoothed (0.1) NLL of the word classes of every valid token,
  mean per query then over the batch (official ``cal_nll_loss``).
- ``loss_rec_ss`` (SS-MESM): InfoNCE (tau ``recss_tau``) between each query's mean projected clip
  of :func:`query_clip_mask` and the mean of its words + reconstructed sentence token, over the batch;
  positives are queries of the same group (YouTube id on QVHighlights, else video) whose merged
  moments have GIoU >= ``iou_gamma``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mrhd.models.criterion import CriterionConfig, SetCriterion
from mrhd.models.spans import generalized_temporal_iou, span_cxw_to_xx

LABEL_SMOOTHING = 0.1   # official cal_nll_loss eps


def merged_moments(span_labels: list[dict]) -> torch.Tensor:
    """(B, 2) normalised [start, end] spanning every window of each query (official moment_merge)."""
    xx = [span_cxw_to_xx(t["spans"]) for t in span_labels]
    return torch.stack([torch.stack([m[:, 0].min(), m[:, 1].max()]) for m in xx])


def moment_clip_mask(span_labels: list[dict], video_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the clips start_idx..end_idx (inclusive) of each query's merged moment, within
    its valid length (the official dataset's ``clip_mask``); at least one clip."""
    moments = merged_moments(span_labels).detach().float().cpu()
    lengths = video_mask.sum(dim=1).long().cpu()
    mask = torch.zeros(video_mask.shape, dtype=torch.bool)
    for i, ((st, ed), n) in enumerate(zip(moments.tolist(), lengths.tolist())):
        start = min(max(int(math.floor(st * n + 1e-6)), 0), n - 1)
        end = min(max(int(math.ceil(ed * n - 1e-6)) - 1, start), n - 1)
        mask[i, start: end + 1] = True
    return mask.to(video_mask.device)


def query_clip_mask(targets: dict, video_mask: torch.Tensor) -> torch.Tensor:
    """The clips FW-MESM rebuilds words from and rec_ss averages: QVHighlights (official
    ``dataset/qvhighlights.py``) takes the clips with a non-zero saliency label; Charades-STA / TACoS
    (``dataset/base.py``) the merged moment's clips, also used where a query has no labelled clip."""
    mask = moment_clip_mask(targets["span_labels"], video_mask)
    labels = targets.get("saliency_all_labels")
    if labels is None:
        return mask
    width = video_mask.shape[1]
    labelled = torch.zeros_like(mask)
    n = min(width, labels.shape[1])
    labelled[:, :n] = (labels[:, :n] != 0) & video_mask[:, :n].bool()
    has = labelled.any(dim=1, keepdim=True)
    return torch.where(has, labelled, mask)


class MESMCriterion(SetCriterion):
    def __init__(self, cfg: CriterionConfig, rank_coef: float = 12, use_triplet: bool = True,
                 rec_fw: bool = True, rec_ss: bool = True, recfw_coef: float = 0.5, recss_coef: float = 0.1,
                 iou_gamma: float = 0.9, recss_tau: float = 0.5):
        self.rank_coef = rank_coef
        self.use_triplet = use_triplet
        self.rec_fw, self.rec_ss = rec_fw, rec_ss
        self.recfw_coef, self.recss_coef = recfw_coef, recss_coef
        self.iou_gamma, self.recss_tau = iou_gamma, recss_tau
        super().__init__(cfg)
        self.losses = self.losses + (["rec_fw"] if rec_fw else []) + (["rec_ss"] if rec_ss else [])

    def build_weight_dict(self) -> dict[str, float]:
        w = super().build_weight_dict()
        if self.rec_fw:
            w["loss_rec_fw"] = self.recfw_coef
        if self.rec_ss:
            w["loss_rec_ss"] = self.recss_coef
        return w

    def clip_mask(self, outputs, targets) -> torch.Tensor:
        if "clip_mask" in outputs:
            return outputs["clip_mask"]
        return query_clip_mask(targets, outputs["video_mask"])

    def loss_saliency(self, outputs, targets, indices):
        vid_mask = outputs["video_mask"]
        scores, neg = outputs["saliency_scores"], outputs["saliency_scores_neg"]
        if "saliency_all_labels" in targets:
            labels = targets["saliency_all_labels"]
        else:
            labels = self.clip_mask(outputs, targets).float()
        loss_neg_pair = (-torch.log(1.0 - torch.sigmoid(neg)) * vid_mask).sum(dim=1).mean()
        rank = self.saliency_rank_contrastive(torch.cat([scores, neg], dim=1),
                                              torch.cat([labels, torch.zeros_like(labels)], dim=1),
                                              vid_mask.repeat([1, 2]))
        loss = rank * 12 / self.rank_coef + loss_neg_pair   # the shared term is already / 12
        if self.use_triplet and "saliency_pos_labels" in targets:
            loss = loss + self.saliency_hinge(scores, targets)
        return {"loss_saliency": loss}

    def loss_rec_fw(self, outputs, targets, indices):
        if "recfw_words_logit" not in outputs:   # no word labels (stored features) or eval mode
            return {}
        logit = outputs["recfw_words_logit"].log_softmax(dim=-1)
        label, mask = outputs["words_label"], outputs["words_mask"].float()
        acc = ((logit.argmax(dim=-1) == label).float() * mask).sum() / mask.sum()
        nll = -logit.gather(dim=-1, index=label.unsqueeze(-1)).squeeze(-1)
        smooth = -logit.sum(dim=-1)
        nll = (1 - LABEL_SMOOTHING) * nll + LABEL_SMOOTHING / logit.shape[-1] * smooth
        nll = (nll * mask).sum(dim=-1) / mask.sum(dim=-1)
        return {"loss_rec_fw": nll.mean(), "rec_fw_acc": acc.detach()}

    def loss_rec_ss(self, outputs, targets, indices):
        moments = merged_moments(targets["span_labels"])
        group = outputs["video_group"]
        pos_mask = (group[:, None] == group[None, :]) & (generalized_temporal_iou(moments, moments) >= self.iou_gamma)
        clip_mask = self.clip_mask(outputs, targets).unsqueeze(-1).float()
        clip_feat = (outputs["projed_video_feat"] * clip_mask).sum(dim=1) / clip_mask.sum(dim=1)
        words_mask = outputs["expanded_words_mask"].unsqueeze(-1).float()
        words_feat = (outputs["expanded_words_feat"] * words_mask).sum(dim=1) / words_mask.sum(dim=1)
        sim = F.normalize(clip_feat, dim=-1) @ F.normalize(words_feat, dim=-1).t() / self.recss_tau
        logits = sim - sim.max(dim=1, keepdim=True)[0]
        log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True) + 1e-6)
        mean_log_prob_pos = (pos_mask * log_prob).sum(1) / (pos_mask.sum(1) + 1e-6)
        return {"loss_rec_ss": -mean_log_prob_pos.mean()}

    def get_loss(self, name, outputs, targets, indices):
        if name == "rec_fw":
            return self.loss_rec_fw(outputs, targets, indices)
        if name == "rec_ss":
            return self.loss_rec_ss(outputs, targets, indices)
        return super().get_loss(name, outputs, targets, indices)
