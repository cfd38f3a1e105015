"""Which source frames each stream takes: the ffmpeg ``fps`` filter, the HERO short-video rule, the
SlowFast clip layout and the 2-s windows, as pure functions of timestamps and counts.

Kept apart from decoding so that every rule can be tested on numbers alone; ``decode.py`` feeds it
timestamps and gets back which frame goes where.

Clip length: the official features use 2-s clips, but the rules are HERO's for any clip length
(``mrhd extract --clip-len``; Charades-STA's released features use 1 s): CLIP's fps filter runs at
``1 / clip_len`` with the short-video rule at ``d < clip_len + 0.1`` (HERO ``clip/video_loader.py``:
``framerate`` and ``1/fps + 0.1``), SlowFast cuts the 30-fps stream into ``clip_len * 30``-frame clips
(HERO ``slowfast/extract_feature/preprocessing.py`` ``clip_len``; the 32 fast frames still span
``64 * fps / 30`` frames, clamped to the clip), windows are ``[k * clip_len, (k + 1) * clip_len)``. Times are :class:`fractions.Fraction` so that a frame
lying exactly on a half-tick (60 fps -> 30 fps) is decided the way ffmpeg decides it.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import torch

CLIP_LEN = 2  # seconds per clip of the store's grid
CLIP_FPS = Fraction(1, 2)  # HERO clip/video_loader.py: ffmpeg fps=0.5
SLOWFAST_FPS = 30  # HERO slowfast/extract_feature/extract.py: --target_framerate 30
SLOWFAST_NUM_FRAMES = 32  # PySlowFast SLOWFAST_8x8_R50.yaml DATA.NUM_FRAMES
SLOWFAST_SAMPLING_RATE = 2  # DATA.SAMPLING_RATE
SLOWFAST_ALPHA = 4  # SLOWFAST.ALPHA
AUDIO_RATE = 32000  # PANNs Cnn14 sample rate
AUDIO_CHUNK = AUDIO_RATE * CLIP_LEN  # 64000 samples per 2-s chunk
ENDS_EARLY_S = 1.0  # decoded this much less than the header announces: the file was cut short


def ends_early(decoded_s: float, header_s: float, what: str = "video") -> str | None:
    """A warning when a file decodes to clearly less than its header announces (a copy cut short,
    a faststart mp4 whose index survived but not its data), else None. The duration stored and
    used is the decoded one; the header's is only compared."""
    if header_s > 0 and decoded_s >= 0 and header_s - decoded_s > ENDS_EARLY_S:
        return (f"{what} ends at {decoded_s:.1f} s although its header says {header_s:.1f} s (file cut "
                f"short?); only the {decoded_s:.1f} s that decode are used")
    return None


