"""CG-DETR (Moon et al., 2023, "Correlation-Guided Query-Dependency Calibration"), exact to
wjun0830/CGDETR@212b2e4 (cg_detr/model.py).

On top of QD-DETR's recipe (T2V encoder, global token, anchor decoder, rolled-text negatives):

- 45 learned dummy tokens are encoded together with the text by ``txtproj_encoder`` and prepended
  to it; the T2V attention discards whatever mass the clips put on them.
- Token-type embeddings (video 1, text 0); text positions are zeros (``use_txt_pos`` False).
- The saliency token is a per-sample context token (mean of the valid clips) plus prompts chosen
  from ``global_rep_token`` (see :mod:`mrhd.models.cg_detr.transformer`).
- Negatives: sample i gets the text of sample i+1, but only where the two come from different
  videos. ``vid`` strings are parsed: for QVHighlights (``dset_name == "hl"``) the last two ``_``
  fields (the clip's start/end seconds) are stripped to get the source video.
- Training branch (``targets`` given): the moment encoder and the sentence encoder
  (``scls_encoder``, 8 heads, PReLU, hard-coded upstream) produce the moment/sentence tokens and
  similarities the moment-sentence alignment and distillation losses need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.cg_detr.criterion import CGDETRCriterion
from mrhd.models.cg_detr.layers import helper_encoder
from mrhd.models.cg_detr.postprocess import postprocess
from mrhd.models.cg_detr.transformer import CGDETRTransformer
from mrhd.models.config import DetrConfig, fields_from_opt
from mrhd.models.heads import DetrHeads, aux_outputs
from mrhd.models.layers.mlp import MLP, LinearLayer, input_projection
from mrhd.models.layers.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.registry import AUDIO_INPUTS, DETR_INPUTS, LabelRecipe, ModelSpec, register_model


@dataclass
class CGDETRConfig(DetrConfig):
    """Defaults: the official QVHighlights script (cg_detr/scripts/train.sh)."""

    enc_layers: int = 3
    dec_layers: int = 3
    t2v_layers: int = 2
    moment_layers: int = 1
    dummy_layers: int = 2
    sent_layers: int = 1
    num_dummies: int = 45
    num_prompts: int = 1
    total_prompts: int = 10
    a_feat_dim: int = 0               # 0 = no audio
    dset_name: str = "hl"             # "hl": vid strings carry two trailing _start_end fields
    lw_ms_align: float = 1.0
    lw_distill: float = 1.0
    lw_wattn: float = 1.0
    # Fixes of upstream bugs in the saliency loss, off by default (see CGDETRCriterion)
    fix_single_false_negative: bool = False
    keep_attn_false_negative_rank: bool = False


def find_nth(text: str, sub: str, n: int) -> int:
    """Index of the n-th ``sub`` (n <= 1: the first); len(text) when absent (upstream ``find_nth``)."""
    start = text.find(sub)
    while start >= 0 and n > 1:
        start = text.find(sub, start + len(sub))
        n -= 1
    return len(text) if start == -1 else start


def source_video_ids(vids: list[str], dset_name: str) -> list[str]:
    """QVHighlights clip ids ``<youtube id>_<start>_<end>`` -> ``<youtube id>`` (others unchanged)."""
    if dset_name != "hl":
        return list(vids)
    return [v[:find_nth(v, "_", v.count("_") - 1)] for v in vids]


def real_negative_mask(vids: list[str], dset_name: str, device=None) -> torch.Tensor:
    """True where sample i and sample i+1 (the text it borrows) come from different videos."""
    ori = source_video_ids(vids, dset_name)
    rolled = ori[1:] + ori[:1]
    return torch.tensor([a != b for a, b in zip(ori, rolled)], dtype=torch.bool, device=device)


class CGDETR(DetrHeads):
    def __init__(self, cfg: CGDETRConfig):
        super().__init__()
        if cfg.hidden_dim % cfg.nheads or cfg.hidden_dim % 8:
            raise MrhdError(f"cg_detr: hidden_dim {cfg.hidden_dim} must be divisible by nheads and by 8")
        self.cfg = cfg
        d = cfg.hidden_dim
        self.hidden_dim = d
        self.num_dummies = cfg.num_dummies
        self.transformer = CGDETRTransformer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers,
                                             cfg.dec_layers, cfg.t2v_layers, cfg.moment_layers,
                                             cfg.num_dummies, cfg.num_prompts)
        self.position_embed = PositionEmbeddingSine(d, normalize=True)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.max_q_l, d, cfg.input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.token_type_embeddings = nn.Embedding(2, d)
        nn.init.normal_(self.token_type_embeddings.weight, std=0.02)
        self.query_embed = nn.Embedding(cfg.num_queries, 2)
        self.input_txt_proj = input_projection(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = input_projection(cfg.v_feat_dim + cfg.a_feat_dim, d, cfg.n_input_proj,
                                               cfg.input_dropout)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.aux_loss = cfg.aux_loss
        self.global_rep_token = nn.Parameter(torch.randn(cfg.total_prompts, d))
        self.global_rep_pos = nn.Parameter(torch.randn(1, d))
        self.moment_rep_token = nn.Parameter(torch.randn(d))
        self.moment_rep_pos = nn.Parameter(torch.randn(d))
        self.dummy_rep_token = nn.Parameter(torch.randn(cfg.num_dummies, d))
        self.dummy_rep_pos = nn.Parameter(torch.randn(cfg.num_dummies, d))
        self.sent_rep_token = nn.Parameter(torch.randn(d))
        self.sent_rep_pos = nn.Parameter(torch.randn(d))
        # present in official checkpoints, never used by the official forward
        self.txt_proj_linear = LinearLayer(cfg.t_feat_dim, d, layer_norm=True)
        self.txtproj_encoder = helper_encoder(d, cfg.dim_feedforward, cfg.dummy_layers)
        self.scls_encoder = helper_encoder(d, cfg.dim_feedforward, cfg.sent_layers)

    # -- pieces -------------------------------------------------------------------------------
    def _prepend(self, token: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """token (n, d) or (d,) repeated over the batch and put in front of x (B, L, d)."""
        token = token.reshape(1, -1, self.hidden_dim).repeat(x.shape[0], 1, 1)
        return torch.cat([token, x], dim=1)

    def encode_dummies(self, src_txt, src_txt_mask, pos_txt):
        """The dummy tokens after ``txtproj_encoder`` read them together with the text -> (B, n, d)."""
        src = self._prepend(self.dummy_rep_token, src_txt).permute(1, 0, 2)
        pos = self._prepend(self.dummy_rep_pos, pos_txt).permute(1, 0, 2)
        mask = self._with_valid_prefix(src_txt_mask, self.num_dummies)
        memory = self.txtproj_encoder(src, src_key_padding_mask=~mask.bool(), pos=pos)
        return memory[:self.num_dummies].permute(1, 0, 2)

    @staticmethod
    def _with_valid_prefix(mask: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([torch.ones(mask.shape[0], n, dtype=mask.dtype, device=mask.device), mask], dim=1)

    def sentence_token(self, words, words_mask, words_pos):
        """``scls_encoder`` over [sentence token, words] -> (sentence (B, d), words (L, B, d))."""
        src = self._prepend(self.sent_rep_token, words).permute(1, 0, 2)
        pos = self._prepend(self.sent_rep_pos, words_pos).permute(1, 0, 2)
        mask = self._with_valid_prefix(words_mask.bool(), 1)
        memory = self.scls_encoder(src, src_key_padding_mask=~mask, pos=pos)
        return memory[0], memory[1:]

    def saliency(self, vid_mem, memory_global):
        return torch.sum(self.saliency_proj1(vid_mem) * self.saliency_proj2(memory_global).unsqueeze(1),
                         dim=-1) / math.sqrt(self.hidden_dim)

    def attention_on_text(self, attn_weights, text_mask, video_length):
        """Attention mass each clip puts on the real text tokens, clamped to [0, 1] (B, Lv)."""
        mass = (attn_weights[:, :, self.num_dummies:] * text_mask.unsqueeze(1).repeat(1, video_length, 1)).sum(2)
        return torch.clamp(mass, 0, 1)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, vid=None, qid=None, src_aud=None,
                src_aud_mask=None, targets=None, negatives: bool = True):
        """Masks float (B, L), 1 = valid. ``vid``: the batch's video ids (None: no negative pass).
        ``negatives`` False skips the rolled-text negative pass: its outputs feed
        only the training losses, so a prediction (``ModelSpec.predict_switches``) has no use for it.
        ``targets`` (needs ``relevant_clips`` (B, Lv)) switches on the training branch."""
        if src_txt.shape[1] == 0:
            raise MrhdError("cg_detr: the query has no text tokens; give a non-empty query")
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        src_vid = self.input_vid_proj(src_vid)
        src_txt = self.input_txt_proj(src_txt)
        src_vid = src_vid + self.token_type_embeddings(torch.ones_like(src_vid_mask, dtype=torch.long))
        src_txt = src_txt + self.token_type_embeddings(torch.zeros_like(src_txt_mask, dtype=torch.long))
        pos_vid, pos_txt = self.positions(src_vid, src_vid_mask, src_txt)
        n = self.num_dummies
        video_length = src_vid.shape[1]

        dummy_token = self.encode_dummies(src_txt, src_txt_mask, pos_txt)
        src_txt_dummy = torch.cat([dummy_token, src_txt], dim=1)
        src_txt_mask_dummy = self._with_valid_prefix(src_txt_mask, n)
        pos_dummy = self.dummy_rep_pos.reshape(1, n, self.hidden_dim).repeat(pos_txt.shape[0], 1, 1)
        src = torch.cat([src_vid, src_txt_dummy], dim=1)
        mask = torch.cat([src_vid_mask, src_txt_mask_dummy], dim=1).bool()
        pos = torch.cat([pos_vid, pos_dummy, pos_txt], dim=1)

        vlen = src_vid_mask.sum(1).long()
        # the mean over each sample's valid clips (a valid prefix), as one masked sum for the batch
        valid = src_vid_mask.bool().unsqueeze(2)
        ctx_token = torch.where(valid, src_vid, 0).sum(1) / vlen.unsqueeze(1).to(src_vid.dtype)
        ctx_token = ctx_token.detach().unsqueeze(1)                                 # (B, 1, d)
        common = dict(video_length=video_length, gtoken=self.global_rep_token, gpos=self.global_rep_pos)

        out = {}
        if targets is not None:  # training branch
            in_moment = torch.clamp(targets["relevant_clips"], 0, 1).bool()
            valid = self._with_valid_prefix(src_vid_mask.bool(), 1)
            moment_mask = valid * self._with_valid_prefix(in_moment, 1)
            not_moment_mask = valid * self._with_valid_prefix(~in_moment, 1)
            msrc = self._prepend(self.moment_rep_token, src_vid)
            mpos = self._prepend(self.moment_rep_pos, pos_vid)
            sentence_txt, words = self.sentence_token(src_txt, src_txt_mask, pos_txt)
            sentence_dummy, words_dummy = self.sentence_token(
                dummy_token, torch.ones_like(src_txt_mask[:, :1]).repeat(1, n), pos_dummy)
            txt_dummy_proj = torch.cat([words_dummy, words], dim=0)
            t = self.transformer(src, ~mask, self.query_embed.weight, pos, ctx_token=ctx_token, vlen=vlen,
                                 moment=(msrc, mpos, ~moment_mask), not_moment=(msrc, mpos, ~not_moment_mask),
                                 **common)
            m_frames, nm_frames = t["moment_frames"].permute(1, 0, 2), t["not_moment_frames"].permute(1, 0, 2)
            out["moment2txt_similarity"] = torch.matmul(m_frames, txt_dummy_proj.permute(1, 2, 0))
            out["nmoment2txt_similarity"] = torch.matmul(nm_frames, txt_dummy_proj.permute(1, 2, 0))
            out["sentence_txt"], out["sentence_dummy"] = sentence_txt, sentence_dummy
            out["moment_mask"] = in_moment
            out["src_vid"] = m_frames * in_moment.unsqueeze(2) + nm_frames * (~in_moment.unsqueeze(2)).float()
        else:
            t = self.transformer(src, ~mask, self.query_embed.weight, pos, ctx_token=ctx_token, vlen=vlen,
                                 **common)
            for key in ("moment2txt_similarity", "nmoment2txt_similarity", "sentence_txt", "sentence_dummy",
                        "moment_mask", "src_vid"):
                out[key] = None

        outputs_class, outputs_coord = self.anchor_predictions(t["hs"], t["references"])
        out["pred_logits"], out["pred_spans"] = outputs_class[-1], outputs_coord[-1]

        out.update(saliency_scores_neg=None, t2vattnvalues_neg=None, real_neg_mask=None)
        if vid is not None and negatives:
            real_neg = real_negative_mask(list(vid), self.cfg.dset_name, device=src.device)
            out["real_neg_mask"] = real_neg
            if real_neg.sum() != 0:
                out.update(self.negative_pass(src_vid, src_vid_mask, src_txt_dummy, src_txt_mask_dummy, pos,
                                              ctx_token, vlen, real_neg, common))

        out["saliency_scores"] = self.saliency(t["memory_local"], t["memory_global"])
        out["memory_moment"], out["nmmemory_moment"] = t["memory_moment"], t["nmmemory_moment"]
        out["cate_attn_weights"] = t["attn_weights"]
        out["txt_mask"] = src_txt_mask_dummy
        out["t2vattnvalues"] = self.attention_on_text(t["attn_weights"], src_txt_mask, video_length)
        out["dummy_tokens"] = dummy_token
        out["global_rep_tokens"] = self.global_rep_token
        out["video_mask"] = src_vid_mask
        if self.aux_loss:
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_coord)
        return out

    def negative_pass(self, src_vid, src_vid_mask, src_txt_dummy, src_txt_mask_dummy, pos, ctx_token, vlen,
                      real_neg, common):
        """The whole transformer again with the next sample's [dummies, text], real negatives only."""
        txt_neg = torch.cat([src_txt_dummy[1:], src_txt_dummy[0:1]], dim=0)
        txt_mask_neg = torch.cat([src_txt_mask_dummy[1:], src_txt_mask_dummy[0:1]], dim=0)
        src_neg = torch.cat([src_vid, txt_neg], dim=1)[real_neg]
        mask_neg = torch.cat([src_vid_mask, txt_mask_neg], dim=1).bool()[real_neg]
        txt_mask_neg = txt_mask_neg[real_neg]
        t = self.transformer(src_neg, ~mask_neg, self.query_embed.weight, pos.clone()[real_neg],
                             ctx_token=ctx_token[real_neg], vlen=vlen[real_neg], **common)
        return {"saliency_scores_neg": self.saliency(t["memory_local"], t["memory_global"]),
                "src_txt_mask_neg": txt_mask_neg,
                "t2vattnvalues_neg": self.attention_on_text(t["attn_weights"], txt_mask_neg[:, self.num_dummies:],
                                                            common["video_length"])}


