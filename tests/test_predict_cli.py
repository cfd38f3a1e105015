"""`mrhd predict` on the command line: the offline random-weights run and one-line errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from mrhd.cli import main
from mrhd.extract.synthetic import write_video
from mrhd.models.registry import create_model
from tests.helpers.videos import write_broken


@pytest.fixture()
def tiny_encoders(monkeypatch):
    """The CLI path unchanged, with small random encoders instead of the full random CLIP (speed)."""
    from mrhd.inference import predict as predict_mod

    real = predict_mod.Predictor.from_pretrained
    monkeypatch.setattr(predict_mod.Predictor, "from_pretrained",
                        classmethod(lambda cls, *a, **k: real(*a, **{**k, "encoder_size": "tiny"})))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("cli-videos") / "clip.mp4", duration=12.0, fps=10, audio=False)


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0]
    return lines[0]


@pytest.mark.slow
def test_offline_demo_run_writes_json_and_png(video, tmp_path, monkeypatch, capsys, tiny_encoders):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    out, png = tmp_path / "preds.json", tmp_path / "sal.png"
    rc = main(["predict", str(video), "a white bar", "colours", "--weights", "random",
               "--out", str(out), "--plot", str(png), "--top-k", "3", "--gt", "2-6"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert 'query: "a white bar"' in printed and "rank" in printed and "top highlight clips" in printed
    objs = json.loads(out.read_text())
    assert len(objs) == 2
    for o in objs:
        assert o["vid"] == "clip" and o["weights"] == "random" and o["duration"] == pytest.approx(12.0)
        assert len(o["pred_saliency_scores"]) == 6
        for st, ed, _ in o["pred_relevant_windows"]:
            assert 0 <= st < ed <= 12.0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the cached features are reused by the next run
    assert list((tmp_path / "cache" / "features").rglob("*.npy"))


def test_missing_video(tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "none.mp4"), "a query", "--weights", "random"])
    _one_line_error(capsys, rc, "not found")


def test_bad_gt_window(video, capsys):
    rc = main(["predict", str(video), "q", "--weights", "random", "--plot", "x.png", "--gt", "abc"])
    _one_line_error(capsys, rc, "--gt")


def test_empty_query(video, capsys):
    rc = main(["predict", str(video), "  ", "--weights", "random"])
    _one_line_error(capsys, rc, "empty query")


def test_unwritable_outputs_fail_before_work(video, tmp_path, capsys):
    rc = main(["predict", str(video), "q", "--weights", "random", "--out", str(tmp_path / "no" / "p.json")])
    _one_line_error(capsys, rc, "does not exist")
    rc = main(["predict", str(video), "q", "--weights", "random", "--plot", str(tmp_path / "p.jpg")])
    _one_line_error(capsys, rc, ".png")
    assert not list(tmp_path.iterdir())


def test_unknown_model_and_device(video, capsys, tiny_encoders):
    rc = main(["predict", str(video), "q", "--weights", "random", "--model", "nonexistent_model"])
    _one_line_error(capsys, rc, "unknown model")
    rc = main(["predict", str(video), "q", "--weights", "random", "--device", "tpu"])
    _one_line_error(capsys, rc, "device")
    if not torch.cuda.is_available():
        rc = main(["predict", str(video), "q", "--weights", "random", "--device", "cuda"])
        _one_line_error(capsys, rc, "CUDA is not available")


def test_checkpoint_of_another_model(video, tmp_path, capsys):
    opt = dict(v_feat_dirs=["f/clip_features"], v_feat_dim=514, t_feat_dim=512, hidden_dim=16, nheads=2,
               enc_layers=1, dec_layers=1, dim_feedforward=32, num_queries=4)
    torch.manual_seed(0)
    ckpt = tmp_path / "md.ckpt"
    torch.save({"model": create_model("moment_detr", opt).state_dict(), "opt": argparse.Namespace(**opt)}, ckpt)
    out = tmp_path / "p.json"
    rc = main(["predict", str(video), "q", "--weights", str(ckpt), "--model", "qd_detr", "--out", str(out)])
    _one_line_error(capsys, rc, "qd_detr")
    assert not out.exists()


def test_corrupt_video_leaves_no_output(tmp_path, capsys, monkeypatch, tiny_encoders):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    bad = write_broken(tmp_path / "bad.mp4", "garbage")
    out = tmp_path / "p.json"
    rc = main(["predict", str(bad), "q", "--weights", "random", "--out", str(out)])
    _one_line_error(capsys, rc, "bad.mp4")
    assert not out.exists()


# (name, --weights file content, what the one-line error says it is)
NOT_CHECKPOINT_WEIGHTS = [
    ("json", b'{"weights": "qd_detr"}\n', "it is JSON text"),
    ("random-bytes", b"c" + bytes(range(256)) * 8, "binary data"),
    ("empty", b"", "it is empty"),
]


@pytest.mark.parametrize("name, content, words", NOT_CHECKPOINT_WEIGHTS, ids=[c[0] for c in NOT_CHECKPOINT_WEIGHTS])
def test_weights_file_that_is_no_checkpoint(video, tmp_path, capsys, name, content, words):
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(content)
    out = tmp_path / "p.json"
    for argv in (["predict", str(video), "q", "--weights", str(weights), "--out", str(out)],
                 ["weights", "info", str(weights)]):
        line = _one_line_error(capsys, main(argv), "is not a model checkpoint at all", words, "mrhd train")
        assert "allow-list" not in line and "weights_only" not in line
    assert not out.exists()


def test_random_weights_say_the_scores_are_meaningless(video, tmp_path, monkeypatch, capsys, tiny_encoders):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    assert main(["predict", str(video), "a white bar", "--weights", "random"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("NOTE: random weights") and "meaningless" in lines[1]


@pytest.mark.slow
def test_demo_with_flags_only_generates_the_sample_and_says_it_is_random(tmp_path, monkeypatch, capsys,
                                                                        tiny_encoders):
    """`./run.sh demo --weights random`: flags without a video once crashed with a ValueError."""
    from mrhd.cli import DEMO_VIDEO, demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    assert demo(["--weights", "random", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert f"wrote sample video {DEMO_VIDEO}" in out and "NOTE: random weights" in out and "meaningless" in out
    assert (tmp_path / DEMO_VIDEO).is_file()
