"""VideoLights' criterion (dpaul06/VideoLights@76308bb, video_lights/model.py ``SetCriterion``).

Built on the shared :class:`~mrhd.models.criterion.SetCriterion` (matcher, span / label losses,
hinge, rank-contrastive term with rolled-text negatives), plus:

- in ``loss_saliency``: the negative-pair loss; ``1 - cos`` between each sample's L2-normalised
  ground-truth saliency and its predicted saliency min-shifted over the whole batch and divided by
  the label range; the same for ``saliency_scores_mr`` (joint-task feedback); and the hard
  positive / hard negative losses -- MSE between the normalised prediction and target restricted to
  the positive clips (``targets["saliency_pos_index"]``) or to the rest, times ``(epoch + 1)`` and
  ``hard_pos_neg_loss_coef``.
- ``loss_contrastive_align``: query/text-token InfoNCE (matched queries positive; all text tokens,
  padding included, as upstream) plus, on the last layer only, the clip/sentence alignment
  ``1 - cos`` of the mean projected text against the refined clips.

The hard losses grow with the epoch: set :attr:`epoch` (0-based) from the training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrhd.models.criterion import SetCriterion


def _range_normalised(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(s - min over the batch) / (label max - label min), then L2-normalised per sample."""
    return F.normalize((scores - scores.min()) / (labels.max() - labels.min()), dim=1, p=2)


class VideoLightsCriterion(SetCriterion):
    def __init__(self, cfg):
        self.model_cfg = cfg
        super().__init__(cfg.criterion_config(label_loss="ce", rank_contrastive=True, neg_pair=True,
                                              use_matcher=cfg.dset_name not in ("tvsum", "youtube_uni")))
        self.losses = ["spans", "labels", "saliency"] + (["contrastive_align"] if cfg.contrastive_align_loss else [])
        self.epoch = 0

    def build_weight_dict(self) -> dict[str, float]:
        c, m = self.cfg, self.model_cfg
        w = {"loss_span": c.span_loss_coef, "loss_giou": c.giou_loss_coef, "loss_label": c.label_loss_coef,
             "loss_saliency": c.lw_saliency}
        if m.contrastive_align_loss:
            w["loss_contrastive_align"] = m.contrastive_align_loss_coef
        if c.aux_loss:
            base = dict(w)
            for i in range(c.dec_layers - 1):
                w.update({f"{k}_{i}": v for k, v in base.items() if k != "loss_saliency"})
        return w

    def forward(self, outputs: dict, targets: dict, return_indices: bool = False):
        """As the shared criterion, with the contrastive alignment also on every aux layer."""
        losses, indices = super().forward(outputs, targets, return_indices=True)
        if "contrastive_align" in self.losses and self.cfg.use_matcher:
            for i, aux in enumerate(outputs.get("aux_outputs") or []):
                losses[f"loss_contrastive_align_{i}"] = \
                    self.loss_contrastive_align(aux, targets, indices[f"aux_{i}"])["loss_contrastive_align"]
        return (losses, indices) if return_indices else losses

    def get_loss(self, name, outputs, targets, indices):
        if name == "contrastive_align":
            return self.loss_contrastive_align(outputs, targets, indices)
        return super().get_loss(name, outputs, targets, indices)

    def loss_saliency(self, outputs, targets, indices):
        if "saliency_pos_labels" not in targets:
            return {"loss_saliency": 0}
        m = self.model_cfg
        loss = super().loss_saliency(outputs, targets, indices)["loss_saliency"]   # hinge + rank + neg pair
        labels = targets["saliency_all_labels"]
        gt_norm = F.normalize(labels, dim=1, p=2)
        sal_norm = _range_normalised(outputs["saliency_scores"], labels)
        loss = loss + ((1 - F.cosine_similarity(gt_norm, sal_norm)) * m.cos_sim_loss_coef).sum()
        if m.mr_to_hd_loss and "saliency_scores_mr" in outputs:
            mr_norm = _range_normalised(outputs["saliency_scores_mr"], labels)
            loss = loss + (1 - F.cosine_similarity(mr_norm, gt_norm)).sum() * m.mr_to_hd_loss_coef
        if m.hard_pos_neg_loss and "saliency_pos_index" in targets:
            loss = loss + self.hard_negative_loss(sal_norm, gt_norm, targets) \
                + self.hard_positive_loss(sal_norm, gt_norm, targets)
        return {"loss_saliency": loss}

    def _hard_loss(self, pred, gt, keep):
        return F.mse_loss(gt * keep, pred * keep) * (self.epoch + 1) * self.model_cfg.hard_pos_neg_loss_coef

    def hard_negative_loss(self, pred, gt, targets):
        return self._hard_loss(pred, gt, ~targets["saliency_pos_index"].bool())

    def hard_positive_loss(self, pred, gt, targets):
        return self._hard_loss(pred, gt, targets["saliency_pos_index"].bool())

    def loss_contrastive_align(self, outputs, targets, indices):
        logits = torch.einsum("bmd,bnd->bmn", outputs["proj_queries"], outputs["proj_txt_mem"])
        logits = logits.sum(2) / self.model_cfg.temperature                         # (B, #queries)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        positive[self.src_permutation_idx(indices)] = True
        pos_term = logits.masked_fill(~positive, 0).sum(1)
        nce = -pos_term / positive.sum(1) + logits.logsumexp(1)
        return {"loss_contrastive_align": nce.mean() + self.clip_sentence_alignment(outputs, targets)}

    @staticmethod
    def clip_sentence_alignment(outputs, targets):
        """1 - cos between the label profile and the clip/mean-text cosine profile (last layer only)."""
        if "src_txt" not in outputs or "src_vid" not in outputs:
            return torch.zeros(1, device=targets["saliency_all_labels"].device)
        sentence = outputs["src_txt"].mean(dim=1)
        scores = F.cosine_similarity(sentence.unsqueeze(1), outputs["src_vid"], dim=-1)
        labels = targets["saliency_all_labels"]
        cos = F.cosine_similarity(F.normalize(labels, dim=1, p=2), _range_normalised(scores, labels), dim=1)
        return (1 - cos).sum()
