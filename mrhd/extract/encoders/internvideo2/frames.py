"""Which 8 of a window's frames InternVideo2 sees, and how they become its input tensor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet constants (internvideo2_clip.py transform; demo/utils.py v_mean / v_std)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def window_frame_indices(n_frames: int, num: int = 8) -> list[int]:
    """The authors' test-time rule (``dataset/video_utils.py get_frame_indices``, ``sample="middle"``):
    cut ``[0, n)`` into ``num`` equal integer segments, take each segment's middle frame
    ``(start + end - 1) // 2``; with fewer than ``num`` frames take them all and repeat the last."""
    if n_frames <= 0:
        raise ValueError("a window with no frames cannot be encoded")
    count = min(num, n_frames)
    edges = np.linspace(0, n_frames, count + 1).astype(int)
    picked = [int((edges[i] + edges[i + 1] - 1) // 2) for i in range(count)]
    return picked + [picked[-1]] * (num - count)


def to_model_input(windows, num_frames: int, size: int) -> torch.Tensor:
    """Windows of uint8 ``[n_k, H, W, 3]`` frames -> float ``[B, 3, num_frames, size, size]``:
    the picked frames, bicubic resize to ``size`` (identity for the decoder's 224 crops), /255,
    ImageNet mean/std."""
    batch = []
    for frames in windows:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"internvideo2 expects uint8 windows [n, H, W, 3], got {frames.shape}")
        picked = torch.from_numpy(np.ascontiguousarray(frames[window_frame_indices(len(frames), num_frames)]))
        x = picked.permute(0, 3, 1, 2).float()                    # T, 3, H, W
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0, 255)
        batch.append(x)
    x = torch.stack(batch) / 255.0                                # B, T, 3, H, W
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return x.permute(0, 2, 1, 3, 4).contiguous()                  # B, 3, T, H, W
