"""VSLNet-style context-query attention fusion of video with text (TR-DETR's ``fuser``).

Zhang et al., "Span-based Localizing Network for Natural Language Video Localization" (ACL 2020):
trilinear similarity between clips and words, clip->word and word->clip attention, concatenation
[c, c2q, c*c2q, c*q2c] -> 1x1 conv, then concatenation with an attention-pooled sentence vector ->
1x1 conv, ReLU. Module and key names follow tr_detr/interaction/test_CQA.py of mingyao1120/TR-DETR
(``cq_attention.w4C/w4Q/w4mlu``, ``cqa_linear.conv1d``, ``cq_concat.weighted_pool``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.layers.mlp import Conv1D
from mrhd.models.layers.pooling import WeightedPool, mask_logits


class CQAttention(nn.Module):
    def __init__(self, dim: int, drop_rate: float = 0.1):
        super().__init__()
        self.w4C = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))
        self.w4Q = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))
        self.w4mlu = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1, dim)))
        self.dropout = nn.Dropout(p=drop_rate)
        self.cqa_linear = Conv1D(4 * dim, dim)

    def trilinear_attention(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        c_len, q_len = context.shape[1], query.shape[1]
        context = self.dropout(context)
        query = self.dropout(query)
        sub0 = torch.matmul(context, self.w4C).expand([-1, -1, q_len])
        sub1 = torch.matmul(query, self.w4Q).transpose(1, 2).expand([-1, c_len, -1])
        sub2 = torch.matmul(context * self.w4mlu, query.transpose(1, 2))
        return sub0 + sub1 + sub2

    def forward(self, context, query, c_mask, q_mask):
        score = self.trilinear_attention(context, query)
        score_ = torch.softmax(mask_logits(score, q_mask.unsqueeze(1)), dim=2)
        score_t = torch.softmax(mask_logits(score, c_mask.unsqueeze(2)), dim=1).transpose(1, 2)
        c2q = torch.matmul(score_, query)
        q2c = torch.matmul(torch.matmul(score_, score_t), context)
        return self.cqa_linear(torch.cat([context, c2q, context * c2q, context * q2c], dim=2))


class CQConcatenate(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weighted_pool = WeightedPool(dim)
        self.conv1d = Conv1D(2 * dim, dim)

    def forward(self, context, query, q_mask):
        pooled = self.weighted_pool(query, q_mask).unsqueeze(1).repeat(1, context.shape[1], 1)
        return self.conv1d(torch.cat([context, pooled], dim=2))


class ContextQueryFuser(nn.Module):
    """Video (B, Lv, d) fused with text (B, Lt, d) -> (B, Lv, d); masks float, 1 = valid."""

    def __init__(self, dim: int, drop_rate: float = 0.1):
        super().__init__()
        self.cq_attention = CQAttention(dim, drop_rate)
        self.cq_concat = CQConcatenate(dim)

    def forward(self, vfeats, qfeats, vmask, qmask):
        return F.relu(self.cq_concat(self.cq_attention(vfeats, qfeats, vmask, qmask), qfeats, qmask))
