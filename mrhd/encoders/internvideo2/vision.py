"""The InternVideo2 video tower: a ViT over 3-D tubelets with attention pooling.

Layer order and constants read from OpenGVLab/InternVideo
``InternVideo2/multi_modality/models/backbones/internvideo2/internvideo2.py`` (stage 2) and
``internvideo2_clip_vision.py`` (CLIP): Conv3d tubelet patch embed -> [cls] + patches -> + joint
3-D position embedding -> pre-norm blocks (RMSNorm eps 1e-6, qkv without bias, RMSNorm over the
full width of q and of k -- not per head --, LayerScale, GELU MLP) -> ``clip_projector``: attention
pooling whose query is the token mean, LayerNorm eps 1e-5 on q/k/v, separate q/k/v biases,
projected to ``clip_embed_dim``. The authors' fused kernels (flash attention, DropoutAddRMSNorm with
``prenorm=True``, FusedMLP) compute the same pre-norm residual blocks as written here.
Parameter names follow the released checkpoints so they load without renaming.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp
from torch import nn

from mrhd.encoders.internvideo2.config import VisionConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back, as the authors' ``RMSNorm``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    """Self-attention with qk-normalisation over the whole width (all heads together)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)   # scale = head_dim ** -0.5, as the original
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.qk_norm)
        self.ls1 = LayerScale(dim, init_values=cfg.init_values)
        self.norm2 = RMSNorm(dim)
        self.mlp = Mlp(dim, cfg.mlp_hidden, act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, init_values=cfg.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed3D(nn.Module):
    """[B, 3, T, H, W] -> [B, T * (H/p) * (W/p), C], time-major like the original ``view``."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=(cfg.tubelet_size, cfg.patch_size, cfg.patch_size),
                              stride=(cfg.tubelet_size, cfg.patch_size, cfg.patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                              # B, C, T, h, w
        return x.flatten(3).permute(0, 2, 3, 1).flatten(1, 2)


class PoolingCrossAttention(nn.Module):
    """The pooling head's attention: bias-free q/k/v Linear plus separate bias vectors."""

    def __init__(self, dim: int, num_heads: int, out_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        heads = self.num_heads

        def split(t):
            return t.reshape(b, -1, heads, c // heads).transpose(1, 2)

        q = split(F.linear(q, self.q.weight, self.q_bias))
        k = split(F.linear(k, self.k.weight, self.k_bias))
        v = split(F.linear(v, self.v.weight, self.v_bias))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class AttentionPooling(nn.Module):
    """``clip_projector``: one query (the mean token) attends over all tokens -> ``clip_embed_dim``."""

    def __init__(self, dim: int, num_heads: int, out_dim: int):
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_k = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_v = nn.LayerNorm(dim, eps=1e-5)
        self.cross_attn = PoolingCrossAttention(dim, num_heads, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(query, self.norm1_k(x), self.norm1_v(x)).squeeze(1)


class ClipDecoder(nn.Module):
    """Stage-2 distillation head (``Linear_Decoder``); kept so the checkpoint loads strictly, not run."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)


def sincos_3d(dim: int, grid: int, t_size: int) -> torch.Tensor:
    """The authors' fixed 3-D sin-cos table (``pos_embed.py get_3d_sincos_pos_embed``): a quarter of
    the channels temporal, three quarters spatial (w, h halves), zero row for [cls]."""
    def sincos_1d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    d_spatial, d_temporal = dim // 4 * 3, dim // 4
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    spatial = np.concatenate([sincos_1d(d_spatial // 2, gw), sincos_1d(d_spatial // 2, gh)], axis=1)
    temporal = sincos_1d(d_temporal, np.arange(t_size, dtype=np.float32))
    table = np.concatenate([np.repeat(temporal[:, None], grid * grid, axis=1),
                            np.repeat(spatial[None], t_size, axis=0)], axis=-1).reshape(-1, dim)
    return torch.from_numpy(np.concatenate([np.zeros((1, dim)), table], axis=0)).float()[None]


class InternVideo2Vision(nn.Module):
    """8 frames -> one ``clip_embed_dim`` vector (the attention-pooled ``clip_projector`` output)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        n_pos = cfg.t_size * cfg.grid * cfg.grid + 1
        self.patch_embed = PatchEmbed3D(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(sincos_3d(cfg.embed_dim, cfg.grid, cfg.t_size))
        if cfg.sep_image_video_pos_embed:   # stage 2: image tables and the distillation tables
            n_img = cfg.grid * cfg.grid + 1
            self.img_pos_embed = nn.Parameter(torch.zeros(1, n_img, cfg.embed_dim))
            self.clip_pos_embed = nn.Parameter(torch.zeros(1, n_pos, cfg.embed_dim))
            self.clip_img_pos_embed = nn.Parameter(torch.zeros(1, n_img, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.clip_projector = AttentionPooling(cfg.embed_dim, cfg.attn_pool_heads, cfg.clip_embed_dim)
        if cfg.clip_return_layer:
            self.clip_decoder = nn.ModuleList(ClipDecoder(cfg.embed_dim, cfg.clip_teacher_embed_dim)
                                              for _ in range(cfg.clip_return_layer))
        if cfg.clip_teacher_final_dim:
            self.final_clip_decoder = ClipDecoder(cfg.clip_embed_dim, cfg.clip_teacher_final_dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` normalised frames -> ``[B, clip_embed_dim]``."""
        x = self.patch_embed(video.to(self.patch_embed.proj.weight.dtype))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.clip_projector(x)


def interpolate_temporal(pos_embed: torch.Tensor, t_new: int, grid: int) -> torch.Tensor:
    """A checkpoint's ``[1, 1 + T*g*g, C]`` table resampled to ``t_new`` frames: linear along time,
    as ``pos_embed.py interpolate_pos_embed_internvideo2_new`` does (the 1B stage-2 file is f4)."""
    t_old = (pos_embed.shape[1] - 1) // (grid * grid)
    if t_old == t_new:
        return pos_embed
    cls, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    c = tokens.shape[-1]
    tokens = tokens.reshape(1, t_old, grid * grid, c).permute(0, 2, 3, 1).reshape(-1, c, t_old)
    tokens = F.interpolate(tokens.float(), size=t_new, mode="linear").to(pos_embed.dtype)
    tokens = tokens.reshape(1, grid * grid, c, t_new).permute(0, 3, 1, 2).reshape(1, -1, c)
    return torch.cat([cls, tokens], dim=1)
