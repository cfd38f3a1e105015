"""A portrait phone video (display matrix) through `mrhd extract` and `mrhd predict`: its features are
those of the same video written upright; features made by the old pixel path are never mixed in
(stores refused, cache entries not reused); the precision modes of CLIP and SlowFast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrhd.cli import main
from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError
from mrhd.extract.synthetic import frame_pattern
from mrhd.features.store import FeatureStore, store_path
from tests.test_extract_pixels import write_lossless


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    """``upright``: a portrait video (96x160); ``phone``: the same pictures coded sideways (160x96)
    with a display matrix that turns them upright; ``sideways``: the coded pictures, no matrix."""
    folder = tmp_path_factory.mktemp("phone")
    shown = [frame_pattern(i, 96, 160) for i in range(60)]   # 6 s at 10 fps
    coded = [np.ascontiguousarray(np.rot90(f, -1)) for f in shown]  # a 90-degree turn undoes it
    return {
        "upright": write_lossless(folder / "upright.mp4", shown),
        "phone": write_lossless(folder / "phone.mp4", coded, rotation=90),
        "sideways": write_lossless(folder / "sideways.mp4", coded),
    }


def _extract(paths, out, *extra) -> int:
    return main(["extract", *map(str, paths), "--encoders", "clip,slowfast", "--out", str(out),
                 "--random-weights", "--encoder-size", "tiny", "--num-workers", "0", "--no-progress", *extra])


@pytest.mark.slow
def test_phone_video_extracts_upright(phone, tmp_path):
    assert _extract(phone.values(), tmp_path / "feats") == 0
    for stream in ("clip", "slowfast"):
        store = FeatureStore(store_path(tmp_path / "feats", stream), "r")
        upright, turned, sideways = (store.read(v) for v in ("upright", "phone", "sideways"))
        assert upright.shape == turned.shape and len(upright) == 3
        np.testing.assert_allclose(turned, upright, rtol=1e-5, atol=1e-5, err_msg=stream)
        assert not np.allclose(sideways, upright, rtol=1e-3, atol=1e-3), stream   # the test can tell
        assert store.info["recipe"]["precision"].startswith("fp")


@pytest.fixture()
def tiny_encoders(monkeypatch):
    """The predict CLI unchanged, with small random encoders (speed)."""
    from mrhd.inference import predict as predict_mod

    real = predict_mod.Predictor.from_pretrained
    monkeypatch.setattr(predict_mod.Predictor, "from_pretrained",
                        classmethod(lambda cls, *a, **k: real(*a, **{**k, "encoder_size": "tiny"})))


@pytest.mark.slow
def test_phone_video_predicts_upright(phone, tmp_path, monkeypatch, tiny_encoders):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    preds = {}
    for name in ("upright", "phone"):
        out = tmp_path / f"{name}.json"
        assert main(["predict", str(phone[name]), "a white bar", "--weights", "random", "--out", str(out)]) == 0
        preds[name] = json.loads(out.read_text())[0]
    assert preds["phone"]["duration"] == pytest.approx(preds["upright"]["duration"])
    np.testing.assert_allclose(preds["phone"]["pred_saliency_scores"], preds["upright"]["pred_saliency_scores"],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.array(preds["phone"]["pred_relevant_windows"]),
                               np.array(preds["upright"]["pred_relevant_windows"]), rtol=1e-4, atol=1e-4)


def _old_recipe(encoder) -> dict:
    """The recipe as it was before the CLI pixel path (no pixel keys, no precision)."""
    return {k: v for k, v in encoder.info.recipe.items() if k not in ("pixels", "pixels_version", "precision")}


def test_a_store_of_the_old_pixels_is_refused(phone, tmp_path, capsys):
    from mrhd.encoders.base import EncoderInfo

    enc = build_encoder("clip", random_weights=True, size="tiny")
    old = EncoderInfo(enc.info.stream, enc.info.dim, enc.info.weights, _old_recipe(enc))
    with FeatureStore(store_path(tmp_path, "clip"), "a", old) as store:
        store.write("sideways", np.zeros((3, enc.dim), np.float32), 6.0)
    assert _extract([phone["phone"]], tmp_path) != 0
    err = capsys.readouterr().err
    assert "another recipe" in err and len(err.strip().splitlines()) == 1


def test_a_cached_feature_of_the_old_pixels_is_not_reused(phone, tmp_path):
    """predict's cache is keyed by the encoder recipe: an entry written under the old recipe (bogus
    numbers here) is not found by the new one."""
    from mrhd.inference.video_features import FeatureCache, _recipe_key, extract_video_features, file_sha256

    enc = build_encoder("clip", random_weights=True, size="tiny")
    cache = FeatureCache(tmp_path / "cache")

    class OldRecipe:
        info = type(enc.info)(enc.info.stream, enc.info.dim, enc.info.weights, _old_recipe(enc))

    bogus = np.full((3, enc.dim), 7.0, np.float32)
    cache.save(file_sha256(phone["phone"]), "clip", _recipe_key(OldRecipe), bogus, 6.0, "old")
    assert _recipe_key(OldRecipe) != _recipe_key(enc)
    feats = extract_video_features(phone["phone"], {"clip": enc}, cache=cache)
    assert feats.streams["clip"].shape == bogus.shape and not np.allclose(feats.streams["clip"], bogus)


@pytest.mark.parametrize("name", ["clip", "slowfast"])
def test_precision_modes(name):
    enc = build_encoder(name, random_weights=True, size="tiny")
    assert enc.precision == "official"
    official = dict(enc.info.recipe)
    enc.set_precision("fast")
    assert enc.info.recipe["precision"] != official["precision"]   # stores of the two never mix
    if enc.device.type == "cpu":   # fp32 on CPU in both modes
        assert all(p.dtype == torch.float32 for p in enc.model.parameters())
    with pytest.raises(MrhdError, match="unknown precision 'half'; choose one of: official, fast"):
        enc.set_precision("half")


def test_extract_precision_flag_reaches_the_store(phone, tmp_path):
    assert _extract([phone["upright"]], tmp_path, "--precision", "fast") == 0
    info = FeatureStore(store_path(tmp_path, "slowfast"), "r").info
    assert "autocast" in info["recipe"]["precision"]
    assert _extract([phone["upright"]], tmp_path, "--precision", "official") != 0   # not mixed


@pytest.mark.gpu
def test_official_precision_on_cuda():
    clip = build_encoder("clip", device="cuda", random_weights=True, size="tiny")
    assert clip.model.visual.conv1.weight.dtype == torch.float16 and clip.autocast_dtype is None
    assert clip.model.visual.ln_pre.weight.dtype == torch.float32
    frames = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    official = clip.encode(frames)
    clip.set_precision("fast")
    assert clip.model.visual.conv1.weight.dtype == torch.float32 and clip.autocast_dtype == torch.float16
    with torch.autocast("cuda", dtype=torch.float16):
        fast = clip.encode(frames)
    assert official.dtype == fast.dtype == torch.float32
    torch.testing.assert_close(official, fast, rtol=5e-2, atol=5e-2)
    slowfast = build_encoder("slowfast", device="cuda", random_weights=True, size="tiny")
    assert slowfast.autocast_dtype is None
    slowfast.set_precision("fast")
    assert slowfast.autocast_dtype == torch.float16
