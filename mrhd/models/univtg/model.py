"""UniVTG (Lin et al., ICCV 2023): a single-stage grounding model with dense per-clip heads.

Checkpoint-compatible with showlab/UniVTG@32659ac (model/univtg.py): video and text tokens are
projected, tagged with token-type embeddings (video 1, text 0) and encoded together by one
encoder (no decoder, no queries). Every clip then predicts a foreground probability and its
distance to the moment's start and end. Saliency is the cosine between the *projected video
inputs* (not the encoder memory) and a weighted pool of the projected text, plus
``log(mask + 1e-45)`` so that padding scores about -103.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.layers.mlp import input_projection
from mrhd.models.layers.pooling import WeightedPool
from mrhd.models.layers.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.registry import DETR_INPUTS, LabelRecipe, ModelSpec, register_model
from mrhd.models.univtg.criterion import UniVTGCriterion
from mrhd.models.univtg.layers import ConvHead, UniVTGTransformer
from mrhd.models.univtg.postprocess import postprocess


@dataclass
class UniVTGConfig:
    """Defaults are the official QVHighlights setting (scripts/qvhl_pretrain.sh)."""

    v_feat_dim: int = 2818          # slowfast 2304 + clip 512 + tef 2
    t_feat_dim: int = 512
    hidden_dim: int = 1024
    nheads: int = 8
    enc_layers: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.0
    droppath: float = 0.1
    input_dropout: float = 0.5
    n_input_proj: int = 2
    max_q_l: int = 75               # size of the (unused by default) text position table
    use_txt_pos: bool = False
    # losses (main/config.py)
    b_loss_coef: float = 10.0
    g_loss_coef: float = 1.0
    f_loss_coef: float = 10.0
    s_loss_intra_coef: float = 0.05
    s_loss_inter_coef: float = 0.01
    eos_coef: float = 0.1
    temperature: float = 0.07
    # inference
    clip_len: float = 2.0
    eval_mode: str = "add"          # JSON saliency = fp16(saliency) + foreground prob
    nms_thd: float = 0.7
    max_before_nms: int = 1000
    max_after_nms: int = 10


class UniVTG(nn.Module):
    def __init__(self, cfg: UniVTGConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.transformer = UniVTGTransformer(d, cfg.enc_layers, nhead=cfg.nheads,
                                             dim_feedforward=cfg.dim_feedforward, dropout=cfg.dropout,
                                             droppath=cfg.droppath, activation="gelu")
        # UniVTG's sine table has hidden_dim features (model/position_encoding.py, N_steps = hidden_dim)
        self.position_embed = PositionEmbeddingSine(d, normalize=True)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.max_q_l, d, dropout=cfg.input_dropout)
        self.token_type_embeddings = nn.Embedding(2, d)
        nn.init.normal_(self.token_type_embeddings.weight, std=0.02)
        self.span_embed = ConvHead(d, d, 2, 3, kernel_size=3)
        self.class_embed = ConvHead(d, d, 1, 3, kernel_size=3)
        self.input_txt_proj = input_projection(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = input_projection(cfg.v_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.weightedpool = WeightedPool(d)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_cls=None, src_cls_mask=None):
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        src_vid = src_vid + self.token_type_embeddings(torch.ones_like(src_vid_mask, dtype=torch.long))
        src_txt = src_txt + self.token_type_embeddings(torch.zeros_like(src_txt_mask, dtype=torch.long))

        src = torch.cat([src_vid, src_txt], dim=1)
        mask = torch.cat([src_vid_mask, src_txt_mask], dim=1).bool()
        pos_vid = self.position_embed(src_vid, src_vid_mask)
        pos_txt = self.txt_position_embed(src_txt) if self.cfg.use_txt_pos else torch.zeros_like(src_txt)
        memory = self.transformer(src, ~mask, torch.cat([pos_vid, pos_txt], dim=1))
        vid_mem = memory[:, :src_vid.shape[1]]

        pred_logits = self.class_embed(vid_mem).sigmoid()                 # (B, L, 1) probabilities
        offsets = self.span_embed(vid_mem).sigmoid()
        pred_spans = offsets * offsets.new_tensor([-1.0, 1.0])            # distance to start / end

        txt_mem_proj = self.weightedpool(src_txt, src_txt_mask).unsqueeze(1)
        saliency = F.cosine_similarity(src_vid, txt_mem_proj, dim=-1) + (src_vid_mask + 1e-45).log()
        out = {"pred_logits": pred_logits, "pred_spans": pred_spans, "src_vid_mask": src_vid_mask,
               "vid_mem_proj": src_vid, "txt_mem_proj": txt_mem_proj, "saliency_scores": saliency}
        if src_cls is not None:  # class-name queries of the pretraining corpora
            src_cls = self.input_txt_proj(src_cls)
            src_cls = src_cls + self.token_type_embeddings(torch.zeros_like(src_cls_mask, dtype=torch.long))
            out["cls_mem_proj"] = self.weightedpool(src_cls, src_cls_mask)
        return out


def build(cfg: UniVTGConfig) -> UniVTG:
    """The network from its config (random init; load an official state_dict as is)."""
    return UniVTG(cfg)


def build_criterion(cfg: UniVTGConfig) -> UniVTGCriterion:
    """The official dense losses with the official weights (``criterion.weight_dict``)."""
    return UniVTGCriterion(cfg)


_OPT_FIELDS = {  # official opt name -> config field
    "v_feat_dim": "v_feat_dim", "t_feat_dim": "t_feat_dim", "hidden_dim": "hidden_dim",
    "nheads": "nheads", "enc_layers": "enc_layers", "dim_feedforward": "dim_feedforward",
    "dropout": "dropout", "droppath": "droppath", "input_dropout": "input_dropout",
    "n_input_proj": "n_input_proj", "max_q_l": "max_q_l", "use_txt_pos": "use_txt_pos",
    "b_loss_coef": "b_loss_coef", "g_loss_coef": "g_loss_coef", "f_loss_coef": "f_loss_coef",
    "s_loss_intra_coef": "s_loss_intra_coef", "s_loss_inter_coef": "s_loss_inter_coef",
    "eos_coef": "eos_coef", "temperature": "temperature", "clip_length": "clip_len",
    "eval_mode": "eval_mode", "nms_thd": "nms_thd", "max_before_nms": "max_before_nms",
    "max_after_nms": "max_after_nms",
}


def config_from_opt(opt: dict) -> UniVTGConfig:
    """Config from an official checkpoint's ``opt`` (v_feat_dim there already includes the tef +2)."""
    if opt.get("span_loss_type", "l1") != "l1":
        raise MrhdError(f"univtg: span_loss_type {opt['span_loss_type']!r} is not supported (only 'l1', as upstream)")
    if opt.get("position_embedding", "sine") not in ("sine", "v2"):
        raise MrhdError(f"univtg: position_embedding {opt['position_embedding']!r} is not supported (only 'sine')")
    return UniVTGConfig(**{ours: opt[theirs] for theirs, ours in _OPT_FIELDS.items() if theirs in opt})


SPEC = register_model(ModelSpec(
    name="univtg", config_cls=UniVTGConfig, build=build, build_criterion=build_criterion,
    default_profile="univtg",   # configs/features/univtg.yaml: slowfast_clip without truncating text/video
    config_from_opt=config_from_opt, postprocess=postprocess, forward_inputs=DETR_INPUTS,
    labels=LabelRecipe(dense=True),
))
