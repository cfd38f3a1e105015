"""`mrhd train`: outputs, exact resume, learning on planted moments, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from mrhd.cli import main
from mrhd.features.profiles import load_profile
from mrhd.training.config import load_train_config
from mrhd.training.optim import WarmupStepFactor
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint

TINY = {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small planted-moment set (short videos so every step is cheap)."""
    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(out, load_profile("slowfast_clip"),
                          SyntheticSpec(n_train=48, n_val=16, min_clips=10, max_clips=20, n_concepts=4))


def _cfg(**kw):
    base = dict(epochs=2, batch_size=16, num_workers=0, eval_every=100, progress=False, model_config=TINY)
    base.update(kw)
    return load_train_config("moment_detr", **base)


def test_official_defaults_are_loaded():
    cfg = load_train_config("qd_detr")
    assert (cfg.lr, cfg.weight_decay, cfg.lr_drop, cfg.grad_clip, cfg.batch_size, cfg.epochs) == \
        (1e-4, 1e-4, 400, 0.1, 32, 200)
    assert cfg.best_metric == "MR-full-mAP" and cfg.seed == 2018
    assert load_train_config("tr_detr").seed == 2017
    u = load_train_config("univtg")
    assert (u.lr_drop, u.lr_warmup) == (80, 10)


