"""Building blocks of SG-DETR (Gordeev et al., arXiv 2410.01615) that the shared core does not have.

- :class:`AttentionPooling` (of :class:`LearnedAggregation` blocks): text tokens -> a sentence token.
- :class:`LocalSaliencyHead`: clip-to-sentence cosine similarity with a learnable scale and shift.
- :class:`SaliencyGuidedCrossAttentionLayer`: video attends to text; the attention weights are
  gated per clip by sigmoid(local saliency), so clips the query does not describe take little text.
- :func:`amplify` / :class:`SaliencyAmplifier`: local scores -> amplified memory -> global scores.
- :class:`TemporalPyramid`: four temporal levels of the memory for the dense head.
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

from mrhd.models.layers.activation import make_activation
from mrhd.models.layers.encoder import with_pos


class LearnedAggregation(nn.Module):
    """One learned-aggregation block (Touvron et al., arXiv 2112.13692), the SG-DETR code's
    ``LearnedAggregationLayer`` (src/model/blocks/pooling.py): the query attends over the
    LayerNormed tokens (optional key/value projections), then a GELU FFN (x4); both residuals are
    scaled by layer-scale vectors initialised to 1e-4 (the code's GAMMA_CONST)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.1, use_projections: bool = True,
                 layer_scale_init: float = 1e-4):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, nhead)
        self.k_proj = nn.Linear(d_model, d_model) if use_projections else None
        self.v_proj = nn.Linear(d_model, d_model) if use_projections else None
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))
        self.gamma_1 = nn.Parameter(torch.full((d_model,), layer_scale_init))
        self.gamma_2 = nn.Parameter(torch.full((d_model,), layer_scale_init))

    def forward(self, query: torch.Tensor, txt: torch.Tensor, txt_padding: torch.Tensor) -> torch.Tensor:
        """query (1, B, d), txt (Lt, B, d), txt_padding (B, Lt) True = pad -> (1, B, d)."""
        x = self.attn_norm(txt)
        k = self.k_proj(x) if self.k_proj is not None else x
        v = self.v_proj(x) if self.v_proj is not None else x
        out = query + self.gamma_1 * self.attn(query, k, v, key_padding_mask=txt_padding)[0]
        return out + self.gamma_2 * self.ffn(self.ffn_norm(out))


