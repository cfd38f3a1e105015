"""The ``audio_chunk`` stream: mono 32-kHz float32 audio cut into 2-s chunks of 64000 samples.

Follows what the PANNs feature pipelines do with ``librosa.load(path, sr=32000, mono=True)``: the
channels are averaged, then the signal is resampled with soxr (librosa's default ``soxr_hq``).
Streaming: decoded audio passes through a soxr resampler stream and only the current chunk is held,
so a 3-hour soundtrack never sits in memory. The partial chunk at the end is dropped (floor(D/2)
rows, FEATURES.md "PANNs Cnn14 audio").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import soxr

from mrhd.extract import sampling
from mrhd.extract.decode import DecodeError, _open, _reason


class NoAudioError(DecodeError):
    """The file has no audio track: only the audio stream of this video fails."""


def iter_audio_chunks(path: str | Path, rate: int = sampling.AUDIO_RATE,
                      chunk: int = sampling.AUDIO_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, float32 [chunk])`` for every whole chunk of the first audio track."""
    return iter(AudioChunks(path, rate, chunk))


class AudioChunks:
    """The chunks of :func:`iter_audio_chunks`; after the loop, ``seconds`` (audio decoded) and
    ``header_seconds`` (what the file's header announces, -1 when unknown): a file that ends
    before its header says was cut short, and its duration is what was decoded."""

    def __init__(self, path: str | Path, rate: int = sampling.AUDIO_RATE, chunk: int = sampling.AUDIO_CHUNK):
        self.path, self.rate, self.chunk = path, rate, chunk
        self.seconds = 0.0
        self.header_seconds = -1.0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        container = _open(self.path)
        try:
            yield from self._decode(container, self.path, self.rate, self.chunk)
        finally:
            container.close()

    def _decode(self, container, path, rate: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        if not container.streams.audio:
            raise NoAudioError(f"{path}: no audio track (the pann stream needs one)")
        stream = container.streams.audio[0]
        in_rate = stream.codec_context.sample_rate or stream.rate
        if not in_rate:
            raise DecodeError(f"{path}: audio track has no sample rate")
        if stream.duration and stream.time_base:
            self.header_seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            self.header_seconds = container.duration / 1_000_000
        decoded = 0  # samples at the input rate
        # planar float keeps every channel apart so they can be averaged (librosa to_mono)
        to_float = av.AudioResampler(format="fltp")
        resampler = soxr.ResampleStream(in_rate, rate, 1, dtype="float32", quality="HQ")
        pieces: list[np.ndarray] = []  # resampled audio not yet cut into chunks
        held = 0
        index = 0

        def take(mono: np.ndarray, last: bool = False):
            nonlocal pieces, held, index
            out = resampler.resample_chunk(mono, last=last)
            if out.size:
                pieces.append(out)
                held += out.shape[0]
            if held < chunk:
                return
            buffer = np.concatenate(pieces)  # joined once per chunk, not once per audio frame
            start = 0
            while buffer.shape[0] - start >= chunk:
                yield index, np.ascontiguousarray(buffer[start: start + chunk], dtype=np.float32)
                start += chunk
                index += 1
            pieces = [buffer[start:]] if start < buffer.shape[0] else []
            held = buffer.shape[0] - start

        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue  # damaged packet: skipped, as the ffmpeg CLI does
                for frame in frames:
                    decoded += frame.samples
                    self.seconds = decoded / in_rate
                    for planar in to_float.resample(frame):
                        yield from take(planar.to_ndarray().mean(axis=0).astype(np.float32))
            for planar in to_float.resample(None):
                yield from take(planar.to_ndarray().mean(axis=0).astype(np.float32))
        except av.error.FFmpegError as err:
            raise DecodeError(f"{path}: audio decoding failed ({_reason(err)})") from err
        yield from take(np.zeros(0, np.float32), last=True)
