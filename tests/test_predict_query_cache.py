"""The predictor's query-feature cache: a sentence seen before skips the text tower and gets exactly
the features the tower gives (to 1e-5: a batch of other sentences blocks the matmuls otherwise); only new sentences reach the tower; the least recently used go first."""

from __future__ import annotations

import numpy as np
import pytest

from mrhd.errors import MrhdError
from mrhd.extract.synthetic import write_video
from mrhd.inference.predict import Predictor, QueryFeatureCache

SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64}


def _predictor(cache_dir, size):
    return Predictor.from_pretrained("random", encoder_size="tiny", cache=cache_dir, random_config=SMALL,
                                     query_cache_size=size)


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    cache = tmp_path_factory.mktemp("feature-cache")
    return _predictor(cache, 2), _predictor(cache, 0)


def _count_tower_texts(predictor, monkeypatch) -> list[str]:
    """The texts that reach the text tower from now on."""
    seen: list[str] = []
    enc = predictor.text_encoders["clip_text"]
    original = enc.encode_texts

    def counting(texts):
        seen.extend(texts)
        return original(texts)

    monkeypatch.setattr(enc, "encode_texts", counting)
    return seen


def test_a_hit_skips_the_tower_and_equals_its_features(predictors, monkeypatch):
    cached, uncached = predictors
    tower = _count_tower_texts(cached, monkeypatch)
    first = cached.encode_queries(["a dog runs", "a cat  sleeps", "a dog runs"])
    assert tower == ["a dog runs", "a cat sleeps"]            # once each, whitespace collapsed
    again = cached.encode_queries(["a cat sleeps", "a dog runs"])
    assert tower == ["a dog runs", "a cat sleeps"]            # hits: the tower did not run
    assert again[0] is first[1] and again[1] is first[0]
    fresh = uncached.encode_queries(["a cat sleeps", "a dog runs"])
    for hit, computed in zip(again, fresh):   # other batches block the matmuls otherwise: ~1e-7 apart
        assert hit.dtype == np.float32 and hit.shape == computed.shape
        np.testing.assert_allclose(hit, computed, rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        again[0][0, 0] = 1.0                                    # kept read-only: no caller can change a hit


def test_least_recently_used_is_dropped(predictors, monkeypatch):
    cached, _ = predictors
    cached.encode_queries(["one", "two"])
    cached.encode_queries(["one"])                              # "two" is now the least recently used
    tower = _count_tower_texts(cached, monkeypatch)
    cached.encode_queries(["three"])                            # size 2: "two" goes
    assert len(cached.query_features) == 2
    cached.encode_queries(["one", "two"])
    assert tower == ["three", "two"]


def test_predictions_with_and_without_the_cache_are_equal(predictors, tmp_path):
    cached, uncached = predictors
    video = write_video(tmp_path / "v.mp4", duration=9.0, fps=10, audio=False)
    feats = cached.encode_video(video)
    queries = ["a white bar sweeps", "the colours change"]
    cached.predict(feats, queries)                              # fills the cache
    hits = [p.to_json() for p in cached.predict(feats, queries)]
    assert hits == [p.to_json() for p in uncached.predict(feats, queries)]


def test_a_negative_size_is_refused():
    with pytest.raises(MrhdError, match="query cache size"):
        QueryFeatureCache(-1)
