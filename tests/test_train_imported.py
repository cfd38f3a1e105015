"""From a released-layout folder to a trained run: `mrhd features import` then `mrhd train --dataset
qvhighlights --data-dir DATA --features DIR --model NAME`; and the clip length, a property of the
stores, refused where it disagrees with the annotations, --set or another store."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from mrhd.cli import main
from mrhd.features.importing import import_features
from mrhd.features.profiles import load_profile
from mrhd.features.store import FeatureStore, store_path
from mrhd.training.synthetic import SyntheticSpec, make_synthetic

TINY = ["--set", "hidden_dim=32", "--set", "nheads=4", "--set", "enc_layers=1", "--set", "dec_layers=1",
        "--set", "dim_feedforward=64"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Planted-moment data written as Moment-DETR's release (clip_features/, slowfast_features/,
    clip_text_features/qid<qid>.npz) plus the QVHighlights split files of a --data-dir."""
    root = tmp_path_factory.mktemp("released")
    syn = make_synthetic(root / "syn", load_profile("slowfast_clip"),
                         SyntheticSpec(n_train=24, n_val=8, min_clips=10, max_clips=16, n_concepts=3))
    src = root / "moment_detr_features"
    for stream, folder in (("clip", "clip_features"), ("slowfast", "slowfast_features")):
        (src / folder).mkdir(parents=True)
        store = FeatureStore(syn["features"] / f"{stream}.h5")
        for vid in store.video_ids():
            x = store.read(vid)
            if stream == "slowfast":   # HERO's SlowFast count is one clip longer than CLIP's
                x = np.concatenate([x, x[-1:]])
            np.savez(src / folder / f"{vid}.npz", features=x.astype(np.float16))
    (src / "clip_text_features").mkdir()
    text = FeatureStore(syn["features"] / "clip_text.h5")
    for q in text.query_ids():
        np.savez(src / "clip_text_features" / f"qid{q}.npz", last_hidden_state=text.read_text(q)[0],
                 pooler_output=np.zeros((1, 512), np.float32))
    data = root / "data"
    data.mkdir()
    shutil.copy(syn["train"], data / "highlight_train_release.jsonl")
    shutil.copy(syn["val"], data / "highlight_val_release.jsonl")
    return {"src": src, "data": data, "root": root}


def _train(released, features, out, *extra):
    return main(["train", "--dataset", "qvhighlights", "--data-dir", str(released["data"]), "--features",
                 str(features), "--model", "moment_detr", "--epochs", "1", "--out", str(out), "--num-workers", "0",
                 "--batch-size", "8", "--quiet", *TINY, *extra])


def test_one_epoch_on_an_imported_release(released, tmp_path, capsys):
    assert main(["features", "import", str(released["src"]), "--out", str(tmp_path / "feats"), "--no-progress"]) == 0
    capsys.readouterr()
    assert _train(released, tmp_path / "feats", tmp_path / "run") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 1 and "MR-full-mAP" in result["last_metrics"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and (tmp_path / "run" / "best.ckpt").is_file()


def _one_line_error(capsys, rc, match):
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err


def test_clip_length_that_disagrees_with_the_annotations(released, tmp_path, capsys):
    import_features(released["src"], tmp_path / "feats", clip_len=1.0)    # 2-s features called 1-s
    rc = _train(released, tmp_path / "feats", tmp_path / "run")
    _one_line_error(capsys, rc, "says 1-s clips, but the durations in --train")
    assert not (tmp_path / "run").exists()


def test_set_clip_len_that_disagrees_with_the_stores(released, tmp_path, capsys):
    import_features(released["src"], tmp_path / "feats")
    rc = _train(released, tmp_path / "feats", tmp_path / "run", "--set", "clip_len=1")
    _one_line_error(capsys, rc, "clip_len 1 disagrees with the 2-s clips")
    rc = _train(released, tmp_path / "feats", tmp_path / "run", "--set", "clip_length=1")
    _one_line_error(capsys, rc, "clip_length=1 (configs/models or --set) disagrees")


def test_stores_of_two_clip_lengths(released, tmp_path, capsys):
    import_features(released["src"], tmp_path / "feats")
    with h5py.File(store_path(tmp_path / "feats", "slowfast"), "a") as f:
        f.attrs["clip_len"] = 1.0
    rc = _train(released, tmp_path / "feats", tmp_path / "run")
    _one_line_error(capsys, rc, "disagree on the clip length")


def test_resume_on_features_of_another_clip_length(released, tmp_path, capsys):
    import_features(released["src"], tmp_path / "feats")
    assert _train(released, tmp_path / "feats", tmp_path / "run") == 0
    capsys.readouterr()
    import_features(released["src"], tmp_path / "feats_1s", clip_len=1.0)
    rc = _train(released, tmp_path / "feats_1s", tmp_path / "run", "--resume", "--epochs", "2")
    _one_line_error(capsys, rc, "was trained on 2-s clips, but the stores")


def test_predict_refuses_a_checkpoint_of_other_clips(tmp_path):
    import dataclasses

    import torch

    from mrhd.errors import MrhdError
    from mrhd.inference.predict import Predictor
    from mrhd.models.registry import get_spec, make_config
    from mrhd.weights.checkpoint import save_checkpoint

    cfg = make_config("cg_detr", {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 1,
                                  "dim_feedforward": 64, "v_feat_dim": 514, "clip_length": 1})
    torch.manual_seed(0)
    net = get_spec("cg_detr").build(cfg)
    path = save_checkpoint(tmp_path / "charades.ckpt", model="cg_detr", config=dataclasses.asdict(cfg),
                           state_dict=net.state_dict(), profile="clip")
    with pytest.raises(MrhdError, match="trained on 1-s clips; mrhd predict extracts 2-s clips"):
        Predictor.from_pretrained(str(path), cache=False)
