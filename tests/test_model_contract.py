"""The model contract: every model's prediction lines come from its spec's post-processing, on
both paths that make them (``mrhd predict``'s :meth:`Predictor.batch_lines` and ``mrhd train``'s
validation, :func:`mrhd.training.validation.predict_loader`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mrhd.features.profiles import load_profile
from mrhd.inference.predict import RANDOM, Predictor, load_model
from mrhd.models.registry import available_models, get_spec
from mrhd.pipeline.collate import collate
from mrhd.pipeline.datasets import meta_inputs
from mrhd.training.validation import predict_loader

SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64}
CLIP_LEN = 2.0


def _metas(lengths, annotated: bool) -> list[dict]:
    """One meta per sample; durations end inside the last clip so clamping to them matters.
    ``annotated``: QVHighlights ground-truth fields, as validation lines carry them."""
    metas = []
    for i, n in enumerate(lengths):
        meta = {"qid": 100 + i, "query": f"query {i}", "vid": f"vid{i}_{10.0 * i:.1f}_{10.0 * i + 150:.1f}",
                "duration": n * CLIP_LEN - 0.7}
        if annotated:
            meta.update(relevant_windows=[[0, 4]], relevant_clip_ids=[0, 1], saliency_scores=[[1, 2, 3], [2, 2, 2]])
        metas.append(meta)
    return metas


def _validation_batch(spec, vids, auds, txts, metas):
    """The collated batch the training datasets give validation (features, masks, id fields)."""
    fields = [k for k in meta_inputs(spec.forward_inputs) if k != "query"]   # as the trainer's val set
    items = []
    for v, a, t, m in zip(vids, auds, txts, metas):
        inputs = {"query_feat": torch.from_numpy(t), "video_feat": torch.from_numpy(v)}
        if a is not None:
            inputs["audio_feat"] = torch.from_numpy(a)
        inputs.update({k: m[k] for k in fields})
        items.append({"meta": m, "model_inputs": inputs})
    return collate(items)


@pytest.mark.parametrize("annotated", [False, True], ids=["predict-metas", "annotated-metas"])
@pytest.mark.parametrize("name", available_models())
def test_predict_and_validation_make_identical_lines(name, annotated):
    spec = get_spec(name)
    profile = load_profile(spec.default_profile)
    audio = {"a_feat_dim": profile.audio_dim} if profile.audio else {}
    loaded = load_model(RANDOM, model=name, profile=profile.name, random_config={**SMALL, **audio})
    predictor = Predictor(loaded, {}, {}, torch.device("cpu"), None)
    rng = np.random.default_rng(3)
    lengths = [13, 7, 10]
    vids = [rng.normal(size=(n, profile.video_dim)).astype(np.float32) for n in lengths]
    txts = [rng.normal(size=(k, profile.text_dim)).astype(np.float32) for k in (5, 9, 3)]
    auds = [rng.normal(size=(n, profile.audio_dim)).astype(np.float32) if profile.audio else None for n in lengths]
    metas = _metas(lengths, annotated)

    predicted = predictor.batch_lines(vids, auds, txts, copy.deepcopy(metas))
    validated = predict_loader(spec, predictor.net, loaded.cfg,
                               [_validation_batch(spec, vids, auds, txts, copy.deepcopy(metas))], "cpu")
    assert len(predicted) == len(metas) and predicted == validated
    for line, meta in zip(predicted, metas):
        assert line["qid"] == meta["qid"] and line["pred_relevant_windows"]
        if not annotated:   # a window of `mrhd predict` is clamped to its duration
            assert max(w[1] for w in line["pred_relevant_windows"]) <= np.ceil(meta["duration"] / 2) * 2


@pytest.mark.parametrize("name", available_models())
def test_spec_is_complete(name):
    spec = get_spec(name)
    assert spec.name == name and callable(spec.build) and callable(spec.postprocess)
    assert spec.forward_inputs[:4] == ("src_txt", "src_txt_mask", "src_vid", "src_vid_mask")
    cfg = spec.make_config()
    assert isinstance(cfg, spec.config_cls)
    load_profile(spec.default_profile)
