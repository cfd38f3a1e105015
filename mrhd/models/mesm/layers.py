"""Building blocks of MESM (lntzm/MESM ``model/transformer.py``, ``model/model.py``), composed from
the shared layers of :mod:`mrhd.models`.

- :class:`CrossModalEncoder`: MESM's ``T2VEncoder`` on separate (B, L, d) tensors: the "video" side
  attends to the "text" side only (shared :class:`T2VEncoderLayer` on ``[video, text]`` with no
  prefix). Used three times with different roles: the T2V aligner (video <- words), FW-MESM's
  enhancement (video <- words) and its reconstruction (masked words <- moment clips), and SS-MESM
  (masked sentence slots <- clips). Keys ``t2v_encoder.layers.N.*`` as the official wrapper.
- :class:`MESMTransformer`: the DETR with a global token: encoder on [global, video], the anchor
  decoder of QD-DETR; keys ``encoder.*`` / ``decoder.*`` as the official ``Transformer``.
- :class:`SegmentSentenceReconstructor`: SS-MESM's masked-sentence reconstruction from the clips it
  is given (the query's group's videos, concatenated, on QVHighlights; its own video otherwise).
- :func:`mask_words`: FW-MESM's word masking (a third of the words, weighted sampling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.layers.anchor_decoder import AnchorDecoder, AnchorDecoderLayer
from mrhd.models.layers.encoder import T2VEncoderLayer, TransformerEncoder, TransformerEncoderLayer


def xavier_init(module: nn.Module) -> None:
    """The official ``_reset_parameters``: xavier_uniform_ on every >1-d parameter."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class CrossModalEncoder(nn.Module):
    """``num_layers`` T2V layers: queries (B, Lq, d) attend to keys (B, Lk, d); returns (B, Lq, d)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float,
                 activation: str = "prelu", reset: bool = True):
        super().__init__()
        layer = T2VEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, n_prefix=0)
        self.t2v_encoder = TransformerEncoder(layer, num_layers)
        if reset:
            xavier_init(self)

    def forward(self, keys, queries, keys_pad, queries_pad, pos_keys=None, pos_queries=None):
        """``*_pad`` bool (B, L), True = padding; positions default to none."""
        lq = queries.shape[1]
        src = torch.cat([queries, keys], dim=1).transpose(0, 1)
        pad = torch.cat([queries_pad, keys_pad], dim=1)
        pos = None
        if pos_keys is not None or pos_queries is not None:
            pos = torch.cat([pos_queries if pos_queries is not None else torch.zeros_like(queries),
                             pos_keys if pos_keys is not None else torch.zeros_like(keys)], dim=1).transpose(0, 1)
        out = self.t2v_encoder(src, src_key_padding_mask=pad, pos=pos, video_length=lq)
        return out[:lq].transpose(0, 1)


class MESMTransformer(nn.Module):
    """Encoder on [global, video] then the anchor decoder; all layers PReLU, xavier init."""

    def __init__(self, d_model: int, nhead: int, enc_layers: int, dec_layers: int, dim_feedforward: int,
                 dropout: float):
        super().__init__()
        enc = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, "prelu")
        self.encoder = TransformerEncoder(enc, enc_layers)
        dec = AnchorDecoderLayer(d_model, nhead, dim_feedforward, dropout, "prelu")
        self.decoder = AnchorDecoder(dec, dec_layers, d_model)   # sine half-dim d/2 (official d_model // 2)
        xavier_init(self)   # as the official Transformer (this also overrides bbox_embed's zero init)
        self.d_model = d_model

    def forward(self, src, pad, query_embed, pos, global_token, global_pos):
        """src (B, L, d), pad (B, L) True = padding -> hs, references, memory (B, L, d), global (B, d)."""
        bs = src.shape[0]
        # quirk (official Transformer.forward): the global token's padding flag is True, so it is a
        # key no token attends to; it still attends to the video as a query (QD-DETR marks it valid)
        pad = torch.cat([torch.ones(bs, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        src = torch.cat([global_token, src], dim=1).transpose(0, 1)
        pos = torch.cat([global_pos, pos], dim=1).transpose(0, 1)
        memory = self.encoder(src, src_key_padding_mask=pad, pos=pos)
        memory_global, memory_local = memory[0], memory[1:]
        refpoint = query_embed.unsqueeze(1).repeat(1, bs, 1)
        tgt = torch.zeros(refpoint.shape[0], bs, self.d_model, device=src.device, dtype=src.dtype)
        hs, references = self.decoder(tgt, memory_local, memory_key_padding_mask=pad[:, 1:], pos=pos[1:],
                                      refpoints_unsigmoid=refpoint)
        return hs, references, memory_local.transpose(0, 1), memory_global


class SegmentSentenceReconstructor(nn.Module):
    """SS-MESM (official ``SegSenRecon``): the query's sentence slot is replaced by a learned token
    and rebuilt from the video clips (no positions); the result, L2-normalised, joins the words as
    an extra token. The official row also holds the other sentences of the same video, but its T2V
    layers have no attention among the slots, so nothing else reaches the masked slot: it is
    computed alone here (same output). The official ``output_sent_proj`` feeds no loss (criterion
    "ablation 3") and is left out."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.masked_sent_token = nn.Parameter(torch.zeros(d_model))
        # the official builds this stack without the xavier reset of T2VEncoder
        self.recon_trans = CrossModalEncoder(d_model, nhead, num_layers, dim_feedforward, dropout,
                                             reset=False).t2v_encoder

    def forward(self, vid: torch.Tensor, vid_pad: torch.Tensor) -> torch.Tensor:
        """vid (B, Lv, d) projected clips, vid_pad (B, Lv) True = padding -> sentence (B, d)."""
        slot = self.masked_sent_token.reshape(1, 1, -1).expand(vid.shape[0], 1, -1)
        src = torch.cat([slot, vid], dim=1).transpose(0, 1)
        pad = torch.cat([torch.zeros_like(vid_pad[:, :1]), vid_pad], dim=1)
        out = self.recon_trans(src, src_key_padding_mask=pad, pos=None, video_length=1)
        return F.normalize(out[0], dim=-1)


def mask_words(words_mask: torch.Tensor, weight: torch.Tensor | None,
               rng: np.random.RandomState | None = None) -> torch.Tensor:
    """FW-MESM's masked words, drawn as the official ``_mask_words`` (model/model.py:361-384) draws
    them: per query ``max(n // 3, 1)`` of its ``n`` valid (leading) tokens, with numpy's
    ``choice(arange(n), k, replace=False, p)`` where ``p`` is the row's L1-normalised ``weight``;
    queries with at most one token mask nothing. ``rng`` defaults to numpy's global generator (the
    official one, seeded by ``mrhd train``), so a seeded run masks the official words. Where fewer
    tokens than ``k`` have a positive weight (the official raises) only those are masked.
    -> bool (B, Lt)."""
    rng = np.random if rng is None else rng
    masked = torch.zeros_like(words_mask, dtype=torch.bool)
    lengths = words_mask.count_nonzero(dim=1).tolist()
    if weight is not None:
        weight = F.normalize((weight * words_mask).float().cpu(), dim=1, p=1)
    for i, n in enumerate(lengths):
        n = int(n)
        if n <= 1:
            continue
        k = max(n // 3, 1)
        p = None
        if weight is not None:
            p = weight[i, :n].numpy()
            k = min(k, int((p > 0).sum()))
            if k == 0:
                continue
        picks = rng.choice(np.arange(0, n), k, replace=False, p=p)
        masked[i, torch.as_tensor(picks, device=masked.device)] = True
    return masked
