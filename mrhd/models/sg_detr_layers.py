"""Building blocks of SG-DETR (Gordeev et al., arXiv 2410.01615) that the shared core does not have.

- :class:`AttentionPooling`: one learned query attends over the encoded text tokens -> a sentence
  token (the paper's "attention-pooling encoder").
- :class:`LocalSaliencyHead`: clip-to-sentence cosine similarity with a learnable scale and shift.
- :class:`SaliencyGuidedCrossAttentionLayer`: video attends to text; the attended text is gated per
  clip by sigmoid(local saliency), so clips the query does not describe receive little text.
- :class:`SaliencyAmplifier`: local scores -> global scores after the encoder.
- :class:`ATSSHead`: the dense auxiliary head (classification, boundary distances, centerness).

Sequence-first (L, B, d) where the shared transformer blocks are, batch-first elsewhere; masks are
float with 1 = valid unless named ``*_padding``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.activation import make_activation
from mrhd.models.encoder import with_pos


class AttentionPooling(nn.Module):
    """A learned query attends over valid text tokens; LayerNorm on the pooled vector."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.query = nn.Parameter(torch.randn(d_model) * d_model ** -0.5)
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, txt: torch.Tensor, txt_padding: torch.Tensor) -> torch.Tensor:
        """txt (Lt, B, d), txt_padding (B, Lt) True = pad -> (B, d)."""
        q = self.query.reshape(1, 1, -1).expand(1, txt.shape[1], -1)
        pooled = self.attn(q, txt, txt, key_padding_mask=txt_padding)[0][0]
        return self.norm(pooled)


class LocalSaliencyHead(nn.Module):
    """score_t = exp(log_scale) * cos(W_v v_t, W_s s) + shift (the paper's learnable scale/shift).

    Init: scale 10 (as SigLIP's t), shift 0 (SigLIP starts at -10 for batches that are almost all
    negatives; a QVHighlights clip is relevant about a third of the time, so we start centred)."""

    def __init__(self, d_model: int, init_scale: float = 10.0, init_shift: float = 0.0):
        super().__init__()
        self.video_proj = nn.Linear(d_model, d_model)
        self.sentence_proj = nn.Linear(d_model, d_model)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))

    def forward(self, vid: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """vid (B, Lv, d), sentence (B, d) -> (B, Lv)."""
        v = F.normalize(self.video_proj(vid), dim=-1)
        s = F.normalize(self.sentence_proj(sentence), dim=-1)
        return self.log_scale.exp() * torch.einsum("bld,bd->bl", v, s) + self.shift


class SaliencyGuidedCrossAttentionLayer(nn.Module):
    """Video queries (+ positions) attend to text keys/values; the attention output of clip t is
    multiplied by gate_t = sigmoid(local saliency_t) before the residual, then a post-norm FFN
    (the layer order of QD-DETR's T2V layer, mrhd.models.encoder.T2VEncoderLayer)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 1024, dropout: float = 0.1,
                 activation: str = "prelu"):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = make_activation(activation)

    def forward(self, vid, txt, txt_padding, gate, vid_pos=None, txt_pos=None):
        """vid (Lv, B, d), txt (Lt, B, d), txt_padding (B, Lt) True = pad, gate (B, Lv) in [0, 1]."""
        attended = self.cross_attn(with_pos(vid, vid_pos), with_pos(txt, txt_pos), txt,
                                   key_padding_mask=txt_padding)[0]
        vid = self.norm1(vid + self.dropout1(attended * gate.transpose(0, 1).unsqueeze(-1)))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(vid))))
        return self.norm2(vid + self.dropout2(ffn))


class SaliencyAmplifier(nn.Module):
    """global_t = gain * local_t + proj1(m_t) . proj2(m_global) / sqrt(d).

    The second term is QD-DETR's saliency head on the encoder memory; the learnable gain (init 1)
    lets training amplify or damp the local evidence that the encoder has contextualised."""

    def __init__(self, d_model: int):
        super().__init__()
        self.memory_proj = nn.Linear(d_model, d_model)
        self.global_proj = nn.Linear(d_model, d_model)
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.d_model = d_model

    def forward(self, local: torch.Tensor, memory: torch.Tensor, memory_global: torch.Tensor) -> torch.Tensor:
        """local (B, Lv), memory (B, Lv, d), memory_global (B, d) -> (B, Lv)."""
        context = torch.einsum("bld,bd->bl", self.memory_proj(memory), self.global_proj(memory_global))
        return self.gain * local + context / math.sqrt(self.d_model)


class ATSSHead(nn.Module):
    """Dense per-clip head (ATSS, Zhang et al. CVPR 2020, in 1-D): ``num_convs`` Conv1d(k=3)+GN+ReLU
    towers for classification and regression, then a class logit, two boundary distances and a
    centerness logit (on the regression tower, as ATSS). Distances are exp(scale * x) anchor widths.

    Padded clips are zeroed after every conv, so a valid clip next to padding sees the same zeros
    as Conv1d's own zero padding at the sequence end (padding invariance)."""

    def __init__(self, d_model: int, num_convs: int = 2, groups: int = 8):
        super().__init__()
        groups = math.gcd(groups, d_model)

        def tower():
            return nn.ModuleList(nn.Sequential(nn.Conv1d(d_model, d_model, 3, padding=1),
                                               nn.GroupNorm(groups, d_model), nn.ReLU())
                                 for _ in range(num_convs))

        self.cls_tower = tower()
        self.reg_tower = tower()
        self.cls_logits = nn.Conv1d(d_model, 1, 3, padding=1)
        self.reg_dists = nn.Conv1d(d_model, 2, 3, padding=1)
        self.centerness = nn.Conv1d(d_model, 1, 3, padding=1)
        self.scale = nn.Parameter(torch.tensor(1.0))
        prior = 0.01  # RetinaNet / ATSS focal-loss prior on the class bias
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    @staticmethod
    def masked_tower(x, tower, mask):
        for block in tower:
            conv, norm, act = block
            x = conv(x) * mask
            # GroupNorm statistics over valid clips only, so padding never shifts them
            x = act(masked_group_norm(x, norm, mask)) * mask
        return x

    def forward(self, memory: torch.Tensor, mask: torch.Tensor):
        """memory (B, Lv, d), mask (B, Lv) float -> logits (B, Lv), dists (B, Lv, 2) >= 0 in anchor
        widths, centerness logits (B, Lv)."""
        m = mask.unsqueeze(1)
        x = memory.transpose(1, 2) * m
        cls = self.masked_tower(x, self.cls_tower, m)
        reg = self.masked_tower(x, self.reg_tower, m)
        logits = self.cls_logits(cls).squeeze(1)
        dists = torch.exp((self.scale * self.reg_dists(reg)).clamp(max=10.0)).transpose(1, 2)
        ctr = self.centerness(reg).squeeze(1)
        return logits, dists, ctr


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, mask: torch.Tensor) -> torch.Tensor:
    """GroupNorm of (B, C, L) with statistics over the valid positions of ``mask`` (B, 1, L)."""
    b, c, _ = x.shape
    g = norm.num_groups
    xg = x.reshape(b, g, c // g, -1)
    mg = mask.unsqueeze(1)                      # (B, 1, 1, L)
    count = (mg.sum(-1, keepdim=True) * (c // g)).sum(-2, keepdim=True).clamp(min=1)
    mean = (xg * mg).sum((-1, -2), keepdim=True) / count
    var = (((xg - mean) ** 2) * mg).sum((-1, -2), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, -1)
    return y * norm.weight[None, :, None] + norm.bias[None, :, None]
