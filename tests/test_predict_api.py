"""`Predictor` end to end on generated mp4 files with random weights (tiny encoders)."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest

import mrhd.inference.video_features as video_features
from mrhd.errors import MrhdError
from mrhd.extract.synthetic import write_video
from mrhd.inference.plots import plot_predictions
from mrhd.inference.predict import Predictor, QueryTruncatedWarning
from mrhd.inference.windows import plan_windows
from tests.helpers.videos import write_broken

QUERIES = ["a white bar sweeps across the screen", "the colours change slowly"]
SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64}   # a small random grounding model


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cache = tmp_path_factory.mktemp("feature-cache")
    return Predictor.from_pretrained("random", encoder_size="tiny", cache=cache, random_config=SMALL)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "sample.mp4", duration=21.0, fps=10, audio=False)


def _check(pred, duration, n_clips):
    assert pred.windows, "no moments"
    for st, ed, _score in pred.windows:
        assert 0 <= st < ed <= duration + 1e-6
    scores = [w[2] for w in pred.windows]
    assert scores == sorted(scores, reverse=True)
    assert len(pred.saliency) == n_clips
    assert all(np.isfinite(pred.saliency))


def test_predict_end_to_end(predictor, video, tmp_path):
    feats = predictor.encode_video(video)
    assert feats.n_clips == int(feats.duration / 2 + 0.5)  # CLIP grid: ffmpeg fps=0.5 rounds half up
    preds = predictor.predict(feats, QUERIES)
    assert [p.query for p in preds] == QUERIES
    for p in preds:
        _check(p, feats.duration, feats.n_clips)
        obj = p.to_json()
        assert obj["vid"] == "sample" and obj["model"] == predictor.model_name and obj["weights"] == "random"
    assert preds[0].saliency != preds[1].saliency  # the query matters
    png = plot_predictions(tmp_path / "s.png", preds)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100


def test_stateless_same_result_after_other_video(predictor, video, tmp_path):
    first = predictor(video, QUERIES[:1])[0]
    other = write_video(tmp_path / "other.mp4", duration=9.0, fps=10, audio=False)
    predictor(other, ["something else"])
    again = predictor(video, QUERIES[:1])[0]
    assert first.to_json() == again.to_json()


def test_queries_do_not_interact(predictor, video):
    feats = predictor.encode_video(video)
    alone = predictor.predict(feats, QUERIES[1:])[0]
    together = predictor.predict(feats, QUERIES)[1]
    assert np.allclose(alone.saliency, together.saliency, atol=1e-3)


@pytest.mark.slow
def test_long_video_runs_through_windows(predictor, tmp_path):
    long_video = write_video(tmp_path / "long.mp4", duration=171.0, fps=2, width=64, height=48, audio=False)
    feats = predictor.encode_video(long_video)
    assert feats.n_clips > predictor.window
    pred = predictor.predict(feats, QUERIES[:1])[0]
    _check(pred, feats.duration, feats.n_clips)
    assert len(plan_windows(feats.n_clips, predictor.window)) > 1


def test_small_window_matches_merge_rules(predictor, video, monkeypatch):
    feats = predictor.encode_video(video)
    monkeypatch.setattr(predictor, "window", 4)
    pred = predictor.predict(feats, QUERIES[:1])[0]
    _check(pred, feats.duration, feats.n_clips)
    # NMS between windows: no two kept moments overlap with IoU >= 0.7
    from mrhd.inference.windows import moment_iou

    rows = pred.windows
    assert all(moment_iou(a, b) < 0.7 for i, a in enumerate(rows) for b in rows[i + 1:])


@pytest.mark.slow
def test_cache_reuse_does_not_decode(tmp_path, video, monkeypatch):
    pred = Predictor.from_pretrained("random", encoder_size="tiny", cache=tmp_path / "cache", random_config=SMALL)
    calls = []
    real = video_features.decode_streams
    monkeypatch.setattr(video_features, "decode_streams", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pred.encode_video(video)
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(video.read_bytes())
    second = pred.encode_video(copy)          # same content, other name: cache hit
    assert len(calls) == 1
    assert np.array_equal(first.streams["clip"], second.streams["clip"]) and second.vid == "renamed"
    uncached = Predictor.from_pretrained("random", encoder_size="tiny", cache=False, random_config=SMALL)
    uncached.encode_video(video)
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "text"])
def test_broken_video_is_one_line_error(predictor, tmp_path, kind, video):
    bad = write_broken(tmp_path / f"{kind}.mp4", kind, source=video)
    with pytest.raises(MrhdError) as info:
        predictor.encode_video(bad)
    assert "\n" not in str(info.value)


def test_missing_video(predictor, tmp_path):
    with pytest.raises(MrhdError, match="not found"):
        predictor.encode_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize("queries", [[""], ["   \t"], [], ["ok", " "]])
def test_empty_queries_are_refused(predictor, video, queries):
    with pytest.raises(MrhdError, match="query"):
        predictor.predict(predictor.encode_video(video), queries)


def test_over_long_query_is_truncated_with_warning(predictor, video):
    long_query = " ".join(["word"] * 120)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = predictor.predict(predictor.encode_video(video), [long_query])[0]
    assert any(issubclass(w.category, QueryTruncatedWarning) for w in caught)
    assert pred.windows and pred.query == long_query
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.encode_queries(["a short query"])
    assert not any(issubclass(w.category, QueryTruncatedWarning) for w in caught)


def test_unknown_model_and_weights():
    with pytest.raises(MrhdError, match="unknown model"):
        Predictor.from_pretrained("random", model="no_such_model", encoder_size="tiny", cache=False)
    with pytest.raises(MrhdError, match="unknown weights id"):
        Predictor.from_pretrained("no-such-checkpoint", cache=False)
    # registry entries are checked before any download
    with pytest.raises(MrhdError, match="not a grounding model"):
        Predictor.from_pretrained("clip-vit-b32-openai", cache=False)
    with pytest.raises(MrhdError, match="qd_detr checkpoint, not moment_detr"):
        Predictor.from_pretrained("qd_detr-clip-qvhighlights", model="moment_detr", cache=False)


@pytest.mark.parametrize("model", ["moment_detr", "qd_detr", "tr_detr", "cg_detr", "univtg"])
def test_every_grounding_model_predicts(predictor, video, model):
    from mrhd.inference.predict import RANDOM, load_model
    from mrhd.models.registry import get_spec

    try:
        get_spec(model)
    except MrhdError as err:
        pytest.skip(str(err))
    feats = predictor.encode_video(video)
    v_dim = sum(predictor.video_encoders[s].dim for s in predictor.profile.video) + 2
    t_dim = sum(predictor.text_encoders[s].dim for s in predictor.profile.text)
    loaded = load_model(RANDOM, model=model, profile="clip", video_dim=v_dim, text_dim=t_dim, random_config=SMALL)
    assert loaded.cfg.hidden_dim == 32
    other = Predictor(loaded, predictor.video_encoders, predictor.text_encoders, predictor.device, None)
    preds = other.predict(feats, QUERIES)
    assert [p.model for p in preds] == [model, model]
    for p in preds:
        _check(p, feats.duration, feats.n_clips)


def test_features_of_other_encoders_are_refused(predictor, video):
    import dataclasses

    feats = predictor.encode_video(video)
    foreign = dataclasses.replace(feats, encoders={"clip": "clip-vit-b32-openai"})
    with pytest.raises(MrhdError, match="other"):
        predictor.predict(foreign, QUERIES[:1])


@pytest.mark.parametrize("model, profile", [("sg_detr", "internvideo2"), ("mesm", "mesm"), ("cmdnet", "clip"),
                                            ("videolights", "videolights")])
def test_models_on_their_own_profiles_predict(tmp_path, model, profile):
    """Each profile's streams are extracted (InternVideo2's picked window frames, BLIP-2, PANNs audio)
    and its model predicts from them."""
    clip = write_video(tmp_path / "av.mp4", duration=9.0, fps=10, audio=True)
    pred = Predictor.from_pretrained("random", model=model, profile=profile, encoder_size="tiny", cache=False,
                                     random_config=SMALL)
    feats = pred.encode_video(clip)
    assert set(feats.streams) >= set(pred.profile.video + pred.profile.audio)
    for p in pred.predict(feats, QUERIES):
        assert p.model == model
        _check(p, feats.duration, feats.n_clips)


@pytest.mark.slow
def test_a_cached_run_builds_no_video_encoder(tmp_path, video, monkeypatch):
    """Warm predict: the features are in the cache, so no video encoder is built (building the
    released ones loads hundreds of MB); the text encoder still is, for the queries."""
    import mrhd.encoders.factory as factory

    built = []
    real = factory.build_encoder
    monkeypatch.setattr(factory, "build_encoder", lambda name, **k: built.append(name) or real(name, **k))
    cache = tmp_path / "cache"
    cold = Predictor.from_pretrained("random", encoder_size="tiny", cache=cache, random_config=SMALL)
    first = cold.predict(cold.encode_video(video), QUERIES[:1])
    assert "clip" in built
    built.clear()
    warm = Predictor.from_pretrained("random", encoder_size="tiny", cache=cache, random_config=SMALL)
    second = warm.predict(warm.encode_video(video), QUERIES[:1])
    assert built == ["clip_text"] and not warm.video_encoders["clip"].built
    assert first[0].to_json() == second[0].to_json()
    # without a cache the encoder is built when the video is encoded
    built.clear()
    uncached = Predictor.from_pretrained("random", encoder_size="tiny", cache=False, random_config=SMALL)
    uncached.encode_video(video)
    assert sorted(built) == ["clip", "clip_text"]


def _checkpoint(path, *, random_encoders: bool, size: str):
    """A moment_detr checkpoint as `mrhd train` writes it, trained on clip features of the given
    encoders (tiny CLIP: 32-dim video and text)."""
    import dataclasses

    from mrhd.features.profiles import load_profile
    from mrhd.models.registry import get_spec, make_config
    from mrhd.weights.checkpoint import save_checkpoint

    dims = (("clip", 32), ("clip_text", 32)) if size == "tiny" else ()
    prof = load_profile("clip").replace(random_encoders=random_encoders, encoder_size=size, stream_dims=dims)
    cfg = make_config("moment_detr", None, v_feat_dim=prof.video_dim, t_feat_dim=prof.text_dim, **SMALL)
    net = get_spec("moment_detr").build(cfg)
    return save_checkpoint(path, model="moment_detr", config=dataclasses.asdict(cfg), state_dict=net.state_dict(),
                           profile="clip", extra={"profile_spec": prof.to_dict()})


def test_a_checkpoint_trained_on_tiny_random_features_rebuilds_those_encoders(tmp_path, video):
    ckpt = _checkpoint(tmp_path / "best.ckpt", random_encoders=True, size="tiny")
    pred = Predictor.from_pretrained(str(ckpt), cache=False)
    assert pred.profile.random_encoders and pred.profile.encoder_size == "tiny"
    assert pred.text_encoders["clip_text"].dim == 32 and pred.video_encoders["clip"].dim == 32
    feats = pred.encode_video(video)
    _check(pred.predict(feats, QUERIES[:1])[0], feats.duration, feats.n_clips)
    same = Predictor.from_pretrained(str(ckpt), cache=False, encoder_size="tiny", random_encoders=True)
    assert same.profile == pred.profile


# (checkpoint's encoders, what is asked, words of the refusal)
ENCODER_MISMATCHES = [
    (("random", "tiny"), {"encoder_size": "full"}, "drop --encoder-size"),
    (("random", "tiny"), {"random_encoders": False}, "released encoders give other features"),
    (("released", "full"), {"encoder_size": "tiny"}, "--encoder-size tiny gives features it cannot read"),
    (("random", "full"), {"encoder_size": "tiny"}, "drop --encoder-size"),
]


@pytest.mark.parametrize("trained, asked, words", ENCODER_MISMATCHES,
                         ids=[f"{t[0]}-{t[1]}-{a}" for t, a, _ in ENCODER_MISMATCHES])
def test_encoders_that_would_give_other_features_are_refused(tmp_path, trained, asked, words):
    ckpt = _checkpoint(tmp_path / "best.ckpt", random_encoders=trained[0] == "random", size=trained[1])
    with pytest.raises(MrhdError) as info:
        Predictor.from_pretrained(str(ckpt), cache=False, **asked)
    assert words in str(info.value) and "\n" not in str(info.value)
