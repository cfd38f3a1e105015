"""MESM (Liu et al., "Towards Balanced Alignment: Modal-Enhanced Semantic Modeling for Video Moment
Retrieval", AAAI 2024), after the authors' code lntzm/MESM (``model/model.py``, ``runner.py``).

The network (:class:`MESM`: FW-MESM enhancement and word reconstruction, SS-MESM sentence
reconstruction, T2V aligner, QD-DETR-style DETR), its config (CLIP text states or ids, or the
authors' stored word features) and its ModelSpec, with the converter of checkpoints saved by the
authors' train.py. Settings taken from the released code (groups, negatives, word masking), the
choices where paper and code are silent (batching by query, word weights, vocabulary, text
precision), the checkpoint format and the fixture test: the model card, ``README.md`` in this folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.config import DetrConfig, fields_from_opt
from mrhd.models.layers.mlp import MLP, LinearLayer, input_projection
from mrhd.models.layers.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.mesm.criterion import MESMCriterion, query_clip_mask
from mrhd.models.mesm.layers import (
    CrossModalEncoder,
    MESMTransformer,
    SegmentSentenceReconstructor,
    mask_words,
)
from mrhd.models.mesm.text import build_text_encoder, label_map, read_count_file, tokenize_queries
from mrhd.models.postprocess import detr_postprocess
from mrhd.models.registry import DETR_INPUTS, LabelRecipe, ModelSpec, register_model
from mrhd.models.spans import inverse_sigmoid


@dataclass
class MESMConfig(DetrConfig):
    v_feat_dim: int = 2818            # [clip 512 | slowfast 2304 | tef 2]
    t2v_layers: int = 2
    num_recfw_layers: int = 2
    num_recss_layers: int = 4
    rec_fw: bool = True
    rec_ss: bool = True
    share_MLP: bool = True
    vocab_size: int = 5000            # QVHighlights 5000, Charades 1111
    normalize_txt: bool = True
    rank_coef: float = 12
    use_triplet: bool = True
    iou_gamma: float = 0.9
    recss_tau: float = 0.5
    loss_recfw_coef: float = 0.5
    loss_recss_coef: float = 0.1
    text_encoder: str = "none"        # none (stored features) | clip | clip_tiny (tests)
    text_encoder_weights: str | None = None   # ViT-B-32.pt, MESM's clip_text_encoder.pth, id, or "random"
    word_vocab: list | None = None    # FW-MESM vocabulary: CLIP ids by frequency
    word_vocab_file: str | None = None
    # "clip_states": stored CLIP token states (profile mesm: SOT/EOT kept, L2-normalised) or ids through
    # the tower; word classes vocab_size + 3 (<unknown>, <start>, <end>). "word_features": the official
    # stored-text-feature path (runner.build_model's text_encoder None, model/model.py:145-152): raw
    # word features the model L2-normalises (eps 1e-5), mask = non-zero rows when none is given,
    # word classes vocab_size + 1 (<unknown>; model/model.py:74-77), labels from targets["words_label"].
    text_input: str = "clip_states"
    # QVHighlights layout (official dataset_name "qvhighlights", dataset/qvhighlights.py:41,
    # model/model.py:190-195): queries are grouped by YouTube id (vid "<ytid>_<start>_<end>") for the
    # negatives and rec_ss positives, and SS-MESM reads the clips of all the group's videos concatenated.
    # False (Charades-STA, TACoS): groups are vids and SS-MESM reads the query's own video.
    youtube_groups: bool = True

    @property
    def num_word_classes(self) -> int:
        return self.vocab_size + (1 if self.text_input == "word_features" else 3)


class MESM(nn.Module):
    def __init__(self, cfg: MESMConfig):
        super().__init__()
        if not cfg.share_MLP:
            raise MrhdError("mesm: share_MLP false (T2VEncoder_TwoMLP) is not implemented; set share_MLP true")
        if cfg.hidden_dim % cfg.nheads:
            raise MrhdError(f"mesm: hidden_dim {cfg.hidden_dim} must be divisible by nheads {cfg.nheads}")
        if cfg.text_input not in ("clip_states", "word_features"):
            raise MrhdError(f"mesm: text_input {cfg.text_input!r} is unknown; choose clip_states or word_features")
        if cfg.text_input == "word_features" and cfg.text_encoder != "none":
            raise MrhdError("mesm: text_input word_features reads stored features; set text_encoder none")
        self.cfg = cfg
        d = self.hidden_dim = cfg.hidden_dim
        self.text_encoder = build_text_encoder(cfg.text_encoder, cfg.text_encoder_weights)
        if self.text_encoder is not None and self.text_encoder.ln_final.normalized_shape[0] != cfg.t_feat_dim:
            raise MrhdError(f"mesm: the {cfg.text_encoder} text tower gives "
                            f"{self.text_encoder.ln_final.normalized_shape[0]}-d tokens but t_feat_dim is "
                            f"{cfg.t_feat_dim}; set t_feat_dim to match")
        self.enhance_encoder = CrossModalEncoder(d, cfg.nheads, cfg.num_recfw_layers, cfg.dim_feedforward,
                                                 cfg.dropout)
        self.t2v_encoder = CrossModalEncoder(d, cfg.nheads, cfg.t2v_layers, cfg.dim_feedforward, cfg.dropout)
        self.transformer = MESMTransformer(d, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward,
                                           cfg.dropout)
        self.vid_position_embed = PositionEmbeddingSine(d, normalize=True)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.max_q_l + int(cfg.rec_ss), d, cfg.input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(cfg.num_queries, 2)
        self.input_txt_proj = input_projection(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = input_projection(cfg.v_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))
        if cfg.rec_fw:
            self.masked_token = nn.Parameter(torch.zeros(cfg.t_feat_dim))
            self.unknown_token = nn.Parameter(torch.zeros(cfg.t_feat_dim))
            self.output_txt_proj = nn.Sequential(
                LinearLayer(d, d, layer_norm=True, dropout=cfg.input_dropout, relu=True),
                nn.Linear(d, cfg.num_word_classes))
        if cfg.rec_ss:
            self.ss_reconstructor = SegmentSentenceReconstructor(d, cfg.nheads, cfg.num_recss_layers,
                                                                 cfg.dim_feedforward, cfg.dropout)
        vocab = list(cfg.word_vocab or (read_count_file(cfg.word_vocab_file, cfg.vocab_size)
                                        if cfg.word_vocab_file else []))
        self.register_buffer("word_label_map", label_map(vocab, cfg.vocab_size), persistent=False)

    # ---- text ------------------------------------------------------------------------------
    def encode_text(self, src_txt, src_txt_mask, words_id):
        """-> words (B, Lt, t_dim), mask bool (B, Lt), ids (B, Lt) or None. (The official sentence
        feature only fills SS-MESM's masked slot, so it is not computed.)"""
        if words_id is not None:
            if self.text_encoder is None:
                raise MrhdError("mesm: words_id needs the CLIP text tower; build with text_encoder clip")
            n = self.cfg.max_q_l
            eot = words_id.argmax(dim=-1)   # EOT has the highest CLIP id
            mask = torch.arange(words_id.shape[1], device=words_id.device)[None] <= eot[:, None]
            words = self.text_encoder(words_id).float()[:, :n]
            ids, mask = words_id[:, :n], mask[:, :n]
            words = words.masked_fill(~mask.unsqueeze(-1), 0)
            if self.cfg.normalize_txt:
                words = F.normalize(words, dim=-1, eps=1e-5)
            return words, mask, ids
        if src_txt is None:
            raise MrhdError("mesm: give the query as src_txt features or words_id token ids")
        if self.cfg.text_input == "word_features":
            if self.cfg.normalize_txt:
                src_txt = F.normalize(src_txt, dim=-1, eps=1e-5)
            if src_txt_mask is None:   # the official mask: rows that are not all zero
                src_txt_mask = src_txt.sum(dim=-1) != 0
        mask = src_txt_mask.bool()
        if not bool(mask.any(dim=1).all()):
            raise MrhdError("mesm: a query has no text tokens; give a non-empty query")
        return src_txt * mask.unsqueeze(-1), mask, None

    def projected_token(self, token: torch.Tensor) -> torch.Tensor:
        return self.input_txt_proj(token.reshape(1, 1, -1))

    def replace_words(self, words, where, token):
        """Words at ``where`` (B, Lt) replaced by the projected ``token`` (official ``_mask_words``)."""
        return torch.where(where.unsqueeze(-1), self.projected_token(token).expand_as(words), words)

    # ---- pieces ----------------------------------------------------------------------------
    def negative_index(self, group: torch.Tensor) -> torch.Tensor:
        """Per query, the query whose text makes its negative pair: as the official
        ``sample_outclass_neg`` (utils/data_utils.py:113-124), in training and eval alike, the first
        of a ``torch.randperm`` of the queries of other groups (global torch RNG); a query with no
        other group in the batch pairs with the next query (the official has no such batch)."""
        bs = len(group)
        out = []
        for i in range(bs):
            candidates = torch.where(group != group[i])[0]
            if len(candidates) == 0:
                out.append(torch.tensor((i + 1) % bs, device=group.device))
                continue
            out.append(candidates[torch.randperm(candidates.shape[0])][0])
        return torch.stack(out)

    def video_groups(self, vid, bs: int, device) -> torch.Tensor:
        """Group id per query (first-appearance order): the YouTube id of ``vid`` with
        ``youtube_groups``, else ``vid``; each query alone without ``vid``."""
        if vid is None:
            return torch.arange(bs, device=device)
        keys = [str(v).rsplit("_", 2)[0] if self.cfg.youtube_groups else v for v in vid]
        names = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        return torch.tensor([names[k] for k in keys], device=device)

    def group_clips(self, proj_vid: torch.Tensor, vid_mask: torch.Tensor, group: torch.Tensor):
        """SS-MESM's source clips per query: with ``youtube_groups`` the valid clips of every query
        of its group, concatenated in batch order (a video asked twice is repeated, as the official
        ``split_expand_and_pad``), else its own clips. -> clips (B, Lg, d), padding (B, Lg)."""
        if not self.cfg.youtube_groups:
            return proj_vid, ~vid_mask
        rows = [torch.cat([proj_vid[j][vid_mask[j]] for j in torch.where(group == group[i])[0].tolist()])
                for i in range(len(group))]
        n = max(len(r) for r in rows)
        clips = proj_vid.new_zeros(len(rows), n, proj_vid.shape[-1])
        pad = torch.ones(len(rows), n, dtype=torch.bool, device=proj_vid.device)
        for i, r in enumerate(rows):
            clips[i, : len(r)], pad[i, : len(r)] = r, False
        return clips, pad

    def saliency(self, memory, memory_global):
        return torch.sum(self.saliency_proj1(memory) * self.saliency_proj2(memory_global).unsqueeze(1),
                         dim=-1) / math.sqrt(self.hidden_dim)

    def align_and_detect(self, words, words_pad, txt_pos, vid, vid_pad, vid_pos):
        """T2V aligner then the DETR -> hs, references, memory, global memory."""
        encoded = self.t2v_encoder(words, vid, words_pad, vid_pad, txt_pos, vid_pos)
        bs = vid.shape[0]
        token = self.global_rep_token.reshape(1, 1, -1).repeat(bs, 1, 1)
        pos = self.global_rep_pos.reshape(1, 1, -1).repeat(bs, 1, 1)
        return self.transformer(encoded, vid_pad, self.query_embed.weight, vid_pos, token, pos)

    def text_positions(self, words):
        return self.txt_position_embed(words) if self.cfg.use_txt_pos else torch.zeros_like(words)

    def reconstruct_words(self, proj_vid, vid_pos, proj_words, words_mask, txt_pos, unknown, clip_mask, weight):
        """FW-MESM: masked words rebuilt from the moment's clips -> word-class logits
        (B, Lt, num_word_classes), the masked words (B, Lt)."""
        words = self.replace_words(proj_words, unknown & words_mask, self.unknown_token)
        masked = mask_words(words_mask, weight)
        words = self.replace_words(words, masked, self.masked_token)
        lengths = clip_mask.sum(dim=1)
        n = int(lengths.max())
        order = torch.argsort((~clip_mask).to(torch.int8), dim=1, stable=True)[:, :n]   # moment clips first
        clips = torch.gather(proj_vid, 1, order.unsqueeze(-1).expand(-1, -1, proj_vid.shape[-1]))
        clips_pos = torch.gather(vid_pos, 1, order.unsqueeze(-1).expand(-1, -1, vid_pos.shape[-1]))
        clips_pad = torch.arange(n, device=clip_mask.device)[None] >= lengths[:, None]
        out = self.enhance_encoder(clips, words, clips_pad, ~words_mask, clips_pos, txt_pos)
        return self.output_txt_proj(out), masked

    # ---- forward ---------------------------------------------------------------------------
    def query_token_ids(self, query: list[str], words_mask: torch.Tensor) -> torch.Tensor:
        """CLIP ids of the query texts aligned with stored tokens (same BPE, EOT kept at max_q_l)."""
        ids = tokenize_queries(list(query), self.cfg.max_q_l)[:, : words_mask.shape[1]].to(words_mask.device)
        lengths = (ids.argmax(dim=-1) + 1).clamp(max=words_mask.shape[1])
        if not torch.equal(lengths, words_mask.sum(dim=1).long()):
            raise MrhdError("mesm: the query texts do not tokenise to the stored token counts; were the "
                            "clip_text features extracted from these queries with CLIP's tokenizer?")
        return ids

    def forward(self, src_txt=None, src_txt_mask=None, src_vid=None, src_vid_mask=None, words_id=None,
                vid=None, query=None, targets=None, negatives: bool = True):
        """Masks float (B, L), 1 = valid. ``vid`` (list) groups queries of one video; ``query``
        (list of str, optional) gives FW-MESM its word classes with stored features; ``targets``
        (training) give the moments (``span_labels``) FW/SS-MESM read, optionally ``words_label``
        / ``words_weight`` (B, Lt). ``negatives`` False skips the rolled-text negative pass: its outputs feed
        only the training losses, so a prediction (``ModelSpec.predict_switches``) has no use for it."""
        cfg = self.cfg
        words, words_mask, ids = self.encode_text(src_txt, src_txt_mask, words_id)
        vid_mask = src_vid_mask.bool()
        bs = src_vid.shape[0]
        group = self.video_groups(vid, bs, src_vid.device)

        proj_vid = self.input_vid_proj(src_vid)
        proj_words = self.input_txt_proj(words)
        vid_pos = self.vid_position_embed(proj_vid, src_vid_mask)
        txt_pos = self.text_positions(proj_words)
        enhanced = (self.enhance_encoder(proj_words, proj_vid, ~words_mask, ~vid_mask, txt_pos, vid_pos)
                    if cfg.rec_fw else proj_vid)

        words_all, words_all_mask = proj_words, words_mask
        if cfg.rec_ss:
            # the official projects the clips again (its own dropout draw) for the reconstructor
            recon = self.ss_reconstructor(*self.group_clips(self.input_vid_proj(src_vid), vid_mask, group))
            words_all = torch.cat([recon.unsqueeze(1), proj_words], dim=1)
            words_all_mask = torch.cat([torch.ones(bs, 1, dtype=torch.bool, device=words_mask.device),
                                        words_mask], dim=1)
        words_all_pos = self.text_positions(words_all)

        hs, reference, memory, memory_global = self.align_and_detect(
            words_all, ~words_all_mask, words_all_pos, enhanced, ~vid_mask, vid_pos)
        outputs_class = self.class_embed(hs)
        outputs_coord = (self.span_embed(hs) + inverse_sigmoid(reference)).sigmoid()

        neg, neg_saliency = None, None
        if negatives:
            neg = self.negative_index(group)
            first = int(cfg.rec_ss)   # the negative's own reconstructed sentence stays in its aligner input
            neg_enhanced = (self.enhance_encoder(words_all[neg][:, first:], proj_vid,
                                                 ~words_all_mask[neg][:, first:], ~vid_mask,
                                                 words_all_pos[neg][:, first:], vid_pos)
                            if cfg.rec_fw else proj_vid)
            _, _, neg_memory, neg_global = self.align_and_detect(
                words_all[neg], ~words_all_mask[neg], words_all_pos[neg], neg_enhanced, ~vid_mask, vid_pos)
            neg_saliency = self.saliency(neg_memory, neg_global)

        out = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1],
               "saliency_scores": self.saliency(memory, memory_global),
               "saliency_scores_neg": neg_saliency,
               "video_mask": src_vid_mask, "video_group": group, "neg_index": neg,
               "projed_video_feat": proj_vid, "projed_words_feat": proj_words, "enhanced_video_feat": enhanced,
               "expanded_words_feat": words_all, "expanded_words_mask": words_all_mask}
        if cfg.rec_ss:
            out["recon_feat"] = recon
        if cfg.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_spans": b}
                                  for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
        if targets is not None and "span_labels" in targets:
            out["clip_mask"] = query_clip_mask(targets, src_vid_mask)
            labels = targets.get("words_label")
            if labels is None and ids is None and query is not None and cfg.rec_fw and self.training:
                ids = self.query_token_ids(query, words_mask)
            if labels is None and ids is not None:
                labels = self.word_label_map[ids]
            if cfg.rec_fw and self.training and labels is not None:
                weight = targets.get("words_weight")
                if weight is None:   # body tokens 1, SOT / EOT 0 (see the model card)
                    weight = (labels < cfg.vocab_size + 1) & words_mask
                unknown = targets.get("unknown_mask")
                if unknown is None:
                    unknown = labels == cfg.vocab_size
                out["recfw_words_logit"], out["masked_words"] = self.reconstruct_words(
                    proj_vid, vid_pos, proj_words, words_mask, txt_pos, unknown.bool(), out["clip_mask"], weight)
                out["words_label"], out["words_mask"] = labels, words_mask
        return out


