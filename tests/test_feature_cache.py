"""predict's feature cache (``mrhd.inference.video_features``): entries are checked by content on
every read, a video cut short is said so on every use, and the messages name things right."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import mrhd.inference.video_features as video_features
from mrhd.errors import MrhdError
from mrhd.extract.synthetic import write_video
from mrhd.inference.video_features import FeatureCache, extract_video_features
from tests.helpers.videos import write_broken


@pytest.fixture(scope="module")
def encoders():
    from mrhd.encoders.factory import build_encoder

    return {"clip": build_encoder("clip", random_weights=True, size="tiny")}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "v.mp4", duration=8.0, fps=10, width=64, height=48,
                       audio=False)


def _decodes(monkeypatch) -> list:
    calls = []
    real = video_features.decode_streams
    monkeypatch.setattr(video_features, "decode_streams", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _entry(cache: FeatureCache, kind: str):
    [path] = list(cache.root.rglob(f"clip-*.{kind}"))
    return path


@pytest.mark.parametrize("tamper", ["array", "duration"])
def test_a_changed_cache_entry_is_recomputed_with_a_warning(tmp_path, encoders, video, monkeypatch, tamper):
    cache = FeatureCache(tmp_path / "cache")
    calls = _decodes(monkeypatch)
    first = extract_video_features(video, encoders, cache=cache)
    if tamper == "array":  # same shape, other numbers: a structure check cannot see it
        arr = np.load(_entry(cache, "npy"))
        np.save(_entry(cache, "npy"), arr[::-1].copy())
    else:
        meta = json.loads(_entry(cache, "json").read_text())
        meta["duration"] = 80.0
        _entry(cache, "json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="do not match their checksum"):
        again = extract_video_features(video, encoders, cache=cache)
    assert len(calls) == 2  # decoded again
    np.testing.assert_array_equal(again.streams["clip"], first.streams["clip"])
    assert again.duration == first.duration == 8.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry is whole again: a silent hit
        extract_video_features(video, encoders, cache=cache)
    assert len(calls) == 2


def test_an_entry_without_a_checksum_is_recomputed_quietly(tmp_path, encoders, video, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    calls = _decodes(monkeypatch)
    extract_video_features(video, encoders, cache=cache)
    meta = json.loads(_entry(cache, "json").read_text())
    del meta["sha256"]  # as versions before the checksum wrote it
    _entry(cache, "json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract_video_features(video, encoders, cache=cache)
    assert len(calls) == 2 and "sha256" in json.loads(_entry(cache, "json").read_text())


def test_a_video_cut_short_uses_what_decoded_and_says_so_every_time(tmp_path, encoders):
    cut = write_broken(tmp_path / "cut.mp4", "cut_faststart")  # 12 s announced, about 6 s there
    cache = FeatureCache(tmp_path / "cache")
    for _ in range(2):  # decoded, then from the cache
        with pytest.warns(UserWarning, match="header says 12.0 s") as said:
            feats = extract_video_features(cut, encoders, cache=cache)
        assert len([w for w in said if "header says" in str(w.message)]) == 1
        assert 2.0 < feats.duration < 9.0 and feats.n_clips == round(feats.duration / 2)


def test_no_clips_message_names_the_stream(tmp_path, encoders, video, monkeypatch):
    monkeypatch.setattr(video_features, "decode_streams",
                        lambda path, encs, batch_size=32, progress=None: ({s: np.zeros((0, 32), np.float32) for s in encs}, 8.0))
    with pytest.raises(MrhdError, match="gave no clips for the clip stream") as info:
        extract_video_features(video, encoders, cache=None)
    assert "clip clips" not in str(info.value)