def test_univtg_warmup_step_schedule():
    f = WarmupStepFactor(warmup=10, step_size=80, gamma=0.1)
    assert [f(e) for e in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == 1.0 and f(79) == 1.0
    assert f(80) == pytest.approx(0.1) and f(159) == pytest.approx(0.1) and f(160) == pytest.approx(0.01)


@pytest.mark.slow
def test_run_writes_outputs_and_resume_continues_exactly(tiny_data, tmp_path, one_thread):
    d = tiny_data
    full = Trainer(_cfg(), d["features"], d["train"], d["val"], tmp_path / "full")
    full.run()
    steps_per_epoch = len(full.train_loader)
    assert len(full.step_losses) == 2 * steps_per_epoch

    for name in ("best.ckpt", "last.ckpt", "metrics.jsonl", "best_val_preds.jsonl"):
        assert (tmp_path / "full" / name).is_file(), name
    assert (tmp_path / "full" / "tensorboard").is_dir()
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2] and "MR-full-mAP" in rows[0]
    preds = [json.loads(x) for x in (tmp_path / "full" / "best_val_preds.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and {"qid", "vid", "pred_relevant_windows", "pred_saliency_scores"} <= set(preds[0])
    best = load_checkpoint(tmp_path / "full" / "best.ckpt")
    assert best["model"] == "moment_detr" and best["profile"] == "slowfast_clip"
    assert best["config"]["v_feat_dim"] == 2818 and best["config"]["hidden_dim"] == 32
    assert "torch" in best["versions"] and best["metrics"]["MR-full-mAP"] == rows[0]["MR-full-mAP"]

    # stop after epoch 1 (evaluating there, which must not disturb the RNG), then resume to 2
    first = Trainer(_cfg(epochs=1, eval_every=1), d["features"], d["train"], d["val"], tmp_path / "cut")
    first.run()
    assert first.step_losses == full.step_losses[:steps_per_epoch]
    resumed = Trainer(_cfg(), d["features"], d["train"], d["val"], tmp_path / "cut", resume=True)
    resumed.run()
    assert resumed.step_losses == full.step_losses[steps_per_epoch:]
    a = load_checkpoint(tmp_path / "full" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_learns_planted_moments_well_above_chance(tmp_path, one_thread):
    d = make_synthetic(tmp_path / "data", load_profile("slowfast_clip"),
                       SyntheticSpec(n_train=64, n_val=24, min_clips=10, max_clips=20, n_concepts=4, seed=1))
    small = {"hidden_dim": 64, "nheads": 4, "enc_layers": 2, "dec_layers": 2, "dim_feedforward": 128,
             "dropout": 0.0, "input_dropout": 0.0}
    tr = Trainer(_cfg(epochs=8, eval_every=4, lr=5e-4, model_config=small),
                 d["features"], d["train"], d["val"], tmp_path / "run")
    chance = tr.evaluate()[0]["brief"]
    tr.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(r["HL-min-Fair-Hit1"] for r in rows)
    # the top-scored clip of each held-out video lies in the queried (not the distractor) moment
    assert best >= 70 and best >= chance["HL-min-Fair-Hit1"] + 25, (chance, rows)


def _cli(*args) -> int:
    return main(["train", *map(str, args)])


def test_bad_input_is_a_one_line_error(tiny_data, tmp_path, capsys):
    d = tiny_data
    common = ["--train", d["train"], "--val", d["val"], "--quiet", "--num-workers", "0"]
    assert _cli("--model", "nope", "--features", d["features"], "--out", tmp_path / "r0", *common) == 2
    assert "unknown model" in capsys.readouterr().err
    assert _cli("--model", "moment_detr", "--features", tmp_path / "none", "--out", tmp_path / "r1", *common) == 2
    assert "features folder" in capsys.readouterr().err
    assert _cli("--model", "moment_detr", "--features", d["features"], "--out", tmp_path / "r2",
                "--resume", *common) == 2
    assert "last.ckpt not found" in capsys.readouterr().err

    # a store of another encoder where the profile needs clip
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("slowfast.h5", "clip_text.h5"):
        (wrong / name).symlink_to(d["features"] / name)
    (wrong / "clip.h5").symlink_to(d["features"] / "slowfast.h5")
    assert _cli("--model", "moment_detr", "--features", wrong, "--out", tmp_path / "r3", *common) == 2
    err = capsys.readouterr().err
    assert "holds 'slowfast' features" in err and len(err.strip().splitlines()) == 1

    if not torch.cuda.is_available():
        assert _cli("--model", "moment_detr", "--features", d["features"], "--out", tmp_path / "r6",
                    "--device", "cuda", *common) == 2
        assert "CUDA is not available" in capsys.readouterr().err

    # an empty split
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _cli("--model", "moment_detr", "--features", d["features"], "--out", tmp_path / "r4",
                "--train", empty, "--val", d["val"], "--quiet") == 2
    assert "no usable lines" in capsys.readouterr().err

    # --resume on a run of another model
    run = tmp_path / "r5"
    run.mkdir()
    save_checkpoint(run / "last.ckpt", model="qd_detr", config={}, state_dict={}, profile="slowfast_clip")
    assert _cli("--model", "moment_detr", "--features", d["features"], "--out", run, "--resume", *common) == 2
    assert "checkpoint of model 'qd_detr'" in capsys.readouterr().err


def test_dataloader_workers_read_the_stores(tiny_data, tmp_path, one_thread):
    d = tiny_data
    tr = Trainer(_cfg(epochs=1, num_workers=2), d["features"], d["train"], d["val"], tmp_path / "run")
    tr.evaluate()   # the parent process opens the stores first; forked workers must reopen them
    tr.run()
    assert len(tr.step_losses) == len(tr.train_loader) and all(map(torch.isfinite, map(torch.tensor, tr.step_losses)))
    assert (tmp_path / "run" / "best.ckpt").is_file()


def test_lines_with_missing_videos_are_reported_and_skipped(tiny_data, tmp_path, capsys):
    d = tiny_data
    lines = d["train"].read_text().splitlines()
    extra = json.loads(lines[0])
    extra.update(qid=999999, vid="not_in_store_0.0_30.0")
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines + [json.dumps(extra)]) + "\n")
    logs = []
    tr = Trainer(_cfg(epochs=1), d["features"], train, d["val"], tmp_path / "run", log=logs.append)
    assert len(tr.train_set) == len(lines) and len(tr.train_set.skipped) == 1
    assert any("1 skipped" in m for m in logs) and any("999999" in m for m in logs)


@pytest.mark.gpu
def test_mixed_precision_step_on_cuda(tiny_data, tmp_path):
    d = tiny_data
    tr = Trainer(_cfg(epochs=1, device="cuda"), d["features"], d["train"], d["val"], tmp_path / "gpu")
    assert tr.amp_dtype is (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    tr.run()
    assert all(torch.isfinite(torch.tensor(x)) for x in tr.step_losses)


def _with_line_3(rows: list[str], **changes) -> list[str]:
    row = json.loads(rows[2])
    row.update(changes)
    return rows[:2] + [json.dumps(row)] + rows[3:]


# (name, change to line 3 of --train, words of the one-line error)
BAD_ANNOTATIONS = [
    ("start-after-end", {"relevant_windows": [[16.0, 4.0]]}, ["window 0 [16.0, 4.0] has start > end"]),
    ("window-of-three", {"relevant_windows": [[0.0, 4.0, 1.0]]}, ["window 0", "is not [start, end]"]),
    ("window-nan", {"relevant_windows": [[0.0, float("nan")]]}, ["window 0", "is not [start, end]"]),
    ("windows-not-a-list", {"relevant_windows": "0-4"}, ["relevant_windows is '0-4'"]),
]


@pytest.mark.parametrize("name, change, words", BAD_ANNOTATIONS, ids=[c[0] for c in BAD_ANNOTATIONS])
def test_bad_annotation_windows_name_the_file_line_and_qid(tiny_data, tmp_path, capsys, name, change, words):
    d = tiny_data
    rows = d["train"].read_text().splitlines()
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(_with_line_3(rows, **change)) + "\n")
    qid = json.loads(rows[2])["qid"]
    rc = _cli("--model", "moment_detr", "--features", d["features"], "--train", train, "--val", d["val"],
              "--out", tmp_path / "run", "--epochs", "1", "--quiet", "--num-workers", "0")
    captured = capsys.readouterr()
    assert rc == 2 and "Traceback" not in captured.err
    assert captured.err.strip().splitlines() == [captured.err.strip()], captured.err
    for word in [f"{train}:3: qid {qid}:", "fix that line", *words]:
        assert word in captured.err, captured.err
    assert not (tmp_path / "run").exists()   # no partial output
