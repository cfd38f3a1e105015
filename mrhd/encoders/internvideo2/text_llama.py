"""The InternVideo2-CLIP text tower: InternVL's LLaMA-7B (chinese_alpaca_lora_7b) + ``text_projection``.

Read from OpenGVLab/InternVideo ``InternVideo2/multi_modality/models/backbones/internvideo2/
internvideo2_clip_text.py``: ``LLaMA.transformer`` is a (peft-LoRA wrapped) transformers
``LlamaModel``; a query is ``"summarize:" + text``, tokenised with BOS and EOS (``add_eos_token``),
truncated to 80; padding id 0 and ``attention_mask = ids > 0``; the pooled vector is the last valid
token's (EOS) hidden state ``@ text_projection`` (-> 768). We store the EOS hidden state itself
as the pooled vector (4096, unprojected, like every other stream's pooled row); the CLIP text
embedding is that vector ``@ text_projection``. We use transformers' ``LlamaModel`` for
the transformer itself (same module and key names); LoRA adapters in a checkpoint are merged into
the base weights on load (``W + alpha / r * B @ A``, r=16 and alpha=32 in that file).
"""

from __future__ import annotations

import torch
from torch import nn

from mrhd.encoders.internvideo2.config import LlamaTextConfig

PREFIX = "summarize:"   # internvideo2_clip_text.py Tokenizer.forward


def hf_config(cfg: LlamaTextConfig):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                       intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                       num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
                       rms_norm_eps=cfg.rms_norm_eps, max_position_embeddings=cfg.max_position_embeddings)


class LlamaTextEncoder(nn.Module):
    """``text_encoder.*`` of the CLIP checkpoint (after LoRA merging)."""

    def __init__(self, cfg: LlamaTextConfig, clip_embed_dim: int):
        super().__init__()
        from transformers import LlamaModel

        self.cfg = cfg
        self.transformer = LlamaModel(hf_config(cfg))
        self.text_projection = nn.Parameter(torch.empty(cfg.hidden_size, clip_embed_dim))
        nn.init.normal_(self.text_projection, std=cfg.hidden_size ** -0.5)

    def reset_rotary(self) -> None:
        """Recompute the rotary tables (non-persistent buffers: left empty by a meta-device build)."""
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.transformer.rotary_emb = LlamaRotaryEmbedding(self.transformer.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` right-padded ids and 0/1 mask -> last hidden states ``[B, L, 4096]``."""
        return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def embed(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The CLIP text embedding: the last valid token's state ``@ text_projection``."""
        last = attention_mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last] @ self.text_projection


def merge_lora(state: dict, prefix: str = "text_encoder.transformer.") -> dict:
    """peft LoRA keys -> plain ``LlamaModel`` keys with the adapters merged into the base weights.

    Accepts both peft layouts (``q_proj.weight`` beside ``q_proj.lora_A.default.weight``, and the
    newer ``q_proj.base_layer.weight``); drops ``rotary_emb.inv_freq`` buffers saved by old
    transformers. ``scaling`` = lora_alpha / r = 32 / 16 (``LoraConfig(r=16, lora_alpha=32)``)."""
    scaling = 32 / 16
    out, lora = {}, {}
    for key, value in state.items():
        if not key.startswith(prefix):
            out[key] = value
        elif key.endswith("rotary_emb.inv_freq"):
            continue
        elif ".lora_A." in key or ".lora_B." in key:
            base = key.split(".lora_")[0]
            lora.setdefault(base, {})["A" if ".lora_A." in key else "B"] = value
        else:
            out[key.replace(".base_layer.", ".")] = value
    for base, pair in lora.items():
        weight = out.get(base + ".weight")
        if weight is None or set(pair) != {"A", "B"}:
            out[base + ".lora_incomplete"] = weight   # surfaces as an unexpected key
            continue
        merged = weight.float() + scaling * (pair["B"].float() @ pair["A"].float())
        out[base + ".weight"] = merged.to(weight.dtype)
    return out
