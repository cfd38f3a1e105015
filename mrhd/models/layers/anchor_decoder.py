"""The anchor-based (DAB-DETR style) decoder of QD-DETR and TR-DETR, sequence-first.

Queries are (center, width) anchors (``query_embed`` of shape (nq, 2), sigmoid). Per layer: the
anchor's sine embedding (:func:`anchor_sine_embedding`) gives the query position through
``ref_point_head``; from layer 1 on it is scaled by ``query_scale(output)``; ``ref_anchor_head``
modulates it by predicted width / anchor width; the layer attends; the shared ``bbox_embed`` (last
layer zero-initialised) refines the anchor, which is detached before the next layer. Follows
``transformer.py`` of wjun0830/QD-DETR (``TransformerDecoder`` / ``TransformerDecoderLayer``).

The layer's cross-attention splits content and position: q = [content (+ pos on layer 0) | sine
position] per head, k = [content | key position] per head, so it runs at width 2 * d with values
of width d (:class:`ProjectionFreeAttention`). Only layer 0 keeps ``ca_qpos_proj``
(``keep_query_pos`` False).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mrhd.models.layers.activation import make_activation
from mrhd.models.layers.attention import ProjectionFreeAttention
from mrhd.models.layers.mlp import MLP
from mrhd.models.layers.position_encoding import anchor_sine_embedding
from mrhd.models.spans import inverse_sigmoid


class AnchorDecoderLayer(nn.Module):
    """Self-attention with separate content/position projections, then split cross-attention."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "prelu", keep_query_pos: bool = False):
        super().__init__()
        self.sa_qcontent_proj = nn.Linear(d_model, d_model)
        self.sa_qpos_proj = nn.Linear(d_model, d_model)
        self.sa_kcontent_proj = nn.Linear(d_model, d_model)
        self.sa_kpos_proj = nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = ProjectionFreeAttention(d_model, nhead, dropout=dropout, vdim=d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)

        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj = nn.Linear(d_model, d_model)
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = ProjectionFreeAttention(d_model * 2, nhead, dropout=dropout, vdim=d_model)

        self.nhead = nhead
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = make_activation(activation)
        self.keep_query_pos = keep_query_pos

    def self_attention(self, tgt, query_pos):
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt2 = self.self_attn(q, k, value=self.sa_v_proj(tgt))
        return self.norm1(tgt + self.dropout1(tgt2))

    def cross_attention(self, tgt, memory, memory_key_padding_mask, pos, query_pos, query_sine_embed,
                        is_first):
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        nq, bs, d = q.shape
        hw = k.shape[0]
        k_pos = self.ca_kpos_proj(pos)
        if is_first or self.keep_query_pos:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        head = d // self.nhead
        q_sine = self.ca_qpos_sine_proj(query_sine_embed).view(nq, bs, self.nhead, head)
        q = torch.cat([q.view(nq, bs, self.nhead, head), q_sine], dim=3).view(nq, bs, d * 2)
        k = torch.cat([k.view(hw, bs, self.nhead, head), k_pos.view(hw, bs, self.nhead, head)],
                      dim=3).view(hw, bs, d * 2)
        tgt2 = self.cross_attn(q, k, value=v, key_padding_mask=memory_key_padding_mask)
        return self.norm2(tgt + self.dropout2(tgt2))

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None,
                query_sine_embed=None, is_first=False):
        tgt = self.self_attention(tgt, query_pos)
        tgt = self.cross_attention(tgt, memory, memory_key_padding_mask, pos, query_pos, query_sine_embed,
                                   is_first)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class AnchorDecoder(nn.Module):
    """Returns (hs (num_layers, B, nq, d) after the final norm, anchors (num_layers, B, nq, 2)).

    ``anchors[i]`` is the (sigmoid) reference the i-th layer's span head adds to: the initial
    anchors for layer 0, then each refined anchor (the official ``ref_points``).
    ``sine_half_dim`` is the hard-coded 128 of the official code (see :func:`anchor_sine_embedding`).
    """

    def __init__(self, layer: AnchorDecoderLayer, num_layers: int, d_model: int,
                 keep_query_pos: bool = False, sine_half_dim: int | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.query_dim = 2
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, d_model, 2)
        self.bbox_embed = MLP(d_model, d_model, 2, 3)
        nn.init.constant_(self.bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(self.bbox_embed.layers[-1].bias, 0)
        self.ref_anchor_head = MLP(d_model, d_model, 1, 2)
        self.d_model = d_model
        self.sine_half_dim = sine_half_dim if sine_half_dim is not None else d_model // 2
        if not keep_query_pos:
            for layer_id in range(1, num_layers):
                self.layers[layer_id].ca_qpos_proj = None

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, refpoints_unsigmoid=None):
        output = tgt
        intermediate = []
        reference_points = refpoints_unsigmoid.sigmoid()
        ref_points = [reference_points]
        for layer_id, layer in enumerate(self.layers):
            obj_center = reference_points[..., :self.query_dim]
            query_sine_embed = anchor_sine_embedding(obj_center, self.sine_half_dim)
            query_pos = self.ref_point_head(query_sine_embed)
            if layer_id != 0:
                query_sine_embed = query_sine_embed * self.query_scale(output)
            reft_cond = self.ref_anchor_head(output).sigmoid()
            query_sine_embed = query_sine_embed * (reft_cond[..., 0] / obj_center[..., 1]).unsqueeze(-1)
            output = layer(output, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos,
                           query_pos=query_pos, query_sine_embed=query_sine_embed, is_first=layer_id == 0)
            tmp = self.bbox_embed(output)
            new_reference_points = (tmp[..., :self.query_dim] + inverse_sigmoid(reference_points)).sigmoid()
            if layer_id != self.num_layers - 1:
                ref_points.append(new_reference_points)
            reference_points = new_reference_points.detach()
            intermediate.append(self.norm(output))
        return torch.stack(intermediate).transpose(1, 2), torch.stack(ref_points).transpose(1, 2)