class AttentionPooling(nn.Module):
    """The local saliency head's sentence pooling: ``num_layers`` :class:`LearnedAggregation` blocks
    refining one learned query (trunc-normal 0.02), a shared LayerNorm between blocks, none after
    the last (the code's ``LearnedAggregation`` stack, src/model/blocks/pooling.py). The paper uses
    two attention-pooling layers in the local saliency head (arXiv 2410.01615, Sec. 3)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.query = nn.Parameter(nn.init.trunc_normal_(torch.zeros(d_model), std=0.02))
        self.layers = nn.ModuleList(LearnedAggregation(d_model, nhead, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, txt: torch.Tensor, txt_padding: torch.Tensor) -> torch.Tensor:
        """txt (Lt, B, d), txt_padding (B, Lt) True = pad -> sentence token (B, d)."""
        out = self.query.reshape(1, 1, -1).expand(1, txt.shape[1], -1)
        for i, layer in enumerate(self.layers):
            out = layer(out, txt, txt_padding)
            if i < len(self.layers) - 1:
                out = self.norm(out)
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


class SeparableConv1d(nn.Module):
    """Depthwise (k=3) then pointwise Conv1d, no bias (the code's ``DWSCond1d``); input zeroed at
    padding first, so a valid position next to padding sees what Conv1d's own zero padding gives."""

    def __init__(self, d_model: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv1d(d_model, d_model, 3, stride=stride, padding=1, groups=d_model, bias=False)
        self.pointwise = nn.Conv1d(d_model, d_model, 1, bias=False)
        for conv in (self.depthwise, self.pointwise):
            nn.init.normal_(conv.weight, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, d, L), mask (B, 1, L) float."""
        return self.pointwise(self.depthwise(x * mask))


class PyramidLevel(nn.Module):
    """[GELU] -> separable conv (stride 1 or 2) -> LayerNorm -> GELU -> separable conv -> LayerNorm."""

    def __init__(self, d_model: int, stride: int = 1, gelu_first: bool = False):
        super().__init__()
        self.conv1 = SeparableConv1d(d_model, stride)
        self.conv2 = SeparableConv1d(d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.gelu_first = gelu_first

    def forward(self, x, mask_in, mask_out):
        """x (B, d, L_in) -> (B, d, L_out); LayerNorm over channels, per position."""
        if self.gelu_first:
            x = F.gelu(x)
        x = self.norm1(self.conv1(x, mask_in).transpose(1, 2)).transpose(1, 2)
        x = self.norm2(self.conv2(F.gelu(x), mask_out).transpose(1, 2)).transpose(1, 2)
        return x * mask_out


class TemporalPyramid(nn.Module):
    """Four temporal levels of the encoder memory, strides 0.5 / 1 / 2 / 4 clips (the code's
    ``FPNSequence``: an upsampled level, the memory's own, and two stride-2 reductions)."""

    strides = (0.5, 1, 2, 4)

    def __init__(self, d_model: int):
        super().__init__()
        self.up = PyramidLevel(d_model)
        self.level0 = PyramidLevel(d_model)
        self.level1 = PyramidLevel(d_model, stride=2)
        self.level2 = PyramidLevel(d_model, stride=2, gelu_first=True)

    @staticmethod
    def level_masks(mask: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) -> masks of the four levels: x2 repeated, itself, every 2nd, every 4th clip."""
        return [mask.repeat_interleave(2, dim=1), mask, mask[:, ::2], mask[:, ::4]]

    def forward(self, memory: torch.Tensor, mask: torch.Tensor):
        """memory (B, L, d), mask (B, L) float -> ([(B, L_l, d)] x 4, [(B, L_l)] x 4)."""
        masks = self.level_masks(mask)
        m = [k.unsqueeze(1) for k in masks]
        x = memory.transpose(1, 2) * m[1]
        up = self.up(x.repeat_interleave(2, dim=2), m[0], m[0])
        l0 = self.level0(x, m[1], m[1])
        l1 = self.level1(x, m[1], m[2])
        l2 = self.level2(l1, m[2], m[3])
        return [y.transpose(1, 2) for y in (up, l0, l1, l2)], masks


class ATSSHead(nn.Module):
    """Dense head over the pyramid levels (ATSS, Zhang et al. CVPR 2020, in 1-D): ``num_convs``
    Conv1d(k=3) + GroupNorm + ReLU towers shared by all levels for classification and regression,
    then a class logit, two boundary distances and a centerness logit (on the regression tower, as
    ATSS). Distances are exp(scale_l * x) anchor widths with one learnable scale per level.

    Padded positions are zeroed after every conv and GroupNorm statistics use valid positions only,
    so padding never changes a valid output."""

    def __init__(self, d_model: int, num_convs: int = 3, num_levels: int = 4, groups: int = 8,
                 prior: float = 0.3):
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
        self.scales = nn.Parameter(torch.ones(num_levels))
        # focal-loss prior on the class bias (RetinaNet); 0.3 is the SG-DETR code's ATSSHead default
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    @staticmethod
    def masked_tower(x, tower, mask):
        for block in tower:
            conv, norm, act = block
            x = conv(x) * mask
            x = act(masked_group_norm(x, norm, mask)) * mask
        return x

    def level(self, feats: torch.Tensor, mask: torch.Tensor, index: int):
        m = mask.unsqueeze(1)
        x = feats.transpose(1, 2) * m
        cls = self.masked_tower(x, self.cls_tower, m)
        reg = self.masked_tower(x, self.reg_tower, m)
        logits = self.cls_logits(cls).squeeze(1)
        dists = torch.exp((self.scales[index] * self.reg_dists(reg)).clamp(max=10.0)).transpose(1, 2)
        return logits, dists, self.centerness(reg).squeeze(1)

    def forward(self, levels: list, masks: list):
        """Per level (B, L_l, d) and (B, L_l) -> logits (B, sum L_l), dists (B, sum L_l, 2) in
        anchor widths, centerness logits (B, sum L_l); levels concatenated in order."""
        outs = [self.level(f, m, i) for i, (f, m) in enumerate(zip(levels, masks))]
        return tuple(torch.cat(parts, dim=1) for parts in zip(*outs))


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
