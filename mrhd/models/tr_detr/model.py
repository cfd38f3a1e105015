"""TR-DETR (Sun et al., AAAI 2024), exact to mingyao1120/TR-DETR (commit fca43a9).

After the input projections the video is fused with the text by context-query attention
(:class:`ContextQueryFuser`, no global token). Transformer: the T2V encoder (video attends to text),
the encoder on video only, then HD2MR: s = sum(saliency_proj1(memory), -1) / sqrt(d), softmax over
ALL padded positions (padding not masked -- official), memory += (video after T2V) * softmax, and
the SAME encoder runs again; the anchor decoder predicts spans. MR2HD (output saliency): the top-1
query's span in clip units floor(xx * (Lpad * clip_len) / clip_len), Lpad = padded length for every
sample; ``src_vid_ed[i, st:ed + 1]`` zero-padded to Lpad -> GRU -> last hidden . projected video = w;
memory = memory * w + memory; saliency = sum(saliency_proj1(memory), -1) / sqrt(d).

Quirk kept by default: a negative start index wraps around (Python slicing), usually giving an
empty slice. ``mr2hd_clamp_start=True`` clamps the start to 0 instead (off by default: the released
checkpoints were trained with the quirk).

Extra outputs ``src_txt_ed`` / ``src_vid_ed`` (projected features before fusion) and their means
feed the CTC / VTC losses (criterion ``alignment`` terms); ``src_txt_mask`` is returned as well (not
an official output) so the criterion has the text mask. Optional audio as in QD-DETR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.config import DetrConfig, fields_from_opt
from mrhd.models.criterion import SetCriterion
from mrhd.models.heads import DetrHeads, aux_outputs
from mrhd.models.layers.context_query_fusion import ContextQueryFuser
from mrhd.models.layers.moment_feedback import GRUFeatureExtractor, top1_clip_span, top_moment_saliency
from mrhd.models.layers.t2v_anchor_transformer import T2VAnchorTransformer, check_anchor_config
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.registry import AUDIO_INPUTS, DETR_INPUTS, LabelRecipe, ModelSpec, register_model


@dataclass
class TRDETRConfig(DetrConfig):
    a_feat_dim: int = 0               # 0 = no audio; official audio checkpoints: 2050
    dset_name: str = "hl"
    sine_half_dim: int | None = None  # None = hidden_dim // 2 (official hard-codes 128)
    ctc_loss_coef: float = 0.5        # official --CTC_loss_coef
    vtc_loss_coef: float = 0.3        # official --VTC_loss_coef
    mr2hd_clamp_start: bool = False   # fix for the wrapped negative slice (off = official)


class TRDETRTransformer(T2VAnchorTransformer):
    """QD-DETR's layers without the global token, and HD2MR between the encoder and the decoder."""

    def __init__(self, cfg: TRDETRConfig):
        super().__init__(cfg, n_prefix=0)

    def hd2mr(self, memory, saliency_proj1, src_vid, mask, pos):
        """Highlight scores re-weight the memory, then the same encoder runs again."""
        scores = torch.sum(saliency_proj1(memory.transpose(0, 1)), dim=-1) / math.sqrt(self.d_model)
        weight = torch.softmax(scores, dim=-1)  # over all positions, padding included (official)
        memory = memory + src_vid * weight.transpose(1, 0).unsqueeze(-1)
        return self.encoder(memory, src_key_padding_mask=mask, pos=pos)

    def forward(self, src, mask, query_embed, pos_embed, saliency_proj1, video_length: int):
        """src (B, Lv + Lt, d), mask True = padding -> hs, references, video memory (B, Lv, d)."""
        src = src.permute(1, 0, 2)
        pos_embed = pos_embed.permute(1, 0, 2)
        src = self.t2v_encoder(src, src_key_padding_mask=mask, pos=pos_embed, video_length=video_length)
        src, mask, pos_embed = src[:video_length], mask[:, :video_length], pos_embed[:video_length]
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        memory = self.hd2mr(memory, saliency_proj1, src, mask, pos_embed)
        hs, references = self.decode(memory, mask, pos_embed, query_embed)
        return hs, references, memory.transpose(0, 1)


