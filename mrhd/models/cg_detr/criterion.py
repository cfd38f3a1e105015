"""CG-DETR's criterion (wjun0830/CGDETR@212b2e4, cg_detr/model.py ``SetCriterion``).

Built on the shared :class:`~mrhd.models.criterion.SetCriterion` (matcher, span / label losses, the
saliency hinge and the rank-contrastive term), plus:

- ``loss_saliency``: on ``saliency_scores`` the hinge, the rank-contrastive loss over [scores of
  samples with a real negative | their negative scores] and separately over samples whose rolled
  text came from the same video ("false negatives"), and the negative-pair loss; then the same
  family on ``t2vattnvalues`` (the clips' attention mass on the text) plus a BCE against the
  binary relevance, weighted by ``lw_wattn``.
- ``loss_ms_align``: moment/sentence contrast (with non-moment and dummy-sentence negatives) and
  the moment token classifying clips inside vs. outside the moment.
- ``loss_distill``: KL from the T2V attention to softmax(moment clips . [dummy words, words]).
- ``loss_orthogonal_dummy``: mean |cosine| between distinct dummy tokens and between prompts.

Upstream bugs, reproduced by default, each fixable by a config flag:

- ``fix_single_false_negative``: with exactly one false negative upstream ``unsqueeze(0)``s an
  already 2-D selection, so the softmax runs over a singleton axis and the term is ~1e-6
  regardless of the scores. The fix uses the (1, L) rows like the multi-sample case.
- ``keep_attn_false_negative_rank``: in the attention branch the false-negative rank term is added
  to the (already consumed) score-branch variable and so never reaches the loss. The fix adds it to
  the attention branch's rank term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrhd.models.criterion import SetCriterion


class CGDETRCriterion(SetCriterion):
    def __init__(self, cfg):
        self.model_cfg = cfg
        super().__init__(cfg.criterion_config(label_loss="ce", use_matcher=cfg.dset_name not in ("youtube_uni", "tvsum")))
        self.losses = ["spans", "labels", "saliency", "ms_align", "distill", "orthogonal_dummy"]

    def build_weight_dict(self) -> dict[str, float]:
        c, m = self.cfg, self.model_cfg
        w = {"loss_span": c.span_loss_coef, "loss_giou": c.giou_loss_coef, "loss_label": c.label_loss_coef,
             "loss_saliency": c.lw_saliency, "loss_ms_align": m.lw_ms_align, "loss_distill": m.lw_distill,
             # upstream weighs the orthogonality term with lw_distill (there is no separate option)
             "loss_orthogonal_dummy": m.lw_distill}
        if c.aux_loss:
            base = dict(w)
            for i in range(c.dec_layers - 1):
                w.update({f"{k}_{i}": v for k, v in base.items() if k != "loss_saliency"})
        return w

    def get_loss(self, name, outputs, targets, indices):
        own = {"ms_align": self.loss_ms_align, "distill": self.loss_distill,
               "orthogonal_dummy": self.loss_orthogonal_dummy, "saliency": self.loss_saliency}
        if name in own:
            return own[name](outputs, targets, indices)
        return super().get_loss(name, outputs, targets, indices)

    # -- saliency -----------------------------------------------------------------------------
    def _false_negative_rank(self, scores, labels, vid_mask, false_neg):
        """Rank-contrastive term over samples whose negative would have been their own video."""
        if false_neg.sum() == 0:
            return 0.0
        s, lab, m = scores[false_neg], labels[false_neg], vid_mask[false_neg]
        if false_neg.sum() == 1 and not self.model_cfg.fix_single_false_negative:
            s, lab, m = s.unsqueeze(0), lab.unsqueeze(0), m.unsqueeze(0)   # upstream quirk: (1, 1, L)
        return self.saliency_rank_contrastive(s, lab, m)

    def _saliency_family(self, scores, scores_neg, labels, vid_mask, real_neg, targets, sigmoid_neg: bool,
                         keep_false_negative: bool):
        """hinge + rank (real / false negatives) + negative pair, for one kind of saliency score."""
        neg_prob = torch.sigmoid(scores_neg) if sigmoid_neg else scores_neg
        loss_neg_pair = (-torch.log(1.0 - neg_prob) * vid_mask[real_neg]).sum(dim=1).mean()
        rank = self.saliency_rank_contrastive(
            torch.cat([scores[real_neg], scores_neg], dim=1),
            torch.cat([labels[real_neg], torch.zeros_like(labels)[real_neg]], dim=1),
            vid_mask[real_neg].repeat([1, 2]))
        false_rank = self._false_negative_rank(scores, labels, vid_mask, ~real_neg)
        if keep_false_negative:
            rank = rank + false_rank
        return self.saliency_hinge(scores, targets), rank, loss_neg_pair

    def loss_saliency(self, outputs, targets, indices):
        if "saliency_pos_labels" not in targets:
            return {"loss_saliency": 0}
        vid_mask = outputs["video_mask"]
        labels = targets["saliency_all_labels"]
        scores, attn = outputs["saliency_scores"], outputs["t2vattnvalues"]
        neg_weight = 0.0 if self.model_cfg.dset_name == "youtube_uni" else 1.0
        bce = F.binary_cross_entropy(attn.reshape(-1), torch.clamp(labels, 0, 1).reshape(-1))
        if outputs["saliency_scores_neg"] is not None:
            real_neg = outputs["real_neg_mask"]
            hinge, rank, neg_pair = self._saliency_family(scores, outputs["saliency_scores_neg"], labels, vid_mask,
                                                          real_neg, targets, True, True)
            loss = hinge + rank + neg_pair * neg_weight
            hinge_a, rank_a, neg_pair_a = self._saliency_family(
                attn, outputs["t2vattnvalues_neg"], labels, vid_mask, real_neg, targets, False,
                self.model_cfg.keep_attn_false_negative_rank)
            loss_attn = rank_a + bce + neg_pair_a * neg_weight + hinge_a
        else:  # no real negative in the batch (e.g. batch size 1)
            loss = self.saliency_hinge(scores, targets) + self.saliency_rank_contrastive(scores, labels, vid_mask)
            loss_attn = (self.saliency_rank_contrastive(attn, labels, vid_mask) + bce
                         + self.saliency_hinge(attn, targets))
        return {"loss_saliency": loss + loss_attn * self.model_cfg.lw_wattn}

    # -- moment / sentence --------------------------------------------------------------------
    def loss_ms_align(self, outputs, targets, indices):
        if outputs["memory_moment"] is None:
            return {"loss_ms_align": 0.0}
        moment = F.normalize(outputs["memory_moment"], dim=1)
        not_moment = F.normalize(outputs["nmmemory_moment"], dim=1)
        sentence = F.normalize(outputs["sentence_txt"].squeeze(1), dim=1)
        dummy = F.normalize(outputs["sentence_dummy"].squeeze(1), dim=1)
        b = moment.shape[0]
        eye = torch.eye(b, device=moment.device)
        # labels exactly as upstream: arg-max (first on ties) of the concatenated target rows
        sim = torch.cat([moment @ sentence.T, not_moment @ sentence.T], dim=1)
        labels = torch.cat([eye, torch.zeros_like(eye)], dim=1).max(dim=1)[1]
        loss = F.cross_entropy(sim, labels)
        dummy_sim = torch.cat([moment @ dummy.T, not_moment @ dummy.T], dim=1)
        dummy_labels = torch.cat([(~eye.bool()).float(), torch.ones_like(eye)], dim=1).max(dim=1)[1]
        loss = loss + F.cross_entropy(dummy_sim, dummy_labels)
        # the moment token should score the clips inside the moment high
        in_moment = torch.clamp(targets["relevant_clips"], 0, 1)
        logits = torch.matmul(outputs["memory_moment"].unsqueeze(1), outputs["src_vid"].permute(0, 2, 1))
        bce = F.binary_cross_entropy(torch.sigmoid(logits).reshape(-1), in_moment.reshape(-1), reduction="none")
        return {"loss_ms_align": loss + (bce * outputs["video_mask"].reshape(-1)).mean()}

    def loss_distill(self, outputs, targets, indices):
        if outputs["moment2txt_similarity"] is None:
            return {"loss_distill": 0.0}
        attn = outputs["cate_attn_weights"]
        b, n_vid, _ = attn.shape
        moment_mask = outputs["moment_mask"].int().reshape(-1)
        teacher = torch.softmax(outputs["moment2txt_similarity"], dim=-1).detach().reshape(b * n_vid, -1)
        kl = F.kl_div(torch.log(attn + 1e-6).reshape(b * n_vid, -1), teacher, reduction="none").mean(1)
        return {"loss_distill": (kl * moment_mask).sum() / moment_mask.sum()}

    @staticmethod
    def _off_diagonal_abs_cosine(tokens: torch.Tensor) -> torch.Tensor:
        """mean |cos| over all pairs (diagonal zeroed, still counted), one side detached as upstream."""
        unit = tokens / tokens.norm(dim=-1, keepdim=True)
        sim = torch.matmul(unit, unit.transpose(-1, -2).detach())
        eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
        return sim.masked_fill(eye, 0).abs().mean()

    def loss_orthogonal_dummy(self, outputs, targets, indices):
        dummies = outputs["dummy_tokens"]                      # (B, n, d)
        loss = self._off_diagonal_abs_cosine(dummies) if dummies.size(1) != 1 else 0.0
        return {"loss_orthogonal_dummy": loss + self._off_diagonal_abs_cosine(outputs["global_rep_tokens"])}
