"""VideoLights (Paul et al., 2024), exact to dpaul06/VideoLights@76308bb (video_lights/model.py).

QD-DETR's skeleton (global token, anchor decoder, rolled-text negative pass, proj1 . proj2
saliency) with:

- Inputs: video [slowfast | clip | blip2 | tef] = 3586, text [clip | blip2] tokens = 1280; optional
  audio (``a_feat_dim``) concatenated to the video before the projection.
- Kernel-1 Conv1d input projections and the feature refinement and alignment module (FRA) on the
  video before the transformer (:mod:`mrhd.models.videolights.layers`).
- Bi-directional cross-modal fusion layers (``bicmf_layers``) in place of QD-DETR's T2V encoder.
- Uni-directional joint-task feedback (``mr_to_hd_loss``): the top-1 predicted moment, turned
  into clip indices with the padded length, is summarised by a GRU over the projected clips; its
  similarity to every clip re-weights the video memory into ``saliency_scores_mr``. As upstream, a
  negative start index wraps (Python slicing) and can give an empty slice; ``mr2hd_clamp_start``
  clamps it to 0 instead (off by default, as TR-DETR's option of the same name).
- Contrastive alignment projections (``proj_queries``, ``proj_txt_mem`` from the projected text,
  ``proj_vid_mem``), also on every aux decoder layer.
The anchor sine embedding uses ``sine_half_dim`` (None = hidden_dim // 2; upstream hard-codes 128,
which equals it at the released hidden_dim 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.config import fields_from_opt
from mrhd.models.heads import aux_outputs
from mrhd.models.layers.encoder import TransformerEncoder
from mrhd.models.layers.mlp import input_projection
from mrhd.models.layers.moment_feedback import GRUFeatureExtractor, top_moment_saliency
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.qd_detr.model import QDDETR, QDDETRConfig, QDDETRTransformer
from mrhd.models.registry import AUDIO_INPUTS, DETR_INPUTS, LabelRecipe, ModelSpec, register_model
from mrhd.models.videolights.criterion import VideoLightsCriterion
from mrhd.models.videolights.layers import BiCMFLayer, FeatureRefinement, conv_input_projection


@dataclass
class VideoLightsConfig(QDDETRConfig):
    """Defaults: the official QVHighlights script (video_lights/scripts/qvhl/train.sh)."""

    v_feat_dim: int = 3586            # slowfast 2304 + clip 512 + blip2 768 + tef 2
    t_feat_dim: int = 1280            # clip 512 + blip2 768
    enc_layers: int = 3
    dec_layers: int = 3
    bicmf_layers: int = 1
    fra: bool = True                  # feature refinement + Conv1d input projections
    mr_to_hd_loss: bool = True
    mr_to_hd_loss_coef: float = 1.0
    mr2hd_clamp_start: bool = False   # fix for the wrapped negative slice (off = official, as TR-DETR)
    hard_pos_neg_loss: bool = True
    hard_pos_neg_loss_coef: float = 10.0
    cos_sim_loss_coef: float = 1.0
    contrastive_align_loss: bool = True
    contrastive_align_loss_coef: float = 0.2
    contrastive_hdim: int = 64
    temperature: float = 0.07


class VideoLightsTransformer(QDDETRTransformer):
    """QD-DETR's transformer with bi-directional cross-modal fusion layers as its first stage."""

    def __init__(self, cfg: VideoLightsConfig):
        super().__init__(cfg)
        layer = BiCMFLayer(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.t2v_encoder = TransformerEncoder(layer, cfg.bicmf_layers)
        for p in self.t2v_encoder.parameters():  # official _reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class VideoLights(QDDETR):
    def __init__(self, cfg: VideoLightsConfig):
        super().__init__(cfg)
        d = cfg.hidden_dim
        self.transformer = VideoLightsTransformer(cfg)
        proj = conv_input_projection if cfg.fra else input_projection
        self.input_txt_proj = proj(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = proj(cfg.v_feat_dim + cfg.a_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        if cfg.fra:
            self.feature_refinement = FeatureRefinement(d)
        if cfg.contrastive_align_loss:
            self.contrastive_align_projection_query = nn.Linear(d, cfg.contrastive_hdim)
            self.contrastive_align_projection_txt = nn.Linear(d, cfg.contrastive_hdim)
            self.contrastive_align_projection_vid = nn.Linear(d, cfg.contrastive_hdim)
        if cfg.mr_to_hd_loss:
            self.gru_extractor = GRUFeatureExtractor(d, d)
            self.saliency_proj_mr = nn.Linear(d, d)

    def top_moment_saliency(self, src_vid, vid_mem, pred_logits, pred_spans):
        """Saliency re-weighted by the top-1 predicted moment (uni-directional MR -> HD feedback)."""
        return top_moment_saliency(vid_mem, src_vid, pred_logits, pred_spans, self.gru_extractor,
                                   self.saliency_proj_mr, self.cfg.clip_length, self.cfg.mr2hd_clamp_start)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud=None, src_aud_mask=None,
                negatives: bool = True):
        """Masks float (B, L), 1 = valid. ``src_aud`` (B, Lv, a_feat_dim) when built with audio.
        ``negatives`` False skips the rolled-text negative pass: its outputs feed
        only the training losses, so a prediction (``ModelSpec.predict_switches``) has no use for it."""
        if src_txt.shape[1] == 0:
            raise MrhdError("videolights: the query has no text tokens; give a non-empty query")
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        src_vid_projected = src_vid
        if self.cfg.fra:
            src_vid = self.feature_refinement(src_vid, src_txt, src_vid_mask, src_txt_mask)
        pos_vid, pos_txt = self.positions(src_vid, src_vid_mask, src_txt)
        src, mask, pos = self.with_global_token(
            torch.cat([src_vid, src_txt], dim=1), torch.cat([src_vid_mask, src_txt_mask], dim=1).bool(),
            torch.cat([pos_vid, pos_txt], dim=1))
        video_length = src_vid.shape[1]

        hs, reference, vid_mem, memory_global = self.transformer(
            src, ~mask, self.query_embed.weight, pos, video_length=video_length)
        outputs_class, outputs_coord = self.anchor_predictions(hs, reference)
        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1]}
        if self.cfg.contrastive_align_loss:
            proj_queries = F.normalize(self.contrastive_align_projection_query(hs), p=2, dim=-1)
            out["proj_queries"] = proj_queries[-1]
            out["proj_txt_mem"] = F.normalize(self.contrastive_align_projection_txt(src_txt), p=2, dim=-1)
            out["proj_vid_mem"] = F.normalize(self.contrastive_align_projection_vid(vid_mem), p=2, dim=-1)

        out["saliency_scores"] = self.saliency(vid_mem, memory_global)
        out["saliency_scores_neg"] = None
        if negatives:   # negative pairs: sample i gets the text of sample i+1 (the last gets the first)
            src_neg, mask_neg, _ = self.with_global_token(
                torch.cat([src_vid, torch.cat([src_txt[1:], src_txt[:1]], dim=0)], dim=1),
                torch.cat([src_vid_mask, torch.cat([src_txt_mask[1:], src_txt_mask[:1]], dim=0)], dim=1).bool())
            _, _, vid_mem_neg, memory_global_neg = self.transformer(
                src_neg, ~mask_neg, self.query_embed.weight, pos.clone(), video_length=video_length)
            out["saliency_scores_neg"] = self.saliency(vid_mem_neg, memory_global_neg)
        if self.cfg.mr_to_hd_loss:
            out["saliency_scores_mr"] = self.top_moment_saliency(src_vid_projected, vid_mem, outputs_class[-1],
                                                                 outputs_coord[-1])
        out["video_mask"] = src_vid_mask
        out["src_txt"] = src_txt
        out["src_vid"] = src_vid
        if self.aux_loss:
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_coord)
            if self.cfg.contrastive_align_loss:
                for aux, q in zip(out["aux_outputs"], proj_queries[:-1]):
                    aux.update(proj_queries=q, proj_txt_mem=out["proj_txt_mem"], proj_vid_mem=out["proj_vid_mem"])
        return out


