"""QD-DETR (Moon et al., CVPR 2023), exact to wjun0830/QD-DETR (commit 56c63b2).

A learned global token (``global_rep_token``, position ``global_rep_pos``) is prepended to
[video, text]. The T2V encoder lets video tokens attend only to text; the text is then dropped and
a normal encoder runs on [global, video]; the anchor decoder (:mod:`mrhd.models.layers.anchor_decoder`)
predicts spans = sigmoid(span_embed(hs) + inverse_sigmoid(anchor)). Saliency = proj1(video memory)
. proj2(global memory) / sqrt(d). Negative pairs run even in eval: the text is rolled by one along
the batch and the whole transformer runs again (``saliency_scores_neg``). All transformer layers use
a learnable PReLU. Optional audio (``src_aud``, ``a_feat_dim`` e.g. 2050 = PANNs 2048 + tef) is
concatenated to the video features before the input projection, as the official audio branch does.
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
from mrhd.models.layers.t2v_anchor_transformer import T2VAnchorTransformer, check_anchor_config
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.registry import AUDIO_INPUTS, DETR_INPUTS, LabelRecipe, ModelSpec, register_model


@dataclass
class QDDETRConfig(DetrConfig):
    a_feat_dim: int = 0               # 0 = no audio; official audio checkpoints: 2050
    dset_name: str = "hl"             # "tvsum" trains saliency only (no matcher)
    sine_half_dim: int | None = None  # None = hidden_dim // 2 (official hard-codes 128)


class QDDETRTransformer(T2VAnchorTransformer):
    """T2V encoder, encoder on [global, video], anchor decoder; keys as the official ``Transformer``."""

    def __init__(self, cfg: QDDETRConfig, n_prefix: int = 1):
        super().__init__(cfg, n_prefix)

    def forward(self, src, mask, query_embed, pos_embed, video_length: int):
        """src (B, 1 + Lv + Lt, d) with the global token first; mask True = padding.
        -> hs, references, video memory (B, Lv, d), global memory (B, d)."""
        src = src.permute(1, 0, 2)
        pos_embed = pos_embed.permute(1, 0, 2)
        src = self.t2v_encoder(src, src_key_padding_mask=mask, pos=pos_embed, video_length=video_length)
        keep = video_length + 1
        src, mask, pos_embed = src[:keep], mask[:, :keep], pos_embed[:keep]
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        memory_global, memory_local = memory[0], memory[1:]
        hs, references = self.decode(memory_local, mask[:, 1:], pos_embed[1:], query_embed)
        return hs, references, memory_local.transpose(0, 1), memory_global


class QDDETR(DetrHeads):
    def __init__(self, cfg: QDDETRConfig):
        super().__init__()
        check_anchor_config(cfg, "qd_detr")
        self.cfg = cfg
        d = cfg.hidden_dim
        self.hidden_dim = d
        self.num_queries = cfg.num_queries
        self.transformer = QDDETRTransformer(cfg)
        self.init_heads(cfg, query_dim=2, vid_in_dim=cfg.v_feat_dim + cfg.a_feat_dim)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.aux_loss = cfg.aux_loss
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))

    def saliency(self, vid_mem, memory_global):
        return torch.sum(self.saliency_proj1(vid_mem) * self.saliency_proj2(memory_global).unsqueeze(1),
                         dim=-1) / math.sqrt(self.hidden_dim)

    def with_global_token(self, src, mask, pos=None):
        bs = src.shape[0]
        mask = torch.cat([torch.ones(bs, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        src = torch.cat([self.global_rep_token.reshape(1, 1, -1).repeat(bs, 1, 1), src], dim=1)
        if pos is not None:
            pos = torch.cat([self.global_rep_pos.reshape(1, 1, -1).repeat(bs, 1, 1), pos], dim=1)
        return src, mask, pos

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud=None, src_aud_mask=None,
                negatives: bool = True):
        """Masks float (B, L), 1 = valid. ``src_aud`` (B, Lv, a_feat_dim) when built with audio.
        ``negatives`` False skips the rolled-text negative pass: its outputs feed
        only the training losses, so a prediction (``ModelSpec.predict_switches``) has no use for it."""
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        if src_txt.shape[1] == 0:
            raise MrhdError("qd_detr: the query has no text tokens; give a non-empty query")
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        pos = torch.cat(self.positions(src_vid, src_vid_mask, src_txt), dim=1)
        src, mask, pos = self.with_global_token(
            torch.cat([src_vid, src_txt], dim=1), torch.cat([src_vid_mask, src_txt_mask], dim=1).bool(), pos)
        video_length = src_vid.shape[1]

        hs, reference, vid_mem, memory_global = self.transformer(
            src, ~mask, self.query_embed.weight, pos, video_length=video_length)
        outputs_class, outputs_coord = self.anchor_predictions(hs, reference)
        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1]}

        out["saliency_scores"] = self.saliency(vid_mem, memory_global)
        out["saliency_scores_neg"] = None
        if negatives:   # negative pairs: sample i gets the text of sample i+1 (the last gets the first)
            src_txt_neg = torch.cat([src_txt[1:], src_txt[0:1]], dim=0)
            src_txt_mask_neg = torch.cat([src_txt_mask[1:], src_txt_mask[0:1]], dim=0)
            src_neg, mask_neg, _ = self.with_global_token(
                torch.cat([src_vid, src_txt_neg], dim=1),
                torch.cat([src_vid_mask, src_txt_mask_neg], dim=1).bool())
            _, _, vid_mem_neg, memory_global_neg = self.transformer(
                src_neg, ~mask_neg, self.query_embed.weight, pos.clone(), video_length=video_length)
            out["saliency_scores_neg"] = self.saliency(vid_mem_neg, memory_global_neg)
        out["video_mask"] = src_vid_mask
        if self.aux_loss:
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_coord)
        return out


def build(cfg: QDDETRConfig) -> QDDETR:
    return QDDETR(cfg)


def build_criterion(cfg: QDDETRConfig) -> SetCriterion:
    return SetCriterion(cfg.criterion_config(label_loss="ce", rank_contrastive=True, neg_pair=True,
                                             use_matcher=cfg.dset_name != "tvsum"))


def config_from_opt(opt: dict) -> QDDETRConfig:
    """Official ``opt`` (dict) -> config; audio is on when the run had ``a_feat_dir``."""
    fields = fields_from_opt(QDDETRConfig, opt, "qd_detr")
    if opt.get("pre_norm"):
        raise MrhdError("qd_detr: pre_norm is not supported by the official code")
    fields["a_feat_dim"] = int(opt.get("a_feat_dim") or 0) if opt.get("a_feat_dir") else 0
    return QDDETRConfig(**fields)


SPEC = register_model(ModelSpec(
    name="qd_detr", config_cls=QDDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="slowfast_clip", config_from_opt=config_from_opt,
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS + AUDIO_INPUTS,
    labels=LabelRecipe(all_labels=True),
    predict_switches={"negatives": False},
))
