"""Dropout at about a seventh of ATen's cost on CPU: the training default there.

Why: on CPU, ``F.dropout`` draws its mask with ``bernoulli_(1 - p)``, which (outside MKL on Intel
processors) takes a double-precision Bernoulli sample per element from one serial Mersenne-Twister
stream; in DETR training at batch 32 that is about a quarter of a step. :func:`fast_dropout` draws
16 random bits per element instead, four per 64-bit output of numpy's SFC64 generator (seeded for
each call from torch's global generator, so ``torch.manual_seed`` fixes the masks and a resumed run
continues them), keeps the element where those bits are at least ``round(p * 2**16)`` and scales the
kept ones by the inverse of the keep probability that threshold gives. For a QD-DETR feed-forward
activation the whole dropout takes about a seventh of ATen's time (figures in
docs/training-speed.md). The drop probability is ``p``
rounded to the 2**-16 grid (0.1 -> 0.100006; 0.5 exactly) and the output's expectation equals the
input; the masks differ from ATen's, so training numbers change bit for bit
(docs/training-speed.md), not in distribution.

:func:`use_fast_dropout` swaps, for training on CPU, the plain ``nn.Dropout`` modules, the
attention-weight dropout of our own attention modules (``drop_weights``) and that of
``nn.MultiheadAttention`` (:class:`FastDropoutMultiheadAttention`, which spells out torch's
``need_weights`` attention path so that its dropout can be ours); evaluation and every other device
keep torch's code, and the model's state_dict is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

GRID = 1 << 16        # a mask element compares 16 random bits with round(p * GRID)
_SEED_HIGH = 2 ** 63 - 1


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """``(bits >= round(p * GRID)) / keep probability`` of ``shape``: 0 or the scale, as ``dtype``."""
    threshold = round(p * GRID)
    if threshold >= GRID:
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    seed = int(torch.randint(0, _SEED_HIGH, (), dtype=torch.int64))
    bits = np.random.SFC64(seed).random_raw(-(-n // 4)).view(np.uint16)[:n]
    keep = torch.from_numpy(bits >= threshold).view(shape)
    return keep.to(dtype).mul_(GRID / (GRID - threshold))


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x * mask`` with the scaled mask of :func:`keep_mask`; autograd saves the mask, as ATen's."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * torch.zeros_like(x)
    return x * keep_mask(x.shape, p, x.dtype)


def dropout_function(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """``F.dropout``'s signature for ``drop_weights`` hooks: :func:`fast_dropout` on CPU in training."""
    if training and x.device.type == "cpu" and x.is_floating_point():
        return fast_dropout(x, p)
    return nn.functional.dropout(x, p=p, training=training)


class FastDropoutMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose training forward on CPU is torch's ``need_weights`` path
    (packed in-projection, scaled ``baddbmm`` scores, softmax, weight dropout, ``bmm``, out-projection)
    with :func:`fast_dropout` on the weights. Without dropout it equals torch's forward
    (tests/test_train_speed.py); only modules with packed projection weights, no ``bias_k``/``bias_v``
    and no zero attention get this class (:func:`use_fast_dropout`)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (self.training and self.dropout > 0 and query.device.type == "cpu" and not is_causal
                and query.dim() == 3):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self.batch_first:
            query, key, value = swap_batch_axis((query, key, value))
        out, weights = self.attend(query, key, value, key_padding_mask, attn_mask, average_attn_weights)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (weights if need_weights else None)

    def project(self, query, key, value):
        """q, k, v of the packed in-projection, grouped as torch groups them (self-attention: one
        product; key is value: two; otherwise three)."""
        e = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        b_parts = (None, None, None) if b is None else b.split(e)
        if query is key and key is value:
            return nn.functional.linear(query, w, b).unflatten(-1, (3, e)).unbind(-2)
        if key is value:
            q = nn.functional.linear(query, w[:e], b_parts[0])
            kv = nn.functional.linear(key, w[e:], None if b is None else b[e:])
            return (q, *kv.unflatten(-1, (2, e)).unbind(-2))
        return tuple(nn.functional.linear(x, wx, bx) for x, wx, bx in zip((query, key, value), w.split(e), b_parts))

    def attend(self, query, key, value, key_padding_mask, attn_mask, average_attn_weights):
        tgt_len, bsz, _ = query.shape
        src_len, heads, head_dim = key.shape[0], self.num_heads, self.head_dim
        q, k, v = self.project(query, key, value)
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)
        bias = additive_mask(attn_mask, query.dtype)
        if bias is not None and bias.dim() == 2:
            bias = bias.unsqueeze(0)
        padding = additive_mask(key_padding_mask, query.dtype)
        if padding is not None:
            padding = padding.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
            bias = padding if bias is None else bias + padding
        q = q * math.sqrt(1.0 / head_dim)
        scores = torch.bmm(q, k.transpose(1, 2)) if bias is None else torch.baddbmm(bias, q, k.transpose(1, 2))
        weights = fast_dropout(scores.softmax(dim=-1), self.dropout)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, self.embed_dim)
        out = self.out_proj(out).view(tgt_len, bsz, -1)
        weights = weights.view(bsz, heads, tgt_len, src_len)
        return out, (weights.mean(dim=1) if average_attn_weights else weights)


def swap_batch_axis(tensors: tuple) -> tuple:
    """Each tensor transposed (0, 1) once: a tensor given twice stays one object, which selects the
    projection grouping (:meth:`FastDropoutMultiheadAttention.project`)."""
    swapped = {}
    for t in tensors:
        if id(t) not in swapped:
            swapped[id(t)] = t.transpose(0, 1)
    return tuple(swapped[id(t)] for t in tensors)


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: not attended) as 0 / -inf of ``dtype``; a float mask as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


def _fits_fast_attention(module: nn.MultiheadAttention) -> bool:
    return (module._qkv_same_embed_dim and module.bias_k is None and module.bias_v is None
            and not module.add_zero_attn)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout` on CPU tensors in training; ATen's kernel otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout_function(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` submodule of ``model`` (in place) by a :class:`FastDropout`
    with the same ``p``, point every ``drop_weights`` hook (attention weights) at
    :func:`dropout_function` and give each fitting ``nn.MultiheadAttention`` the class
    :class:`FastDropoutMultiheadAttention`; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        if hasattr(parent, "drop_weights"):
            parent.drop_weights = dropout_function
            swapped += 1
        if type(parent) is nn.MultiheadAttention and _fits_fast_attention(parent):
            parent.__class__ = FastDropoutMultiheadAttention
            swapped += 1
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped += 1
    return swapped
