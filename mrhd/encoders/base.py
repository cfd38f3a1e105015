"""The one small interface every encoder implements (video_features style).

The job runner owns files, decoding, batching and progress; an encoder owns only the math: it says
what input it needs (``input_kind`` and its recipe) and turns a batch of prepared clips into one
feature row per clip. Encoders run in eval mode under ``torch.no_grad()``; on CUDA
:func:`encode_clips` wraps ``encode`` in autocast with the dtype the encoder asks for.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrhd.errors import MrhdError
from mrhd.weights.resolve import resolve_weights

# What a video/audio encoder consumes per clip (the decoder prepares it):
#   "clip_frame"      one RGB frame per 2-s clip, the ffmpeg fps=0.5 choice, uint8 [224, 224, 3]
#   "slowfast_clip"   the 32 fast-pathway frames of each 60-frame clip of the 30-fps stream (offsets
#                     mrhd.extract.sampling.slowfast_fast_indices), uint8 [32, 224, 224, 3]; the
#                     encoder takes the slow pathway from them (slowfast_slow_indices)
#   "audio_chunk"     2 s of mono 32-kHz audio, float32 [64000]
#   "window_frames"   the native frames with 2k <= t < 2k+2, uint8 [n_k, 224, 224, 3]; an encoder that
#                     uses only some of them declares ``window_frame_picker`` (below) and then gets
#                     only those, uint8 [len(picker(n_k)), 224, 224, 3]
INPUT_KINDS = ("clip_frame", "slowfast_clip", "audio_chunk", "window_frames")
PRECISIONS = ("official", "fast")


@dataclass
class EncoderInfo:
    """What a store records about the numbers it holds (root attributes of the HDF5 file)."""

    stream: str        # store name: clip, slowfast, pann, blip2, internvideo2, clip_text, ...
    dim: int
    weights: str       # registry id, file name, or "random"
    recipe: dict       # everything that defines the numbers: rates, sizes, normalisation, layer
    clip_len: float = 2.0   # seconds per row of a video/audio stream (the store's ``clip_len``)

    def recipe_json(self) -> str:
        return json.dumps(self.recipe, sort_keys=True)


class Encoder:
    """What every encoder has: the store facts (``info``) and the device it runs on."""

    def __init__(self, info: EncoderInfo, device: str | torch.device = "cpu"):
        self.info = info
        self.device = torch.device(device)

    @property
    def name(self) -> str:
        return self.info.stream

    @property
    def dim(self) -> int:
        return self.info.dim


class VideoEncoder(Encoder, ABC):
    """Clips in, one ``dim``-vector per clip out."""

    input_kind: str = "clip_frame"
    autocast_dtype: torch.dtype | None = torch.float16   # on CUDA; None keeps fp32
    store_dtype: str = "float16"
    # "window_frames" only. Converting a frame to 224 RGB costs more than decoding it, so an encoder
    # that uses a few frames of each window says which: ``picker(n_frames) -> indices`` into the
    # window's n_frames frames (in the order wanted, repeats allowed). The decoder then converts only
    # those and delivers ``window[picker(n_k)]``. It must be picklable (it runs in the decoding
    # workers), compare equal when it picks the same frames, and be idempotent:
    # ``picker(len(picker(n))) == range(len(picker(n)))``, so that ``preprocess`` may apply the same
    # rule and accept whole and picked windows alike. None: the whole window.
    window_frame_picker: Callable[[int], list[int]] | None = None

    # "official": the arithmetic precision of the released features; "fast": a quicker one where the
    # official runs leave room (CLIP, SlowFast on CUDA). Encoders without a faster mode keep theirs.
    precision: str = "official"

    def set_precision(self, mode: str) -> None:
        """Switch between ``official`` and ``fast`` (see the encoder's recipe for what each means);
        only CLIP and SlowFast change anything, and only on CUDA."""
        if mode not in PRECISIONS:
            raise MrhdError(f"unknown precision {mode!r}; choose one of: {', '.join(PRECISIONS)}")
        self.precision = mode

    @abstractmethod
    def preprocess(self, clips):
        """CPU-side conversion of decoded clips (uint8 arrays / audio) into the model's input tensor.
        Runs in decoding workers, so it must be picklable and not touch the device."""

    @abstractmethod
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """``[n, ...]`` prepared clips on ``self.device`` -> ``[n, dim]`` float features."""


def encode_clips(encoder: VideoEncoder, batch: torch.Tensor) -> np.ndarray:
    """``encoder.encode`` of a prepared batch under inference mode, in the autocast dtype the encoder
    asks for on CUDA; float32 rows on the CPU."""
    device = getattr(encoder, "device", torch.device("cpu"))
    dtype = getattr(encoder, "autocast_dtype", None)
    autocast = (torch.autocast(device_type="cuda", dtype=dtype) if device.type == "cuda" and dtype is not None
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        return encoder.encode(batch.to(device, non_blocking=True)).float().cpu().numpy()


class TextEncoder(Encoder, ABC):
    """Sentences in; per-token features ``[L, dim]`` and a pooled vector ``[dim]`` (or None) out."""

    store_dtype: str = "float32"

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """One ``(tokens [L, dim], pooled [dim] | None)`` per text."""


@dataclass(frozen=True)
class EncoderWeights:
    """Where an encoder's weights come from: ``path`` (None: random weights) and the ``label`` its
    store records (``random``, a registry id, or the local file's name)."""

    path: Path | None
    label: str


def resolve_encoder_weights(weights: str | None, default_id: str, *, random_weights: bool = False,
                            folders: bool = False) -> EncoderWeights:
    """An encoder's ``weights`` argument: random (no file), a local file (with ``folders`` also a
    folder: BLIP-2's Hugging Face format), or a registry id (None: ``default_id``), downloaded into
    the cache on first use."""
    if random_weights:
        return EncoderWeights(None, "random")
    ref = weights or default_id
    local = Path(ref).expanduser()
    if local.is_file() or (folders and local.is_dir()):
        return EncoderWeights(local, local.name)
    return EncoderWeights(Path(resolve_weights(ref)), ref)


def require_words(texts: list[str]) -> None:
    """Refuse an empty query: a tokenizer would encode only its special tokens."""
    for text in texts:
        if not text or not text.strip():
            raise MrhdError("empty query text; every query needs at least one word")


def pad_token_ids(ids: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists into ``(input_ids, attention_mask)`` ``[n, max_len]`` long tensors."""
    length = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return input_ids, mask
