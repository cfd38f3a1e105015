"""Frame choice: the fps-filter rule, HERO's short-video rule and the SlowFast clip layout, on numbers
and against the ffmpeg CLI's real choices recorded in fixtures/sampling (every record of the JSON;
the barcode of each delivered frame is decoded, so what is checked is the frame actually delivered)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mrhd.extract import sampling
from mrhd.extract.decode import VideoDecoder, iter_fps_frames, scaled_size
from tests.conftest import _fixtures_dir, require_dir

SELECTION = "sampling/ffmpeg_selection.json"


# ----------------------------------------------------------------------------- rules on numbers
@pytest.mark.parametrize("x, want", [(Fraction(1, 2), 1), (Fraction(3, 2), 2), (Fraction(-1, 2), -1),
                                     (Fraction(49, 100), 0), (Fraction(7, 2), 4), (Fraction(10), 10)])
def test_round_half_away(x, want):
    assert sampling.round_half_away(x) == want


@pytest.mark.parametrize("d, rate", [(0.9, 2), (1.5, 2), (1.999, 2), (2.0, 1), (2.05, 1), (2.1, Fraction(1, 2)),
                                     (3.0, Fraction(1, 2)), (-1, Fraction(1, 2)), (0, Fraction(1, 2))])
def test_clip_rate_short_video_rule(d, rate):
    assert sampling.clip_rate(d) == rate


def test_ffprobe_duration_is_rounded_and_unknown_is_minus_one():
    assert sampling.ffprobe_duration(61050, Fraction(1, 30000), 61) == 2.035
    assert sampling.ffprobe_duration(None, Fraction(1, 30000), 61) == -1
    assert sampling.ffprobe_duration(61050, Fraction(1, 30000), 0) == -1


def test_fps_filter_rule():
    # 60 -> 30: a frame exactly on a half-tick goes to the next tick, so the even frames win
    times = [Fraction(i, 60) for i in range(12)]
    assert sampling.fps_select(times, Fraction(12, 60), 30) == [0, 2, 4, 6, 8, 10]
    # 25 -> 30 repeats frames
    times = [Fraction(i, 25) for i in range(10)]
    assert sampling.fps_select(times, Fraction(10, 25), 30) == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    # fps=0.5 at 30 fps: the last frame before 2k+1 s; a trailing clip needs >= 1 s to get a frame
    times = [Fraction(i, 30) for i in range(219)]
    assert sampling.fps_select(times, Fraction(219, 30), Fraction(1, 2)) == [29, 89, 149, 209]
    assert sampling.fps_select(times[:27], Fraction(27, 30), Fraction(1, 2)) == []
    # a video that starts late: ticks before its first frame show the first frame
    times = [Fraction(1, 2) + Fraction(i, 30) for i in range(6)]
    assert sampling.fps_select(times, Fraction(1, 2) + Fraction(6, 30), 30)[:17] == [0] * 16 + [1]


def _streamed(times, t_end, rate) -> list[int]:
    """The frame-by-frame filter, for checking fps_select's bisection on sorted times."""
    resampler = sampling.FpsResampler(rate)
    picks = [pos for i, t in enumerate(times) for _, pos in resampler.feed(t, i)]
    return picks + [pos for _, pos in resampler.finish(t_end)]


