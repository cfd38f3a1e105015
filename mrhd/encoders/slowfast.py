"""SlowFast R50 8x8 (Kinetics-400) as the ``slowfast`` stream: [slow 2048 | fast 256] per 2-s clip.

The network is PySlowFast's SLOWFAST_8x8_R50 (Feichtenhofer et al., "SlowFast Networks for Video
Recognition", 2019), layer for layer as facebookresearch/SlowFast builds it
(slowfast/models/video_model_builder.py ``SlowFast``, resnet_helper.py ``ResBlock`` /
``BottleneckTransform``, stem_helper.py ``ResNetBasicStem``, configs/Kinetics/c2/SLOWFAST_8x8_R50.yaml).
It runs in eval mode (BatchNorm uses the stored statistics). Feature = each pathway's ``res5`` output
averaged over time and space, concatenated [slow | fast] (docs/FEATURES.md), i.e. the input of the
Kinetics classifier. Loading the released checkpoints lives in :mod:`.slowfast_convert`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from mrhd.encoders.base import EncoderInfo, VideoEncoder, resolve_encoder_weights
from mrhd.encoders.factory import register_encoder
from mrhd.encoders.pixels import CLI_PIXELS, PIXELS_VERSION
from mrhd.errors import MrhdError

WEIGHTS_ID = "slowfast-r50-8x8-k400-pyslowfast"
MEAN = 0.45    # PySlowFast DATA.MEAN / DATA.STD defaults, per channel
STD = 0.225
FAST_FRAMES = 32   # DATA.NUM_FRAMES of SLOWFAST_8x8_R50


@dataclass
class SlowFastConfig:
    """SLOWFAST_8x8_R50.yaml; ``width`` is RESNET.WIDTH_PER_GROUP (the slow stem's channels)."""

    width: int = 64
    beta_inv: int = 8               # SLOWFAST.BETA_INV: fast channels = slow / 8
    alpha: int = 4                  # SLOWFAST.ALPHA: slow frames = fast / 4
    fusion_ratio: int = 2           # SLOWFAST.FUSION_CONV_CHANNEL_RATIO
    fusion_kernel: int = 7          # SLOWFAST.FUSION_KERNEL_SZ
    depths: tuple = (3, 4, 6, 3)    # ResNet-50 blocks in res2..res5
    # temporal kernels [stem, res2, res3, res4, res5] (_TEMPORAL_KERNEL_BASIS["slowfast"])
    slow_temporal: tuple = (1, 1, 1, 3, 3)
    fast_temporal: tuple = (5, 3, 3, 3, 3)
    spatial_strides: tuple = (1, 2, 2, 2)
    num_classes: int = 400
    bn_eps: float = 1e-5
    stage_widths: tuple = field(init=False)

    def __post_init__(self):
        self.stage_widths = tuple(self.width * 4 * 2 ** i for i in range(4))   # 256 .. 2048

    @property
    def fast_width(self) -> int:
        return self.width // self.beta_inv

    @property
    def slow_dim(self) -> int:
        return self.stage_widths[-1]

    @property
    def fast_dim(self) -> int:
        return self.stage_widths[-1] // self.beta_inv

    @property
    def dim(self) -> int:
        return self.slow_dim + self.fast_dim


def slowfast_config(size: str) -> SlowFastConfig:
    if size == "full":
        return SlowFastConfig()
    if size == "tiny":
        # same layers and names, 1/8 of the channels: for CPU tests and conversion round trips
        return SlowFastConfig(width=8)
    raise MrhdError(f"unknown encoder size {size!r}; choose 'full' or 'tiny'")


def _bn(channels: int, eps: float) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=eps, momentum=0.1)


class Stem(nn.Module):
    """conv (t x 7 x 7, spatial stride 2) -> BN -> ReLU -> max-pool 1x3x3 stride 2 (ResNetBasicStem)."""

    def __init__(self, dim_in: int, dim_out: int, temporal: int, eps: float):
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, (temporal, 7, 7), stride=(1, 2, 2),
                              padding=(temporal // 2, 3, 3), bias=False)
        self.bn = _bn(dim_out, eps)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x):
        return self.pool(torch.relu(self.bn(self.conv(x))))


