"""The feature cache's path index: a file is hashed once per version, found again without a read."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

import mrhd.inference.video_features as video_features
from mrhd.inference.predict import Predictor
from mrhd.inference.video_features import FeatureCache
from tests.helpers.videos import write_video

SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_is_hashed_once_and_found_by_a_later_process(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(os.urandom(1 << 16))
    cache = FeatureCache(tmp_path / "cache")
    first = cache.content_hash(video)
    assert first == _sha256(video) and cache.hashed == 1
    assert cache.content_hash(video) == first and cache.hashed == 1
    later = FeatureCache(tmp_path / "cache")          # a new process: the index on disk
    assert later.content_hash(video) == first and later.hashed == 0
    # another path to the same bytes is another index entry (hashed once), same content hash
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(video, copy)
    assert later.content_hash(copy) == first and later.hashed == 1


@pytest.mark.parametrize("change", ["rewrite_same_size_mtime_restored", "replace", "append"])
def test_a_changed_file_is_hashed_again(tmp_path, change):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"a" * 4096)
    cache = FeatureCache(tmp_path / "cache")
    old = cache.content_hash(video)
    st = video.stat()
    if change == "rewrite_same_size_mtime_restored":   # cp -p onto the file: same inode, size, mtime
        with open(video, "r+b") as fh:
            fh.write(b"b" * 4096)
        os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert video.stat().st_ino == st.st_ino and video.stat().st_mtime_ns == st.st_mtime_ns
    elif change == "replace":
        new = tmp_path / "new.mp4"
        new.write_bytes(b"c" * 4096)
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(new, video)
    else:
        with open(video, "ab") as fh:
            fh.write(b"d")
    for fresh in (cache, FeatureCache(tmp_path / "cache")):
        digest = fresh.content_hash(video)
        assert digest == _sha256(video) != old


def test_damaged_or_unwritable_index_costs_only_a_rehash(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 1000)
    cache = FeatureCache(tmp_path / "cache")
    cache.content_hash(video)
    (index_file,) = (tmp_path / "cache" / "index").rglob("*.json")
    index_file.write_text("{not json")
    again = FeatureCache(tmp_path / "cache")
    assert again.content_hash(video) == _sha256(video) and again.hashed == 1
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    unwritable = FeatureCache(blocked)
    assert unwritable.content_hash(video) == _sha256(video)


@pytest.mark.slow
def test_warm_encode_video_neither_hashes_nor_decodes(tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", duration=8.0, fps=10, audio=False)
    predictor = Predictor.from_pretrained("random", encoder_size="tiny", cache=tmp_path / "cache",
                                          random_config=SMALL)
    hashed, decoded = [], []
    real_hash, real_decode = video_features.file_sha256, video_features.decode_streams
    monkeypatch.setattr(video_features, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(video_features, "decode_streams", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    progress = []
    first = predictor.encode_video(video, progress=lambda done, total: progress.append((done, total)))
    assert len(hashed) == 1 and len(decoded) == 1
    assert progress and progress[-1][0] == first.n_clips and progress[-1][1] == 4   # 8 s = 4 clips
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    second = predictor.encode_video(video)
    restarted = Predictor.from_pretrained("random", encoder_size="tiny", cache=tmp_path / "cache",
                                          random_config=SMALL)
    third = restarted.encode_video(video)
    assert len(hashed) == 1 and len(decoded) == 1
    assert (first.streams["clip"] == second.streams["clip"]).all() and (first.streams["clip"] == third.streams["clip"]).all()
