"""Synthetic videos made with PyAV: the demo's sample clip, the media of tests and benchmarks, and
the README's offline tour.

A generated file needs no download and has known content (frame index encoded in a moving bar, a
rising audio tone), so the whole pipeline can run offline.

    python -m mrhd.extract.synthetic DIR      # DIR/videos/vid0..3.mp4 + train/val/all.jsonl
"""

from __future__ import annotations

import argparse
import json
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


SAMPLE_QUERIES = ("a white bar sweeps across the screen", "the colours change slowly")


def write_sample_dataset(out_dir: str | Path, *, n_videos: int = 4, duration: float = 16.0, fps: float = 10) -> dict:
    """Videos ``vid0.mp4``... and QVHighlights-format annotations (two queries per video, windows and
    three-rater saliency) for an offline extract -> train -> eval -> predict run: ``train.jsonl``
    (all videos but the last), ``val.jsonl`` (the last) and ``all.jsonl`` (both, for
    ``mrhd extract --queries``). The windows are arbitrary but fixed; the videos carry no meaning."""
    out = Path(out_dir)
    n_clips = int(duration // 2)
    lines = []
    for v in range(n_videos):
        vid = f"vid{v}"
        write_video(out / "videos" / f"{vid}.mp4", duration=duration, fps=fps, audio=False)
        for q, query in enumerate(SAMPLE_QUERIES):
            start = (3 * v + 5 * q) % max(n_clips - 3, 1)
            clips = list(range(start, start + 3))
            lines.append({"qid": 10 * v + q, "query": query, "vid": vid, "duration": float(duration),
                          "relevant_windows": [[2.0 * start, 2.0 * (start + 3)]], "relevant_clip_ids": clips,
                          "saliency_scores": [[2, 3, 2], [4, 4, 3], [1, 2, 2]]})
    last = f"vid{n_videos - 1}"
    files = {"train": [ln for ln in lines if ln["vid"] != last], "val": [ln for ln in lines if ln["vid"] == last],
             "all": lines}
    paths = {}
    for name, rows in files.items():
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrhd.extract.synthetic",
                                     description="Write generated videos and annotations for the offline tour.")
    parser.add_argument("out", metavar="DIR", help="folder to write videos/ and train/val/all.jsonl into")
    parser.add_argument("--videos", type=int, default=4, help="number of videos (default: 4)")
    parser.add_argument("--duration", type=float, default=16.0, help="seconds per video (default: 16)")
    args = parser.parse_args(argv)
    if args.videos < 2 or args.duration < 8:
        parser.error("--videos must be at least 2 and --duration at least 8")
    paths = write_sample_dataset(args.out, n_videos=args.videos, duration=args.duration)
    print(f"wrote {args.videos} videos to {Path(args.out) / 'videos'} and "
          f"{', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