def round_half_away(x: Fraction) -> int:
    """C ``round()``/``llrint``-free rounding of ffmpeg: halves go away from zero."""
    x = Fraction(x)
    n = math.floor(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


def ffprobe_duration(duration_ts: int | None, time_base: Fraction | None, nb_frames: int) -> float:
    """The stream duration as HERO's loaders read it from ffprobe: ``float(stream['duration'])``, which
    ffprobe prints with 6 decimals; -1 when ``nb_frames`` or ``duration`` is missing (their
    ``except: duration = -1`` in clip/video_loader.py and slowfast/extract_feature/video_loader.py)."""
    if not duration_ts or time_base is None or not nb_frames:
        return -1.0
    return float(f"{float(duration_ts * time_base):.6f}")


def clip_seconds(clip_len) -> Fraction:
    """A clip length in seconds as an exact fraction (1/6 s stays 1/6); ValueError unless positive."""
    value = Fraction(clip_len).limit_denominator(1000) if isinstance(clip_len, float) else Fraction(clip_len)
    if value <= 0:
        raise ValueError(f"clip length must be positive, not {clip_len}")
    return value


def clip_rate(stream_duration: float, clip_len=CLIP_LEN) -> Fraction:
    """HERO clip/video_loader.py: fps ``1/clip_len`` (0.5), but ``2/max(int(d), 1)`` when
    ``0 < d < 1/fps + 0.1`` (``d`` the stream duration) so that short videos still give frames."""
    fps = 1 / clip_seconds(clip_len)
    if 0 < stream_duration < float(1 / fps) + 0.1:
        return Fraction(2, max(int(stream_duration), 1))
    return fps


class FpsResampler:
    """ffmpeg's ``fps=F`` filter as the CLI applies it (observed rule in
    ``fixtures/sampling/README.md``): output tick ``k`` shows the last source frame with
    ``t < (k + 1/2) / F``; ticks before the first frame show the first frame; ``round(t_end * F)``
    ticks in all. Streaming: holds one frame, emits ticks as soon as they are decided.

    ``feed(t, item)`` and ``finish(t_end)`` return lists of ``(tick, item)``.
    """

    def __init__(self, rate: Fraction | int | float):
        self.rate = Fraction(rate).limit_denominator(1_000_000) if isinstance(rate, float) else Fraction(rate)
        self.next_tick = 0
        self._last = None
        self._has_last = False

    def _boundary(self, k: int) -> Fraction:
        return (k + Fraction(1, 2)) / self.rate

    def feed(self, t: Fraction, item) -> list:
        out = []
        while t >= self._boundary(self.next_tick):
            out.append((self.next_tick, self._last if self._has_last else item))
            self.next_tick += 1
        self._last, self._has_last = item, True
        return out

    def n_ticks(self, t_end: Fraction) -> int:
        return round_half_away(Fraction(t_end) * self.rate)

    def finish(self, t_end: Fraction) -> list:
        out = []
        if not self._has_last:
            return out
        for k in range(self.next_tick, self.n_ticks(t_end)):
            out.append((k, self._last))
        self.next_tick = max(self.next_tick, self.n_ticks(t_end))
        return out


def fps_select(times, t_end, rate) -> list[int]:
    """Positions (in the given order) of the frames the fps filter shows; ``times`` in seconds.

    Sorted times (a packet index) take a bisection per tick instead of a comparison per frame:
    tick ``k`` shows the last frame before ``(k + 1/2) / rate``, or the first frame; the ticks are
    those :class:`FpsResampler` emits, ``max(round(t_end * rate), ticks decided by the frames)``."""
    resampler = FpsResampler(rate)
    if not len(times):
        return []
    if all(a <= b for a, b in zip(times, times[1:])):
        rate = resampler.rate
        decided = math.floor(Fraction(times[-1]) * rate - Fraction(1, 2)) + 1
        n = max(resampler.n_ticks(Fraction(t_end)), decided, 0)
        return [max(bisect.bisect_left(times, (k + Fraction(1, 2)) / rate) - 1, 0) for k in range(n)]
    picks = []
    for pos, t in enumerate(times):
        picks.extend(item for _, item in resampler.feed(Fraction(t), pos))
    picks.extend(item for _, item in resampler.finish(Fraction(t_end)))
    return picks


# ---------------------------------------------------------------------------- SlowFast
def slowfast_clip_size(avg_frame_rate: Fraction | float, target_fps: int = SLOWFAST_FPS) -> float:
    """Frames one SlowFast clip spans: NUM_FRAMES * SAMPLING_RATE * fps / target_fps with
    ``fps = floor(avg_frame_rate)`` of the SOURCE (HERO slowfast preprocessing.py). The frames were
    already resampled to 30 fps, so this over- or under-reaches for sources other than 30 fps; kept."""
    fps_src = math.floor(avg_frame_rate) if avg_frame_rate else target_fps
    return SLOWFAST_NUM_FRAMES * SLOWFAST_SAMPLING_RATE * fps_src / target_fps


def slowfast_block(target_fps: int = SLOWFAST_FPS, clip_len=CLIP_LEN) -> int:
    """Frames of one SlowFast clip: ``clip_len * target_fps`` (60); ValueError when not whole."""
    frames = clip_seconds(clip_len) * target_fps
    if frames.denominator != 1:
        raise ValueError(f"a {float(clip_len):g}-s clip is {float(frames):g} frames at {target_fps} fps; "
                         "SlowFast needs a whole number")
    return int(frames)


def slowfast_fast_indices(avg_frame_rate: Fraction | float, target_fps: int = SLOWFAST_FPS,
                          clip_len=CLIP_LEN) -> list[int]:
    """Offsets, inside a clip of ``clip_len * target_fps`` frames, of the 32 fast-pathway frames:
    ``linspace(0, clip_size - 1, 32)`` in float32, clamped to the clip, truncated
    (HERO preprocessing.py ``get_start_end_idx`` with clip_idx 0 of 1, then ``temporal_sampling``)."""
    clip_frames = slowfast_block(target_fps, clip_len)
    clip_size = slowfast_clip_size(avg_frame_rate, target_fps)
    start = 0.0  # delta * 0 / 1
    end = start + clip_size - 1
    index = torch.linspace(start, end, SLOWFAST_NUM_FRAMES)
    return torch.clamp(index, 0, clip_frames - 1).long().tolist()


def slowfast_slow_indices(n_fast: int = SLOWFAST_NUM_FRAMES, alpha: int = SLOWFAST_ALPHA) -> list[int]:
    """Positions among the fast frames that the slow pathway takes: ``linspace(0, T-1, T//alpha)``
    truncated (HERO video_loader.py ``pack_pathway_output``): 0, 4, 8, 13, 17, 22, 26, 31 for T=32."""
    return torch.linspace(0, n_fast - 1, n_fast // alpha).long().tolist()


def slowfast_n_clips(n_frames: int, stream_duration: float, target_fps: int = SLOWFAST_FPS,
                     clip_len=CLIP_LEN) -> int:
    """Clips after HERO's padding: frames padded to a multiple of ``target_fps`` by repeating the last,
    then to whole clips; kept ``ceil(d / clip_len)`` of them when the stream duration is known."""
    if n_frames <= 0:
        return 0
    length = clip_seconds(clip_len)
    seconds = math.ceil(n_frames / target_fps)
    n = math.ceil(seconds / length)
    if stream_duration > 0:
        n = min(n, math.ceil(stream_duration / float(length)))   # HERO: ceil(duration / clip_len), floats
    return n


def slowfast_frame_positions(n_frames: int, stream_duration: float, avg_frame_rate,
                             target_fps: int = SLOWFAST_FPS, clip_len=CLIP_LEN) -> list[list[int]]:
    """For each clip, the positions in the ``target_fps`` stream of its 32 fast frames; positions past
    the end are the padding, i.e. the last frame."""
    fast = slowfast_fast_indices(avg_frame_rate, target_fps, clip_len)
    block = slowfast_block(target_fps, clip_len)
    return [[min(c * block + off, n_frames - 1) for off in fast]
            for c in range(slowfast_n_clips(n_frames, stream_duration, target_fps, clip_len))]


# ---------------------------------------------------------------------------- 2-s windows
def n_windows(t_end: Fraction, clip_len=CLIP_LEN) -> int:
    """Windows ``[k*c, (k+1)*c)`` (c = clip_len, 2 s) that the video reaches into: ``ceil(t_end / c)``
    (at least 1)."""
    return max(1, math.ceil(Fraction(t_end) / clip_seconds(clip_len)))


def window_of(t: Fraction, clip_len=CLIP_LEN) -> int:
    """The window a frame time falls in (times before 0 belong to window 0)."""
    return max(0, math.floor(Fraction(t) / clip_seconds(clip_len)))


def n_audio_chunks(n_samples: int) -> int:
    """PANNs rows: ``floor(D / 2)`` whole 2-s chunks of the 32-kHz signal; the partial tail is dropped."""
    return n_samples // AUDIO_CHUNK
