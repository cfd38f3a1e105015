"""MESM against its golden fixtures (lntzm/MESM run on the same batch, README of each case).

The fixture calls the official model as its eval / train loops do (``model(**batch, dataset_name,
is_training)``, the official batch layout of ``collate_qvh``); :func:`our_call` maps that batch to
our forward's names, nothing else. Every option, seed and random draw comes from the case's
config.json (``opt_small``, ``random_draws``); the stored-text-feature path (``text_encoder`` None)
is chosen by ``opt_small`` (tokenizer GloVeNLTK + load_vocab_pkl -> ``text_input: word_features``).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from torch import nn

from mrhd.models.mesm.model import build, build_criterion, config_from_opt, convert_state_dict
from mrhd.models.postprocess import PostProcessorDETR, prediction_lines
from mrhd.models.registry import get_spec
from tests.conftest import open_case
from tests.helpers.model_fixtures import (
    assert_full_size_keys,
    assert_lines_close,
    assert_losses_match,
    assert_tree_close,
    indices_as_lists,
    load_fixture_model,
    load_pt,
    model_cases,
    read_config,
    read_json,
    read_jsonl,
)

CASES = model_cases("mesm")
pytestmark = pytest.mark.fidelity

# official output name -> ours
OUTPUT_NAMES = {"neg_saliency_scores": "saliency_scores_neg"}
# official outputs nothing reads (criterion "ablation 3"): SS-MESM's output_sent_proj is not built
NOT_BUILT = {"projed_recon_feat"}


def our_call(inputs: dict) -> dict:
    """The official batch as our forward's keyword arguments (the official ``words_id`` holds the
    stored word features on this path, ``words_mask`` None: the model derives the mask)."""
    mask = inputs.get("words_mask")
    return {"src_vid": inputs["video_feat"], "src_vid_mask": inputs["video_mask"].float(),
            "src_txt": inputs["words_id"], "src_txt_mask": None if mask is None else mask.float(),
            "vid": list(inputs["video_id"])}


def our_targets(inputs: dict, targets: dict) -> dict:
    """The official training targets under our names."""
    out = {"span_labels": [{"spans": s["spans"]} for s in targets["norm_span"]],
           "saliency_all_labels": targets["saliency_label"],
           "saliency_pos_labels": targets["pos_idx"], "saliency_neg_labels": targets["neg_idx"],
           "words_weight": inputs["words_weight"]}
    for key in ("words_label", "unknown_mask"):
        if key in targets:
            out[key] = targets[key]
    return out


def as_official(out: dict, ref: dict) -> dict:
    """Our outputs under the official names, restricted to the official keys (those built)."""
    ours = {off: out[OUTPUT_NAMES.get(off, off)] for off in ref if off not in NOT_BUILT}
    if "aux_outputs" in ours:
        ours["aux_outputs"] = [{k: a[k] for k in ("pred_logits", "pred_spans")} for a in ours["aux_outputs"]]
    return ours


def train_branch_without_dropout(model: nn.Module) -> nn.Module:
    """Training mode (FW-MESM's branch) with every dropout off: the official training-branch call
    of the fixture ran in eval mode with ``is_training=True``."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(getattr(m, "dropout", None), float):   # attention-weight dropout
            m.dropout = 0.0
    return model


def run_case(case):
    case, config, cfg, model, inputs = load_fixture_model(case, config_from_opt, build, convert_state_dict)
    return case, config, cfg, model, inputs


def forward(model, inputs, draws: dict, targets=None):
    torch.manual_seed(draws["torch_seed_before_each_forward"])
    if targets is not None:
        np.random.seed(draws["numpy_seed_before_train_branch_forward"])
    with torch.no_grad():
        return model(**our_call(inputs), targets=targets)


@pytest.mark.parametrize("case", CASES)
def test_stored_text_path_options_come_from_the_official_ones(case):
    case = open_case(case, "config.json")
    config = read_config(case)
    cfg = config_from_opt(config["opt_small"])
    opt = config["opt_small"]
    assert cfg.text_input == ("word_features" if opt["tokenizer_type"] == "GloVeNLTK" and opt["load_vocab_pkl"]
                              else "clip_states")
    assert cfg.youtube_groups == (opt["dataset_name"] == "qvhighlights")
    state = load_pt(case, "state_dict.pt")
    assert state["output_txt_proj.1.weight"].shape[0] == cfg.num_word_classes


@pytest.mark.parametrize("case", CASES)
def test_eval_forward_matches_official(case):
    case, config, cfg, model, inputs = run_case(case)
    draws = config["random_draws"]
    out = forward(model, inputs, draws)
    assert out["neg_index"].tolist() == draws["neg_index_eval"]
    counts = torch.unique_consecutive(out["video_group"], return_counts=True)[1]
    assert counts.tolist() == inputs["num_clips"].tolist()      # groups as the official num_clips
    ref = load_pt(case, "outputs.pt")
    assert_tree_close(as_official(out, ref), {k: v for k, v in ref.items() if k not in NOT_BUILT}, relative=True)


@pytest.mark.parametrize("case", CASES)
def test_training_branch_and_every_loss_match_official(case):
    case, config, cfg, model, inputs = run_case(case)
    open_case(case, "outputs_train_branch.pt")
    draws = config["random_draws"]
    ref_targets = load_pt(case, "targets.pt")
    targets = our_targets(inputs, ref_targets)
    out = forward(train_branch_without_dropout(model), inputs, draws, targets)
    assert out["neg_index"].tolist() == draws["neg_index_train_branch"]
    assert out["masked_words"].long().tolist() == draws["masked_words_train_branch"]
    assert torch.equal(out["clip_mask"], ref_targets["clip_mask"].bool())
    ref = load_pt(case, "outputs_train_branch.pt")
    assert_tree_close(as_official(out, ref), {k: v for k, v in ref.items() if k not in NOT_BUILT}, relative=True)

    expected = read_json(case, "losses.json")
    criterion = build_criterion(cfg)
    assert criterion.weight_dict == expected["weight_dict"]
    losses, indices = criterion(out, targets, return_indices=True)
    assert set(losses) == set(expected["losses"])
    assert_losses_match(losses, expected["losses"])
    assert float(criterion.weighted_total(losses)) == pytest.approx(expected["weighted_total"], abs=1e-5, rel=1e-6)
    assert indices_as_lists(indices) == expected["matcher_indices"]
    # the eval-mode outputs, as the official eval: no FW-MESM term
    model.eval()
    inference = forward(model, inputs, draws)
    on_inference = expected["criterion_on_inference_outputs"]
    losses = criterion(inference, targets)
    assert set(losses) == set(on_inference["losses"])
    assert_losses_match(losses, on_inference["losses"])


@pytest.mark.parametrize("case", CASES)
def test_predictions_match_official(case):
    case = open_case(case, "predictions.jsonl")
    config = read_config(case)
    inputs = load_pt(case, "inputs.pt")
    ref = load_pt(case, "outputs.pt")
    metas = [{k: a[k] for k in ("qid", "query", "vid", "duration")} for a in config["fixture_annotations"]]
    mask = inputs["video_mask"].float()
    lines = prediction_lines(ref, mask, metas)
    assert lines == read_jsonl(case / "predictions_before_postprocess.jsonl")
    assert PostProcessorDETR(**config["postprocessor"])(lines) == read_jsonl(case / "predictions.jsonl")
    _, _, cfg, model, _ = run_case(case)
    assert get_spec("mesm").postprocess(ref, mask, metas, cfg) == read_jsonl(case / "predictions.jsonl")
    ours = prediction_lines(forward(model, inputs, config["random_draws"]), mask, metas)
    assert_lines_close(ours, read_jsonl(case / "predictions_before_postprocess.jsonl"), sort_windows=True,
                       window_atol=2e-4, saliency_atol=1e-4, saliency_rtol=2e-3)


@pytest.mark.parametrize("case", CASES)
def test_full_size_keys_match_official(case):
    case = open_case(case, "keys_full.json")
    with torch.device("meta"):
        model = build(config_from_opt(read_config(case)["opt_full"]))
    assert_full_size_keys(model, case, convert_state_dict)


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_saved_by_the_official_runner_converts(case, tmp_path):
    """train.py:185-192 saves ``{"model": state_dict_without_module(model, "text_encoder"),
    "optimizer", "lr_scheduler", "epoch", "opt": Namespace}``; ``mrhd weights convert --model mesm``
    turns it into a checkpoint whose model predicts as the fixture's."""
    from mrhd.features.profiles import load_profile
    from mrhd.models.convert import convert_checkpoint, streams_from_opt
    from mrhd.models.registry import make_config
    from mrhd.weights.checkpoint import load_checkpoint

    case = open_case(case, "state_dict.pt")
    config = read_config(case)
    state = load_pt(case, "state_dict.pt")
    src = tmp_path / "qvhighlights-C+SF_C_val_best.ckpt"
    torch.save({"model": {k: v for k, v in state.items() if "text_encoder" not in k}, "optimizer": {},
                "lr_scheduler": {}, "epoch": 0, "opt": argparse.Namespace(**config["opt_small"])}, src)
    summary = convert_checkpoint(src, tmp_path / "mesm.ckpt", model="mesm")
    assert summary["keys"] == len(convert_state_dict(state))
    assert load_profile(summary["profile"]).video == streams_from_opt(config["opt_small"])[0]
    ckpt = load_checkpoint(tmp_path / "mesm.ckpt")
    model = build(make_config("mesm", ckpt["config"])).eval()
    model.load_state_dict(ckpt["state_dict"], strict=True)
    inputs = load_pt(case, "inputs.pt")
    ref = load_pt(case, "outputs.pt")
    out = forward(model, inputs, config["random_draws"])
    assert_tree_close(as_official(out, ref), {k: v for k, v in ref.items() if k not in NOT_BUILT}, relative=True)
