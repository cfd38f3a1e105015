"""Moment-DETR (Lei et al., NeurIPS 2021), exact to jayleicn/moment_detr (commit b7e553a).

Video and text tokens are projected, concatenated [video, text] and encoded by a post-norm DETR
encoder; positions are sine on video (normalised by the valid length) and zeros on text
(``txt_position_embed`` exists but ``use_txt_pos`` is False); a DETR decoder with 10 learned
queries predicts (center, width) spans (sigmoid) and 2 class logits (index 0 = foreground) per
layer, every layer through the final LayerNorm; saliency = Linear(d, 1) on the video memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.config import DetrConfig, fields_from_opt
from mrhd.models.criterion import SetCriterion
from mrhd.models.heads import DetrHeads, aux_outputs
from mrhd.models.layers.decoder import TransformerDecoder, TransformerDecoderLayer
from mrhd.models.layers.encoder import TransformerEncoder, TransformerEncoderLayer
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.registry import DETR_INPUTS, LabelRecipe, ModelSpec, register_model


@dataclass
class MomentDETRConfig(DetrConfig):
    pre_norm: bool = False


class DetrTransformer(nn.Module):
    """Encoder over [video, text] + DETR decoder; keys ``encoder.*``, ``decoder.*``."""

    def __init__(self, cfg: MomentDETRConfig):
        super().__init__()
        d = cfg.hidden_dim
        enc_layer = TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "relu", cfg.pre_norm)
        self.encoder = TransformerEncoder(enc_layer, cfg.enc_layers, nn.LayerNorm(d) if cfg.pre_norm else None)
        dec_layer = TransformerDecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "relu", cfg.pre_norm)
        self.decoder = TransformerDecoder(dec_layer, cfg.dec_layers, nn.LayerNorm(d))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model = d

    def forward(self, src, mask, query_embed, pos_embed):
        """src (B, L, d), mask (B, L) True = padding, query_embed (nq, d), pos_embed (B, L, d)
        -> hs (layers, B, nq, d), memory (B, L, d)."""
        bs = src.shape[0]
        src = src.permute(1, 0, 2)
        pos_embed = pos_embed.permute(1, 0, 2)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(torch.zeros_like(query_embed), memory, memory_key_padding_mask=mask,
                          pos=pos_embed, query_pos=query_embed)
        return hs.transpose(1, 2), memory.transpose(0, 1)


class MomentDETR(DetrHeads):
    def __init__(self, cfg: MomentDETRConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.num_queries = cfg.num_queries
        self.transformer = DetrTransformer(cfg)
        self.init_heads(cfg, query_dim=d, vid_in_dim=cfg.v_feat_dim)
        self.saliency_proj = nn.Linear(d, 1)
        self.aux_loss = cfg.aux_loss

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask):
        """src_txt (B, Lt, Dt), src_vid (B, Lv, Dv); masks float (B, L), 1 = valid."""
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        src = torch.cat([src_vid, src_txt], dim=1)
        mask = torch.cat([src_vid_mask, src_txt_mask], dim=1).bool()
        pos = torch.cat(self.positions(src_vid, src_vid_mask, src_txt), dim=1)
        hs, memory = self.transformer(src, ~mask, self.query_embed.weight, pos)
        outputs_class = self.class_embed(hs)
        outputs_coord = self.span_embed(hs).sigmoid()
        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1]}
        vid_mem = memory[:, :src_vid.shape[1]]
        out["saliency_scores"] = self.saliency_proj(vid_mem).squeeze(-1)
        if self.aux_loss:
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_coord)
        return out


def build(cfg: MomentDETRConfig) -> MomentDETR:
    return MomentDETR(cfg)


def build_criterion(cfg: MomentDETRConfig) -> SetCriterion:
    return SetCriterion(cfg.criterion_config(label_loss="ce", rank_contrastive=False, neg_pair=False))


def config_from_opt(opt: dict) -> MomentDETRConfig:
    """The official ``opt`` namespace (as a dict; v_feat_dim already includes tef) -> config."""
    if opt.get("dset_name") == "tvsum":
        raise MrhdError("moment_detr: TVSum options are not supported by this model")
    return MomentDETRConfig(**fields_from_opt(MomentDETRConfig, opt, "moment_detr"))


SPEC = register_model(ModelSpec(
    name="moment_detr", config_cls=MomentDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="slowfast_clip", config_from_opt=config_from_opt,
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS,
    labels=LabelRecipe(),
))
