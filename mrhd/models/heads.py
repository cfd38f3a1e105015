"""The input projections, positions and prediction heads the DETR-style grounding models share.

Moment-DETR (jayleicn/moment_detr ``MomentDETR``) introduced them and QD-DETR, TR-DETR, CG-DETR
and VideoLights keep the same names and shapes, so official checkpoints load into every model:
``position_embed`` (sine over the valid video length), ``txt_position_embed`` (learned, only used
with ``use_txt_pos``), ``span_embed`` (3-layer MLP -> 2), ``class_embed`` (2 logits, index 0 =
foreground), ``query_embed`` (queries of ``query_dim``: d for Moment-DETR, 2 anchors for the
anchor decoders) and the ``input_txt_proj`` / ``input_vid_proj`` projections.
"""

from __future__ import annotations

import torch
from torch import nn

from mrhd.models.config import DetrConfig
from mrhd.models.layers.mlp import MLP, input_projection
from mrhd.models.layers.position_encoding import PositionEmbeddingSine, TrainablePositionalEncoding
from mrhd.models.spans import inverse_sigmoid


class DetrHeads(nn.Module):
    """Base of the models that own the shared inputs and heads (built by :meth:`init_heads`, after
    the model's transformer so parameters are created, and drawn, in the official order)."""

    cfg: DetrConfig

    def init_heads(self, cfg: DetrConfig, query_dim: int, vid_in_dim: int) -> None:
        d = cfg.hidden_dim
        self.position_embed = PositionEmbeddingSine(d, normalize=True)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.max_q_l, d, cfg.input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(cfg.num_queries, query_dim)
        self.input_txt_proj = input_projection(cfg.t_feat_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = input_projection(vid_in_dim, d, cfg.n_input_proj, cfg.input_dropout)

    def positions(self, src_vid: torch.Tensor, src_vid_mask: torch.Tensor,
                  src_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(video positions, text positions): text gets zeros unless ``use_txt_pos`` (False upstream)."""
        pos_vid = self.position_embed(src_vid, src_vid_mask)
        pos_txt = self.txt_position_embed(src_txt) if self.cfg.use_txt_pos else torch.zeros_like(src_txt)
        return pos_vid, pos_txt

    def anchor_predictions(self, hs: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per decoder layer: class logits and spans = sigmoid(span_embed(hs) + inverse_sigmoid(anchor))."""
        return self.class_embed(hs), (self.span_embed(hs) + inverse_sigmoid(references)).sigmoid()


def aux_outputs(outputs_class: torch.Tensor, outputs_coord: torch.Tensor) -> list[dict]:
    """The intermediate decoder layers' predictions (``aux_outputs``), all but the last layer."""
    return [{"pred_logits": a, "pred_spans": b} for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
