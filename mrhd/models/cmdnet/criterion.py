"""CMDNet's losses: QD-DETR's set criterion plus the clip-text alignment module's three terms.

QD-DETR's terms are unchanged (:class:`mrhd.models.criterion.SetCriterion` with cross-entropy labels,
rank-contrastive saliency and the negative-pair term). The alignment terms act on the input
projections' outputs (``align_vid`` / ``align_txt``), cosine similarity times the model's learnable
CLIP-style ``align_logit_scale``:

- ``loss_align_vt`` (inter-modal, video-text): symmetric InfoNCE over the batch between each
  sentence (masked mean of its words) and its moment (mean of its relevant clips), as CLIP.
- ``loss_align_ct`` (inter-modal, clip-text): per video, a softmax over its valid clips of their
  similarity to the sentence; minus the mean log-probability of the relevant clips.
- ``loss_align_intra`` (intra-modal, video): supervised contrastive loss among the clips of one
  video; relevant clips are each other's positives, the other valid clips the negatives.

Relevant clips come from the ground-truth spans (a clip whose centre lies in a window; the clip
under a window's centre when a window covers no clip centre), so every label recipe works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrhd.models.criterion import CriterionConfig, SetCriterion
from mrhd.models.spans import span_cxw_to_xx


def relevant_clip_mask(span_labels: list[dict], video_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 float: clips inside any normalised (center, width) window of each sample."""
    bs, length = video_mask.shape
    out = torch.zeros_like(video_mask)
    for i, target in enumerate(span_labels):
        n = video_mask[i].sum()
        centers = (torch.arange(length, device=video_mask.device, dtype=video_mask.dtype) + 0.5) / n
        xx = span_cxw_to_xx(target["spans"].to(video_mask.dtype))
        if len(xx) == 0:
            continue
        inside = ((centers[:, None] >= xx[:, 0]) & (centers[:, None] <= xx[:, 1])).any(1)
        center_clip = (target["spans"][:, 0] * n).long().clamp(0, int(n) - 1)
        inside[center_clip] = True
        out[i] = inside.to(out.dtype) * video_mask[i]
    return out


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, L, d), mask (B, L) -> (B, d); rows without any valid entry give zeros."""
    return (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-6)


class CMDNetCriterion(SetCriterion):
    def __init__(self, cfg: CriterionConfig, align_vt_coef: float = 0.3, align_ct_coef: float = 0.5,
                 align_intra_coef: float = 0.3):
        self.align_coefs = {"loss_align_vt": align_vt_coef, "loss_align_ct": align_ct_coef,
                            "loss_align_intra": align_intra_coef}
        super().__init__(cfg)
        self.losses = self.losses + ["clip_text_alignment"]

    def build_weight_dict(self) -> dict[str, float]:
        return {**super().build_weight_dict(), **self.align_coefs}

    @staticmethod
    def video_text_contrastive(sent, moment, scale):
        """CLIP's symmetric InfoNCE between (B, d) normalised sentence and moment embeddings."""
        logits = scale * sent @ moment.t()
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

    @staticmethod
    def clip_text_contrastive(clips, sent, scale, relevant, video_mask):
        """Multi-positive InfoNCE over the valid clips of each video against its sentence."""
        logits = scale * torch.einsum("bld,bd->bl", clips, sent)
        logits = logits.masked_fill(video_mask == 0, float("-inf"))
        log_prob = logits.log_softmax(dim=1).masked_fill(video_mask == 0, 0.0)
        has_pos = relevant.sum(1) > 0
        per_video = -(log_prob * relevant).sum(1) / relevant.sum(1).clamp(min=1)
        return per_video[has_pos].mean() if has_pos.any() else logits.new_zeros(())

    @staticmethod
    def intra_video_contrastive(clips, scale, relevant, video_mask):
        """Supervised contrastive loss (Khosla et al. 2020) among the clips of each video with
        relevant clips as one class; anchors are relevant clips that have another relevant clip."""
        length = clips.shape[1]
        eye = torch.eye(length, dtype=torch.bool, device=clips.device)
        logits = scale * torch.bmm(clips, clips.transpose(1, 2))                  # (B, L, L)
        keys = (video_mask.unsqueeze(1) > 0) & ~eye
        logits = logits.masked_fill(~keys, float("-inf"))
        log_prob = logits.log_softmax(dim=2).masked_fill(~keys, 0.0)
        pos = (relevant.unsqueeze(1) * relevant.unsqueeze(2)).masked_fill(eye, 0.0)
        n_pos = pos.sum(2)
        anchors = n_pos > 0
        if not anchors.any():
            return logits.new_zeros(())
        per_anchor = -(log_prob * pos).sum(2) / n_pos.clamp(min=1)
        return per_anchor[anchors].mean()

    def loss_clip_text_alignment(self, outputs, targets, indices):
        if "span_labels" not in targets:
            return {}
        video_mask = outputs["video_mask"]
        scale = outputs["align_logit_scale"]
        clips = F.normalize(outputs["align_vid"], dim=-1)
        words = F.normalize(outputs["align_txt"], dim=-1)
        sent = F.normalize(masked_mean(words, outputs["src_txt_mask"]), dim=-1)
        relevant = relevant_clip_mask(targets["span_labels"], video_mask)
        moment = F.normalize(masked_mean(clips, relevant), dim=-1)
        return {"loss_align_vt": self.video_text_contrastive(sent, moment, scale),
                "loss_align_ct": self.clip_text_contrastive(clips, sent, scale, relevant, video_mask),
                "loss_align_intra": self.intra_video_contrastive(clips, scale, relevant, video_mask)}

    def get_loss(self, name, outputs, targets, indices):
        if name == "clip_text_alignment":
            return self.loss_clip_text_alignment(outputs, targets, indices)
        return super().get_loss(name, outputs, targets, indices)
