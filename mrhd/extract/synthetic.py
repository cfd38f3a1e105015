"""Synthetic videos made with PyAV: the demo's sample clip and the media of tests and benchmarks.

A generated file needs no download and has known content (frame index encoded in a moving bar, a
rising audio tone), so the whole pipeline can run offline.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame whose content changes with ``index`` (a moving bar over a slow colour ramp),
    so that features of different clips differ."""
    y, x = np.mgrid[0:height, 0:width]
    phase = index / 30.0
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1) + index * 3) % 256
    img[..., 1] = (y * 255 // max(height - 1, 1)) % 256
    img[..., 2] = int(127 + 120 * np.sin(phase))
    bar = (index * 4) % max(width, 1)
    img[:, bar: bar + max(width // 16, 2)] = 255
    return img


def write_video(
    path: str | Path,
    *,
    duration: float = 6.0,
    fps: float | Fraction = 30,
    width: int = 160,
    height: int = 120,
    audio: bool = True,
    sample_rate: int = 44100,
    audio_channels: int = 2,
    tone_hz: float = 440.0,
) -> Path:
    """Write an H.264 (yuv420p) mp4 with ``round(duration * fps)`` frames and, when ``audio``, an AAC
    track of the same duration (a sine tone whose pitch rises over time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    n_frames = max(int(round(duration * float(rate))), 1)
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": "23", "preset": "ultrafast"}
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "stereo" if audio_channels == 2 else "mono"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            n_samples = int(round(duration * sample_rate))
            t = np.arange(n_samples) / sample_rate
            freq = tone_hz * (1 + t / max(duration, 1e-6))
            wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            chunk = 1024
            pts = 0
            for start in range(0, n_samples, chunk):
                block = wave[start: start + chunk]
                planes = np.repeat(block[None, :], audio_channels, axis=0)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes), format="fltp",
                                                   layout=astream.layout.name)
                frame.sample_rate = sample_rate
                frame.pts = pts
                pts += block.shape[0]
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path
