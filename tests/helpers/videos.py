"""Test media written with PyAV beside :func:`mrhd.extract.synthetic.write_video`: audio-only files and
deliberately broken files. Tests generate their own media; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from mrhd.extract.synthetic import write_video


def write_audio_only(path: str | Path, duration: float = 3.0, sample_rate: int = 44100) -> Path:
    """An .mp4 (m4a) that has an AAC track but no video stream."""
    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = "mono"
        n = int(duration * sample_rate)
        wave = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / sample_rate)).astype(np.float32)
        pts = 0
        for start in range(0, n, 1024):
            block = wave[start: start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += block.shape[1]
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    return path


def write_broken(path: str | Path, kind: str, source: str | Path | None = None) -> Path:
    """Deliberately bad inputs.

    kind: ``truncated`` (the first third of a valid mp4 ``source``), ``garbage`` (random bytes with an
    .mp4 name), ``empty`` (zero bytes), ``text`` (a text file named like a video), ``corrupt`` (a
    valid mp4 with its middle overwritten by noise), ``cut_faststart`` (``source`` remuxed with its
    index first, as web videos are, then cut in half: it opens, and its header announces the whole
    duration).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind in ("truncated", "corrupt"):
        if source is None:
            source = write_video(path.with_name(path.stem + "_source.mp4"), duration=6.0)
        data = bytearray(Path(source).read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 3]
        else:
            lo, hi = len(data) // 4, 3 * len(data) // 4
            data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
    elif kind == "cut_faststart":
        if source is None:
            source = write_video(path.with_name(path.stem + "_source.mp4"), duration=12.0, fps=10, width=64,
                                 height=48)
        whole = path.with_name(path.stem + "_faststart.mp4")
        with av.open(str(source)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
            out = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = out[packet.stream.index]
                dst.mux(packet)
        data = whole.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        raise ValueError(f"unknown broken-file kind {kind!r}")
    return path


def scaled_whole(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The whole frame through libavfilter's ``scale=W:H:flags=bicubic`` to rgb24 (the ffmpeg CLI's
    scale), built here independently of the decoder under test."""
    from fractions import Fraction

    from av.filter import Graph

    graph = Graph()
    graph.link_nodes(graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                      time_base=Fraction(1, 1000)),
                     graph.add("scale", f"{width}:{height}:flags=bicubic"), graph.add("format", "rgb24"),
                     graph.add("buffersink")).configure()
    graph.push(frame)
    return graph.pull().to_ndarray()
