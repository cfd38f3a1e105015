"""Frames into an image/video encoder's input, as every encoder here does it.

Decoded frames travel as uint8 ``[..., H, W, 3]`` (4x smaller than float pixels between the decoding
workers and the main process); :func:`resize_frames` runs in the workers where a model wants
another size, :func:`normalise_pixels` on the encoder's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