class FastToSlowFusion(nn.Module):
    """Lateral connection: time-strided conv of the fast features, concatenated onto the slow ones
    (FuseFastToSlow: kernel [7,1,1], stride [alpha,1,1], BN, ReLU)."""

    def __init__(self, fast_channels: int, cfg: SlowFastConfig):
        super().__init__()
        k = cfg.fusion_kernel
        self.conv = nn.Conv3d(fast_channels, fast_channels * cfg.fusion_ratio, (k, 1, 1),
                              stride=(cfg.alpha, 1, 1), padding=(k // 2, 0, 0), bias=False)
        self.bn = _bn(fast_channels * cfg.fusion_ratio, cfg.bn_eps)

    def forward(self, slow, fast):
        return torch.cat([slow, torch.relu(self.bn(self.conv(fast)))], dim=1)


class Bottleneck(nn.Module):
    """ResBlock with BottleneckTransform, STRIDE_1X1 False: a = [t,1,1], b = [1,3,3] carrying the
    spatial stride, c = 1x1x1; projection shortcut when the shape changes."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal: int, stride: int, eps: float):
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, dim_inner, (temporal, 1, 1), padding=(temporal // 2, 0, 0), bias=False)
        self.bn_a = _bn(dim_inner, eps)
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, stride, stride),
                                padding=(0, 1, 1), bias=False)
        self.bn_b = _bn(dim_inner, eps)
        self.conv_c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.bn_c = _bn(dim_out, eps)
        if dim_in != dim_out or stride != 1:
            self.shortcut = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.shortcut_bn = _bn(dim_out, eps)
        else:
            self.shortcut = None

    def forward(self, x):
        y = torch.relu(self.bn_a(self.conv_a(x)))
        y = torch.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        return torch.relu(skip + y)


def _stage(dim_in: int, dim_out: int, depth: int, temporal: int, stride: int, eps: float) -> nn.Sequential:
    inner = dim_out // 4
    return nn.Sequential(*[
        Bottleneck(dim_in if i == 0 else dim_out, inner, dim_out, temporal, stride if i == 0 else 1, eps)
        for i in range(depth)])


class SlowFastR50(nn.Module):
    """Two ResNet-50 pathways with fast->slow fusion after the stem and after res2, res3, res4."""

    def __init__(self, cfg: SlowFastConfig):
        super().__init__()
        self.cfg = cfg
        eps = cfg.bn_eps
        self.stem_slow = Stem(3, cfg.width, cfg.slow_temporal[0], eps)
        self.stem_fast = Stem(3, cfg.fast_width, cfg.fast_temporal[0], eps)
        fast_in = [cfg.fast_width] + [w // cfg.beta_inv for w in cfg.stage_widths]
        self.fusions = nn.ModuleList(FastToSlowFusion(fast_in[i], cfg) for i in range(4))
        slow_in = [cfg.width] + list(cfg.stage_widths)
        self.slow_stages = nn.ModuleList(
            _stage(slow_in[i] + fast_in[i] * cfg.fusion_ratio, cfg.stage_widths[i], cfg.depths[i],
                   cfg.slow_temporal[i + 1], cfg.spatial_strides[i], eps) for i in range(4))
        self.fast_stages = nn.ModuleList(
            _stage(fast_in[i], fast_in[i + 1], cfg.depths[i], cfg.fast_temporal[i + 1],
                   cfg.spatial_strides[i], eps) for i in range(4))
        # Kinetics-400 classifier of the released checkpoints: loaded so that every tensor is
        # accounted for, never used for features
        self.classifier = nn.Linear(cfg.dim, cfg.num_classes)

    def features(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        """slow [n,3,T/alpha,H,W], fast [n,3,T,H,W] -> [n, slow_dim + fast_dim]."""
        s, f = self.stem_slow(slow), self.stem_fast(fast)
        for i in range(4):
            s = self.fusions[i](s, f)
            s, f = self.slow_stages[i](s), self.fast_stages[i](f)
            # (PySlowFast's pathway pools after res2 have kernel 1: identity for slowfast)
        return torch.cat([s.mean(dim=(2, 3, 4)), f.mean(dim=(2, 3, 4))], dim=1)

    def forward(self, slow, fast):
        """Kinetics logits (before softmax), as a check of the loaded classifier."""
        return self.classifier(self.features(slow, fast))


def slow_indices(fast_frames: int, alpha: int) -> torch.Tensor:
    """PySlowFast pack_pathway_output: linspace(0, T-1, T // alpha).long() over the fast frames."""
    return torch.linspace(0, fast_frames - 1, fast_frames // alpha).long()


@dataclass(frozen=True)
class SlowFastFrames:
    """Decoded clips -> one uint8 [n, T, H, W, 3] tensor of fast-pathway frames, checked. Small and
    picklable for the decoding workers; uint8 is 4x less to ship than pixels, and normalisation
    runs on the encoder's device (:func:`slowfast_pixels`)."""

    frames: int = FAST_FRAMES

    def __call__(self, clips) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(np.stack([np.asarray(c) for c in clips])))
        if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[1] != self.frames or x.shape[-1] != 3:
            raise ValueError(f"SlowFast expects uint8 [{self.frames}, H, W, 3] clips, "
                             f"got {x.dtype} {tuple(x.shape[1:])}")
        return x


def slowfast_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [n, T, H, W, 3] (any device) -> float [n, 3, T, H, W]: /255, then (x - 0.45) / 0.225."""
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)
    return (x - MEAN) / STD


# what each precision mode computes on CUDA (CPU runs are fp32 in both)
SLOWFAST_PRECISIONS = {
    "official": "fp32 (HERO's extractor), stored as fp16",
    "fast": "fp16 autocast, stored as fp16",
}


class SlowFastEncoder(VideoEncoder):
    input_kind = "slowfast_clip"
    autocast_dtype = torch.float16
    store_dtype = "float16"

    def __init__(self, model: SlowFastR50, weights_label: str, weights_format: str, device="cpu"):
        cfg = model.cfg
        self.preprocessor = SlowFastFrames(FAST_FRAMES)
        self.slow_index = slow_indices(FAST_FRAMES, cfg.alpha)
        recipe = {
            "model": "SlowFast R50 8x8 (PySlowFast SLOWFAST_8x8_R50)", "arch": asdict(cfg),
            "weights": weights_label, "weights_format": weights_format, "input": self.input_kind,
            "fps": 30, "clip_len": 2.0, "frames_per_clip": 60, "fast_frames": FAST_FRAMES,
            "fast_index": "linspace(0, clip_size-1, 32) clamped to [0, 59], clip_size = 64*floor(fps_src)/30",
            "slow_index": self.slow_index.tolist(),
            "resize": "short side 224 bicubic", "crop": "centre 224",
            "pixels": CLI_PIXELS, "pixels_version": PIXELS_VERSION,
            "pixel_scale": "1/255", "mean": [MEAN] * 3, "std": [STD] * 3, "bn": "eval (stored statistics)",
            "layer": "res5 of each pathway, global average pooled, concat [slow | fast]",
        }
        super().__init__(EncoderInfo("slowfast", cfg.dim, weights_label, recipe), device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.set_precision("official")

    def set_precision(self, mode: str) -> None:
        """``official``: fp32 on CUDA too, as HERO's extractor ran it (the features were cast to
        fp16 only when stored); ``fast``: fp16 autocast on CUDA (about 2x faster, features differ
        in the third decimal). fp32 on CPU either way."""
        super().set_precision(mode)
        self.info.recipe["precision"] = SLOWFAST_PRECISIONS[mode]
        self.autocast_dtype = torch.float16 if mode == "fast" else None

    def preprocess(self, clips) -> torch.Tensor:
        """Clips -> uint8 [n, 32, H, W, 3] (see :class:`SlowFastFrames`)."""
        return self.preprocessor(clips)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 clips -> the fast pathway's input [n, 3, 32, H, W] on the device."""
        return slowfast_pixels(batch.to(self.device))

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        fast = self.pixels(batch)
        slow = fast.index_select(2, self.slow_index.to(fast.device))
        return self.model.features(slow, fast).float()


def build_slowfast(device="cpu", weights=None, random_weights=False, size="full") -> SlowFastEncoder:
    from mrhd.encoders import slowfast_convert

    cfg = slowfast_config(size)
    if random_weights:
        torch.manual_seed(0)
        return SlowFastEncoder(SlowFastR50(cfg), "random", "random", device)
    if size != "full":
        raise MrhdError("size 'tiny' exists only with random weights")
    source = resolve_encoder_weights(weights, WEIGHTS_ID)
    model, fmt = slowfast_convert.load_slowfast(source.path, cfg)
    return SlowFastEncoder(model, source.label, fmt, device)


register_encoder("slowfast", build_slowfast)
