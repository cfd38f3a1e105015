"""The transformer QD-DETR introduced and TR-DETR, VideoLights and CMDNet build on: a T2V encoder
(video queries attend to text only), a post-norm encoder and the anchor decoder, every layer with a
learnable PReLU, all matrices xavier-initialised (the official ``Transformer._reset_parameters`` of
wjun0830/QD-DETR@56c63b2 qd_detr/transformer.py, identical in mingyao1120/TR-DETR@fca43a9).

The models differ in what runs between the encoder and the decoder, so each subclass has its own
``forward`` and decodes with :meth:`T2VAnchorTransformer.decode`.
"""

from __future__ import annotations

import torch
from torch import nn

from mrhd.errors import MrhdError
from mrhd.models.config import DetrConfig
from mrhd.models.layers.anchor_decoder import AnchorDecoder, AnchorDecoderLayer
from mrhd.models.layers.encoder import T2VEncoderLayer, TransformerEncoder, TransformerEncoderLayer


def check_anchor_config(cfg: DetrConfig, model: str) -> None:
    """Options the anchor-decoder models cannot honour, as one-line errors."""
    if getattr(cfg, "pre_norm", False):
        raise MrhdError(f"{model}: pre_norm is not supported by the official code; set pre_norm false")
    if cfg.hidden_dim % cfg.nheads:
        raise MrhdError(f"{model}: hidden_dim {cfg.hidden_dim} must be divisible by nheads {cfg.nheads}")


class T2VAnchorTransformer(nn.Module):
    """Keys ``t2v_encoder.*``, ``encoder.*``, ``decoder.*`` as the official ``Transformer``.

    ``n_prefix``: tokens before the video in the sequence (QD-DETR's global token: 1; TR-DETR: 0).
    """

    def __init__(self, cfg: DetrConfig, n_prefix: int = 1):
        super().__init__()
        d = cfg.hidden_dim
        t2v = T2VEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu", n_prefix=n_prefix)
        self.t2v_encoder = TransformerEncoder(t2v, cfg.enc_layers)
        enc = TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.encoder = TransformerEncoder(enc, cfg.enc_layers)
        dec = AnchorDecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout, "prelu")
        self.decoder = AnchorDecoder(dec, cfg.dec_layers, d, sine_half_dim=cfg.sine_half_dim)
        for p in self.parameters():  # official _reset_parameters (also overrides bbox zero-init)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model = d
        self.n_prefix = n_prefix

    def decode(self, memory_local, mask_local, pos_local, query_embed):
        """Anchor decoding of the (sequence-first) video memory from the learned anchors
        ``query_embed`` (nq, 2) -> hs, references."""
        bs = memory_local.shape[1]
        refpoint = query_embed.unsqueeze(1).repeat(1, bs, 1)
        tgt = torch.zeros(refpoint.shape[0], bs, self.d_model, device=memory_local.device,
                          dtype=memory_local.dtype)
        return self.decoder(tgt, memory_local, memory_key_padding_mask=mask_local, pos=pos_local,
                            refpoints_unsigmoid=refpoint)
