"""The authors' settings for released features: per-benchmark recipes (configs/recipes/) and the
profiles of the import-only streams (TVSum I3D normalised as one row, text used as loaded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mrhd.errors import MrhdError
from mrhd.features.profiles import load_profile, profile_from_dict
from mrhd.models.registry import get_spec
from mrhd.paths import config_dir
from mrhd.training.config import TrainConfig, load_recipe, load_train_config

RECIPES = sorted((p.parent.name, p.stem) for p in (config_dir() / "recipes").glob("*/*.yaml"))


@pytest.mark.parametrize("dataset, model", RECIPES)
def test_every_recipe_names_real_options(dataset, model):
    recipe = load_recipe(model, dataset)
    assert recipe.path is not None and (recipe.train or recipe.model or recipe.caps)
    assert set(recipe.train) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(recipe.model) <= {f.name for f in dataclasses.fields(get_spec(model).config_cls)}
    cfg = load_train_config(model, dataset=dataset)
    for key, value in recipe.train.items():
        assert getattr(cfg, key) == value


def test_cg_detr_charades_recipe_is_the_script_and_set_wins():
    # wjun0830/CGDETR cg_detr/scripts/charades_sta/train.sh
    cfg = load_train_config("cg_detr", dataset="charades_sta")
    assert (cfg.lr, cfg.lr_drop, cfg.epochs, cfg.batch_size) == (2e-4, 400, 200, 32)
    assert cfg.model_config == {"lw_saliency": 4, "num_dummies": 45, "num_prompts": 2, "total_prompts": 10}
    cfg = load_train_config("cg_detr", dataset="charades_sta", lr=1e-3, model_config={"num_dummies": 10})
    assert cfg.lr == 1e-3 and cfg.model_config["num_dummies"] == 10 and cfg.model_config["lw_saliency"] == 4
    assert load_train_config("cg_detr", dataset="qvhighlights").model_config == {}   # defaults are its own


def test_videolights_charades_caps_and_metric():
    recipe = load_recipe("videolights", "charades_sta")
    assert recipe.caps == {"max_v_l": 75}
    assert load_train_config("videolights", dataset="charades_sta").best_metric == "MR-full-R1@0.3"


def test_no_recipe_is_empty():
    assert load_recipe("moment_detr", "tacos").path is None and load_recipe("qd_detr", None).train == {}


def _official_tvsum_video(rgb, opt):
    """QD-DETR start_end_dataset_audio.py:321-336 (tvsum): concatenate, then x / (||x|| + 1e-5)."""
    feat = np.concatenate([rgb.astype(np.float32), opt.astype(np.float32)], axis=-1)
    return feat / (np.linalg.norm(feat, axis=-1, keepdims=True) + 1e-5)


def test_tvsum_i3d_normalises_rgb_and_flow_as_one_row():
    rng = np.random.default_rng(0)
    rgb, opt = rng.normal(size=(9, 1024)) * 3, rng.normal(size=(9, 1024))
    text = rng.normal(size=(6, 512)).astype(np.float32)
    prof = load_profile("tvsum_i3d")
    video = prof.assemble_video({"i3d_rgb": rgb, "i3d_flow": opt})
    assert video.shape == (9, prof.video_dim) == (9, 2050)
    assert np.array_equal(video[:, :2048], _official_tvsum_video(rgb, opt))
    separate = prof.replace(normalize_jointly=()).assemble_video({"i3d_rgb": rgb, "i3d_flow": opt})
    assert not np.allclose(separate[:, :2048], video[:, :2048])        # the two recipes differ
    assert np.array_equal(prof.assemble_text({"clip_text": text}), text)   # TVSum text: as loaded


def test_vgg_glove_text_is_not_normalised_and_joint_streams_must_be_video():
    prof = load_profile("vgg_glove")
    words = np.random.default_rng(1).normal(size=(40, 300)).astype(np.float32)
    assert np.array_equal(prof.assemble_text({"glove": words}), words)   # no cap, no normalisation
    assert prof.video_dim == 4098 and prof.text_dim == 300
    with pytest.raises(MrhdError, match="normalize_jointly"):
        profile_from_dict({"name": "x", "video": ["clip"], "text": ["clip_text"], "normalize_jointly": ["vgg"]})


def _reproduce_rows() -> list[dict]:
    """The table of the README's "Reproduce a paper" section, one dict per row."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Reproduce a paper", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_reproduce_a_paper_names_every_model_and_the_epochs_training_runs():
    import re

    from mrhd.models.registry import available_models

    rows = _reproduce_rows()
    seen = set()
    for row in rows:
        command = row["command (`mrhd train ...`)"]
        model = re.search(r"--model (\w+)", command).group(1)
        dataset = re.search(r"--dataset (\w+)", command)
        seen.add(model)
        assert row["features (`mrhd features import`) -> profile"] and row["the authors report"], row
        epochs = int(re.match(r"\d+", row["epochs"]).group())
        cfg = load_train_config(model, dataset=dataset.group(1) if dataset else "qvhighlights")
        assert epochs == cfg.epochs, (row["model"], epochs, cfg.epochs)
    assert seen == set(available_models())
