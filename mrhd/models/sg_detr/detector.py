"""The hybrid detector of SG-DETR: a DINO-style DETR head plus an ATSS-style dense head.

DETR part (DINO, Zhang et al. ICLR 2023, in 1-D): every valid clip of the encoder memory makes one
proposal per default width (class logits, span = sigmoid(delta + inverse_sigmoid(anchor))); the top-k by
foreground logit give the decoder's initial anchors (detached), and the content queries are
learned embeddings ("mixed query selection"). The decoder is the shared anchor decoder of
QD-DETR (:mod:`mrhd.models.layers.anchor_decoder`), reused unchanged. In training, contrastive denoising
groups (positive and negative noised copies of the ground-truth spans, content = label embedding)
run through the same decoder as extra batch entries: batching the groups is equivalent to DINO's
attention mask, except that denoising queries cannot see the matching queries (see the model card, README.md).
An IoU head predicts each query's IoU with its target.

Dense part: :class:`mrhd.models.sg_detr.layers.ATSSHead` on four temporal pyramid levels of the same
memory (:class:`~mrhd.models.sg_detr.layers.TemporalPyramid`), one anchor per level position.

Collaborative queries (Co-DETR, Zong et al. ICCV 2023; the paper's "ATSS positive anchors as DETR
queries"): in training, each sample's ATSS positives (padded with random negative positions to the
batch's largest count, the code's ``ATSSHead.prepare_positive_locations``) become extra decoder
queries: content = ``co_mapper`` (Linear + LayerNorm, the code's ``MomentDetector.co_mapper``) of the
pyramid feature there, reference = the anchor; they regress to the ground truth ATSS assigned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.layers.anchor_decoder import AnchorDecoder, AnchorDecoderLayer
from mrhd.models.layers.mlp import MLP
from mrhd.models.matcher import FOREGROUND
from mrhd.models.sg_detr.criterion import atss_assign_batch, padded_spans
from mrhd.models.sg_detr.layers import ATSSHead, TemporalPyramid
from mrhd.models.spans import inverse_sigmoid

BACKGROUND = 1


def clip_anchors(mask: torch.Tensor, anchor_clips: float) -> torch.Tensor:
    """(B, Lv) float mask -> (B, Lv, 2) cxw anchors in units of each video's valid length:
    centre (t + 0.5) / n, width anchor_clips / n (at most 1). Padded clips get (0.5, 0.5)."""
    n = mask.sum(1, keepdim=True).clamp(min=1)
    t = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32).unsqueeze(0)
    centre = (t + 0.5) / n
    width = (anchor_clips / n).clamp(max=1.0).expand_as(centre)
    anchors = torch.stack([centre, width], dim=-1)
    pad = torch.full_like(anchors, 0.5)
    return torch.where(mask.bool().unsqueeze(-1), anchors, pad)


def level_anchors(mask: torch.Tensor, level_mask: torch.Tensor, stride: float, size: float) -> torch.Tensor:
    """Anchors of one pyramid level, ``size`` clips wide (at most the whole video), in units of
    each video's valid length n. A stride-s level (s >= 1, stride-2 convs with padding 1) has
    position j centred on clip j * s, i.e. at j * s + 0.5 clips; the upsampled level (s = 0.5)
    splits every clip in halves centred at (j + 0.5) / 2. (B, L_l, 2) cxw; padding gets (0.5, 0.5)."""
    n = mask.sum(1, keepdim=True).clamp(min=1)
    j = torch.arange(level_mask.shape[1], device=mask.device, dtype=torch.float32).unsqueeze(0)
    centre = (j * stride + min(stride, 1.0) / 2) / n
    width = (size / n).clamp(max=1.0).expand_as(centre)
    anchors = torch.stack([centre, width], dim=-1)
    return torch.where(level_mask.bool().unsqueeze(-1), anchors, torch.full_like(anchors, 0.5))


def width_anchors(mask: torch.Tensor, widths) -> torch.Tensor:
    """(B, Lv) float mask -> (B, Lv * W, 2) cxw proposal anchors: every clip centre with each
    default width (fractions of the video; the SG-DETR code's QuerySelector ``default_widths``).
    Padded clips get (0.5, 0.5)."""
    centres = clip_anchors(mask, 1.0)[..., :1]                              # (B, Lv, 1)
    w = torch.tensor(list(widths), dtype=torch.float32, device=mask.device)
    anchors = torch.stack([centres.expand(-1, -1, len(w)), w.expand(*mask.shape, -1)], dim=-1)
    anchors = torch.where(mask.bool()[..., None, None], anchors, torch.full_like(anchors, 0.5))
    return anchors.flatten(1, 2)


def dense_spans(anchors: torch.Tensor, dists: torch.Tensor) -> torch.Tensor:
    """ATSS boundary distances (in anchor widths) around each anchor centre -> cxw spans."""
    start = anchors[..., 0] - dists[..., 0] * anchors[..., 1]
    end = anchors[..., 0] + dists[..., 1] * anchors[..., 1]
    return torch.stack([(start + end) / 2, end - start], dim=-1)


class HybridDetector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_dim
        self.cfg = cfg
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        n_widths = len(cfg.proposal_widths)
        self.enc_class_embed = nn.Linear(d, 2 * n_widths)
        self.enc_span_embed = MLP(d, d, 2 * n_widths, 3)
        prior_bias = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
        with torch.no_grad():
            self.enc_class_embed.bias.view(n_widths, 2)[:, FOREGROUND] = prior_bias
        self.tgt_embed = nn.Embedding(cfg.num_queries, d)
        self.label_enc = nn.Embedding(2, d)
        layer = AnchorDecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.decoder = AnchorDecoder(layer, cfg.dec_layers, d, sine_half_dim=d // 2)
        self.class_embed = nn.Linear(d, 2)
        with torch.no_grad():   # the code's MomentDetector._init_parameters: prior on the class bias
            self.class_embed.bias[FOREGROUND] = prior_bias
        self.span_embed = MLP(d, d, 2, 3)
        self.iou_embed = MLP(d, d, 1, 2)
        if len(cfg.atss_anchor_sizes) != len(TemporalPyramid.strides):
            raise MrhdError(f"sg_detr: atss_anchor_sizes needs {len(TemporalPyramid.strides)} sizes (one per "
                            f"pyramid level), got {list(cfg.atss_anchor_sizes)}")
        self.pyramid = TemporalPyramid(d)
        self.atss = ATSSHead(d, cfg.atss_num_convs, len(TemporalPyramid.strides), prior=cfg.atss_prior_prob)
        if cfg.co_queries:
            self.co_mapper = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            nn.init.normal_(self.co_mapper[0].weight, std=0.01)   # the code's EPS init

    # ---- DETR part ---------------------------------------------------------------------------
    def proposals(self, memory: torch.Tensor, mask: torch.Tensor):
        """W proposals per clip: logits (B, Lv * W, 2), unsigmoided spans (B, Lv * W, 2), mask."""
        out = self.enc_output_norm(self.enc_output(memory))
        bsz, length, _ = memory.shape
        anchors = width_anchors(mask, self.cfg.proposal_widths)
        logits = self.enc_class_embed(out).reshape(bsz, -1, 2)
        spans = self.enc_span_embed(out).reshape(bsz, -1, 2) + inverse_sigmoid(anchors)
        n_widths = len(self.cfg.proposal_widths)
        return logits, spans, mask.repeat_interleave(n_widths, dim=1)

    def select_queries(self, logits, spans_unsig, mask):
        """Top-k valid proposals by foreground logit (k = min(num_queries, #proposals))."""
        k = min(self.cfg.num_queries, logits.shape[1])
        score = logits[..., FOREGROUND].masked_fill(~mask.bool(), float("-inf"))
        idx = score.topk(k, dim=1).indices
        gather = idx.unsqueeze(-1).expand(-1, -1, 2)
        return idx, torch.gather(logits, 1, gather), torch.gather(spans_unsig, 1, gather)

    def heads(self, hs, references):
        """hs (layers, B, n, d), references (layers, B, n, 2) -> logits, spans (sigmoid), iou logits."""
        spans = (self.span_embed(hs) + inverse_sigmoid(references)).sigmoid()
        return self.class_embed(hs), spans, self.iou_embed(hs).squeeze(-1)

    def decode(self, tgt, refs_unsig, memory, mask, pos):
        """tgt (B', n, d), refs_unsig (B', n, 2), memory/pos (B', Lv, d), mask (B', Lv) float."""
        hs, references = self.decoder(tgt.transpose(0, 1), memory.transpose(0, 1),
                                      memory_key_padding_mask=~mask.bool(), pos=pos.transpose(0, 1),
                                      refpoints_unsigmoid=refs_unsig.transpose(0, 1))
        return self.heads(hs, references)

    # ---- denoising ---------------------------------------------------------------------------
    def denoising_queries(self, span_labels: list, device) -> dict:
        """DINO contrastive denoising in 1-D: per group, every ground-truth span (cxw) gets a
        positive copy with endpoint noise |u| < 1 and a negative copy with 1 <= |u| < 2, u in units
        of dn_span_noise * half width; labels flip with probability dn_label_noise / 2 (DN-DETR).
        Returns content (G, B, 2n, d), refs_unsig (G, B, 2n, 2), gt (B, 2n, 2), valid (B, 2n),
        positive (2n,) bool."""
        cfg = self.cfg
        groups = cfg.dn_groups
        n = max(1, max(len(t["spans"]) for t in span_labels))
        bsz = len(span_labels)
        gt = torch.zeros(bsz, n, 2, device=device)
        valid = torch.zeros(bsz, n, device=device)
        for b, t in enumerate(span_labels):
            m = len(t["spans"])
            gt[b, :m] = t["spans"].to(device=device, dtype=torch.float32)
            valid[b, :m] = 1
        gt2 = torch.cat([gt, gt], dim=1)                            # positives, then negatives
        valid2 = torch.cat([valid, valid], dim=1)
        positive = torch.arange(2 * n, device=device) < n
        xx = torch.stack([gt2[..., 0] - gt2[..., 1] / 2, gt2[..., 0] + gt2[..., 1] / 2], dim=-1)
        xx = xx.unsqueeze(0).expand(groups, -1, -1, -1)
        magnitude = torch.rand(xx.shape, device=device) + (~positive).float()[None, None, :, None]
        sign = torch.randint(0, 2, xx.shape, device=device).float() * 2 - 1
        half = (gt2[..., 1] / 2)[None, :, :, None]
        noised = (xx + sign * magnitude * half * cfg.dn_span_noise).clamp(0, 1)
        start, end = noised.min(-1).values, noised.max(-1).values
        spans = torch.stack([(start + end) / 2, (end - start).clamp(min=1e-4)], dim=-1)
        labels = torch.full((groups, bsz, 2 * n), FOREGROUND, dtype=torch.long, device=device)
        flip = torch.rand(labels.shape, device=device) < cfg.dn_label_noise * 0.5
        labels = torch.where(flip, torch.full_like(labels, BACKGROUND), labels)
        return {"content": self.label_enc(labels), "refs_unsig": inverse_sigmoid(spans), "gt": gt2,
                "valid": valid2, "positive": positive}

    def denoise(self, dn: dict, memory, mask, pos) -> dict:
        """All groups in one decoder call, group g of sample b at batch index g * B + b."""
        groups, bsz, nq, d = dn["content"].shape

        def rep(x):
            return x.repeat(groups, *([1] * (x.dim() - 1)))

        logits, spans, iou = self.decode(dn["content"].reshape(groups * bsz, nq, d),
                                         dn["refs_unsig"].reshape(groups * bsz, nq, 2),
                                         rep(memory), rep(mask), rep(pos))
        layers = logits.shape[0]
        return {"pred_logits": logits.reshape(layers, groups, bsz, nq, 2),
                "pred_spans": spans.reshape(layers, groups, bsz, nq, 2),
                "pred_iou": iou.reshape(layers, groups, bsz, nq),
                "gt_spans": dn["gt"], "valid": dn["valid"], "positive": dn["positive"]}

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, memory: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                span_labels: list | None = None) -> dict:
        """memory (B, Lv, d) video memory, mask (B, Lv) float, pos (B, Lv, d) clip positions;
        ``span_labels`` (training only) switches on the denoising groups."""
        enc_logits, enc_spans_unsig, enc_mask = self.proposals(memory, mask)
        _, sel_logits, sel_spans_unsig = self.select_queries(enc_logits, enc_spans_unsig, enc_mask)
        k = sel_logits.shape[1]
        tgt = self.tgt_embed.weight[:k].unsqueeze(0).expand(memory.shape[0], -1, -1)
        logits, spans, iou = self.decode(tgt, sel_spans_unsig.detach(), memory, mask, pos)
        out = {"pred_logits": logits[-1], "pred_spans": spans[-1], "pred_iou": iou[-1],
               "aux_outputs": [{"pred_logits": a, "pred_spans": b, "pred_iou": c}
                               for a, b, c in zip(logits[:-1], spans[:-1], iou[:-1])],
               # every proposal (not only the selected ones) is supervised, see criterion.SGDETRCriterion.loss_enc
               "enc_outputs": {"pred_logits": enc_logits, "pred_spans": enc_spans_unsig.sigmoid(),
                               "mask": enc_mask, "selected_logits": sel_logits}}
        if span_labels is not None and self.cfg.dn_groups > 0:
            out["dn_outputs"] = self.denoise(self.denoising_queries(span_labels, memory.device),
                                             memory, mask, pos)
        out.update(self.dense(memory, mask))
        if span_labels is not None and self.cfg.co_queries:
            co = self.collaborative_queries(out, span_labels)
            if co is not None:
                logits, spans, _ = self.decode(self.co_mapper(co["features"]), inverse_sigmoid(co["anchors"]),
                                               memory, mask, pos)
                out["co_outputs"] = {"pred_logits": logits, "pred_spans": spans, "labels": co["labels"],
                                     "gt_spans": co["gt_spans"]}
        return out

    def collaborative_queries(self, dense: dict, span_labels: list) -> dict | None:
        """Per sample the ATSS positives first, then random negative positions up to the batch's
        largest positive count -> features (B, P, d), anchors (B, P, 2) cxw, labels (B, P) 1 =
        positive, gt_spans (B, P, 2); None when no sample has a positive."""
        anchors, valid = dense["atss_anchors"], dense["atss_mask"].bool()
        gt_all, gt_valid = padded_spans(span_labels, anchors.device)
        gt_all = gt_all.to(anchors)
        positive, assigned = atss_assign_batch(anchors, valid, dense["atss_level_sizes"], gt_all, gt_valid,
                                               self.cfg.atss_topk)
        gt_per_anchor = torch.gather(gt_all, 1, assigned[..., None].expand(-1, -1, 2))
        picks = []
        for b in range(len(span_labels)):
            pos = positive[b]
            picks.append((torch.nonzero(pos).flatten(), torch.nonzero(~pos & valid[b]).flatten(), gt_per_anchor[b]))
        n = max(len(p) for p, _, _ in picks)
        if n == 0:
            return None
        rows = []
        for b, (pos, neg, gt) in enumerate(picks):
            neg = neg[torch.randperm(len(neg), device=neg.device)[: n - len(pos)]]
            idx = torch.cat([pos, neg])
            idx = torch.cat([idx, idx[-1:].expand(n - len(idx))])   # a video with too few positions
            labels = (torch.arange(n, device=idx.device) < len(pos)).float()
            rows.append((dense["atss_features"][b, idx], anchors[b, idx], labels, gt[idx]))
        features, anchors_sel, labels, gts = (torch.stack(x) for x in zip(*rows))
        return {"features": features, "anchors": anchors_sel, "labels": labels, "gt_spans": gts}

    def dense(self, memory: torch.Tensor, mask: torch.Tensor) -> dict:
        """The ATSS head over the pyramid, every level's positions concatenated."""
        levels, masks = self.pyramid(memory, mask)
        logits, dists, ctr = self.atss(levels, masks)
        anchors = torch.cat([level_anchors(mask, m, stride, size) for m, stride, size
                             in zip(masks, TemporalPyramid.strides, self.cfg.atss_anchor_sizes)], dim=1)
        return {"atss_logits": logits, "atss_spans": dense_spans(anchors, dists), "atss_centerness": ctr,
                "atss_anchors": anchors, "atss_mask": torch.cat(masks, dim=1), "atss_features": torch.cat(levels, 1),
                "atss_level_sizes": [m.shape[1] for m in masks]}
