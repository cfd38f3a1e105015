"""Building blocks of SG-DETR (Gordeev et al., arXiv 2410.01615) that the shared core does not have.

- :class:`LearnedAggregation`: attention pooling of the text tokens -> a sentence token.
- :class:`LocalSaliencyHead`: clip-to-sentence cosine similarity with a learnable scale and shift.
- :class:`SaliencyGuidedCrossAttentionLayer`: video attends to text; the attention weights are
  gated per clip by sigmoid(local saliency), so clips the query does not describe take little text.
- :func:`amplify` / :class:`SaliencyAmplifier`: local scores -> amplified memory -> global scores.
- :class:`ATSSHead`: the dense auxiliary head (classification, boundary distances, centerness).

Sequence-first (L, B, d) where the shared transformer blocks are, batch-first elsewhere; masks are
float with 1 = valid unless named ``*_padding``. Facts (constants, layer order) come from the SG-DETR
code as found in the search index (``src/model/blocks/{encoder,pooling,layers,atss}.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.activation import make_activation
from mrhd.models.encoder import with_pos


class LearnedAggregation(nn.Module):
    """One learned-aggregation block (Touvron et al., arXiv 2112.13692) pooling text tokens into a
    sentence token, as the ``LearnedAggregation`` of the SG-DETR code: a learned query (trunc-normal
    0.02) attends over the LayerNormed tokens (optional key/value projections), then a GELU FFN
    (x4); both residuals are scaled by layer-scale vectors initialised to 1e-4, so the pooled
    vector starts close to the query and learns how much of the sentence to take."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.1, use_projections: bool = True,
                 layer_scale_init: float = 1e-4):
        super().__init__()
        self.query = nn.Parameter(nn.init.trunc_normal_(torch.zeros(d_model), std=0.02))
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, nhead)
        self.k_proj = nn.Linear(d_model, d_model) if use_projections else None
        self.v_proj = nn.Linear(d_model, d_model) if use_projections else None
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))
        self.gamma_1 = nn.Parameter(torch.full((d_model,), layer_scale_init))
        self.gamma_2 = nn.Parameter(torch.full((d_model,), layer_scale_init))

    def forward(self, txt: torch.Tensor, txt_padding: torch.Tensor) -> torch.Tensor:
        """txt (Lt, B, d), txt_padding (B, Lt) True = pad -> (B, d)."""
        x = self.attn_norm(txt)
        k = self.k_proj(x) if self.k_proj is not None else x
        v = self.v_proj(x) if self.v_proj is not None else x
        q = self.query.reshape(1, 1, -1).expand(1, txt.shape[1], -1)
        out = q + self.gamma_1 * self.attn(q, k, v, key_padding_mask=txt_padding)[0]
        out = out + self.gamma_2 * self.ffn(self.ffn_norm(out))
        return out[0]


class LocalSaliencyHead(nn.Module):
    """score_t = scale * cos(v_t, s) + shift on the projected clips and the pooled sentence token
    (the SG-DETR code's "linear" logit mode: scale init 20, shift init 0)."""

    def __init__(self, init_scale: float = 20.0, init_shift: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))

    def forward(self, vid: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """vid (B, Lv, d), sentence (B, d) -> (B, Lv)."""
        cos = torch.einsum("bld,bd->bl", F.normalize(vid, dim=-1), F.normalize(sentence, dim=-1))
        return self.scale * cos + self.shift


class SaliencyGuidedCrossAttentionLayer(nn.Module):
    """Video queries (+ positions) attend to text keys/values; the attention weights of clip t are
    multiplied by gate_t = sigmoid(local saliency_t) after the softmax (the SG-DETR code's
    ``weight_attn_with_saliency``), so a clip the query does not describe takes little text.
    Gating the weights = gating the attention output before ``out_proj``'s bias, computed here as
    gate * (attn - bias) + bias on nn.MultiheadAttention's output. Then the code's layer order:
    x = v + drop(attn); x = norm2(x + drop(norm1(FFN(x))))."""

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
        bias = self.cross_attn.out_proj.bias
        attended = gate.transpose(0, 1).unsqueeze(-1) * (attended - bias) + bias
        vid = vid + self.dropout1(attended)
        ffn = self.norm1(self.linear2(self.dropout(self.activation(self.linear1(vid)))))
        return self.norm2(vid + self.dropout2(ffn))


def amplify(features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The SG-DETR code's ``SaliencyAmplifier`` (mode "sigmoid", no norm, no attention):
    features (B, L, d) + features * sigmoid(scores (B, L))."""
    return features + features * torch.sigmoid(scores).unsqueeze(-1)


class SaliencyAmplifier(nn.Module):
    """Local scores -> amplified memory -> global scores -> memory amplified by the global scores.

    global = local + Linear(amplified memory) with the Linear zero-initialised (the code's
    ``global_saliency_head``), so training starts from the local scores."""

    def __init__(self, d_model: int):
        super().__init__()
        self.global_head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.global_head.weight)
        nn.init.zeros_(self.global_head.bias)

    def forward(self, memory: torch.Tensor, local: torch.Tensor):
        """memory (B, Lv, d), local (B, Lv) -> global scores (B, Lv), amplified memory (B, Lv, d)."""
        scores = local + self.global_head(amplify(memory, local)).squeeze(-1)
        return scores, amplify(memory, scores)


class ATSSHead(nn.Module):
    """Dense per-clip head (ATSS, Zhang et al. CVPR 2020, in 1-D): ``num_convs`` Conv1d(k=3)+GN+ReLU
    towers for classification and regression, then a class logit, two boundary distances and a
    centerness logit (on the regression tower, as ATSS). Distances are exp(scale * x) anchor widths.
    One pyramid level only (the SG-DETR code runs it on 4 FPN levels, strides 1/2/4/8).

    Padded clips are zeroed after every conv, so a valid clip next to padding sees the same zeros
    as Conv1d's own zero padding at the sequence end (padding invariance)."""

    def __init__(self, d_model: int, num_convs: int = 3, groups: int = 8, prior: float = 0.3):
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
        # focal-loss prior on the class bias (RetinaNet); 0.3 is the SG-DETR code's ATSSHead default
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
