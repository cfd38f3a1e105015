"""SG-DETR: Saliency-Guided DETR for moment retrieval and highlight detection.

Gordeev, Dokholyan, Tolstykh, Kuprashevich, arXiv 2410.01615 (2024). Published QVHighlights test:
mAP 54.1 from scratch, 58.8 with pre-training on InterVid-MR. The authors' code (ai-forever/sg-detr)
could not be read here, so this follows the paper; every choice it leaves open is listed below.

Pipeline (batch-first outside the shared sequence-first blocks):
1. Input projections (shared ``input_projection``) of video (InternVideo2 768 + tef = 770) and text
   (LLaMA tokens, 4096); sine positions on valid clips (shared ``PositionEmbeddingSine``).
2. Local saliency head: a text encoder (``txt_enc_layers`` shared ``TransformerEncoderLayer``) and
   attention pooling (one learned query) give a sentence token; local score of clip t =
   exp(log_scale) * cos(W_v v_t, W_s s) + shift (:class:`~mrhd.models.sg_detr_layers.LocalSaliencyHead`).
3. Saliency-guided cross attention (``sgca_layers``): video attends to text, and the attended text
   of clip t is scaled by sigmoid(local score_t) before the residual.
4. Encoder (``enc_layers`` shared ``TransformerEncoderLayer``) on [sentence token, video]; the
   sentence token plays QD-DETR's global token.
5. Saliency amplifier: global score = gain * local + proj1(memory_t) . proj2(memory_global) / sqrt(d)
   -> ``saliency_scores`` (highlight detection output).
6. Hybrid detector (:mod:`mrhd.models.sg_detr_detector`): DINO-style query selection from per-clip
   proposals, the shared anchor decoder, contrastive denoising groups in training, an IoU head;
   plus an ATSS-style dense head with centerness on the same memory.
7. Inference: confidence = sigmoid(class) x sigmoid(IoU head); the DETR spans are fused with the
   overlapping ATSS spans (:mod:`mrhd.models.sg_detr_fusion`). In eval mode ``pred_spans`` are the
   fused spans and ``pred_logits`` = [logit(confidence), 0], so the shared post-processor's
   softmax(...)[0] is the confidence; the raw head outputs stay in ``detr_logits`` / ``detr_spans``.
   In training ``pred_*`` are the raw DETR outputs the criterion matches.

Losses (:mod:`mrhd.models.sg_detr_criterion`): DETR matched L1 + GIoU + sigmoid focal on every
decoder layer; IoU-head BCE; query-selection (encoder) losses; denoising L1 + GIoU + focal; ATSS
focal + centerness-weighted GIoU + centerness BCE; saliency (hinge + rank-contrastive +
negative-pair, QD-DETR) on both local and global scores.

Design choices the paper leaves open, and what we chose:
- Text features: whether tef is appended and how tokens are normalised -> profile ``internvideo2``
  (video 768 + tef); text tokens as stored. ``slowfast_clip`` (2818 / 512) works too.
- Sentence token: 1 text-encoder layer, then attention pooling with a single learned query and
  LayerNorm (``txt_enc_layers``); no text positions (``use_txt_pos`` false), as QD-DETR.
- Local-score scale/shift init: scale 10, shift 0 (SigLIP's t = 10; its b = -10 suits almost-all-
  negative batches, QVHighlights clips are relevant about a third of the time).
- How saliency guides the cross attention: a multiplicative per-clip gate sigmoid(local score) on
  the attention output (not on the attention logits), gradients flowing into the local head.
- Saliency amplifier form: the learnable-gain residual in step 5 (gain init 1).
- Layer counts: txt_enc 1, SGCA 2, encoder 2, decoder 3 (DINO uses 6 for COCO; QVHighlights
  models use 2-3); hidden 256, 8 heads, FFN 1024, PReLU, dropout 0.1, input dropout 0.5 (QD-DETR).
- Queries: 10 selected clips (QD-DETR's query count); if a batch has fewer clips, that many.
- Proposal anchor per clip: centre of the clip, width ``atss_anchor_clips`` = 4 clips (also the
  ATSS anchor); proposals of padded clips are never selected.
- Denoising: 5 groups, each with a positive and a negative copy of every ground truth (DINO CDN),
  endpoint noise scale 0.4 of the half width, label-flip probability 0.2 / 2. Groups run as extra
  batch entries of the same decoder, so denoising queries do not see the matching queries (DINO
  lets them); that keeps the shared anchor decoder unchanged (it has no self-attention mask).
- IoU head: 2-layer MLP on every decoder layer's output, BCE to the detached matched IoU;
  confidence = p_class x p_iou (no exponent).
- ATSS head: 2 conv (k=3) + GroupNorm + ReLU towers, top-9 candidates, mean + std threshold,
  centre-inside rule, distances exp(scale * x) anchor widths; score = p_cls x p_centerness.
- Fusion: DETR-anchored weighted span fusion with ATSS spans of IoU > 0.5, head weights 1 : 1.
- Loss weights: QD-DETR's (span 10, GIoU 1, label 4, saliency 1) for every DETR-style term, IoU
  1, local saliency 1, ATSS cls 1 / GIoU 2 (ATSS) / centerness 1; Hungarian costs as QD-DETR.
- Negative pairs for the saliency losses: the text rolled by one along the batch (QD-DETR); the
  local negatives reuse the rolled sentence token, the global ones rerun SGCA + encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.detr_config import DetrConfig
from mrhd.models.encoder import TransformerEncoder, TransformerEncoderLayer
from mrhd.models.matcher import FOREGROUND
from mrhd.models.mlp import input_projection
from mrhd.models.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.registry import ModelSpec, register_model
from mrhd.models.sg_detr_criterion import SGDETRCriterion
from mrhd.models.sg_detr_detector import HybridDetector
from mrhd.models.sg_detr_fusion import fuse_spans
from mrhd.models.sg_detr_layers import (
    AttentionPooling,
    LocalSaliencyHead,
    SaliencyAmplifier,
    SaliencyGuidedCrossAttentionLayer,
)


@dataclass
class SGDETRConfig(DetrConfig):
    v_feat_dim: int = 770             # InternVideo2 768 + tef
    t_feat_dim: int = 4096            # LLaMA-7B text tokens
    enc_layers: int = 2
    dec_layers: int = 3
    txt_enc_layers: int = 1
    sgca_layers: int = 2
    local_scale_init: float = 10.0
    local_shift_init: float = 0.0
    # hybrid detector
    dn_groups: int = 5
    dn_span_noise: float = 0.4
    dn_label_noise: float = 0.2
    atss_anchor_clips: float = 4.0
    atss_topk: int = 9
    atss_num_convs: int = 2
    fuse_at_inference: bool = True
    fusion_iou_thr: float = 0.5
    fusion_detr_weight: float = 1.0
    fusion_atss_weight: float = 1.0
    # loss weights besides DetrConfig's
    lw_local_saliency: float = 1.0
    iou_loss_coef: float = 1.0
    atss_cls_coef: float = 1.0
    atss_giou_coef: float = 2.0
    atss_ctr_coef: float = 1.0


class SGDETR(nn.Module):
    def __init__(self, cfg: SGDETRConfig):
        super().__init__()
        if cfg.hidden_dim % cfg.nheads:
            raise MrhdError(f"sg_detr: hidden_dim {cfg.hidden_dim} must be divisible by nheads {cfg.nheads}")
        self.cfg = cfg
        d = cfg.hidden_dim
        self.input_vid_proj = input_projection(cfg.v_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_txt_proj = input_projection(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.position_embed = PositionEmbeddingSine(d, normalize=True)
        # built only when used, so that every parameter is trained
        self.txt_position_embed = (TrainablePositionalEncoding(cfg.max_q_l, d, cfg.input_dropout)
                                   if cfg.use_txt_pos else None)
        txt_layer = TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.text_encoder = TransformerEncoder(txt_layer, cfg.txt_enc_layers)
        self.sentence_pool = AttentionPooling(d, cfg.nheads, cfg.dropout)
        self.local_saliency = LocalSaliencyHead(d, cfg.local_scale_init, cfg.local_shift_init)
        self.sgca = nn.ModuleList(
            SaliencyGuidedCrossAttentionLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
            for _ in range(cfg.sgca_layers))
        enc_layer = TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.encoder = TransformerEncoder(enc_layer, cfg.enc_layers)
        self.global_pos = nn.Parameter(torch.randn(d))
        self.amplifier = SaliencyAmplifier(d)
        self.detector = HybridDetector(cfg)

    # ---- stages ------------------------------------------------------------------------------
    def encode_text(self, txt, txt_mask):
        """-> text tokens (Lt, B, d), sentence token (B, d)."""
        padding = ~txt_mask.bool()
        pos = self.txt_position_embed(txt) if self.cfg.use_txt_pos else torch.zeros_like(txt)
        tokens = self.text_encoder(txt.transpose(0, 1), src_key_padding_mask=padding, pos=pos.transpose(0, 1))
        return tokens, self.sentence_pool(tokens, padding)

    def encode_video(self, vid, vid_mask, pos, tokens, txt_mask, sentence, local):
        """SGCA then the encoder on [sentence, video] -> memory (B, Lv, d), global memory (B, d)."""
        x = vid.transpose(0, 1)
        pos_seq = pos.transpose(0, 1)
        gate = torch.sigmoid(local)
        for layer in self.sgca:
            x = layer(x, tokens, ~txt_mask.bool(), gate, vid_pos=pos_seq)
        bsz = vid.shape[0]
        src = torch.cat([sentence.unsqueeze(0), x], dim=0)
        src_pos = torch.cat([self.global_pos.reshape(1, 1, -1).expand(1, bsz, -1), pos_seq], dim=0)
        padding = torch.cat([torch.zeros(bsz, 1, dtype=torch.bool, device=vid.device), ~vid_mask.bool()], dim=1)
        memory = self.encoder(src, src_key_padding_mask=padding, pos=src_pos)
        return memory[1:].transpose(0, 1), memory[0]

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, targets=None):
        """Masks float (B, L), 1 = valid. ``targets`` (training, from the trainer) switches on the
        denoising groups."""
        if src_txt.shape[1] == 0:
            raise MrhdError("sg_detr: the query has no text tokens; give a non-empty query")
        vid = self.input_vid_proj(src_vid)
        txt = self.input_txt_proj(src_txt)
        pos = self.position_embed(vid, src_vid_mask)
        tokens, sentence = self.encode_text(txt, src_txt_mask)
        local = self.local_saliency(vid, sentence)
        memory, memory_global = self.encode_video(vid, src_vid_mask, pos, tokens, src_txt_mask, sentence, local)

        # negative pairs: sample i gets the query of sample i + 1 (QD-DETR)
        tokens_neg, txt_mask_neg = tokens.roll(-1, dims=1), src_txt_mask.roll(-1, dims=0)
        sentence_neg = sentence.roll(-1, dims=0)
        local_neg = self.local_saliency(vid, sentence_neg)
        memory_neg, memory_global_neg = self.encode_video(vid, src_vid_mask, pos, tokens_neg, txt_mask_neg,
                                                          sentence_neg, local_neg)

        span_labels = targets.get("span_labels") if (self.training and targets) else None
        out = self.detector(memory, src_vid_mask, pos, span_labels)
        out.update({
            "saliency_scores": self.amplifier(local, memory, memory_global),
            "saliency_scores_neg": self.amplifier(local_neg, memory_neg, memory_global_neg),
            "local_saliency_scores": local, "local_saliency_scores_neg": local_neg,
            "video_mask": src_vid_mask,
        })
        out["pred_confidence"] = self.confidence(out["pred_logits"], out["pred_iou"])
        if not self.training and self.cfg.fuse_at_inference:
            self.fuse(out)
        return out

    @staticmethod
    def confidence(logits, iou_logits):
        return torch.sigmoid(logits[..., FOREGROUND]) * torch.sigmoid(iou_logits)

    def fuse(self, out: dict) -> None:
        """Replace pred_spans / pred_logits by the fused spans and confidence logits (eval)."""
        cfg = self.cfg
        dense_conf = torch.sigmoid(out["atss_logits"]) * torch.sigmoid(out["atss_centerness"])
        fused = fuse_spans(out["pred_spans"], out["pred_confidence"], out["atss_spans"], dense_conf,
                           out["video_mask"], cfg.fusion_iou_thr, cfg.fusion_detr_weight, cfg.fusion_atss_weight)
        conf = out["pred_confidence"].clamp(1e-6, 1 - 1e-6)
        out["detr_logits"], out["detr_spans"] = out["pred_logits"], out["pred_spans"]
        out["pred_spans"] = fused
        out["pred_logits"] = torch.stack([torch.log(conf / (1 - conf)), torch.zeros_like(conf)], dim=-1)


def build(cfg: SGDETRConfig) -> SGDETR:
    return SGDETR(cfg)


def build_criterion(cfg: SGDETRConfig) -> SGDETRCriterion:
    return SGDETRCriterion(cfg)


SPEC = register_model(ModelSpec(
    name="sg_detr", config_cls=SGDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="internvideo2",
    extras={"forward_inputs": ("src_txt", "src_txt_mask", "src_vid", "src_vid_mask")},
))