def build(cfg: MESMConfig) -> MESM:
    return MESM(cfg)


def build_criterion(cfg: MESMConfig) -> MESMCriterion:
    return MESMCriterion(cfg.criterion_config(label_loss="ce", rank_contrastive=True, neg_pair=True),
                         rank_coef=cfg.rank_coef, use_triplet=cfg.use_triplet, rec_fw=cfg.rec_fw,
                         rec_ss=cfg.rec_ss, recfw_coef=cfg.loss_recfw_coef, recss_coef=cfg.loss_recss_coef,
                         iou_gamma=cfg.iou_gamma, recss_tau=cfg.recss_tau)


# official option name -> ours (config/*/C+SF_C.json)
OPT_RENAMES = {"loss_span_coef": "span_loss_coef", "loss_giou_coef": "giou_loss_coef",
               "loss_label_coef": "label_loss_coef", "loss_saliency_coef": "lw_saliency",
               "max_words_l": "max_q_l", "max_video_l": "max_v_l", "clip_len": "clip_length"}


def config_from_opt(opt: dict) -> MESMConfig:
    """The options an official run parsed (``utils/config.py`` ``BaseOptions.parse``, as train.py saves
    them in checkpoints) -> config. parse() has already added tef's 2 to ``v_feat_dim``
    (utils/config.py:242-243: a config file's 2816 is 2818 here)."""
    opt = {OPT_RENAMES.get(k, k): v for k, v in dict(opt).items()}
    tokenizer = opt.get("tokenizer_type", "CLIP")
    stored_words = tokenizer == "GloVeNLTK" and bool(opt.get("load_vocab_pkl"))
    if tokenizer != "CLIP" and not stored_words:
        raise MrhdError(f"mesm: tokenizer_type {tokenizer!r} needs the GloVe text tower, which is not supported; "
                        "use CLIP, or GloVeNLTK with load_vocab_pkl (stored word features)")
    fields = fields_from_opt(MESMConfig, opt, "mesm")
    # runner.build_model (runner.py:255-266): the CLIP tower is not saved in checkpoints (our stored
    # CLIP states replace it); GloVeNLTK + load_vocab_pkl builds no tower (stored word features)
    fields["text_input"] = "word_features" if stored_words else "clip_states"
    if "dataset_name" in opt:
        fields["youtube_groups"] = opt["dataset_name"] == "qvhighlights"
    return MESMConfig(**fields)


def convert_state_dict(sd: dict) -> dict:
    """Official keys are ours; SS-MESM's unused ``output_sent_proj`` is dropped."""
    return {k: v for k, v in sd.items() if not k.startswith("ss_reconstructor.output_sent_proj.")}


SPEC = register_model(ModelSpec(
    name="mesm", config_cls=MESMConfig, build=build, build_criterion=build_criterion,
    default_profile="mesm", config_from_opt=config_from_opt, convert_state_dict=convert_state_dict,
    postprocess=detr_postprocess, forward_inputs=DETR_INPUTS + ("words_id", "vid", "query"),
    labels=LabelRecipe(all_labels=True),
    predict_switches={"negatives": False},
))
