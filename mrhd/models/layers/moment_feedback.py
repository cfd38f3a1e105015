"""Moment-to-highlight feedback: saliency re-weighted by the features of the top-1 predicted moment.

TR-DETR's MR2HD step (Sun et al., AAAI 2024; mingyao1120/TR-DETR@fca43a9 tr_detr/model.py), reused
as is by VideoLights' uni-directional joint-task feedback (dpaul06/VideoLights@76308bb
video_lights/model.py): the most confident query's span in clip units,
floor(xx * (Lpad * clip_len) / clip_len) with Lpad the padded length of every sample;
``src_vid[i, start:end + 1]`` zero-padded to Lpad -> 1-layer GRU -> last hidden state; its dot
product with every clip is w; memory = memory * w + memory; saliency = sum(proj(memory), -1) / sqrt(d).

Quirk kept by default: a negative start index wraps around (Python slicing), usually giving an
empty slice; ``clamp_start=True`` clamps it to 0 instead (the models' ``mr2hd_clamp_start``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.spans import span_cxw_to_xx


class GRUFeatureExtractor(nn.Module):
    """Last hidden state of a 1-layer GRU over (B, L, d); key ``gru.*``."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, num_layers=1, bidirectional=False, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[1][-1]


def top1_clip_span(pred_logits: torch.Tensor, pred_spans: torch.Tensor, padded_len: int,
                   clip_len: float) -> torch.Tensor:
    """(B, 2) clip indices [start, end] of the most confident query, scaled by the padded length."""
    scores = F.softmax(pred_logits, -1)[..., 0]
    best = torch.sort(scores, dim=-1, descending=True)[1][:, :1]
    spans = torch.floor(span_cxw_to_xx(pred_spans) * (padded_len * clip_len) / clip_len)
    return spans[torch.arange(spans.size(0)).unsqueeze(1), best].squeeze(1)


def moment_clips(src_vid: torch.Tensor, clip_span: torch.Tensor, clamp_start: bool = False) -> torch.Tensor:
    """The clips of each sample's span, zero-padded (or cut) to the padded length -> (B, Lpad, d)."""
    padded_len = src_vid.size(1)
    slices = []
    for i in range(src_vid.size(0)):
        start, end = int(clip_span[i, 0]), int(clip_span[i, 1])
        if clamp_start:
            start = max(start, 0)
        piece = src_vid[i, start:end + 1, :]  # a negative start wraps around (official quirk)
        pad = padded_len - piece.size(0)
        slices.append(F.pad(piece, (0, 0, 0, pad), value=0) if pad > 0 else piece[:padded_len])
    return torch.stack(slices, dim=0)


def top_moment_saliency(memory: torch.Tensor, src_vid: torch.Tensor, pred_logits: torch.Tensor,
                        pred_spans: torch.Tensor, gru_extractor: nn.Module, saliency_proj: nn.Module,
                        clip_len: float, clamp_start: bool = False) -> torch.Tensor:
    """Saliency (B, Lv) of the video memory (B, Lv, d) re-weighted by the top-1 moment of the
    projected video ``src_vid`` (B, Lv, d)."""
    clip_span = top1_clip_span(pred_logits, pred_spans, memory.size(1), clip_len)
    moment = gru_extractor(moment_clips(src_vid, clip_span, clamp_start)).unsqueeze(1)  # (B, 1, d)
    weight = torch.matmul(moment, src_vid.transpose(1, 2)).squeeze(1)                   # (B, Lv)
    memory = memory * weight.unsqueeze(-1) + memory
    return torch.sum(saliency_proj(memory), dim=-1) / math.sqrt(memory.size(-1))
