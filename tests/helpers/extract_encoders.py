"""A test-only encoder with the real interface and a real, cheap computation: per clip, the mean of
each colour channel (frames) or mean / std / peak of the samples (audio). Lets the job runner be
tested without building a network, and expected values be recomputed independently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrhd.encoders.base import EncoderInfo, VideoEncoder


@dataclass(frozen=True)
class StackToFloat:
    """Picklable preprocessor (runs in decoding workers): clips -> one float tensor."""

    def __call__(self, clips) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) for c in clips]))


def clip_statistics(clip: np.ndarray) -> np.ndarray:
    """What :class:`StatsEncoder` computes for one clip, in numpy (float64)."""
    x = np.asarray(clip, dtype=np.float64)
    if x.ndim == 1:
        return np.array([x.mean(), x.std(), np.abs(x).max()])
    return x.reshape(-1, 3).mean(0)


class StatsEncoder(VideoEncoder):
    autocast_dtype = None
    store_dtype = "float32"

    def __init__(self, stream: str = "clip", kind: str = "clip_frame", tag: str = "v1",
                 picklable_preprocessor: bool = True):
        self.input_kind = kind
        super().__init__(EncoderInfo(stream, 3, "random", {"test": "stats", "input": kind, "tag": tag}))
        self.preprocessor = StackToFloat() if picklable_preprocessor else (lambda clips: clips)
        self.calls = 0

    def preprocess(self, clips) -> torch.Tensor:
        return StackToFloat()(clips)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = batch.double()
        if x.ndim == 2:
            return torch.stack([x.mean(1), x.std(1, unbiased=False), x.abs().amax(1)], 1)
        return x.reshape(x.shape[0], -1, 3).mean(1)


@dataclass(frozen=True)
class CrashOnce:
    """Preprocessor that kills its worker process the first time any worker calls it (the marker file
    remembers), to test that a crashed decoder fails one video and the job goes on."""

    marker: str

    def __call__(self, clips) -> torch.Tensor:
        import os
        from pathlib import Path

        if not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            os._exit(3)
        return StackToFloat()(clips)