def build(cfg: VideoLightsConfig) -> VideoLights:
    """The network from its config (random init; official state_dicts load as they are)."""
    return VideoLights(cfg)


def build_criterion(cfg: VideoLightsConfig) -> VideoLightsCriterion:
    """Matcher + every VideoLights loss with the official weights (``criterion.weight_dict``)."""
    return VideoLightsCriterion(cfg)


def config_from_opt(opt: dict) -> VideoLightsConfig:
    """Official ``opt`` (dict) -> config; audio is on when the run had ``a_feat_dir``."""
    opt = dict(opt)
    contrastive = bool(opt.pop("contrastive_align_loss", False))
    fields = fields_from_opt(VideoLightsConfig, opt, "videolights")
    if opt.get("pre_norm"):
        raise MrhdError("videolights: pre_norm is not supported by the official code")
    fields["a_feat_dim"] = int(opt.get("a_feat_dim") or 0) if opt.get("a_feat_dir") else 0
    fields["contrastive_align_loss"] = contrastive
    return VideoLightsConfig(**fields)


SPEC = register_model(ModelSpec(
    name="videolights", config_cls=VideoLightsConfig, build=build, build_criterion=build_criterion,
    default_profile="videolights", config_from_opt=config_from_opt,
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS + AUDIO_INPUTS,
    labels=LabelRecipe(all_labels=True, pos_index=True),
    predict_switches={"negatives": False},
))
