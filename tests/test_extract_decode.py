"""Decoding on generated videos: geometry of the 224 crop, the streams' shapes and counts, audio
chunks, clear errors for bad files, and flat memory on a long video (generators, no whole video)."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from mrhd.extract import sampling
from mrhd.extract.audio import NoAudioError, iter_audio_chunks
from mrhd.extract.decode import DecodeError, VideoDecoder, iter_fps_frames, probe, to_rgb
from mrhd.extract.synthetic import write_video
from tests.helpers.videos import scaled_whole, write_audio_only, write_broken


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "landscape": write_video(d / "landscape.mp4", duration=5.0, fps=25, width=160, height=90),
        "portrait": write_video(d / "portrait.mp4", duration=2.6, fps=30, width=90, height=160, audio=False),
        "mono48k": write_video(d / "mono48k.mp4", duration=4.5, fps=10, width=64, height=48,
                               sample_rate=48000, audio_channels=1),
        "dir": d,
    }



def test_scale_and_centre_crop_cut_the_scaled_rgb_frame(media):
    """The 224 crop is cut from the scaled RGB frame at the exact column/row HERO computes (not
    rounded to the chroma grid, as a crop in YUV would be)."""
    with av.open(str(media["landscape"])) as c:
        frame = next(c.decode(video=0))
        # 160x90 -> short side 224: int(160 * 224 / 90) = 398 wide, crop x = int((398 - 224) / 2) = 87
        full = scaled_whole(frame, 398, 224)
        np.testing.assert_array_equal(to_rgb(frame), full[:, 87: 87 + 224])
        assert not np.array_equal(to_rgb(frame), full[:, 86: 86 + 224])
        assert to_rgb(frame, None).shape == (90, 160, 3)
    with av.open(str(media["portrait"])) as c:
        frame = next(c.decode(video=0))
        full = scaled_whole(frame, 224, 398)
        np.testing.assert_array_equal(to_rgb(frame), full[87: 87 + 224])


def test_streams_shapes_and_counts(media):
    dec = VideoDecoder(media["landscape"], ["clip_frame", "slowfast_clip", "window_frames"])
    out: dict[str, list] = {}
    for kind, index, array in dec:
        assert array.dtype == np.uint8
        out.setdefault(kind, []).append((index, array.shape))
    assert [i for i, _ in out["clip_frame"]] == [0, 1, 2]  # round(5 / 2) with the >= 1 s rule
    assert {s for _, s in out["clip_frame"]} == {(224, 224, 3)}
    assert [i for i, _ in out["slowfast_clip"]] == [0, 1, 2]  # ceil(5 / 2)
    assert {s for _, s in out["slowfast_clip"]} == {(32, 224, 224, 3)}
    # 25 fps: every native frame in [2k, 2k+2) -> 50, 50, 25
    assert [s[0] for _, s in out["window_frames"]] == [50, 50, 25]
    assert dec.t_end == Fraction(5)
    # the 30-fps positions of the last (padded) SlowFast clip end on the last frame
    assert dec.positions["slowfast_clip"][-1][-1] == 124
    # one pass serves several streams with the frames each would get alone
    alone = [a for _, _, a in VideoDecoder(media["landscape"], ["clip_frame"])]
    together = [a for k, _, a in VideoDecoder(media["landscape"], ["clip_frame", "window_frames"])
                if k == "clip_frame"]
    assert all(np.array_equal(x, y) for x, y in zip(alone, together))


def test_seeking_falls_back_to_decoding_in_order(media, monkeypatch):
    from mrhd.extract import decode

    want = [a for _, _, a in VideoDecoder(media["landscape"], ["clip_frame"], seek=False)]
    real = decode.PacketIndex.read

    def lying_index(path):  # an index whose timestamps match no decoded frame
        index = real(path)
        index.position_of = {}
        return index

    monkeypatch.setattr(decode.PacketIndex, "read", staticmethod(lying_index))
    got = [a for _, _, a in VideoDecoder(media["landscape"], ["clip_frame"])]
    assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want))


def test_short_video_rule_and_portrait(media):
    dec = VideoDecoder(media["portrait"], ["clip_frame", "slowfast_clip"])
    got = list(dec)
    assert dec.info.stream_duration == pytest.approx(2.6, abs=0.01)
    assert sum(k == "clip_frame" for k, _, _ in got) == 1  # 2.6 s >= 2.1: fps 0.5, one tick
    assert sum(k == "slowfast_clip" for k, _, _ in got) == 2
    ticks = list(iter_fps_frames(media["portrait"], 30))
    assert len(ticks) == 78 and [p for _, p, _ in ticks] == list(range(78))


def test_audio_chunks_are_mono_32k_and_floor_d_over_2(media):
    chunks = list(iter_audio_chunks(media["landscape"]))  # 5 s stereo 44.1 kHz
    assert [i for i, _ in chunks] == [0, 1]
    assert all(c.shape == (64000,) and c.dtype == np.float32 for _, c in chunks)
    # the tone's amplitude survives resampling (0.3 peak in the generator)
    assert 0.25 < np.abs(chunks[0][1]).max() < 0.35
    # pitch check (a wrong rate would shift it by 44.1/32): the generator's phase is
    # 2 pi 440 (1 + t/5) t, i.e. 440 (1 + 2t/5) Hz, about 449 Hz over the first 0.1 s
    x = chunks[0][1][:3200] * np.hanning(3200)
    freq = np.argmax(np.abs(np.fft.rfft(x, 32000))) * sampling.AUDIO_RATE / 32000
    assert 440 <= freq <= 460
    assert len(list(iter_audio_chunks(media["mono48k"]))) == 2


def test_audio_stream_equals_one_shot_resampling(media):
    """Streaming gives what librosa.load(sr=32000, mono=True) does on the whole file: channel mean,
    then soxr HQ, cut into whole 2-s chunks."""
    import soxr

    with av.open(str(media["landscape"])) as c:
        rate = c.streams.audio[0].rate
        planes = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    ref = soxr.resample(planes.mean(0).astype(np.float32), rate, sampling.AUDIO_RATE, quality="HQ")
    got = np.concatenate([x for _, x in iter_audio_chunks(media["landscape"])])
    n = (ref.shape[0] // sampling.AUDIO_CHUNK) * sampling.AUDIO_CHUNK
    assert got.shape == (n,)
    np.testing.assert_allclose(got, ref[:n], atol=1e-6)


def test_no_audio_is_reported_for_the_audio_stream_only(media):
    with pytest.raises(NoAudioError, match="no audio track"):
        list(iter_audio_chunks(media["portrait"]))
    assert len(list(VideoDecoder(media["portrait"], ["clip_frame"]))) == 1


@pytest.mark.parametrize("kind, message", [("empty", "empty file"), ("text", "not a readable video"),
                                           ("garbage", "not a readable video"),
                                           ("truncated", "not a readable video|no decodable")])
def test_bad_files_raise_one_line_errors(media, tmp_path, kind, message):
    bad = write_broken(tmp_path / f"{kind}.mp4", kind, source=media["landscape"])
    with pytest.raises(DecodeError, match=message) as err:
        list(VideoDecoder(bad, ["clip_frame"]))
    assert "\n" not in str(err.value) and str(bad) in str(err.value)


def test_missing_and_audio_only(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        probe(tmp_path / "nope.mp4")
    song = write_audio_only(tmp_path / "song.m4a", duration=4.2)
    with pytest.raises(DecodeError, match="no video stream"):
        probe(song)
    assert len(list(iter_audio_chunks(song))) == 2


@pytest.mark.slow
def test_long_video_streams_with_flat_memory(tmp_path):
    """60 s: the SlowFast stream alone would be 30 clips x 4.8 MB = 144 MB if held; the generators hold one
    clip (plus the decoder's own frames, which tracemalloc does not see)."""
    path = write_video(tmp_path / "long.mp4", duration=60, fps=5, width=32, height=24, audio=True,
                       sample_rate=8000)
    tracemalloc.start()
    try:
        n = {"slowfast_clip": 0, "window_frames": 0, "clip_frame": 0}
        for kind, _, _ in VideoDecoder(path, list(n)):
            n[kind] += 1
        n_audio = sum(1 for _ in iter_audio_chunks(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == {"slowfast_clip": 30, "window_frames": 30, "clip_frame": 30} and n_audio == 30
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# --------------------------------------------------------------- window_frames with a frame picker
def _count_conversions(monkeypatch):
    import mrhd.extract.decode as decode

    calls = []
    real = decode.to_rgb
    monkeypatch.setattr(decode, "to_rgb", lambda frame, size=224: calls.append(frame.pts) or real(frame, size))
    return calls


@pytest.mark.parametrize("name", ["landscape", "mono48k"])
def test_picked_windows_equal_the_picks_of_whole_windows(media, monkeypatch, name):
    """The decoder converts only the frames the encoder's picker takes, and they are exactly the frames
    the old whole-window path gave the encoder to pick from (8 of 50 per window at 25 fps, of 20 at 10)."""
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    picker = SegmentMiddles(8)
    whole = [a for _, _, a in VideoDecoder(media[name], ["window_frames"])]
    calls = _count_conversions(monkeypatch)
    dec = VideoDecoder(media[name], ["window_frames"], window_picker=picker)
    picked = [(i, a) for _, i, a in dec]
    assert [i for i, _ in picked] == list(range(len(whole))) and dec.restarts == 0
    for w, (_, p) in zip(whole, picked):
        assert p.shape == (8, 224, 224, 3)
        np.testing.assert_array_equal(p, w[picker(len(w))])
    assert len(calls) == sum(len(set(picker(len(w)))) for w in whole) < sum(len(w) for w in whole) / 2


def test_picking_shares_the_pass_with_other_streams(media):
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    kinds = ["clip_frame", "slowfast_clip", "window_frames"]
    old = list(VideoDecoder(media["landscape"], kinds))
    new = list(VideoDecoder(media["landscape"], kinds, window_picker=SegmentMiddles(8)))
    assert [(k, i) for k, i, _ in old] == [(k, i) for k, i, _ in new]
    for (kind, _, a), (_, _, b) in zip(old, new):
        np.testing.assert_array_equal(a[SegmentMiddles(8)(len(a))] if kind == "window_frames" else a, b)


def test_frames_unlike_the_packet_index_restart_with_whole_windows(media, monkeypatch):
    """A file whose decoded frames differ from its packet index (here: one timestamp shifted) must not
    get wrong picks: the pass starts over, and nothing is yielded twice."""
    import mrhd.extract.decode as decode
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    real = decode.PacketIndex.read

    def shifted(path):
        index = real(path)
        index.times[70] += Fraction(1, 1000)  # a frame of window 1 (25 fps)
        return index

    kinds = ["clip_frame", "window_frames"]
    whole = list(VideoDecoder(media["landscape"], kinds))
    monkeypatch.setattr(decode.PacketIndex, "read", staticmethod(shifted))
    dec = VideoDecoder(media["landscape"], kinds, window_picker=SegmentMiddles(8))
    got = list(dec)
    assert dec.restarts == 1
    assert [(k, i) for k, i, _ in got] == [(k, i) for k, i, _ in whole]
    for (kind, _, a), (_, _, b) in zip(whole, got):
        np.testing.assert_array_equal(a[SegmentMiddles(8)(len(a))] if kind == "window_frames" else a, b)


def _write_bframes_with_gap(path, fps=10, shown=((0, 30), (60, 90)), size=(64, 48)):
    """x264 'veryfast' (B-frames, as web videos have) whose frames jump from 3 s to 6 s: the window
    [4, 6) has no frame of its own."""
    from mrhd.extract.synthetic import frame_pattern

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "g": "40"}
        for first, stop in shown:
            for i in range(first, stop):
                frame = av.VideoFrame.from_ndarray(frame_pattern(i, *size), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_window_stream_alone_skips_unpicked_nonreference_frames(tmp_path, monkeypatch):
    """window_frames alone on a B-frame file: unpicked frames that nothing references are not decoded,
    and the windows (a gap window included) are still exactly the picks of the whole windows."""
    import mrhd.extract.decode as decode
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    path = _write_bframes_with_gap(tmp_path / "bframes.mp4")
    picker = SegmentMiddles(8)
    whole = [a for _, _, a in VideoDecoder(path, ["window_frames"])]
    assert [len(w) for w in whole] == [20, 10, 1, 20, 10]  # [4, 6): the frame shown at 4 s (t = 2.9)
    decoded = []
    real = decode.VideoDecoder._frames

    def counting(container, stream, needed, **kw):
        for frame in real(container, stream, needed, **kw):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode.VideoDecoder, "_frames", staticmethod(counting))
    dec = VideoDecoder(path, ["window_frames"], window_picker=picker)
    picked = [a for _, _, a in dec]
    assert dec.restarts == 0 and len(picked) == len(whole)
    for w, p in zip(whole, picked):
        np.testing.assert_array_equal(p, w[picker(len(w))])
    assert sorted(set(decoded)) == decoded and len(decoded) < 60  # some of the 60 frames never decoded
    assert dec.t_end == Fraction(9)


def test_a_picked_frame_that_does_not_come_out_falls_back_to_the_checked_pass(tmp_path, monkeypatch):
    import mrhd.extract.decode as decode
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    path = _write_bframes_with_gap(tmp_path / "bframes.mp4")
    picker = SegmentMiddles(8)
    whole = [a for _, _, a in VideoDecoder(path, ["window_frames"])]
    real = decode.VideoDecoder._frames
    lost = decode.PacketIndex.read(path).pts[35]  # picked in window [6, 8)

    def losing(container, stream, needed, **kw):
        return (frame for frame in real(container, stream, needed, **kw) if frame.pts != lost)

    monkeypatch.setattr(decode.VideoDecoder, "_frames", staticmethod(losing))
    dec = VideoDecoder(path, ["window_frames"], window_picker=picker)
    got = [(i, a) for _, i, a in dec]
    assert dec.restarts == 1 and [i for i, _ in got] == list(range(len(whole)))
    for w, (_, p) in zip(whole, got):
        np.testing.assert_array_equal(p, w[picker(len(w))])


@pytest.mark.parametrize("kind", ["empty", "text", "garbage", "truncated"])
def test_bad_files_fail_alike_with_a_picker(media, tmp_path, kind):
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    bad = write_broken(tmp_path / f"{kind}.mp4", kind, source=media["landscape"])
    outcomes = []
    for picker in (None, SegmentMiddles(8)):
        try:
            outcomes.append([a for _, _, a in VideoDecoder(bad, ["window_frames"], window_picker=picker)])
        except DecodeError as err:
            outcomes.append(str(err))
    whole, picked = outcomes
    if isinstance(whole, str):
        assert picked == whole
    else:  # a truncated file may still decode its first frames: the picks of the same windows
        assert len(picked) == len(whole)
        for w, p in zip(whole, picked):
            np.testing.assert_array_equal(p, w[SegmentMiddles(8)(len(w))])