def build(cfg: CGDETRConfig) -> CGDETR:
    """The network from its config (random init; official state_dicts load as they are)."""
    return CGDETR(cfg)


def build_criterion(cfg: CGDETRConfig) -> CGDETRCriterion:
    """Matcher + every CG-DETR loss with the official weights (``criterion.weight_dict``)."""
    return CGDETRCriterion(cfg)


def config_from_opt(opt: dict) -> CGDETRConfig:
    """Official ``opt`` (dict) -> config; audio is on when the run had ``a_feat_dir``."""
    fields = fields_from_opt(CGDETRConfig, opt, "cg_detr")
    if opt.get("pre_norm"):
        raise MrhdError("cg_detr: pre_norm is not supported by the official code")
    fields["a_feat_dim"] = int(opt.get("a_feat_dim") or 0) if opt.get("a_feat_dir") else 0
    return CGDETRConfig(**fields)


SPEC = register_model(ModelSpec(
    name="cg_detr", config_cls=CGDETRConfig, build=build, build_criterion=build_criterion,
    default_profile="slowfast_clip", config_from_opt=config_from_opt,
    postprocess=postprocess, forward_inputs=DETR_INPUTS + ("vid", "qid") + AUDIO_INPUTS,
    labels=LabelRecipe(all_labels=True, relevant_clips=True),
    # vid / qid name the batch's samples for the negative pass alone; without them a compiled
    # forward (Predictor.compile_model) needs no graph per batch size
    predict_switches={"negatives": False, "vid": None, "qid": None},
))