@pytest.mark.parametrize("seed", range(40))
def test_fps_select_on_sorted_times_equals_the_streaming_filter(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    rate = [Fraction(1, 2), Fraction(2), Fraction(30), Fraction(30000, 1001), 1][seed % 5]
    if seed % 3 == 0:  # variable frame rate with repeated gaps and a late start
        steps = rng.choice([Fraction(1, 30), Fraction(1, 60), Fraction(1, 2), Fraction(0)], size=n)
        times = [Fraction(int(rng.integers(0, 5)), 7) + sum(steps[:i], Fraction(0)) for i in range(n)]
    else:
        fps = Fraction(int(rng.integers(5, 61)) * 1000, int(rng.choice([1000, 1001])))
        times = [i / fps for i in range(n)]
    t_end = times[-1] + Fraction(int(rng.integers(0, 3)), 30)
    assert sampling.fps_select(times, t_end, rate) == _streamed(times, t_end, rate)


def test_fps_select_on_unsorted_times_keeps_the_streaming_rule():
    times = [Fraction(0), Fraction(2), Fraction(1), Fraction(3)]
    assert sampling.fps_select(times, Fraction(4), 1) == _streamed(times, Fraction(4), 1)


def test_slowfast_indices_of_features_md():
    fast30 = sampling.slowfast_fast_indices(30)
    assert fast30 == list(range(0, 60, 2))[:30] + [59, 59]
    assert len(fast30) == 32
    assert sampling.slowfast_slow_indices() == [0, 4, 8, 13, 17, 22, 26, 31]
    # clip_size = 64 * floor(avg_frame_rate) / 30, computed in float32 like torch.linspace
    fast25 = sampling.slowfast_fast_indices(25)
    assert fast25[0] == 0 and max(fast25) == math.floor(64 * 25 / 30 - 1) and len(fast25) == 32
    assert sampling.slowfast_fast_indices(Fraction(30000, 1001)) == sampling.slowfast_fast_indices(29)
    fast60 = sampling.slowfast_fast_indices(60)
    assert fast60[-1] == 59 and fast60.count(59) > 10  # clamped: the HERO quirk for 60-fps sources


@pytest.mark.parametrize("n_frames, d, want", [(60, 2.0, 1), (61, 2.035, 2), (219, 7.3, 4), (90, 3.0, 2),
                                               (150, 5.0, 3), (165, 5.0, 3), (30, 0.9, 1), (0, 1.0, 0),
                                               (1830, 61.0, 31), (1830, -1, 31), (4499, 149.983, 75)])
def test_slowfast_clip_count(n_frames, d, want):
    assert sampling.slowfast_n_clips(n_frames, d) == want


def test_slowfast_positions_pad_with_the_last_frame():
    pos = sampling.slowfast_frame_positions(70, 2.4, 30)
    assert len(pos) == 2
    assert pos[0] == sampling.slowfast_fast_indices(30)
    assert pos[1][:5] == [60, 62, 64, 66, 68] and set(pos[1][5:]) == {69}


def test_windows():
    assert sampling.n_windows(Fraction(7)) == 4 and sampling.n_windows(Fraction(6)) == 3
    assert sampling.window_of(Fraction(1999, 1000)) == 0 and sampling.window_of(Fraction(2)) == 1
    assert sampling.n_audio_chunks(64000 * 3 + 63999) == 3


def test_scaled_size():
    assert scaled_size(96, 64) == (336, 224)
    assert scaled_size(640, 360) == (398, 224)
    assert scaled_size(360, 640) == (224, 398)


# ----------------------------------------------------------------------------- fixtures
def _frame_index(rgb: np.ndarray) -> int | None:
    """The barcode of fixtures/sampling/README.md ("Reading a frame's index")."""
    m = rgb.reshape(4, 16, 6, 16, 3)[:, 4:12, :, 4:12].mean((1, 3, 4)).ravel()
    bits = (m > 127.5).astype(int)
    idx = int("".join(map(str, bits[:16])), 2)
    chk = int("".join(map(str, bits[16:])), 2)
    return idx if chk == ((idx * 2654435761) >> 24) & 0xFF else None


def _bits(index: int) -> np.ndarray:
    chk = ((index * 2654435761) >> 24) & 0xFF
    return np.array([(index >> (15 - i)) & 1 for i in range(16)] + [(chk >> (7 - i)) & 1 for i in range(8)])


def _records() -> list:
    path = _fixtures_dir() / SELECTION
    if not path.exists():
        return [pytest.param(None, id="missing-sampling")]
    return [pytest.param(rec, id=rec["name"]) for rec in json.loads(path.read_text())["files"]]


def _video(rec) -> Path:
    if rec is None:
        require_dir(_fixtures_dir() / SELECTION, "fixtures/sampling/ffmpeg_selection.json")
    return _fixtures_dir() / "sampling" / rec["file"]


@pytest.mark.fidelity
@pytest.mark.parametrize("seek", [True, False], ids=["seek", "sequential"])
@pytest.mark.parametrize("rec", _records())
def test_clip_stream_equals_ffmpeg(rec, seek):
    path = _video(rec)
    decoder = VideoDecoder(path, ["clip_frame"], size=None, seek=seek)
    delivered = [_frame_index(rgb) for _, _, rgb in decoder]
    assert delivered == rec["clip_stream"]["indices"]
    # the positions the sampler chose name the same frames (through the decoder's presentation order)
    shown = rec["decoded"]["indices"]
    assert [shown[p] for p in decoder.positions["clip_frame"]] == rec["clip_stream"]["indices"]


@pytest.mark.fidelity
@pytest.mark.parametrize("rec", _records())
def test_fps_streams_equal_ffmpeg(rec):
    path = _video(rec)
    for key in ("fps_0.5", "fps_30"):
        rate = Fraction(key.split("_")[1])
        got = [(_frame_index(rgb), rec["decoded"]["indices"][pos])
               for _, pos, rgb in iter_fps_frames(path, rate, size=None)]
        assert [g[0] for g in got] == rec[key], key
        assert [g[1] for g in got] == rec[key], key


@pytest.mark.fidelity
@pytest.mark.parametrize("rec", _records())
def test_slowfast_stream_follows_the_30fps_choice(rec):
    path = _video(rec)
    fps30 = rec["fps_30"]
    probe = rec["ffprobe"]["stream"]
    duration = float(probe["duration"]) if probe.get("nb_frames") and probe.get("duration") else -1
    fast = sampling.slowfast_fast_indices(Fraction(probe["avg_frame_rate"]))
    n_clips = sampling.slowfast_n_clips(len(fps30), duration)
    block = sampling.CLIP_LEN * sampling.SLOWFAST_FPS  # 60 frames of the 30-fps stream per clip
    want = [[fps30[min(c * block + off, len(fps30) - 1)] for off in fast] for c in range(n_clips)]
    got = [[_frame_index(f) for f in clip] for _, _, clip in VideoDecoder(path, ["slowfast_clip"], size=None)]
    assert got == want


@pytest.mark.fidelity
@pytest.mark.parametrize("rec", _records())
def test_scaled_and_cropped_frames_keep_the_choice(rec):
    """At 224: 96x64 -> 336x224, crop x=56 keeps block columns 1-4; their bits must match."""
    path = _video(rec)
    width, height = rec["ffprobe"]["stream"]["width"], rec["ffprobe"]["stream"]["height"]
    sw, sh = scaled_size(width, height)
    x0, y0 = int((sw - 224) / 2), int((sh - 224) / 2)
    block = 16 * sh // height
    frames = [rgb for _, _, rgb in VideoDecoder(path, ["clip_frame"])]
    assert len(frames) == len(rec["clip_stream"]["indices"])
    for rgb, index in zip(frames, rec["clip_stream"]["indices"]):
        assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
        want = _bits(index)
        for b in range(24):
            r, c = divmod(b, 6)
            cx, cy = c * block + block // 2 - x0, r * block + block // 2 - y0
            if not (block // 4 <= cx < 224 - block // 4 and 0 <= cy < 224):
                continue
            patch = rgb[cy - 4: cy + 4, cx - 4: cx + 4].mean()
            assert int(patch > 127.5) == want[b], (index, b)


@pytest.mark.fidelity
@pytest.mark.parametrize("rec", _records())
def test_picked_windows_are_the_picks_of_whole_windows(rec):
    """window_frames with InternVideo2's picker, alone (unpicked non-reference frames skipped) and beside
    clip_frame (picks planned from the packet index, every frame checked), deliver the picks of the
    whole windows that the recorded frame timestamps (``decoded``) give: on every fixture file (VFR,
    B-frames, edit lists, odd starts). Trailing windows past the last frame repeat it."""
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    path = _video(rec)
    picker = SegmentMiddles(8)
    tb = Fraction(rec["decoded"]["time_base"])
    start = Fraction(rec["pyav_probe"]["container_start_time_us"] or 0, 1_000_000)
    whole: dict[int, list[int]] = {}
    for pts, index in zip(rec["decoded"]["pts"], rec["decoded"]["indices"]):
        whole.setdefault(sampling.window_of(pts * tb - start), []).append(index)
    for kinds in (["window_frames"], ["clip_frame", "window_frames"]):
        decoder = VideoDecoder(path, kinds, size=None, window_picker=picker)
        got = [[_frame_index(f) for f in w] for kind, _, w in decoder if kind == "window_frames"]
        shown, want = None, []
        for k in range(sampling.n_windows(decoder.t_end)):
            window = whole.get(k) or [shown]  # a gap: the frame shown at that time
            shown = window[-1]
            want.append([window[i] for i in picker(len(window))])
        assert got == want, kinds
        assert decoder.restarts == 0, kinds  # the packet index agrees with the decoded frames
