"""VideoLights' own blocks (dpaul06/VideoLights@76308bb: video_lights/components.py,
video_lights/feature_refinement.py, video_lights/transformer.py ``BiCMFLayer``).

- :class:`ConvLinearLayer`: the shared LinearLayer with a kernel-1 Conv1d instead of the Linear
  (keys ``net.1.conv1d.*``), used for the input projections when feature refinement is on.
- :class:`FeatureRefinement` (FRA): refines the projected video with the query before the
  transformer -- [video | clip/sentence cosine times a learned vector | pooled sentence |
  word-to-clip correlation mixed by learned weights] -> kernel-1 Conv1d -> ReLU. Upstream quirks
  kept: the word softmax of the correlation does not mask padded words (harmless: every word gets
  the same weight ``cor_v_w * cor_q_w``, so the mixture is that constant), padded clips get the
  cosine plus log(1e-45) (~ -103), and its dropout is a fixed 0.1.
- :class:`BiCMFLayer`: bi-directional cross-modal fusion -- video attends to text, text attends to
  video, then the updated video attends to the updated text; only the video is written back
  (text and global token pass through). Upstream quirks kept: ``norm2`` exists but is unused, and
  the feed-forward output has no residual: ``norm4(ffn + dropout(ffn))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.layers.activation import make_activation
from mrhd.models.layers.encoder import with_pos
from mrhd.models.layers.mlp import Conv1D, LinearLayer
from mrhd.models.layers.pooling import WeightedPool


class ConvLinearLayer(LinearLayer):
    """LayerNorm -> Dropout -> kernel-1 Conv1d -> optional ReLU."""

    def __init__(self, in_hsz: int, out_hsz: int, layer_norm: bool = True, dropout: float = 0.1,
                 relu: bool = True):
        super().__init__(in_hsz, out_hsz, layer_norm, dropout, relu)
        self.net[1] = Conv1D(in_hsz, out_hsz)


def conv_input_projection(in_dim: int, hidden_dim: int, n_layers: int, dropout: float) -> nn.Sequential:
    """``n_layers`` ConvLinearLayers, ReLU on all but the last (as the shared ``input_projection``)."""
    dims = [in_dim] + [hidden_dim] * n_layers
    return nn.Sequential(*[ConvLinearLayer(dims[i], hidden_dim, dropout=dropout, relu=i < n_layers - 1)
                           for i in range(n_layers)])


class FeatureRefinement(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.sim_w = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_model, 1)))
        self.cor_v_w = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, d_model)))
        self.cor_q_w = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1)))
        self.word_to_sentence_pool = WeightedPool(d_model)
        self.mixer = Conv1D(4 * d_model, d_model, kernel_size=1)

    def forward(self, video, query, video_mask, query_mask):
        """video (B, Lv, d), query (B, Lq, d), masks float 1 = valid -> refined video (B, Lv, d)."""
        bs, n_clips, dim = video.shape
        correlation = torch.softmax((query.unsqueeze(2) * video.unsqueeze(1)).sum(dim=-1), dim=1)  # (B, Lq, Lv)
        word_weights = self.cor_v_w.repeat(bs, 1, 1) * self.cor_q_w.repeat(bs, query.shape[1], 1)  # (B, Lq, d)
        corr = self.dropout(torch.matmul(correlation.transpose(1, 2), word_weights))               # (B, Lv, d)
        sentence = self.word_to_sentence_pool(query, query_mask).unsqueeze(1)                     # (B, 1, d)
        sim = F.cosine_similarity(video, sentence, dim=-1) + (video_mask + 1e-45).log()           # (B, Lv)
        sim_w = self.sim_w.transpose(1, 0).expand(bs, 1, dim).transpose(1, 2)                      # (B, d, 1)
        sim_features = self.dropout(torch.matmul(sim_w, sim.unsqueeze(1))).transpose(1, 2)       # (B, Lv, d)
        pooled = self.dropout(sentence.repeat(1, n_clips, 1))
        features = torch.cat([self.dropout(video), sim_features, pooled, corr], dim=2)
        return self.dropout(F.relu(self.mixer(features)))


class BiCMFLayer(nn.Module):
    """Sequence-first [global, video (video_length), text]; returns the same layout."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "prelu"):
        super().__init__()
        self.cross_attn_1 = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn_2 = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn_3 = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.linear3 = nn.Linear(d_model, d_model)
        self.linear4 = nn.Linear(d_model, dim_feedforward)
        self.linear5 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)   # unused upstream, kept for checkpoint compatibility
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.activation = make_activation(activation)
        self.nhead = nhead

    def _cross_mask(self, q_pad: torch.Tensor, k_pad: torch.Tensor) -> torch.Tensor:
        """Upstream's redundant (B*h, Lq, Lk) mask: query padding AND key padding."""
        return torch.matmul(q_pad.unsqueeze(2).float(), k_pad.unsqueeze(1).float()).bool().repeat(self.nhead, 1, 1)

    def forward(self, src, src_key_padding_mask, pos, video_length: int):
        pos_src = with_pos(src, pos)
        b = video_length + 1
        global_token, video, text = src[:1], src[1:b], src[b:]
        pos_vid, pos_txt = pos_src[1:b], pos_src[b:]
        vid_pad, txt_pad = src_key_padding_mask[:, 1:b], src_key_padding_mask[:, b:]
        mask_vid = self._cross_mask(vid_pad, txt_pad)
        mask_txt = self._cross_mask(txt_pad, vid_pad)

        v_out = self.cross_attn_1(pos_vid, pos_txt, text, attn_mask=mask_vid, key_padding_mask=txt_pad)[0]
        v_out = self.norm1(video + self.linear1(self.dropout(v_out)))
        t_out = self.cross_attn_2(pos_txt, pos_vid, video, attn_mask=mask_txt, key_padding_mask=vid_pad)[0]
        t_out = text + self.linear2(self.dropout(t_out))
        c_out = self.cross_attn_3(v_out, t_out, t_out, attn_mask=mask_vid, key_padding_mask=txt_pad)[0]
        c_out = self.norm3(v_out + self.linear3(self.dropout(c_out)))
        ffn = self.linear5(self.dropout(self.activation(self.linear4(c_out))))
        v_new = self.norm4(ffn + self.dropout(ffn))
        return torch.cat([global_token, v_new, src[b:]], dim=0)
