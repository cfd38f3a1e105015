"""`mrhd extract --clip-len`: HERO's frame rules at any clip length (CLIP fps = 1/clip_len, SlowFast
clips of clip_len * 30 frames, windows of clip_len seconds), the store's clip_len, the refusals."""

from __future__ import annotations

from fractions import Fraction

import pytest

from mrhd.cli import main
from mrhd.extract import sampling
from mrhd.extract.decode import VideoDecoder
from mrhd.extract.synthetic import write_video
from mrhd.features.store import FeatureStore, store_path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "v.mp4", duration=5.0, fps=25, width=64, height=48,
                       audio=False)


def test_clip_rule_at_one_second(video):
    # ffmpeg fps=1: tick k shows the last frame before (k + 1/2) s; at 25 fps that is frame 25k + 12
    decoder = VideoDecoder(video, ["clip_frame"], size=32, clip_len=1)
    n = sum(1 for _ in decoder)
    assert n == 5 and decoder.positions["clip_frame"] == [12, 37, 62, 87, 112]
    # the official 2-s grid is unchanged: fps 0.5, the last frame before 2k + 1 s, frame 50k + 24
    two = VideoDecoder(video, ["clip_frame"], size=32)
    assert sum(1 for _ in two) == 3 and two.positions["clip_frame"][:2] == [24, 74]


def test_short_video_rule_follows_the_clip_length():
    # HERO: fps = 1/clip_len unless 0 < d < 1/fps + 0.1, then 2 / max(int(d), 1)
    assert sampling.clip_rate(10.0, 1) == 1 and sampling.clip_rate(1.05, 1) == 2
    assert sampling.clip_rate(10.0) == Fraction(1, 2) and sampling.clip_rate(2.05) == 1
    assert sampling.clip_rate(1.05, 2) == 2


def test_slowfast_clips_at_one_second(video):
    # 30 frames per clip; the 32 fast frames still span 64 * 25 / 30 source frames (HERO's clip_size),
    # clamped to the clip: linspace(0, 52.33, 32) clamped to [0, 29]
    fast = sampling.slowfast_fast_indices(25, clip_len=1)
    assert len(fast) == 32 and max(fast) == 29 and fast[:3] == [0, 1, 3]
    assert sampling.slowfast_block(clip_len=1) == 30 and sampling.slowfast_block() == 60
    decoder = VideoDecoder(video, ["slowfast_clip"], size=32, clip_len=1)
    clips = [x for _, _, x in decoder]
    assert len(clips) == 5 and clips[0].shape[0] == 32             # ceil(5 s / 1 s) clips
    assert decoder.positions["slowfast_clip"][1][0] == 25           # clip 1 starts 1 s in: source frame 25
    with pytest.raises(ValueError, match="whole number"):
        sampling.slowfast_block(clip_len=1 / 7)


def test_windows_of_one_second(video):
    windows = [x for _, _, x in VideoDecoder(video, ["window_frames"], size=32, clip_len=1)]
    assert [len(w) for w in windows] == [25] * 5
    assert sampling.window_of(Fraction(3, 2), 1) == 1 and sampling.n_windows(Fraction(5), Fraction(1, 6)) == 30


def test_extract_clip_len_one(video, tmp_path, capsys):
    out = tmp_path / "feats"
    rc = main(["extract", str(video), "--encoders", "clip,slowfast", "--out", str(out), "--random-weights",
               "--encoder-size", "tiny", "--num-workers", "0", "--clip-len", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    clip = FeatureStore(store_path(out, "clip"))
    slowfast = FeatureStore(store_path(out, "slowfast"))
    assert clip.info["clip_len"] == 1.0 and slowfast.info["clip_len"] == 1.0
    assert clip.info["recipe"]["fps"] == 1.0 and slowfast.info["recipe"]["frames_per_clip"] == 30
    assert clip.read("v").shape[0] == 5 and slowfast.read("v").shape[0] == 5
    # a re-run at 2 s into the same folder is refused: the store says 1-s clips
    rc = main(["extract", str(video), "--encoders", "clip", "--out", str(out), "--random-weights",
               "--encoder-size", "tiny", "--num-workers", "0", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "clip_len" in err and len(err.splitlines()) == 1


def test_official_grid_keeps_the_recipe(video, tmp_path):
    assert main(["extract", str(video), "--encoders", "clip", "--out", str(tmp_path), "--random-weights",
                 "--encoder-size", "tiny", "--num-workers", "0", "--no-progress"]) == 0
    info = FeatureStore(store_path(tmp_path, "clip")).info
    assert info["clip_len"] == 2.0 and info["recipe"]["fps"] == 0.5 and info["recipe"]["clip_len"] == 2.0


@pytest.mark.parametrize("argv, match", [
    (["--clip-len", "0"], "positive"),
    (["--clip-len", "0.01", "--encoders", "slowfast"], "whole number"),
    (["--clip-len", "1", "--encoders", "clip,pann"], "pann reads 2-s audio chunks only"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "2", "--ray"], "--ray-cpus-per-actor"),
])
def test_bad_option_is_one_line_and_writes_nothing(video, tmp_path, capsys, argv, match):
    args = ["extract", str(video), "--out", str(tmp_path / "o"), "--random-weights", "--encoder-size", "tiny",
            "--num-workers", "0", "--no-progress"]
    if "--encoders" not in argv:
        args += ["--encoders", "clip,slowfast"]
    rc = main(args + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
