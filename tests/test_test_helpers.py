"""The media helpers other tests rely on must produce what they claim."""

import os
import subprocess
import sys
from fractions import Fraction

import av
import pytest

from mrhd.extract.synthetic import write_video
from tests.helpers.videos import write_audio_only, write_broken


@pytest.mark.parametrize("fps, duration", [(30, 3.0), (Fraction(30000, 1001), 2.5), (12, 4.0)])
def test_write_video_frames_size_and_audio(tmp_path, fps, duration):
    path = write_video(tmp_path / "v.mp4", duration=duration, fps=fps, width=96, height=64)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 96, 64)
        assert c.streams.audio[0].codec_context.name == "aac"
        n = sum(1 for _ in c.decode(video=0))
    assert n == round(duration * float(fps))


def test_write_video_without_audio(tmp_path):
    path = write_video(tmp_path / "v.mp4", duration=1.0, audio=False)
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1


def test_audio_only_has_no_video(tmp_path):
    with av.open(str(write_audio_only(tmp_path / "a.mp4"))) as c:
        assert len(c.streams.video) == 0 and len(c.streams.audio) == 1


@pytest.mark.parametrize("kind", ["empty", "garbage", "text", "truncated"])
def test_broken_files_do_not_decode_fully(tmp_path, kind):
    path = write_broken(tmp_path / f"{kind}.mp4", kind)
    with pytest.raises((av.error.FFmpegError, av.error.InvalidDataError, OSError, ValueError, IndexError)):
        with av.open(str(path)) as c:
            for _ in c.decode(video=0):
                pass
            raise ValueError("decoded to the end")  # truncated files may decode a prefix; fine either way


def test_missing_fixtures_fail_under_ci(tmp_path):
    """Golden-data tests skip where the folder is absent, and fail when CI=true."""
    test = tmp_path / "test_probe.py"
    test.write_text(
        "from tests.conftest import require_dir\n"
        "from pathlib import Path\n"
        "def test_x():\n    require_dir(Path('/nonexistent/fixtures'), 'golden fixtures')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test), "--rootdir", root]
    env = {**os.environ, "PYTHONPATH": root}
    env.pop("CI", None)
    skipped = subprocess.run(base, capture_output=True, text=True, env=env, cwd=root)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    failed = subprocess.run(base, capture_output=True, text=True, env={**env, "CI": "true"}, cwd=root)
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout


def test_cut_faststart_opens_and_announces_the_whole_duration(tmp_path):
    path = write_broken(tmp_path / "cut.mp4", "cut_faststart")
    with av.open(str(path)) as c:
        assert abs(c.duration / 1e6 - 12.0) < 0.5  # the index (moov) came first and survived
        times = []
        for packet in c.demux(video=0):
            try:
                times += [float(f.time) for f in packet.decode()]
            except av.error.FFmpegError:
                continue  # the packet the cut went through
    assert 2.0 < max(times) < 9.0  # but only about half of the frames are there
