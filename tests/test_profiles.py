"""Feature profiles: dims, the official assembly recipe, store checks, and the golden inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrhd.errors import MrhdError
from mrhd.features.profiles import (
    available_profiles,
    fit_to_stores,
    l2_normalize,
    load_profile,
    open_stores,
    profile_from_dict,
    read_text_arrays,
    read_video_arrays,
    tef,
)
from mrhd.features.write import write_store
from tests.conftest import open_case
from tests.helpers.fixture_recipe import draw_raw_features, feature_recipes, raw_lengths
from tests.helpers.model_fixtures import model_cases

# ---- helpers shared with the dataset fidelity tests ----------------------------------------

# Substrings of the authors' feature folder names -> our store streams.
_DIR_TO_STREAM = [("slowfast", "slowfast"), ("clip_text", "clip_text"), ("txt_clip", "clip_text"),
                  ("blip_aug_text", "blip2_text"), ("blip_video", "blip2"), ("clip", "clip")]


def _stream_of(folder: str) -> str:
    name = folder.rstrip("/").split("/")[-1]
    for key, stream in _DIR_TO_STREAM:
        if key in name:
            return stream
    raise AssertionError(f"no stream for feature folder {folder}")


def fixture_streams(config: dict) -> tuple[list[str], list[str]]:
    kw = config["dataset_kwargs"]
    video = [_stream_of(d) for d in kw["v_feat_dirs"]]
    qdirs = kw.get("q_feat_dirs") or [kw["q_feat_dir"]]
    return video, [_stream_of(d) for d in qdirs]


def fixture_profile(config: dict):
    """The named profile whose streams are the fixture's; UniVTG's loader truncates nothing."""
    video, text = fixture_streams(config)
    univtg = config["model"] == "univtg"
    for name in available_profiles():
        p = load_profile(name)
        if list(p.video) == video and list(p.text) == text and (p.max_q_l is None) == univtg:
            return p
    raise AssertionError(f"no profile with video {video} text {text}")


def fixture_raw_features(case: Path, config: dict, inputs: dict) -> tuple[dict, dict]:
    """The raw per-stream features the fixture was made from, replayed from the recipe its own files
    state (config.json ``seeds`` / README, :mod:`tests.helpers.fixture_recipe`) with the raw lengths
    it states (``raw_txt_lens``; video clips from the annotations' durations)."""
    kw = config["dataset_kwargs"]
    valid_text = inputs["src_txt_mask"].sum(1).long().tolist()
    video_lens, text_lens = raw_lengths(config, valid_text, float(kw["clip_len"]), kw.get("max_q_l"))
    videos, texts = draw_raw_features(feature_recipes(case, config), config["fixture_annotations"],
                                      video_lens, text_lens)
    video_streams, text_streams = fixture_streams(config)
    assert set(videos) == set(video_streams) and set(texts) == set(text_streams), \
        f"the recipe draws {sorted(videos)} / {sorted(texts)}, the loader reads {video_streams} / {text_streams}"
    return videos, texts


def write_fixture_stores(folder: Path, videos: dict, texts: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stream, arrays in videos.items():
        write_store(folder / f"{stream}.h5", stream, videos=arrays)
    for stream, arrays in texts.items():
        write_store(folder / f"{stream}.h5", stream, texts=arrays)
    return folder


# ---- unit behaviour --------------------------------------------------------------------------

def test_profile_dims():
    dims = {n: (load_profile(n).video_dim, load_profile(n).text_dim, load_profile(n).audio_dim)
            for n in available_profiles()}
    assert dims["clip"] == (514, 512, 0)
    assert dims["slowfast_clip"] == (2818, 512, 0)
    assert dims["slowfast_clip_pann"] == (2818, 512, 2050)
    assert dims["videolights"] == (3586, 1280, 2050)
    assert load_profile("mesm").video == ("clip", "slowfast")
    assert load_profile("slowfast_clip").video == ("slowfast", "clip")


def test_unknown_profile_is_a_user_error():
    with pytest.raises(MrhdError, match="unknown feature profile"):
        load_profile("nope")


def test_assemble_video_normalises_trims_and_appends_tef():
    rng = np.random.default_rng(0)
    p = load_profile("slowfast_clip")
    sf = rng.normal(size=(80, 2304)).astype(np.float16)   # stores may hold float16
    cl = rng.normal(size=(78, 512)).astype(np.float32) * 7
    v = p.assemble_video({"slowfast": sf, "clip": cl})
    assert v.shape == (75, 2818) and v.dtype == np.float32     # max_v_l cap before trimming
    np.testing.assert_allclose(np.linalg.norm(v[:, :2304], axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(v[:, 2304:2816], axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(v[:, -2:], tef(75))
    assert v[3, -2] == pytest.approx(3 / 75) and v[3, -1] == pytest.approx(4 / 75)
    v = p.assemble_video({"slowfast": sf[:40], "clip": cl[:37]})
    assert v.shape == (37, 2818)                                   # trimmed to the shortest stream
    np.testing.assert_allclose(v[:, -1], np.arange(1, 38) / 37, rtol=1e-6)


def test_assemble_text_caps_and_concatenates_streams():
    rng = np.random.default_rng(1)
    p = load_profile("videolights")
    t = p.assemble_text({"clip_text": rng.normal(size=(40, 512)), "blip2_text": rng.normal(size=(12, 768))})
    assert t.shape == (12, 1280)
    t = p.assemble_text({"clip_text": rng.normal(size=(40, 512)), "blip2_text": rng.normal(size=(50, 768))})
    assert t.shape == (32, 1280)
    raw = rng.normal(size=(40, 512)).astype(np.float32)
    m = load_profile("mesm").assemble_text({"clip_text": raw})
    assert m.shape == (32, 512)
    np.testing.assert_allclose(m[-1], l2_normalize(raw[-1:])[0], rtol=1e-6)   # EOT kept
    u = load_profile("univtg").assemble_text({"clip_text": raw})
    assert u.shape == (40, 512)                                                   # no cap


def test_audio_trims_video_to_common_length():
    rng = np.random.default_rng(2)
    p = load_profile("slowfast_clip_pann")
    arrays = {"slowfast": rng.normal(size=(60, 2304)), "clip": rng.normal(size=(60, 512)),
              "pann": rng.normal(size=(58, 2048))}
    v, a = p.assemble_clips(arrays)
    assert v.shape == (58, 2818) and a.shape == (58, 2050)
    np.testing.assert_array_equal(v[:, -2:], a[:, -2:])
    with pytest.raises(MrhdError, match="audio"):
        p.assemble_clips({k: arrays[k] for k in ("slowfast", "clip")})
    v, a = load_profile("videolights").assemble_clips(
        {"slowfast": arrays["slowfast"], "clip": arrays["clip"], "blip2": rng.normal(size=(60, 768))})
    assert a is None and v.shape == (60, 3586)                                   # optional audio


def test_open_stores_rejects_wrong_encoder_and_missing_store(tmp_path):
    rng = np.random.default_rng(3)
    write_store(tmp_path / "slowfast.h5", "slowfast", videos={"v": rng.normal(size=(5, 2304))})
    write_store(tmp_path / "clip.h5", "pann", videos={"v": rng.normal(size=(5, 2048))})
    write_store(tmp_path / "clip_text.h5", "clip_text", texts={1: rng.normal(size=(4, 512))})
    p = load_profile("slowfast_clip")
    with pytest.raises(MrhdError, match="holds 'pann' features"):
        open_stores(tmp_path, p)
    (tmp_path / "clip.h5").unlink()
    with pytest.raises(MrhdError, match="clip.h5"):
        open_stores(tmp_path, p)
    write_store(tmp_path / "clip.h5", "clip", videos={"v": rng.normal(size=(5, 512))})
    stores = open_stores(tmp_path, p)
    assert p.assemble_video(read_video_arrays(p, stores, "v")).shape == (5, 2818)
    assert p.assemble_text(read_text_arrays(p, stores, 1)).shape == (4, 512)


def _encoder_stores(folder, kinds: dict):
    """clip + clip_text stores as an encoder writes them: ``kinds[stream] = (weights, size, dim)``."""
    rng = np.random.default_rng(4)
    folder.mkdir(exist_ok=True)
    for stream, (weights, size, dim) in kinds.items():
        recipe = {"model": f"{stream} encoder", **({"size": size} if size != "full" else {})}
        data = {"videos": {"v": rng.normal(size=(5, dim))}} if stream == "clip" else {"texts": {1: rng.normal(size=(4, dim))}}
        write_store(folder / f"{stream}.h5", stream, weights=weights, recipe=recipe, **data)
    return folder


def test_training_follows_stores_of_tiny_random_encoders(tmp_path):
    """Stores written by `--random-weights --encoder-size tiny` are trainable: the profile takes
    their widths and records the encoders, so predict can rebuild them."""
    p = load_profile("clip")
    folder = _encoder_stores(tmp_path, {"clip": ("random", "tiny", 32), "clip_text": ("random", "tiny", 32)})
    fitted = fit_to_stores(p, open_stores(folder, p))
    assert (fitted.video_dim, fitted.text_dim) == (34, 32)
    assert fitted.random_encoders and fitted.encoder_size == "tiny" and fitted.encoders_text() == "random tiny encoders"
    assert profile_from_dict(fitted.to_dict()) == fitted   # as a checkpoint keeps it
    full = fit_to_stores(p, open_stores(_encoder_stores(tmp_path / "full", {
        "clip": ("random", "full", 512), "clip_text": ("random", "full", 512)}), p))
    assert full.random_encoders and full.encoder_size == "full" and full.video_dim == p.video_dim
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    write_store(synthetic / "clip.h5", "clip", videos={"v": np.ones((5, 512))})
    write_store(synthetic / "clip_text.h5", "clip_text", texts={1: np.ones((4, 512))})
    assert fit_to_stores(p, open_stores(synthetic, p)) == p   # no encoder recorded: the official ones


# (stores in --features, words of the one-line error)
BAD_STORE_SETS = [
    ({"clip": ("random", "tiny", 32), "clip_text": ("random", "full", 512)}, "different kinds of encoders"),
    ({"clip": ("random", "tiny", 32), "clip_text": ("clip-vit-b32-openai", "tiny", 32)}, "different kinds"),
    ({"clip": ("clip-vit-b32-openai", "full", 288), "clip_text": ("random", "full", 512)},
     "has dim 288, expected 512 for 'clip'; re-extract it"),
]


@pytest.mark.parametrize("kinds, words", BAD_STORE_SETS, ids=["tiny+full", "random+released", "odd-dim"])
def test_stores_of_mixed_encoders_are_refused(tmp_path, kinds, words):
    p = load_profile("clip")
    with pytest.raises(MrhdError) as info:
        fit_to_stores(p, open_stores(_encoder_stores(tmp_path, kinds), p))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_missing_text_store_points_at_the_command_that_writes_it(tmp_path):
    """`--encoders clip` alone writes no clip_text: the hint names --queries (mrhd train's message)."""
    write_store(tmp_path / "clip.h5", "clip", videos={"v": np.zeros((5, 512))})
    with pytest.raises(MrhdError) as info:
        open_stores(tmp_path, load_profile("clip"))
    assert f"mrhd extract --encoders clip --out {tmp_path} --queries TRAIN.jsonl VAL.jsonl" in str(info.value)
    (tmp_path / "clip.h5").unlink()
    write_store(tmp_path / "clip_text.h5", "clip_text", texts={1: np.zeros((4, 512))})
    with pytest.raises(MrhdError, match=f"mrhd extract VIDEOS --encoders clip --out {tmp_path}`"):
        open_stores(tmp_path, load_profile("clip"))


# ---- golden inputs -------------------------------------------------------------------------

@pytest.mark.fidelity
# MESM's fixture holds the official batch layout (video_feat / words_id): test_mesm_profile_video_*.
@pytest.mark.parametrize("case", model_cases(exclude=("mesm",), required_file="inputs.pt"))
def test_profile_assembly_matches_official_inputs(case, tmp_path):
    case = open_case(case, "inputs.pt")
    config = json.loads((case / "config.json").read_text())
    inputs = torch.load(case / "inputs.pt")
    profile = fixture_profile(config)
    videos, texts = fixture_raw_features(case, config, inputs)
    stores = open_stores(write_fixture_stores(tmp_path, videos, texts), profile)
    for i, ann in enumerate(config["fixture_annotations"]):
        v = profile.assemble_video(read_video_arrays(profile, stores, ann["vid"]))
        t = profile.assemble_text(read_text_arrays(profile, stores, ann["qid"]))
        assert torch.equal(torch.from_numpy(v), inputs["src_vid"][i, : len(v)])
        assert torch.equal(torch.from_numpy(t), inputs["src_txt"][i, : len(t)])
        assert int(inputs["src_vid_mask"][i].sum()) == len(v)
        assert int(inputs["src_txt_mask"][i].sum()) == len(t)


@pytest.mark.fidelity
@pytest.mark.parametrize("case", model_cases("mesm", required_file="inputs.pt"))
def test_mesm_profile_video_matches_official_inputs(case, tmp_path):
    """MESM's loader (official batch layout ``video_feat``): the ``mesm`` profile assembles each
    query's video exactly; the stored word features are the model's input rows as they are."""
    from mrhd.models.convert import streams_from_opt
    from mrhd.models.registry import get_spec

    case = open_case(case, "inputs.pt")
    config = json.loads((case / "config.json").read_text())
    inputs = torch.load(case / "inputs.pt")
    kw = config["dataset_kwargs"]
    profile = load_profile(get_spec("mesm").default_profile)
    assert profile.video == streams_from_opt(kw)[0]
    words = inputs["words_id"]
    valid_text = (words.abs().sum(-1) != 0).sum(1).tolist()
    video_lens, text_lens = raw_lengths(config, valid_text, float(kw["clip_len"]), kw["max_words_l"])
    videos, texts = draw_raw_features(feature_recipes(case, config), config["fixture_annotations"],
                                      video_lens, text_lens)
    stores = open_stores(write_fixture_stores(tmp_path, videos, texts), profile)
    for i, ann in enumerate(config["fixture_annotations"]):
        v = profile.assemble_video(read_video_arrays(profile, stores, ann["vid"]))
        assert torch.equal(torch.from_numpy(v), inputs["video_feat"][i, : len(v)]), ann["vid"]
        assert int(inputs["video_mask"][i].sum()) == len(v)
        raw = torch.from_numpy(texts["clip_text"][ann["qid"]])[: kw["max_words_l"]]
        assert torch.equal(raw, words[i, : len(raw)]) and not words[i, len(raw):].any()
