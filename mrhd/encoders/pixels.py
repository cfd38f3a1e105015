"""Frames into an image/video encoder's input, as every encoder here does it.

Decoded frames travel as uint8 ``[..., H, W, 3]`` (4x smaller than float pixels between the decoding
workers and the main process); :func:`resize_frames` runs in the workers where a model wants
another size, :func:`normalise_pixels` on the encoder's device.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

# recorded in every store recipe that reads these pixels: a store made by another pixel path is refused
CLI_PIXELS = ("ffmpeg 5.1 CLI chain on libavfilter: autorotate (display matrix), scale=W:H:flags=bicubic "
              "(short side 224, W,H of the upright size), crop=224:224:int((W-224)/2):int((H-224)/2), "
              "rgb24; frame choice by the fps rule on timestamps")
WINDOW_PIXELS = ("native frames upright (autorotate) in rgb24, whole frame resized to 224x224 "
                 "bicubic (torch, no antialias, rounded: InternVideo2_CLIP transform), no crop")
PIXELS_VERSION = 2  # 1 (recipes without "pixels"): one swscale call to rgb24, no autorotation

# open_clip/constants.py OPENAI_DATASET_MEAN / OPENAI_DATASET_STD; LAVIS' BLIP processors use them too
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> uint8 ``[n, size, size, 3]``: bicubic with antialiasing, rounded
    as a PIL resize would round; frames of that size already pass untouched."""
    if tuple(frames.shape[1:3]) == (size, size):
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(size, size), mode="bicubic",
                      align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def normalise_pixels(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``[n, ..., H, W, 3]`` (any device) -> float ``[n, 3, ..., H, W]``: /255, then per channel
    ``(x - mean) / std``."""
    x = frames.movedim(-1, 1).float().div_(255.0)
    shape = (1, 3) + (1,) * (x.ndim - 2)
    return (x - torch.tensor(mean, device=x.device).view(shape)) / torch.tensor(std, device=x.device).view(shape)


def square_resize(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """uint8 ``[H, W, 3]`` (or ``[n, H, W, 3]``) -> ``[size, size, 3]``: the whole frame, aspect not
    kept, as torchvision 0.14's ``Resize((size, size), BICUBIC)`` on a uint8 tensor (InternVideo2's
    pinned version: float bicubic, ``align_corners=False``, no antialias, rounded and clamped)."""
    single = rgb.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(rgb[None] if single else rgb))
    if tuple(x.shape[1:3]) != (size, size):
        with _one_torch_thread():
            y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="bicubic", align_corners=False)
            x = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    out = x.numpy()
    return out[0] if single else out


@contextmanager
def _one_torch_thread():
    """One frame's resize is too small to share out: on a busy 2-core CPU, OpenMP's hand-offs made
    it 60-100 ms instead of 6 ms (640x360 -> 224). Decoding workers already run one torch thread;
    this covers decoding in the main process (``mrhd predict``, ``--num-workers 0``), where decoding
    and the model take turns, so the model's thread count is back before it runs."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
