"""Every file the commands write is created with the umask's mode (0644 under umask 022), as other
tools' files are: predict's JSON and PNG, eval's --out and --pack, checkpoints and the other run
files of train, the remembered encoder info. mrhd.io's writers do this; these tests check that
each writer goes through them."""

from __future__ import annotations

import contextlib
import json
import os
import stat

import pytest

from mrhd.cli import main
from mrhd.features.profiles import load_profile
from mrhd.inference.plots import plot_predictions
from mrhd.inference.results import Prediction, write_predictions
from mrhd.training.config import load_train_config
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.weights.checkpoint import save_checkpoint


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _gt(tmp_path):
    rows = [{"qid": 1, "query": "a", "vid": "v1", "duration": 20, "relevant_windows": [[0, 4]],
             "relevant_clip_ids": [0, 1], "saliency_scores": [[4, 4, 4], [2, 2, 2]]}]
    (tmp_path / "gt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pred = {"qid": 1, "pred_relevant_windows": [[0, 4, 0.9]], "pred_saliency_scores": [0.5] * 10}
    (tmp_path / "pred.jsonl").write_text(json.dumps(pred) + "\n")
    (tmp_path / "test_ann.jsonl").write_text(json.dumps({"qid": 9, "query": "c", "vid": "v9", "duration": 20}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({**pred, "qid": 9}) + "\n")


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_predict_eval_and_checkpoint_files_follow_the_umask(tmp_path, mask, mode):
    pred = Prediction(query="q", vid="v", duration=10.0, windows=[[0.0, 4.0, 0.9]], saliency=[0.1] * 5,
                      model="moment_detr", weights="random")
    _gt(tmp_path)
    with umask(mask):
        written = [write_predictions(tmp_path / "p.json", [pred]), write_predictions(tmp_path / "p.jsonl", [pred]),
                   plot_predictions(tmp_path / "p.png", [pred]),
                   save_checkpoint(tmp_path / "m.ckpt", model="m", config={}, state_dict={}, profile="clip")]
        assert main(["eval", "--submission", str(tmp_path / "pred.jsonl"), "--gt", str(tmp_path / "gt.jsonl"),
                     "--out", str(tmp_path / "metrics.json")]) == 0
        assert main(["eval", "--pack", str(tmp_path / "sub.zip"), "--val", str(tmp_path / "pred.jsonl"),
                     "--test", str(tmp_path / "test.jsonl"), "--val-gt", str(tmp_path / "gt.jsonl"),
                     "--test-ann", str(tmp_path / "test_ann.jsonl")]) == 0
    written += [tmp_path / "metrics.json", tmp_path / "sub.zip"]
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(mode) for p in written}


@pytest.mark.slow
def test_training_run_files_follow_the_umask(tmp_path):
    data = make_synthetic(tmp_path / "data", load_profile("clip"),
                          SyntheticSpec(n_train=8, n_val=4, min_clips=10, max_clips=12, n_concepts=2))
    cfg = load_train_config("moment_detr", profile="clip", epochs=1, batch_size=8, num_workers=0, progress=False,
                            model_config={"hidden_dim": 16, "nheads": 2, "enc_layers": 1, "dec_layers": 1,
                                          "dim_feedforward": 32})
    with umask(0o022):
        Trainer(cfg, data["features"], data["train"], data["val"], tmp_path / "run", log=lambda _m: None).run()
    files = [p for p in (tmp_path / "run").iterdir() if p.is_file()]
    assert {"best.ckpt", "last.ckpt", "metrics.jsonl", "best_val_preds.jsonl"} <= {p.name for p in files}
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: "0o644" for p in files}


def test_remembered_encoder_info_follows_the_umask(tmp_path):
    from mrhd.encoders.base import EncoderInfo
    from mrhd.inference.lazy_encoders import lazy_encoder

    class Fake:
        info = EncoderInfo("clip", 4, "random", {"model": "fake"})

    with umask(0o022):
        enc = lazy_encoder("clip", Fake, random_weights=True, size="tiny", cache_root=tmp_path)
        assert enc.encoder.info.dim == 4
    notes = list((tmp_path / "encoder-info").iterdir())
    assert len(notes) == 1 and _mode(notes[0]) == 0o644
    again = lazy_encoder("clip", lambda: pytest.fail("built although its info was remembered"),
                         random_weights=True, size="tiny", cache_root=tmp_path)
    assert again.info == Fake.info and not again.built
