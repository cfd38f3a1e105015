"""CG-DETR's transformer (wjun0830/CGDETR@212b2e4, cg_detr/transformer.py ``Transformer``).

1. T2V encoder: video clips attend to [dummy tokens, text]; its head- and layer-averaged attention
   (``attn_weights``, B x Lv x (dummies + Lt)) is returned as ``cate_attn_weights``.
2. Saliency token: a "context" token (mean of the valid projected video, detached) plus a
   "distribution" token -- the ``num_prompts`` learned global prompts most similar to the
   context-removed clips, weighted by each clip's (detached) attention mass on the real text
   tokens, normalised so the weights average 1 over the padded length. The sum goes through the
   same T2V encoder with no keys at all (upstream passes a 1-token sequence with
   ``video_length``), so its attention output is just ``out_proj.bias``.
3. Encoder on [saliency token, video]; the global memory is added to every clip's memory.
4. The shared anchor decoder (sine half-dim = d_model // 2, as CG-DETR's own code).
5. Training only: the moment encoder ``mcls_encoder`` summarises [moment token, clips inside the
   moment] and [moment token, clips outside] (``memory_moment``, ``nmmemory_moment``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrhd.models.cg_detr.layers import DummyT2VEncoder, DummyT2VEncoderLayer, with_drop_path
from mrhd.models.layers.anchor_decoder import AnchorDecoder, AnchorDecoderLayer
from mrhd.models.layers.encoder import TransformerEncoder, TransformerEncoderLayer
from mrhd.models.layers.precision import float32_under_autocast


class CGDETRTransformer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, enc_layers: int,
                 dec_layers: int, t2v_layers: int, moment_layers: int, num_dummies: int, num_prompts: int):
        super().__init__()
        self.d_model = d_model
        self.num_dummies = num_dummies
        self.num_prompts = num_prompts
        enc = with_drop_path(TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, "prelu"), dropout)
        self.mcls_encoder = TransformerEncoder(enc, moment_layers)
        t2v = DummyT2VEncoderLayer(d_model, nhead, dim_feedforward, dropout, num_dummies=num_dummies)
        self.t2v_encoder = DummyT2VEncoder(t2v, t2v_layers)
        self.encoder = TransformerEncoder(enc, enc_layers)
        dec = with_drop_path(AnchorDecoderLayer(d_model, nhead, dim_feedforward, dropout, "prelu"), dropout)
        self.decoder = AnchorDecoder(dec, dec_layers, d_model, sine_half_dim=d_model // 2)
        for p in self.parameters():  # official _reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def moment_summary(self, src, pos, padding_mask):
        """(B, 1 + Lv, d) [moment token, clips] -> token memory (B, d), clip memory (Lv, B, d)."""
        memory = self.mcls_encoder(src.permute(1, 0, 2), src_key_padding_mask=padding_mask,
                                   pos=pos.permute(1, 0, 2))
        return memory[0], memory[1:]

    @float32_under_autocast
    def saliency_token(self, src, attn_weights, ctx_token, gtoken, vlen, video_length):
        """Context + distribution token (1, B, d) from the clips, their text attention and the prompts.
        Float32 under autocast: in bfloat16 the top-k prompt choice flips (docs/training-speed.md)."""
        ctx = ctx_token.permute(1, 0, 2)                                              # (1, B, d)
        clips = F.normalize((src[:video_length] - ctx).permute(1, 0, 2), dim=2)       # (B, Lv, d)
        sim = torch.softmax(torch.matmul(clips, F.normalize(gtoken, dim=1).T), dim=-1)  # (B, Lv, P)
        importance = attn_weights[:, :, self.num_dummies:].sum(2).clone().detach()   # (B, Lv)
        valid = torch.arange(importance.shape[1], device=importance.device)[None] < vlen[:, None]
        importance = importance * valid
        importance = importance / importance.sum(1).unsqueeze(1) * importance.size(1)
        sim = (sim * importance.unsqueeze(2)).mean(1)                                 # (B, P)
        top_val, top_idx = torch.topk(sim, k=self.num_prompts, dim=1)
        token = (top_val.unsqueeze(2) * gtoken[top_idx]).sum(1)                       # (B, d)
        return token.unsqueeze(0) + ctx

    def forward(self, src, mask, query_embed, pos_embed, video_length: int, ctx_token, gtoken, gpos, vlen,
                moment=None, not_moment=None):
        """src (B, Lv + Lt, d) [video, dummies, text], mask True = padding, ``moment`` / ``not_moment``:
        (src, pos, padding mask) of the moment encoder's two passes in training, else None."""
        m_token, m_frames = self.moment_summary(*moment) if moment is not None else (None, None)
        nm_token, nm_frames = self.moment_summary(*not_moment) if not_moment is not None else (None, None)

        bs = src.shape[0]
        src = src.permute(1, 0, 2)
        pos_embed = pos_embed.permute(1, 0, 2)
        t2v_src, attn_weights = self.t2v_encoder(src, src_key_padding_mask=mask, pos=pos_embed,
                                                 video_length=video_length)

        token = self.saliency_token(src, attn_weights, ctx_token, gtoken, vlen, video_length)
        token_pos = gpos.reshape(1, 1, self.d_model).repeat(1, bs, 1)
        token_mask = torch.zeros(bs, 1, dtype=torch.bool, device=mask.device)
        token, _ = self.t2v_encoder(token, src_key_padding_mask=token_mask, pos=token_pos,
                                    video_length=video_length, dummy=False)

        keep = video_length + 1
        src = torch.cat([token, t2v_src], dim=0)[:keep]
        mask = torch.cat([token_mask, mask], dim=1)[:, :keep]
        pos_embed = torch.cat([token_pos, pos_embed], dim=0)[:keep]
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        memory_global = memory[0]
        memory_local = memory[1:] + memory_global.unsqueeze(0)

        refpoint = query_embed.unsqueeze(1).repeat(1, bs, 1)
        tgt = torch.zeros(refpoint.shape[0], bs, self.d_model, device=src.device, dtype=src.dtype)
        hs, references = self.decoder(tgt, memory_local, memory_key_padding_mask=mask[:, 1:],
                                      pos=pos_embed[1:], refpoints_unsigmoid=refpoint)
        return {"hs": hs, "references": references, "memory_local": memory_local.transpose(0, 1),
                "memory_global": memory_global, "attn_weights": attn_weights,
                "memory_moment": m_token, "nmmemory_moment": nm_token,
                "moment_frames": m_frames, "not_moment_frames": nm_frames}
