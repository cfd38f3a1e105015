"""Which 8 of a window's frames InternVideo2 sees, and how they become its input tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrhd.encoders.pixels import normalise_pixels, square_resize

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


@dataclass(frozen=True)
class SegmentMiddles:
    """``window_frame_indices`` as the encoder's ``window_frame_picker``: a value (picklable, equal
    when ``num`` is) so the decoder converts only these frames of each window. Idempotent: applied
    to its own ``num`` picks it returns ``range(num)``, so ``pick_frames`` on picked windows is a no-op."""

    num: int = 8

    def __call__(self, n_frames: int) -> list[int]:
        return window_frame_indices(n_frames, self.num)


def pick_frames(windows, num_frames: int, size: int) -> torch.Tensor:
    """Windows of uint8 ``[n_k, H, W, 3]`` frames (whole windows, or the ``num_frames`` the decoder
    already picked with :class:`SegmentMiddles`) -> uint8 ``[B, num_frames, size, size, 3]``: the
    picked frames, whole, resized to ``size`` x ``size`` as ``InternVideo2_CLIP.transform`` does
    (:func:`mrhd.encoders.pixels.square_resize`) only where the size differs (the decoder's
    window frames are already 224x224 and pass untouched). Runs in the decode workers: uint8 keeps
    the batches that travel to the main process 4x smaller than float pixels."""
    batch = []
    for frames in windows:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"internvideo2 expects uint8 windows [n, H, W, 3], got {frames.shape}")
        picked = np.ascontiguousarray(frames[window_frame_indices(len(frames), num_frames)])
        batch.append(torch.from_numpy(square_resize(picked, size)))
    return torch.stack(batch)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` (on any device) -> float ``[B, 3, T, H, W]``: /255, ImageNet mean/std."""
    return normalise_pixels(frames, IMAGENET_MEAN, IMAGENET_STD)
