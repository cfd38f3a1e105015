"""Moment-DETR, QD-DETR and TR-DETR against the golden fixtures made with the authors' code.

Every case folder under $MRHD_FIXTURES/models whose config.json names one of these models is
checked: strict state_dict load, forward outputs (aux included), every criterion term and the
matcher indices, the prediction lines before and after post-processing, and the full-size key
list. Sizes, options and metadata come from the fixture's own files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrhd.models.postprocess import PostProcessorDETR, prediction_lines
from mrhd.models.registry import get_spec
from tests.conftest import open_case
from tests.helpers.model_fixtures import (
    assert_full_size_keys,
    assert_lines_close,
    assert_tree_close,
    load_fixture_model,
    load_pt,
    model_cases,
    read_config,
    read_json,
    read_jsonl,
)

MODELS = ("moment_detr", "qd_detr", "tr_detr")
TOL = 1e-5

CASES = model_cases(*MODELS)
pytestmark = pytest.mark.fidelity


def load_case(case: Path):
    spec = get_spec(read_config(open_case(case, "config.json"))["model"])
    _, cfg_json, cfg, model, inputs = load_fixture_model(case, spec.config_from_opt, spec.build,
                                                         spec.convert_state_dict)
    return cfg_json, spec, cfg, model, inputs


@pytest.fixture(scope="module")
def ran():
    """Forward each case once per module (eval, no grad)."""
    cache = {}

    def run(case: Path):
        if case not in cache:
            cfg_json, spec, cfg, model, inputs = load_case(case)
            with torch.no_grad():
                outputs = model(**inputs)
            cache[case] = (cfg_json, spec, cfg, model, inputs, outputs)
        return cache[case]
    return run


@pytest.mark.parametrize("case", CASES)
def test_forward_matches(case, ran):
    _, _, _, _, _, outputs = ran(case)
    ref = load_pt(case, "outputs.pt")
    assert_tree_close(outputs, ref, atol=TOL, exact_keys=False)


@pytest.mark.parametrize("case", CASES)
def test_criterion_matches(case, ran):
    cfg_json, spec, cfg, _, _, outputs = ran(case)
    ref = read_json(case, "losses.json")
    targets = dict(load_pt(case, "targets.pt"))
    criterion = spec.build_criterion(cfg)
    with torch.no_grad():
        losses, indices = criterion(outputs, targets, return_indices=True)
    for k, v in ref["losses"].items():
        assert k in losses, f"missing loss term {k}"
        assert abs(float(losses[k]) - v) <= TOL * max(1.0, abs(v)), f"{k}: {float(losses[k])} != {v}"
    for k, v in ref["weight_dict"].items():
        assert criterion.weight_dict[k] == pytest.approx(v), k
    official_total = sum(float(losses[k]) * w for k, w in ref["weight_dict"].items() if k in losses)
    assert official_total == pytest.approx(ref["weighted_total"], abs=TOL * max(1.0, ref["weighted_total"]))
    for layer, per_sample in ref["matcher_indices"].items():
        got = [[i.tolist(), j.tolist()] for i, j in indices[layer]]
        assert got == per_sample, layer
    extra = ref.get("extra_train_losses")
    if extra:  # TR-DETR: CTC / VTC added by its train loop, here criterion terms loss_ctc / loss_vtc
        for name, ours in (("CTC", "loss_ctc"), ("VTC", "loss_vtc")):
            (key,) = [k for k in extra if k.startswith(f"{name}_loss(")]
            assert abs(float(losses[ours]) - extra[key]) <= TOL * max(1.0, extra[key]), name
            assert criterion.weight_dict[ours] == pytest.approx(extra[f"{name}_loss_coef"])
        total = float(criterion.weighted_total(losses))
        assert total == pytest.approx(ref["train_loss_total"], abs=TOL * max(1.0, ref["train_loss_total"]))


def metas_of(cfg_json: dict) -> list[dict]:
    return [{k: a[k] for k in ("qid", "query", "vid", "duration")} for a in cfg_json["fixture_annotations"]]


def assert_lines_equal(ours: list[dict], ref: list[dict], raw_scores: torch.Tensor):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        for k in ("qid", "query", "vid", "pred_saliency_scores"):
            assert a[k] == b[k], f"line {i}: {k}"
        scores = torch.sort(raw_scores[i], descending=True)[0]
        tied = bool(((scores[:-1] - scores[1:]).abs() < 1e-6).any())
        if tied:  # order among equal scores is not defined to float precision
            assert sorted(a["pred_relevant_windows"]) == sorted(b["pred_relevant_windows"]), f"line {i}"
        else:
            assert a["pred_relevant_windows"] == b["pred_relevant_windows"], f"line {i}"


@pytest.mark.parametrize("case", CASES)
def test_predictions_match(case):
    """Exact: the official outputs.pt (bit-identical to the forward inside the official
    compute_mr_results, see the fixture README) through our prediction + post-processing code."""
    open_case(case, "predictions.jsonl")
    cfg_json = read_config(case)
    inputs = load_pt(case, "inputs.pt")
    outputs = load_pt(case, "outputs.pt")
    raw_scores = torch.softmax(outputs["pred_logits"], -1)[..., 0]
    lines = prediction_lines(outputs, inputs["src_vid_mask"], metas_of(cfg_json))
    before = case / "predictions_before_postprocess.jsonl"
    if before.exists():
        assert_lines_equal(lines, read_jsonl(before), raw_scores)
    final = PostProcessorDETR(**cfg_json["postprocessor"])(lines)
    assert_lines_equal(final, read_jsonl(case / "predictions.jsonl"), raw_scores)


@pytest.mark.parametrize("case", CASES)
def test_predictions_from_our_forward(case, ran):
    """Our forward agrees with the official one to 1e-5, so its lines agree to the last printed
    digit up to rounding at a boundary: windows to 2e-4 s, saliency to fp16 precision."""
    cfg_json, _, _, _, inputs, outputs = ran(case)
    open_case(case, "predictions_before_postprocess.jsonl")
    lines = prediction_lines(outputs, inputs["src_vid_mask"], metas_of(cfg_json))
    assert_lines_close(lines, read_jsonl(case / "predictions_before_postprocess.jsonl"), sort_windows=True,
                       window_atol=2e-4, saliency_atol=1e-4, saliency_rtol=2e-3)


@pytest.mark.parametrize("case", CASES)
def test_full_size_keys(case):
    open_case(case, "keys_full.json")
    cfg_json = read_config(case)
    spec = get_spec(cfg_json["model"])
    model = spec.build(spec.config_from_opt(cfg_json["opt_full"]))
    assert_full_size_keys(model, case, spec.convert_state_dict)
    if "n_params_full" in cfg_json:
        assert sum(p.numel() for p in model.state_dict().values()) == cfg_json["n_params_full"]


@pytest.mark.parametrize("case", CASES)
def test_shipped_config_is_the_official_one(case):
    """The config `mrhd train` builds (the dataclass defaults plus configs/models/<model>.yaml, if
    any) is exactly the config of the official full-size options, and the post-processing that
    validation runs clamps at the official max_ts_val."""
    from mrhd.models.registry import make_config
    from mrhd.training.config import model_defaults

    open_case(case, "config.json")
    cfg_json = read_config(case)
    name = cfg_json["model"]
    assert make_config(name, model_defaults(name)) == get_spec(name).config_from_opt(cfg_json["opt_full"])
    assert PostProcessorDETR().max_ts_val == cfg_json["postprocessor"]["max_ts_val"]
