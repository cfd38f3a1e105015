"""CMDNet: Cross-modal Multiscale Difference-aware Network (Zhou et al., MMSP 2024) for joint moment
retrieval and highlight detection; reported R1@0.7 46.69 on the QVHighlights test split.

No public code: the network is QD-DETR's (:class:`CMDNet` subclasses :class:`QDDETR`) with the
multi-scale difference perception module between the T2V encoder and the encoder
(:mod:`mrhd.models.cmdnet.layers`) and the clip-text alignment losses
(:mod:`mrhd.models.cmdnet.criterion`). Design choices the paper leaves open, and what was chosen:
the model card, ``README.md`` in this folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.cmdnet.criterion import CMDNetCriterion
from mrhd.models.cmdnet.layers import MultiScaleDifferencePerception
from mrhd.models.layers.t2v_anchor_transformer import check_anchor_config
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.qd_detr.model import QDDETR, QDDETRConfig, QDDETRTransformer
from mrhd.models.registry import AUDIO_INPUTS, DETR_INPUTS, LabelRecipe, ModelSpec, register_model
from mrhd.models.spans import inverse_sigmoid

CLIP_MAX_LOGIT_SCALE = 100.0   # CLIP (Radford et al. 2021, sec. 2.5): logit scale clipped at 100


@dataclass
class CMDNetConfig(QDDETRConfig):
    mdp_kernel_sizes: tuple[int, ...] = (1, 3, 5)
    mdp_gcn_layers: int = 1
    align_temperature: float = 0.07   # initial CLIP temperature (logit scale = 1 / T, learnable)
    align_vt_coef: float = 0.3
    align_ct_coef: float = 0.5
    align_intra_coef: float = 0.3


class CMDNetTransformer(QDDETRTransformer):
    """QD-DETR's transformer with the MDP between the T2V encoder and the encoder."""

    def __init__(self, cfg: CMDNetConfig):
        super().__init__(cfg)
        self.mdp = MultiScaleDifferencePerception(cfg.hidden_dim, tuple(cfg.mdp_kernel_sizes),
                                                  cfg.mdp_gcn_layers, cfg.dropout)

    def forward(self, src, mask, query_embed, pos_embed, video_length: int):
        """As :meth:`QDDETRTransformer.forward`; video tokens are rows 1..video_length."""
        src = src.permute(1, 0, 2)
        pos_embed = pos_embed.permute(1, 0, 2)
        src = self.t2v_encoder(src, src_key_padding_mask=mask, pos=pos_embed, video_length=video_length)
        keep = video_length + 1
        src, mask, pos_embed = src[:keep], mask[:, :keep], pos_embed[:keep]
        src = torch.cat([src[:1], self.mdp(src[1:], mask[:, 1:])], dim=0)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        memory_global, memory_local = memory[0], memory[1:]
        hs, references = self.decode(memory_local, mask[:, 1:], pos_embed[1:], query_embed)
        return hs, references, memory_local.transpose(0, 1), memory_global


class CMDNet(QDDETR):
    def __init__(self, cfg: CMDNetConfig):
        check_anchor_config(cfg, "cmdnet")
        if cfg.mdp_gcn_layers < 0:
            raise MrhdError(f"cmdnet: mdp_gcn_layers must be >= 0, got {cfg.mdp_gcn_layers}")
        if cfg.align_temperature <= 0:
            raise MrhdError(f"cmdnet: align_temperature must be > 0, got {cfg.align_temperature}")
        try:
            super().__init__(cfg)
            self.transformer = CMDNetTransformer(cfg)
        except ValueError as err:
            raise MrhdError(f"cmdnet: {err}") from None
        self.align_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.align_temperature)))

    def logit_scale(self) -> torch.Tensor:
        return self.align_logit_scale.exp().clamp(max=CLIP_MAX_LOGIT_SCALE)

    def run_transformer(self, src_vid, src_vid_mask, src_txt, src_txt_mask, pos_vid, pos_txt):
        src, mask, pos = self.with_global_token(
            torch.cat([src_vid, src_txt], dim=1), torch.cat([src_vid_mask, src_txt_mask], dim=1).bool(),
            torch.cat([pos_vid, pos_txt], dim=1))
        return self.transformer(src, ~mask, self.query_embed.weight, pos, video_length=src_vid.shape[1])

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud=None, src_aud_mask=None,
                negatives: bool = True):
        """Masks float (B, L), 1 = valid. ``src_aud`` (B, Lv, a_feat_dim) when built with audio.
        ``negatives`` False skips the rolled-text negative pass: its outputs feed
        only the training losses, so a prediction (``ModelSpec.predict_switches``) has no use for it."""
        if src_txt.shape[1] == 0:
            raise MrhdError("cmdnet: the query has no text tokens; give a non-empty query")
        if (src_aud is not None) != bool(self.cfg.a_feat_dim):
            raise MrhdError(f"cmdnet: built with a_feat_dim {self.cfg.a_feat_dim} but audio was "
                            f"{'given' if src_aud is not None else 'not given'}; use the matching profile")
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        pos_vid = self.position_embed(src_vid, src_vid_mask)
        pos_txt = self.txt_position_embed(src_txt) if self.cfg.use_txt_pos else torch.zeros_like(src_txt)

        hs, reference, vid_mem, memory_global = self.run_transformer(
            src_vid, src_vid_mask, src_txt, src_txt_mask, pos_vid, pos_txt)
        outputs_class = self.class_embed(hs)
        outputs_coord = (self.span_embed(hs) + inverse_sigmoid(reference)).sigmoid()
        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1]}

        out["saliency_scores"] = self.saliency(vid_mem, memory_global)
        out["saliency_scores_neg"] = None
        if negatives:   # negative pairs (QD-DETR): sample i gets the text of sample i+1 (the last the first)
            _, _, vid_mem_neg, memory_global_neg = self.run_transformer(
                src_vid, src_vid_mask, src_txt.roll(-1, dims=0), src_txt_mask.roll(-1, dims=0), pos_vid,
                pos_txt)
            out["saliency_scores_neg"] = self.saliency(vid_mem_neg, memory_global_neg)
        out["video_mask"] = src_vid_mask
        out["src_txt_mask"] = src_txt_mask
        out["align_vid"] = src_vid
        out["align_txt"] = src_txt
        out["align_logit_scale"] = self.logit_scale()
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_spans": b}
                                  for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
        return out


def build(cfg: CMDNetConfig) -> CMDNet:
    return CMDNet(cfg)


def build_criterion(cfg: CMDNetConfig) -> CMDNetCriterion:
    base = cfg.criterion_config(label_loss="ce", rank_contrastive=True, neg_pair=True,
                                use_matcher=cfg.dset_name != "tvsum")
    return CMDNetCriterion(base, cfg.align_vt_coef, cfg.align_ct_coef, cfg.align_intra_coef)


SPEC = register_model(ModelSpec(
    name="cmdnet", config_cls=CMDNetConfig, build=build, build_criterion=build_criterion,
    default_profile="slowfast_clip",
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS + AUDIO_INPUTS,
    labels=LabelRecipe(all_labels=True),
    predict_switches={"negatives": False},
))
