"""Prediction-only switches (``ModelSpec.predict_switches``) skip work, never change a prediction.

For every model that has switches: the same batch (windows of different videos and lengths, so that
CG-DETR's real-negative rule fires too) through the full forward and through the switched one; every
output the switched forward still gives equals the full forward's to 1e-5, the outputs a prediction
reads (the spec's post-processing) are among them, the skipped outputs are really gone, and the
switched forward does less floating-point work.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mrhd.features.profiles import load_profile
from mrhd.inference.predict import RANDOM, Predictor, load_model
from mrhd.models.registry import available_models, get_spec

SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64}
SWITCHED = [name for name in available_models() if get_spec(name).predict_switches]
PREDICTION_OUTPUTS = ("pred_logits", "pred_spans", "saliency_scores")   # what every post-processing reads


def test_the_models_with_a_negative_pass_have_the_switch():
    assert {"qd_detr", "cg_detr", "cmdnet", "videolights", "mesm"} <= set(SWITCHED)


def _tensors(out: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a forward's outputs, nested lists and dicts flattened to dotted keys."""
    flat = {}
    for key, value in out.items():
        name = f"{prefix}{key}"
        if torch.is_tensor(value):
            flat[name] = value
        elif isinstance(value, dict):
            flat.update(_tensors(value, f"{name}."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                flat.update(_tensors(item, f"{name}.{i}."))
    return flat


@pytest.mark.parametrize("name", SWITCHED)
def test_switched_forward_gives_the_full_forwards_predictions(name):
    spec = get_spec(name)
    profile = load_profile(spec.default_profile)
    audio = {"a_feat_dim": profile.audio_dim} if profile.audio else {}
    loaded = load_model(RANDOM, model=name, profile=profile.name, random_config={**SMALL, **audio})
    predictor = Predictor(loaded, {}, {}, torch.device("cpu"), None)
    rng = np.random.default_rng(5)
    lengths, q_lengths = [13, 7, 10, 13], [6, 9, 4, 6]
    vids = [rng.normal(size=(n, profile.video_dim)).astype(np.float32) for n in lengths]
    auds = [rng.normal(size=(n, profile.audio_dim)).astype(np.float32) if profile.audio else None for n in lengths]
    txts = [rng.normal(size=(n, profile.text_dim)).astype(np.float32) for n in q_lengths]
    metas = [{"qid": i, "query": f"query {i}", "vid": f"video{i % 3}_{2 * i}.0_{2 * i + 150}.0", "duration": 2.0 * n}
             for i, n in enumerate(lengths)]

    switched = predictor.model_inputs(vids, auds, txts, metas)
    full = predictor.model_inputs(vids, auds, txts, metas, switched=False)
    with torch.no_grad():
        torch.manual_seed(0)
        with FlopCounterMode(display=False) as full_count:
            out_full = predictor.net(**full)
        torch.manual_seed(0)
        with FlopCounterMode(display=False) as switched_count:
            out_switched = predictor.net(**switched)

    a, b = _tensors(out_full), _tensors(out_switched)
    assert set(PREDICTION_OUTPUTS) <= set(b)
    assert set(b) < set(a), "the switch skipped nothing"
    assert all("neg" in k for k in set(a) - set(b)), sorted(set(a) - set(b))
    for key, value in b.items():
        assert value.shape == a[key].shape, key
        torch.testing.assert_close(value, a[key], rtol=0, atol=1e-5, msg=key)
    assert switched_count.get_total_flops() < full_count.get_total_flops()
    # and what predict makes of them: the same lines
    assert spec.postprocess(out_switched, switched["src_vid_mask"], metas, loaded.cfg) == \
        spec.postprocess(out_full, full["src_vid_mask"], metas, loaded.cfg)