class TRDETR(DetrHeads):
    def __init__(self, cfg: TRDETRConfig):
        super().__init__()
        check_anchor_config(cfg, "tr_detr")
        self.cfg = cfg
        d = cfg.hidden_dim
        self.hidden_dim = d
        self.clip_len = cfg.clip_length
        self.num_queries = cfg.num_queries
        self.transformer = TRDETRTransformer(cfg)
        self.init_heads(cfg, query_dim=2, vid_in_dim=cfg.v_feat_dim + cfg.a_feat_dim)
        self.aux_loss = cfg.aux_loss
        self.saliency_proj1 = nn.Linear(d, d)
        self.fuser = ContextQueryFuser(d)
        self.gru_extractor = GRUFeatureExtractor(d, d)

    def top1_clip_span(self, pred_logits, pred_spans, padded_len: int) -> torch.Tensor:
        """(B, 2) clip indices [start, end] of the most confident query, scaled by the padded length."""
        return top1_clip_span(pred_logits, pred_spans, padded_len, self.clip_len)

    def mr2hd(self, pred_logits, pred_spans, memory, src_vid_ed):
        """Refine the saliency with the features of the retrieved top-1 moment."""
        return top_moment_saliency(memory, src_vid_ed, pred_logits, pred_spans, self.gru_extractor,
                                   self.saliency_proj1, self.clip_len, self.cfg.mr2hd_clamp_start)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud=None, src_aud_mask=None):
        """Masks float (B, L), 1 = valid. ``src_aud`` (B, Lv, a_feat_dim) when built with audio."""
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        if src_txt.shape[1] == 0:
            raise MrhdError("tr_detr: the query has no text tokens; give a non-empty query")
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        src_vid_ed, src_txt_ed = src_vid, src_txt
        src_vid_cls_ed, src_txt_cls_ed = src_vid.mean(1), src_txt.mean(1)
        src_vid = self.fuser(src_vid, src_txt, src_vid_mask, src_txt_mask)
        src = torch.cat([src_vid, src_txt], dim=1)
        mask = torch.cat([src_vid_mask, src_txt_mask], dim=1).bool()
        pos = torch.cat(self.positions(src_vid, src_vid_mask, src_txt), dim=1)
        hs, reference, memory = self.transformer(src, ~mask, self.query_embed.weight, pos, self.saliency_proj1,
                                                 video_length=src_vid.shape[1])
        outputs_class, outputs_coord = self.anchor_predictions(hs, reference)
        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1]}
        out["saliency_scores"] = self.mr2hd(out["pred_logits"], out["pred_spans"], memory, src_vid_ed)
        out["video_mask"] = src_vid_mask
        if self.aux_loss:
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_coord)
        out["src_txt_ed"] = src_txt_ed
        out["src_vid_ed"] = src_vid_ed
        out["src_vid_cls_ed"] = src_vid_cls_ed
        out["src_txt_cls_ed"] = src_txt_cls_ed
        out["src_txt_mask"] = src_txt_mask  # not in the official outputs: the CTC term's text mask
        return out


def build(cfg: TRDETRConfig) -> TRDETR:
    return TRDETR(cfg)


def build_criterion(cfg: TRDETRConfig) -> SetCriterion:
    """Focal label loss, hinge + rank-contrastive saliency, plus the CTC / VTC terms its train loop
    adds (``loss_ctc``, ``loss_vtc``; they need targets["src_pos_mask"])."""
    return SetCriterion(cfg.criterion_config(label_loss="focal", rank_contrastive=True, neg_pair=False,
                                             alignment=True, use_matcher=cfg.dset_name != "tvsum"))


def config_from_opt(opt: dict) -> TRDETRConfig:
    fields = fields_from_opt(TRDETRConfig, opt, "tr_detr")
    if opt.get("pre_norm"):
        raise MrhdError("tr_detr: pre_norm is not supported by the official code")
    fields["a_feat_dim"] = int(opt.get("a_feat_dim") or 0) if opt.get("a_feat_dir") else 0
    if opt.get("CTC_loss_coef") is not None:
        fields["ctc_loss_coef"] = opt["CTC_loss_coef"]
    if opt.get("VTC_loss_coef") is not None:
        fields["vtc_loss_coef"] = opt["VTC_loss_coef"]
    return TRDETRConfig(**fields)


SPEC = register_model(ModelSpec(
    name="tr_detr", config_cls=TRDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="slowfast_clip", config_from_opt=config_from_opt,
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS + AUDIO_INPUTS,
    labels=LabelRecipe(all_labels=True, pos_mask=True),
))
