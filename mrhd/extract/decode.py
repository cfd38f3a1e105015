"""Decoding with PyAV: the frames each encoder stream consumes, in one streaming pass per video.

Streams (``input_kind`` of mrhd.encoders.base), each yielded as ``(kind, index, array)``:

- ``clip_frame``     one frame per 2-s clip, ffmpeg ``fps=0.5`` (short-video rule of HERO), uint8 [224, 224, 3]
- ``slowfast_clip``  per clip the 32 FAST-pathway frames of the 30-fps stream, uint8 [32, 224, 224, 3]
                     (offsets ``sampling.slowfast_fast_indices``); the encoder takes the slow pathway
                     from these with ``sampling.slowfast_slow_indices``
- ``window_frames``  every native frame whose time falls in window ``[2k, 2k+2)``, uint8 [n_k, 224, 224, 3]
                     (the whole frame squeezed to 224x224, InternVideo2's transform);
                     with the encoder's ``window_frame_picker`` only the frames it picks,
                     ``window[picker(n_k)]``, and only those are converted (8 of 60 at 30 fps for
                     InternVideo2): ``n_k`` is read ahead from the packet index; alone, the stream
                     also leaves unpicked non-reference frames undecoded (``skip_frame=NONREF``)
- ``audio_chunk``    see ``audio.py``

Pixels (``cli_frames.py``): clip_frame and slowfast_clip frames are the bytes of the ffmpeg CLI chain of
the official extractors (autorotation of phone videos, ``scale`` honouring the colour tags, crop,
rgb24), run on PyAV's libavfilter with one graph per video geometry; window_frames are InternVideo2's
whole upright frames resized to 224x224 (no crop). ``size=None`` gives every stream the upright
frames at their own size.

Why one pass: decoding dominates CPU time, so a video that feeds CLIP, SlowFast and InternVideo2 is
decoded once; each frame is converted to RGB only when some stream takes it. The CLIP stream alone
(one frame in ~60) runs the fps rule on a packet index first and seeks to keyframes where that
decodes fewer frames (``VideoDecoder(seek=True)``), falling back to the in-order pass. Memory stays flat: a
stream holds at most one clip's frames (a 3-hour video is never held whole).

Timeline (fixtures/sampling/README.md, ``rule_check_pyav_only``): ``t = pts * time_base - format
start_time``; the end is the last frame's time plus its duration, where that duration is
``1 / codec framerate`` when the track has B-frames (any packet with pts != dts) and the frame's own
duration otherwise (what the ffmpeg 5.1 CLI that made the official features sees).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mrhd.encoders.pixels import square_resize
from mrhd.errors import MrhdError
from mrhd.extract import cli_frames, sampling
from mrhd.extract.cli_frames import FRAME_SIZE, scaled_size  # noqa: F401  (re-exported)

VIDEO_KINDS = ("clip_frame", "slowfast_clip", "window_frames")


class DecodeError(MrhdError):
    """A video (or one of its streams) that cannot be decoded; the job reports it and goes on."""


@dataclass
class VideoInfo:
    """What the samplers need to know about a file before decoding it."""

    path: str
    width: int  # coded size, as ffprobe prints it (before the display matrix turns the frames)
    height: int
    stream_duration: float  # as ffprobe prints it, -1 when unknown (HERO's rule input)
    avg_frame_rate: Fraction | None
    format_start: Fraction  # container start_time (min over streams), seconds
    duration: float  # best estimate in seconds (format duration, else stream duration)
    has_audio: bool


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise DecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise DecodeError(f"{path}: not a readable video ({_reason(err)})") from err


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.split(": '")[0].strip() or type(err).__name__


def _info_of(container, path) -> VideoInfo:
    if not container.streams.video:
        raise DecodeError(f"{path}: no video stream (audio-only or data file)")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise DecodeError(f"{path}: video stream has no frame size (damaged header)")
    stream_duration = sampling.ffprobe_duration(stream.duration, stream.time_base, stream.frames)
    start = Fraction(container.start_time or 0, 1_000_000)
    if container.duration:
        duration = container.duration / 1_000_000
    elif stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = -1.0
    return VideoInfo(path=str(path), width=ctx.width, height=ctx.height, stream_duration=stream_duration,
                     avg_frame_rate=stream.average_rate, format_start=start, duration=duration,
                     has_audio=bool(container.streams.audio))


def probe(path: str | Path) -> VideoInfo:
    """Facts about ``path`` without decoding; :class:`DecodeError` when it is not a usable video."""
    with _open(path) as container:
        return _info_of(container, path)


def to_rgb(frame: av.VideoFrame, size: int | None = FRAME_SIZE) -> np.ndarray:
    """The one conversion every stream's frames go through. ``size``: uint8 ``[size, size, 3]``, the
    bytes of the ffmpeg CLI chain (autorotation, short side ``size`` bicubic, centre crop at
    ``x = int((W - size) / 2)``, ``y = int((H - size) / 2)``, rgb24; :func:`cli_frames.cli_frame`).
    ``None``: the whole frame upright at its own size in rgb24 (:func:`cli_frames.upright_frame`)."""
    if size is None:
        return cli_frames.upright_frame(frame)
    return cli_frames.cli_frame(frame, size)


class FrameTimeline:
    """Decoded frames in presentation order as ``(position, t, frame)``; after the loop, ``t_end``.

    Packet decode errors inside a damaged file are skipped (as the ffmpeg CLI does) and counted."""

    def __init__(self, container, stream, threads: int = 0):
        self.container = container
        self.stream = stream
        self.t_end: Fraction | None = None
        self.n_frames = 0
        self.n_errors = 0
        if threads:
            stream.codec_context.thread_count = threads
        stream.thread_type = "AUTO"

    def __iter__(self) -> Iterator[tuple[int, Fraction, av.VideoFrame]]:
        stream = self.stream
        tb = stream.time_base
        start = Fraction(self.container.start_time or 0, 1_000_000)
        b_frames = False
        last_t = None
        last_dur = None
        pos = 0
        prev_pts = None
        for packet in self.container.demux(stream):
            if packet.pts is not None and packet.dts is not None and packet.pts != packet.dts:
                b_frames = True
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.n_errors += 1
                continue
            for frame in frames:
                pts = frame.pts if frame.pts is not None else prev_pts
                if pts is None:
                    continue
                if prev_pts is not None and pts <= prev_pts:
                    continue  # a duplicate or out-of-order timestamp from a damaged stream
                prev_pts = pts
                t = pts * tb - start
                last_t = t
                last_dur = frame.duration * tb if frame.duration else None
                yield pos, t, frame
                pos += 1
        self.n_frames = pos
        if last_t is None:
            return
        rate = stream.codec_context.framerate or stream.average_rate or stream.guessed_rate
        if b_frames and rate:
            dur = 1 / Fraction(rate)
        elif last_dur:
            dur = last_dur
        elif rate:
            dur = 1 / Fraction(rate)
        else:
            dur = Fraction(0)
        self.t_end = last_t + dur


class _Converted:
    """RGB conversion memo: a frame taken by several streams is converted once.

    ``whole=False``: the CLI chain's ``size`` crop (clip_frame, slowfast_clip). ``whole=True``
    (window_frames, InternVideo2's recipe): the whole upright frame, resized to ``size`` x ``size``
    without keeping the aspect (:func:`square_resize`); ``size=None`` keeps it as shown."""

    def __init__(self, size, whole: bool = False):
        self.size = size
        self.whole = whole
        self._pos = None
        self._rgb = None

    def __call__(self, pos: int, frame) -> np.ndarray:
        if pos != self._pos:
            if self.whole:
                rgb = to_rgb(frame, None)
                rgb = square_resize(rgb, self.size) if self.size is not None else rgb
            else:
                rgb = to_rgb(frame, self.size)
            self._pos, self._rgb = pos, rgb
        return self._rgb


class _ClipFrames:
    """clip_frame: the fps filter at HERO's CLIP rate."""

    kind = "clip_frame"

    def __init__(self, info: VideoInfo, convert, clip_len=sampling.CLIP_LEN):
        self.rate = sampling.clip_rate(info.stream_duration, clip_len)
        self.resampler = sampling.FpsResampler(self.rate)
        self.convert = convert
        self.positions: list[int] = []

    def _emit(self, ticks):
        for tick, (pos, frame) in ticks:
            self.positions.append(pos)
            yield self.kind, tick, self.convert(pos, frame)

    def feed(self, pos, t, frame):
        yield from self._emit(self.resampler.feed(t, (pos, frame)))

    def finish(self, t_end):
        yield from self._emit(self.resampler.finish(t_end))


class _SlowFastClips:
    """slowfast_clip: the fps=30 stream cut into 60-frame clips, 32 fast frames kept per clip.

    Frames past the end of the stream are padding (the last frame repeated, HERO preprocessing.py
    ``_pad_frames``/``_pad_clips`` mode ``tile``); ``ceil(d/2)`` clips when the stream duration is known.
    """

    kind = "slowfast_clip"

    def __init__(self, info: VideoInfo, convert, target_fps: int = sampling.SLOWFAST_FPS,
                 clip_len=sampling.CLIP_LEN):
        self.resampler = sampling.FpsResampler(target_fps)
        self.convert = convert
        self.fast = sampling.slowfast_fast_indices(info.avg_frame_rate, target_fps, clip_len)
        self.block = sampling.slowfast_block(target_fps, clip_len)
        self.target_fps = target_fps
        self.clip_len = clip_len
        self.stream_duration = info.stream_duration
        self.max_clips = (sampling.slowfast_n_clips(10**12, info.stream_duration, target_fps, clip_len)
                          if info.stream_duration > 0 else None)
        self.wanted = set(self.fast)
        self.clip = 0
        self.frames: dict[int, np.ndarray] = {}
        self.last = None  # (tick position, frame): the padding source
        self.n_ticks = 0
        self.positions: list[list[int]] = []
        self._pos_of: dict[int, int] = {}

    def _take(self, ticks):
        for tick, (pos, frame) in ticks:
            self.n_ticks = tick + 1
            self.last = (pos, frame)
            offset = tick - self.clip * self.block
            if offset in self.wanted:
                self.frames[offset] = self.convert(pos, frame)
                self._pos_of[offset] = pos
            if offset == self.block - 1:
                yield from self._emit_clip()

    def _emit_clip(self):
        if self.max_clips is None or self.clip < self.max_clips:
            pad_pos, pad_frame = self.last
            stack = []
            pos_list = []
            for off in self.fast:
                if off not in self.frames:  # padding: the last decoded frame repeated
                    self.frames[off] = self.convert(pad_pos, pad_frame)
                    self._pos_of[off] = pad_pos
                stack.append(self.frames[off])
                pos_list.append(self._pos_of[off])
            self.positions.append(pos_list)
            yield self.kind, self.clip, np.stack(stack)
        self.clip += 1
        self.frames = {}
        self._pos_of = {}

    def feed(self, pos, t, frame):
        yield from self._take(self.resampler.feed(t, (pos, frame)))

    def finish(self, t_end):
        yield from self._take(self.resampler.finish(t_end))
        n_clips = sampling.slowfast_n_clips(self.n_ticks, self.stream_duration, self.target_fps, self.clip_len)
        if self.clip < n_clips and self.last is not None:
            yield from self._emit_clip()


class _WindowFrames:
    """window_frames: every native frame with ``2k <= t < 2k+2``; a window that no frame starts in
    (a gap in a variable-rate file) gets the frame shown at that time, so every window has frames.

    With a ``picker`` (the encoder's ``window_frame_picker``) a window is ``frames[picker(n_k)]``.
    Its frame count ``n_k`` is known only when the next window starts, so ``counts`` (frames per
    window, from the packet index) decides in advance which frames to convert; the others are
    decoded but never converted. Every frame is checked against the index (``times``): a frame that
    is not where the index says raises :class:`_WindowMiss` and the decoder starts over without the
    index. Without ``counts`` the whole window is converted and the picker applied at its end."""

    kind = "window_frames"

    def __init__(self, info: VideoInfo, convert, picker=None, index: PacketIndex | None = None,
                 clip_len=sampling.CLIP_LEN):
        self.convert = convert
        self.picker = picker
        self.clip_len = clip_len
        self.index = index if picker is not None else None
        self.counts: dict[int, int] = {}
        if self.index is not None:
            for t in self.index.times:
                k = sampling.window_of(t, clip_len)
                self.counts[k] = self.counts.get(k, 0) + 1
        self.window = 0
        self.frames: dict[int, np.ndarray] = {}  # index in the window -> rgb
        self.seen = 0  # frames of the current window so far
        self.wanted: set[int] = set()
        self.last = None
        self._open(0)

    def _open(self, window: int) -> None:
        self.window, self.frames, self.seen = window, {}, 0
        if self.index is not None:
            n = self.counts.get(window, 0)
            self.wanted = set(self.picker(n)) if n else set()

    def _emit(self):
        if self.index is not None and self.seen != self.counts.get(self.window, 0):
            raise _WindowMiss
        if not self.seen:
            if self.last is None:
                return
            self.frames, self.seen = {0: self.convert(*self.last)}, 1  # a gap: the frame shown now
        order = range(self.seen) if self.picker is None else self.picker(self.seen)
        yield self.kind, self.window, np.stack([self.frames[i] for i in order])

    def _close_until(self, window: int):
        while self.window < window:
            yield from self._emit()
            self._open(self.window + 1)

    def feed(self, pos, t, frame):
        k = sampling.window_of(t, self.clip_len)
        if self.index is not None and (pos >= len(self.index.times) or self.index.times[pos] != t):
            raise _WindowMiss
        yield from self._close_until(k)
        if self.index is None or self.seen in self.wanted:
            self.frames[self.seen] = self.convert(pos, frame)
        self.seen += 1
        self.last = (pos, frame)

    def finish(self, t_end):
        yield from self._close_until(sampling.n_windows(t_end, self.clip_len))


class _WindowMiss(Exception):
    """The decoded frames differ from the packet index: the window picks cannot be trusted."""


SEEK_COST_FRAMES = 8  # a seek (demuxer jump + decoder flush) costs about as much as decoding this many frames


class _SeekMiss(Exception):
    pass


class PacketIndex:
    """Presentation timestamps and keyframes of the video stream, read by demuxing only (no decoding):
    cheap even for hours of video, and enough to run the fps rule before decoding anything."""

    def __init__(self, pts: list[int], keyframe: list[bool], times: list[Fraction], t_end: Fraction):
        self.pts = pts
        self.times = times
        self.t_end = t_end
        self.position_of = {p: i for i, p in enumerate(pts)}
        self._keys = [i for i, k in enumerate(keyframe) if k] or [0]

    def keyframe_before(self, pos: int) -> int:
        """Position (presentation order) of the last keyframe at or before ``pos``."""
        import bisect

        i = bisect.bisect_right(self._keys, pos) - 1
        return self._keys[max(i, 0)]

    @classmethod
    def read(cls, path) -> PacketIndex | None:
        """None when the index cannot be trusted (no timestamps, duplicates, damaged packets)."""
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                rows = []
                b_frames = False
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard or packet.is_corrupt:
                        continue
                    if packet.pts is None:
                        return None
                    if packet.dts is not None and packet.pts != packet.dts:
                        b_frames = True
                    rows.append((packet.pts, bool(packet.is_keyframe), packet.duration or 0))
                if not rows:
                    return None
                rows.sort()
                pts = [r[0] for r in rows]
                if len(set(pts)) != len(pts):
                    return None
                tb = stream.time_base
                start = Fraction(container.start_time or 0, 1_000_000)
                # p * tb - start as one Fraction each (hours of video: ~10^5 packets)
                num, den = tb.numerator * start.denominator, tb.denominator * start.denominator
                offset = start.numerator * tb.denominator
                times = [Fraction(p * num - offset, den) for p in pts]
                rate = stream.codec_context.framerate or stream.average_rate or stream.guessed_rate
                if b_frames and rate:
                    dur = 1 / Fraction(rate)
                elif rows[-1][2]:
                    dur = rows[-1][2] * tb
                elif rate:
                    dur = 1 / Fraction(rate)
                else:
                    dur = Fraction(0)
                return cls(pts, [r[1] for r in rows], times, times[-1] + dur)
        except (av.error.FFmpegError, IndexError, ValueError):
            return None


_SINKS = {"clip_frame": _ClipFrames, "slowfast_clip": _SlowFastClips, "window_frames": _WindowFrames}


class VideoDecoder:
    """One pass over a video that serves several streams.

    ``iter(decoder)`` yields ``(kind, index, array)`` in decoding order (the kinds interleave);
    afterwards ``t_end`` (seconds, the CLI timeline end) and ``positions[kind]`` (decoded-frame
    positions each output came from) are set.
    """

    def __init__(self, path: str | Path, kinds, size: int | None = FRAME_SIZE, threads: int = 0,
                 seek: bool = True, window_picker=None, clip_len=sampling.CLIP_LEN):
        unknown = set(kinds) - set(VIDEO_KINDS)
        if unknown:
            raise ValueError(f"not a video stream kind: {sorted(unknown)}")
        self.path = str(path)
        self.kinds = tuple(kinds)
        self.size = size
        self.threads = threads
        self.info = probe(path)
        self.t_end: Fraction | None = None
        self.positions: dict[str, list] = {}
        self.n_errors = 0
        # the CLIP stream alone needs one frame in ~60: jump between keyframes where that decodes less
        self.seek = seek and self.kinds == ("clip_frame",)
        self.seeks = 0  # how many seeks the last pass made (tests, benchmarks)
        # window_frames: the encoder's window_frame_picker (base.py); only its frames are converted
        self.window_picker = window_picker if "window_frames" in self.kinds else None
        self.restarts = 0  # passes begun again because frames differed from the packet index
        self.clip_len = clip_len  # seconds per clip / window (sampling.py: the rules at any clip length)

    def __iter__(self) -> Iterator[tuple[str, int, np.ndarray]]:
        if self.seek:
            index = PacketIndex.read(self.path)
            if index is not None:
                yield from self._clip_by_seeking(index)
                return
        if self.window_picker is not None:
            index = PacketIndex.read(self.path)
            if index is not None:
                done: dict[str, int] = {}
                if self.kinds == ("window_frames",):
                    try:
                        for kind, i, array in self._windows_skipping(index):
                            done[kind] = i + 1
                            yield kind, i, array
                        return
                    except _WindowMiss:
                        self.restarts += 1
                yield from self._picking_windows(index, done)
                return
        yield from self._sequential()

    def _windows_skipping(self, index: PacketIndex) -> Iterator[tuple[str, int, np.ndarray]]:
        """window_frames alone: the picks of every window are known from the packet index, so frames
        that no other frame references and that are not picked are not even decoded
        (``skip_frame=NONREF``, as ``_clip_by_seeking`` does; about half of a B-frame stream).
        Each decoded frame must sit where the index says and every picked frame must come out,
        else :class:`_WindowMiss` (the caller goes on with the checked in-order pass)."""
        self.t_end = index.t_end
        per_window: dict[int, int] = {}
        for t in index.times:
            k = sampling.window_of(t, self.clip_len)
            per_window[k] = per_window.get(k, 0) + 1
        plan: list[list[int] | None] = []  # the positions each window delivers; None: no window
        start = 0  # position of the window's first frame
        for k in range(max(sampling.n_windows(index.t_end, self.clip_len), max(per_window) + 1)):
            n = per_window.get(k, 0)
            if n:
                plan.append([start + i for i in self.window_picker(n)])
            else:  # a gap: the frame shown at that time (the last one before it), as in _WindowFrames
                plan.append([start - 1 + i for i in self.window_picker(1)] if start > 0 else None)
            start += n
        needed = {index.pts[p] for positions in plan if positions for p in positions}
        convert = _Converted(self.size, whole=True)
        rgb: dict[int, np.ndarray] = {}
        window = 0
        last = -1
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.codec_context.thread_count = self.threads
            for frame in self._frames(container, stream, needed, strict=True):
                pos = index.position_of.get(frame.pts)
                if pos is None or pos <= last:
                    raise _WindowMiss
                last = pos
                if frame.pts in needed:
                    rgb[pos] = convert(pos, frame)
                while window < len(plan) and (plan[window] is None or max(plan[window]) <= last):
                    yield from self._deliver(window, plan[window], rgb)
                    window += 1
            while window < len(plan):
                yield from self._deliver(window, plan[window], rgb)
                window += 1
        except av.error.FFmpegError as err:  # the checked pass reports what is wrong with the file
            raise _WindowMiss from err
        finally:
            container.close()
        self.positions["window_frames"] = []

    def _deliver(self, window: int, positions: list[int] | None, rgb: dict[int, np.ndarray]):
        if positions is None:
            return
        if any(p not in rgb for p in positions):
            raise _WindowMiss
        yield "window_frames", window, np.stack([rgb[p] for p in positions])
        for p in [p for p in rgb if p < min(positions)]:  # the next windows start later
            del rgb[p]

    def _picking_windows(self, index: PacketIndex, done: dict[str, int]) -> Iterator[tuple[str, int, np.ndarray]]:
        """The in-order pass with window frames picked ahead from the packet index. If the decoded
        frames turn out to differ from the index (a damaged file), the pass starts over converting
        whole windows. ``done`` (kind -> outputs yielded so far, also by an earlier attempt) keeps
        anything from being yielded twice."""
        try:
            for kind, i, array in self._sequential(index):
                if i >= done.get(kind, 0):
                    done[kind] = i + 1
                    yield kind, i, array
            return
        except _WindowMiss:
            self.restarts += 1
        for kind, i, array in self._sequential():
            if i >= done.get(kind, 0):
                yield kind, i, array

    def _clip_by_seeking(self, index: PacketIndex) -> Iterator[tuple[str, int, np.ndarray]]:
        """clip_frame from the packet index: the fps rule runs on packet timestamps (equal to the
        decoded ones, checked on every fixture file), then each chosen frame is decoded either by
        going on from the current position or from its keyframe, whichever decodes fewer frames;
        unreferenced frames that are not chosen are skipped.
        If a chosen frame does not come out where the index says, the file is decoded in order."""
        rate = sampling.clip_rate(self.info.stream_duration, self.clip_len)
        picks = sampling.fps_select(index.times, index.t_end, rate)
        self.t_end = index.t_end
        self.positions["clip_frame"] = list(picks)
        if not picks:
            return
        convert = _Converted(self.size)
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.codec_context.thread_count = self.threads
            frames = None
            needed = {index.pts[p] for p in picks}
            current = -1  # position of the last decoded frame
            done = 0  # ticks delivered
            for tick, pos in enumerate(picks):
                if pos == current:  # the same frame again (short-video rates, gaps): already converted
                    yield "clip_frame", tick, convert(pos, None)
                    done = tick + 1
                    continue
                key = index.keyframe_before(pos)
                ahead = pos - current if (frames is not None and pos > current) else None
                if ahead is None or ahead > (pos - key) + SEEK_COST_FRAMES:
                    container.seek(int(index.pts[key]), stream=stream, backward=True)
                    frames = self._frames(container, stream, needed)
                    self.seeks += 1
                    current = -1
                for frame in frames:
                    fpos = index.position_of.get(frame.pts)
                    if fpos is None:
                        continue
                    current = fpos
                    if fpos >= pos:
                        break
                if current != pos:
                    raise _SeekMiss
                yield "clip_frame", tick, convert(pos, frame)
                done = tick + 1
        except (_SeekMiss, av.error.FFmpegError):
            container.close()
            for kind, t, rgb in self._sequential():
                if t >= done:
                    yield kind, t, rgb
            return
        finally:
            container.close()

    @staticmethod
    def _frames(container, stream, needed: set, strict: bool = False):
        """Decoded frames from the current position. Frames that no other frame references and that
        are not wanted are not decoded at all (``skip_frame=NONREF`` for their packets): about half
        the frames of a typical B-frame stream, and the others decode to the same cli_frames.
        ``strict``: a packet that fails to decode raises (it may have held an unwanted frame that
        the in-order pass would drop, changing a window's frame count); else it is skipped."""
        ctx = stream.codec_context
        for packet in container.demux(stream):
            ctx.skip_frame = "DEFAULT" if packet.pts in needed else "NONREF"
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                if strict:
                    raise
                continue

    def _sequential(self, index: PacketIndex | None = None) -> Iterator[tuple[str, int, np.ndarray]]:
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            convert = _Converted(self.size)
            convert_whole = _Converted(self.size, whole=True)
            sinks = [_WindowFrames(self.info, convert_whole, self.window_picker, index, clip_len=self.clip_len)
                     if k == "window_frames" else _SINKS[k](self.info, convert, clip_len=self.clip_len)
                     for k in self.kinds]
            timeline = FrameTimeline(container, stream, self.threads)
            try:
                for pos, t, frame in timeline:
                    for sink in sinks:
                        yield from sink.feed(pos, t, frame)
            except av.error.FFmpegError as err:
                raise DecodeError(f"{self.path}: decoding failed ({_reason(err)})") from err
            self.n_errors = timeline.n_errors
            if timeline.t_end is None:
                raise DecodeError(f"{self.path}: no decodable video frames (truncated or corrupt file)")
            self.t_end = timeline.t_end
            for sink in sinks:
                yield from sink.finish(timeline.t_end)
                self.positions[sink.kind] = sink.positions if hasattr(sink, "positions") else []
        finally:
            container.close()


def iter_fps_frames(path: str | Path, rate, size: int | None = FRAME_SIZE,
                    threads: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(tick, decoded position, rgb)`` of ffmpeg's ``fps=rate`` applied to ``path`` (any rate)."""
    container = _open(path)
    try:
        if not container.streams.video:
            raise DecodeError(f"{path}: no video stream (audio-only or data file)")
        timeline = FrameTimeline(container, container.streams.video[0], threads)
        resampler = sampling.FpsResampler(rate)
        convert = _Converted(size)
        for pos, t, frame in timeline:
            for tick, (p, f) in resampler.feed(t, (pos, frame)):
                yield tick, p, convert(p, f)
        if timeline.t_end is not None:
            for tick, (p, f) in resampler.finish(timeline.t_end):
                yield tick, p, convert(p, f)
    finally:
        container.close()
