"""SG-DETR (Gordeev et al., arXiv 2410.01615, 2024): saliency-guided DETR for moment retrieval and
highlight detection.

The network (:class:`SGDETR`), its config (:class:`SGDETRConfig`) and its ModelSpec. What comes from
the paper (layer and query counts, losses, matching, schedules, features: each with its test), what
from the parts of ai-forever/sg-detr that could be read, the choices made where both are silent
(denoising, fusion, loss weights, negatives) and what is open: the model card, ``README.md`` in this
folder. Not checked against the authors' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.cg_detr.model import real_negative_mask
from mrhd.models.config import DetrConfig
from mrhd.models.layers.encoder import TransformerEncoder, TransformerEncoderLayer
from mrhd.models.layers.mlp import input_projection
from mrhd.models.layers.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.matcher import FOREGROUND
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.registry import DETR_INPUTS, LabelRecipe, ModelSpec, register_model
from mrhd.models.sg_detr.criterion import SGDETRCriterion
from mrhd.models.sg_detr.detector import HybridDetector
from mrhd.models.sg_detr.fusion import fuse_spans
from mrhd.models.sg_detr.layers import (
    AttentionPooling,
    LocalSaliencyHead,
    SaliencyAmplifier,
    SaliencyGuidedCrossAttentionLayer,
)


@dataclass
class SGDETRConfig(DetrConfig):
    # Values the paper states (Gordeev et al., arXiv 2410.01615) carry "paper"; "code" ones come from the
    # readable parts of ai-forever/sg-detr (the model card, mrhd/models/sg_detr/README.md, cites each).
    v_feat_dim: int = 770             # InternVideo2-1B video 768 + tef (profile internvideo2)
    t_feat_dim: int = 1024            # InternVideo2-1B text tokens (BERT-large; profile internvideo2)
    enc_layers: int = 3               # paper: 3 encoder layers
    dec_layers: int = 3               # paper: 3 decoder layers
    num_queries: int = 25             # paper: 25 queries from the query selector (code MomentDetector)
    input_dropout: float = 0.5        # paper: dropout 0.5 in the projection layers
    sentence_pool_layers: int = 2     # paper: two attention-pooling layers in the local saliency head
    moment_layers: int = 1            # moment / sentence encoders (code MomentEncoder / SentenceEncoder)
    sentence_layers: int = 1
    txt_enc_layers: int = 0           # text self-attention before pooling (the code pools directly)
    sgca_layers: int = 2
    local_scale_init: float = 20.0    # the code's B_PARAM
    local_shift_init: float = 0.0     # the code's A_PARAM
    # hybrid detector
    dn_groups: int = 2                # each group costs a decoder pass here (DN-DETR uses 5)
    dn_span_noise: float = 0.4
    dn_label_noise: float = 0.2
    proposal_widths: tuple = (0.05, 0.2, 0.4, 0.85)   # the code's QuerySelector default_widths
    prior_prob: float = 0.35          # class-bias prior of the query selector and DETR head (code)
    atss_prior_prob: float = 0.3      # class-bias prior of the ATSS head (code ATSSHead)
    co_queries: bool = True           # paper: ATSS positive anchors as DETR queries in training (Co-DETR)
    atss_anchor_sizes: tuple = (4, 16, 32, 64)   # clips, per pyramid level (the code's ATSSHead default)
    atss_topk: int = 9
    atss_num_convs: int = 1           # ATSSHead default 3; 1 as the SG-DETR test build, a third of the cost
    fuse_at_inference: bool = True
    fusion_iou_thr: float = 0.5
    fusion_detr_weight: float = 1.0
    fusion_atss_weight: float = 1.0
    # losses and matching besides DetrConfig's
    span_loss: str = "smooth_l1"      # paper: smooth L1 in the span loss
    set_cost_iou: float = 1.0         # paper: predicted IoU in the matching cost (weight: code default 1)
    lw_ms_align: float = 1.0          # paper: moment-sentence alignment loss
    lw_momcls: float = 1.0            # paper: moment-token loss
    co_reducer: float = 0.5           # code AuxRefLosses colab_ref_reducer
    lw_local_saliency: float = 1.0
    saliency_margin: float = 0.15     # the code's SetCriterion defaults
    contrastive_reducer: float = 0.25
    denoise_reducer: float = 0.5
    iou_loss_coef: float = 1.0
    atss_cls_coef: float = 1.0
    atss_giou_coef: float = 2.0
    atss_ctr_coef: float = 1.0

    def __post_init__(self):
        self.proposal_widths = tuple(float(w) for w in self.proposal_widths)   # YAML gives lists
        self.atss_anchor_sizes = tuple(float(a) for a in self.atss_anchor_sizes)


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
        self.sentence_pool = AttentionPooling(d, cfg.nheads, cfg.sentence_pool_layers, cfg.dropout)
        self.moment_encoder = TokenEncoder(cfg, cfg.moment_layers)
        self.sentence_encoder = TokenEncoder(cfg, cfg.sentence_layers)
        self.local_saliency = LocalSaliencyHead(cfg.local_scale_init, cfg.local_shift_init)
        self.sgca = nn.ModuleList(
            SaliencyGuidedCrossAttentionLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
            for _ in range(cfg.sgca_layers))
        self.sgca_norm = nn.LayerNorm(d)   # shared, after every SGCA layer and once more (the code's CATE encoder)
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

    def encode_video(self, feats, vid_mask, pos, tokens, txt_mask, sentence, local):
        """SGCA then the encoder on [sentence, video] -> video memory (B, Lv, d)."""
        x = feats.transpose(0, 1)
        pos_seq = pos.transpose(0, 1)
        gate = torch.sigmoid(local)
        for layer in self.sgca:
            x = self.sgca_norm(layer(x, tokens, ~txt_mask.bool(), gate, vid_pos=pos_seq))
        x = self.sgca_norm(x)
        bsz = feats.shape[0]
        src = torch.cat([sentence.unsqueeze(0), x], dim=0)
        src_pos = torch.cat([self.global_pos.reshape(1, 1, -1).expand(1, bsz, -1), pos_seq], dim=0)
        padding = torch.cat([torch.zeros(bsz, 1, dtype=torch.bool, device=feats.device), ~vid_mask.bool()], dim=1)
        memory = self.encoder(src, src_key_padding_mask=padding, pos=src_pos)
        return memory[1:].transpose(0, 1)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, vid=None, targets=None):
        """Masks float (B, L), 1 = valid. ``targets`` (training, from the trainer) switches on the
        denoising groups. ``vid`` (clip ids, optional) marks which rolled-text pairs are real
        negatives (different source videos, CG-DETR's rule); without it every pair is one."""
        if src_txt.shape[1] == 0:
            raise MrhdError("sg_detr: the query has no text tokens; give a non-empty query")
        feats = self.input_vid_proj(src_vid)
        txt = self.input_txt_proj(src_txt)
        pos = self.position_embed(feats, src_vid_mask)
        tokens, sentence = self.encode_text(txt, src_txt_mask)
        local = self.local_saliency(feats, sentence)
        memory = self.encode_video(feats, src_vid_mask, pos, tokens, src_txt_mask, sentence, local)
        saliency, memory = self.amplifier(memory, local)
        span_labels = targets.get("span_labels") if (self.training and targets) else None
        out = self.detector(memory, src_vid_mask, pos, span_labels)
        out.update({"saliency_scores": saliency, "local_saliency_scores": local, "video_mask": src_vid_mask})
        if self.training and targets and "relevant_clips" in targets:
            out.update(self.moment_sentence(feats, src_vid_mask, pos, txt, src_txt_mask, targets["relevant_clips"]))
        if self.training:   # the negative pass only feeds the saliency losses
            out.update(self.negative_pass(feats, src_vid_mask, pos, tokens, src_txt_mask, sentence, vid))
        out["pred_confidence"] = self.confidence(out["pred_logits"], out["pred_iou"])
        if not self.training and self.cfg.fuse_at_inference:
            self.fuse(out)
        return out

    def moment_sentence(self, feats, vid_mask, pos, txt, txt_mask, relevant_clips) -> dict:
        """The moment token over the moment's clips, the non-moment token over the others, the
        sentence token over the words (the code's MomentEncoder / SentenceEncoder, src/model/blocks/
        encoder.py) and the clips they produced, for the moment-sentence alignment and moment-token
        losses (training only)."""
        valid = vid_mask.bool()
        inside = relevant_clips.clamp(0, 1).bool() & valid
        moment, moment_mem = self.moment_encoder(feats, inside, pos)
        non_moment, non_moment_mem = self.moment_encoder(feats, ~inside & valid, pos)
        sentence, _ = self.sentence_encoder(txt, txt_mask.bool(), torch.zeros_like(txt))
        clips = moment_mem * inside.unsqueeze(-1) + non_moment_mem * (~inside & valid).unsqueeze(-1)
        return {"moment_token": moment, "non_moment_token": non_moment, "sentence_token": sentence,
                "moment_clips": clips, "moment_mask": inside}

    def negative_pass(self, feats, vid_mask, pos, tokens, txt_mask, sentence, vid) -> dict:
        """Sample i with the query of sample i + 1 (QD-DETR's roll): local and global scores."""
        bsz = feats.shape[0]
        if vid is not None:
            real_neg = real_negative_mask(list(vid), "hl", device=feats.device)
        else:
            real_neg = torch.full((bsz,), bsz > 1, dtype=torch.bool, device=feats.device)
        sentence_neg = sentence.roll(-1, dims=0)
        local_neg = self.local_saliency(feats, sentence_neg)
        memory_neg = self.encode_video(feats, vid_mask, pos, tokens.roll(-1, dims=1), txt_mask.roll(-1, dims=0),
                                       sentence_neg, local_neg)
        saliency_neg, _ = self.amplifier(memory_neg, local_neg)
        return {"saliency_scores_neg": saliency_neg, "local_saliency_scores_neg": local_neg,
                "real_neg_mask": real_neg}

    @staticmethod
    def confidence(logits, iou_logits):
        return torch.sigmoid(logits[..., FOREGROUND]) * torch.sigmoid(iou_logits)

    def fuse(self, out: dict) -> None:
        """Replace pred_spans / pred_logits by the fused spans and confidence logits (eval)."""
        cfg = self.cfg
        dense_conf = torch.sigmoid(out["atss_logits"]) * torch.sigmoid(out["atss_centerness"])
        fused = fuse_spans(out["pred_spans"], out["pred_confidence"], out["atss_spans"], dense_conf,
                           out["atss_mask"], cfg.fusion_iou_thr, cfg.fusion_detr_weight, cfg.fusion_atss_weight)
        conf = out["pred_confidence"].clamp(1e-6, 1 - 1e-6)
        out["detr_logits"], out["detr_spans"] = out["pred_logits"], out["pred_spans"]
        out["pred_spans"] = fused
        out["pred_logits"] = torch.stack([torch.log(conf / (1 - conf)), torch.zeros_like(conf)], dim=-1)


class TokenEncoder(nn.Module):
    """A learned token (and position) prepended to a sequence, self-attention layers over
    [token, valid elements]: the code's MomentEncoder / SentenceEncoder (src/model/blocks/encoder.py).
    -> token (B, d), sequence (B, L, d)."""

    def __init__(self, cfg: SGDETRConfig, num_layers: int):
        super().__init__()
        d = cfg.hidden_dim
        self.token = nn.Parameter(torch.randn(d))
        self.token_pos = nn.Parameter(torch.randn(d))
        layer = TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.encoder = TransformerEncoder(layer, num_layers)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor):
        """x (B, L, d), valid (B, L) bool: the elements the token attends to, pos (B, L, d)."""
        bsz = x.shape[0]
        src = torch.cat([self.token.expand(bsz, 1, -1), x], dim=1).transpose(0, 1)
        src_pos = torch.cat([self.token_pos.expand(bsz, 1, -1), pos], dim=1).transpose(0, 1)
        padding = torch.cat([torch.zeros(bsz, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        out = self.encoder(src, src_key_padding_mask=padding, pos=src_pos)
        return out[0], out[1:].transpose(0, 1)


def build(cfg: SGDETRConfig) -> SGDETR:
    return SGDETR(cfg)


def build_criterion(cfg: SGDETRConfig) -> SGDETRCriterion:
    return SGDETRCriterion(cfg)


SPEC = register_model(ModelSpec(
    name="sg_detr", config_cls=SGDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="internvideo2",
    postprocess=detr_postprocess,
    # vid: training excludes same-video pairs from the negatives (real_neg_mask); eval ignores it
    forward_inputs=DETR_INPUTS + ("vid",),
    # CG-DETR's targets: saliency_all_labels for the BCE / rank terms
    labels=LabelRecipe(all_labels=True, relevant_clips=True),
))
