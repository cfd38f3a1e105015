"""`mrhd weights convert` on the golden fixtures: each fixture's weights, saved the way the authors'
training loop saves them ({"model", "opt": Namespace, ...}), convert with no missing or unexpected
keys, keep the run's feature profile, and the converted network reproduces the authors' outputs."""

from __future__ import annotations

import argparse

import pytest
import torch

from mrhd.errors import MrhdError
from mrhd.models.registry import get_spec
from mrhd.weights.checkpoint import load_checkpoint
from tests.conftest import open_case
from tests.helpers.model_fixtures import load_pt, model_cases, read_config, tensor_leaves

pytestmark = [pytest.mark.fidelity, pytest.mark.slow]


# MESM's fixture calls the model with the official batch layout (collate_qvh); its conversion is
# checked in test_models_mesm_fidelity.py, against the same outputs.
@pytest.mark.parametrize("case", model_cases(exclude=("mesm",), required_file="state_dict.pt"))
def test_convert_fixture_checkpoint(case, tmp_path):
    case = open_case(case, "state_dict.pt")
    config = read_config(case)
    try:
        spec = get_spec(config["model"])
    except MrhdError as err:
        pytest.skip(str(err))
    if spec.config_from_opt is None:
        pytest.skip(f"{config['model']} has no conversion from official options")
    state_dict = load_pt(case, "state_dict.pt")
    src = tmp_path / "model_best.ckpt"
    torch.save({"model": state_dict, "optimizer": None, "epoch": 0,
                "opt": argparse.Namespace(**config["opt_small"])}, src)

    from mrhd.models.convert import convert_checkpoint, streams_from_opt

    dst = tmp_path / "converted.ckpt"
    summary = convert_checkpoint(src, dst, model=config["model"])
    ckpt = load_checkpoint(dst)
    assert summary["keys"] == len(state_dict) == len(ckpt["state_dict"])
    assert ckpt["model"] == config["model"]
    from mrhd.features.profiles import load_profile

    video, _audio = streams_from_opt(config["opt_small"])
    assert load_profile(ckpt["profile"]).video == video

    from mrhd.models.registry import make_config

    net = spec.build(make_config(config["model"], ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"], strict=True)
    net.eval()
    inputs = load_pt(case, "inputs.pt")
    expected = load_pt(case, "outputs.pt")
    with torch.no_grad():
        got = net(**inputs)
    want = dict(tensor_leaves({k: expected[k] for k in ("pred_logits", "pred_spans", "saliency_scores") if k in expected}))
    have = dict(tensor_leaves({k: got[k] for k in want}))
    assert want, "no comparable outputs"
    for key, tensor in want.items():
        assert torch.allclose(have[key].float(), tensor.float(), atol=1e-5, rtol=0), key
