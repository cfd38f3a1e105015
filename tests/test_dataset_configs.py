"""configs/datasets and `mrhd train --dataset`: the YAMLs match the released annotation files,
bad configs are one-line errors, a Charades-STA run validates with R1@IoU / mIoU and keeps the
checkpoint the authors' rule picks, --data-dir finds the split files, and --resume keeps the dataset."""

from __future__ import annotations

import json

import pytest

from mrhd.annotations import load_annotations
from mrhd.commands.train import _split_overrides
from mrhd.errors import MrhdError
from mrhd.features.profiles import load_profile
from mrhd.pipeline.dataset_configs import dataset_names, load_dataset_config
from mrhd.pipeline.evaluate import EVALUATORS
from mrhd.training.config import load_train_config
from mrhd.training.synthetic import SyntheticSpec, make_synthetic
from mrhd.training.trainer import Trainer
from mrhd.training.validation import check_best_metric, evaluate_lines, scorable, selection_score
from mrhd.weights.checkpoint import load_checkpoint
from tests.test_train import TINY, _cli

CHARADES = "charades_sta"


# ---- the shipped YAMLs ------------------------------------------------------------------------
def test_shipped_dataset_names():
    assert dataset_names() == ["charades_sta", "qvhighlights", "tacos", "tvsum"]


@pytest.mark.parametrize("name", dataset_names())
def test_config_names_the_released_files_and_a_metric_they_report(name, data_dir):
    cfg = load_dataset_config(name)
    folder = data_dir / name
    assert cfg.metrics in EVALUATORS
    # every annotation file of the folder is a split, and every split file exists
    assert sorted(cfg.splits.values()) == sorted(p.name for p in folder.glob("*.jsonl"))
    val = scorable(load_annotations(folder / cfg.split_file(cfg.validate_on)), cfg.metrics)
    assert val, f"{name}: the validation split has no line its metrics can score"
    # best_metric names keys of the family's brief block on the real validation lines
    check_best_metric(cfg.best_metric, val, cfg.metrics, clip_len=2.0)
    with pytest.raises(MrhdError, match="not among the metrics"):
        check_best_metric("no-such-metric", val, cfg.metrics, clip_len=2.0)


def test_profile_caps_follow_the_dataset():
    base = load_profile("slowfast_clip")
    assert load_dataset_config(CHARADES).apply_to_profile(base).max_v_l is None     # -1: no cap
    assert load_dataset_config(CHARADES).apply_to_profile(base).max_q_l == base.max_q_l
    assert load_dataset_config("tvsum").apply_to_profile(base).max_v_l == 1000
    qvh = load_dataset_config("qvhighlights").apply_to_profile(load_profile("univtg"))
    assert (qvh.max_v_l, qvh.max_q_l) == (75, 32)


# ---- bad names and keys -----------------------------------------------------------------------
def _write(tmp_path, name: str, text: str):
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


GOOD = "metrics: charades\nbest_metric: MR-full-R1@0.7\nsplits: {train: a.jsonl, val: b.jsonl}\n"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(MrhdError) as err:
        load_dataset_config("charades")
    msg = str(err.value)
    assert "unknown dataset 'charades'" in msg and all(n in msg for n in dataset_names())
    assert "\n" not in msg


@pytest.mark.parametrize("text, match", [
    (GOOD + "clip_length: 1\n", r"unknown keys \['clip_length'\]"),
    (GOOD.replace("charades", "kinetics"), "metrics 'kinetics' has no evaluator"),
    (GOOD + "validate_on: test\n", "validate_on 'test' is not among the splits"),
    (GOOD + "max_v_l: 0\n", "max_v_l must be a positive integer or -1"),
    ("metrics: charades\nsplits: {train: a.jsonl}\n", "lacks best_metric"),
    (GOOD + "name: other\n", "the name must be the file's stem"),
])
def test_bad_yaml_is_a_one_line_error(tmp_path, text, match):
    folder = _write(tmp_path, "mine", text)
    with pytest.raises(MrhdError, match=match) as err:
        load_dataset_config("mine", folder)
    assert "\n" not in str(err.value)


def test_good_yaml_in_another_folder_loads(tmp_path):
    cfg = load_dataset_config("mine", _write(tmp_path, "mine", GOOD))
    assert (cfg.name, cfg.validate_on, cfg.max_v_l) == ("mine", "val", None)


# ---- option precedence and model selection ----------------------------------------------------
def test_best_metric_precedence():
    assert load_train_config("qd_detr").best_metric == "MR-full-mAP"            # model YAML, as before
    ds = load_dataset_config(CHARADES)
    assert load_train_config("qd_detr", dataset=CHARADES).best_metric == ds.best_metric
    explicit = load_train_config("qd_detr", dataset=CHARADES, best_metric="MR-full-R1@0.3")
    assert explicit.best_metric == "MR-full-R1@0.3" and explicit.dataset == CHARADES
    # --set routes training options to the train config; model fields (UniVTG's clip_len) stay there
    assert _split_overrides("qd_detr", {"best_metric": "x", "hidden_dim": 8}) == ({"best_metric": "x"},
                                                                                {"hidden_dim": 8})
    assert _split_overrides("univtg", {"clip_len": 1.0}) == ({}, {"clip_len": 1.0})


def test_selection_score_of_a_composite_metric():
    brief = {"MR-full-R1@0.5": 40.0, "MR-full-R1@0.7": 21.0, "MR-full-mIoU": 35.5}
    assert selection_score(brief, "MR-full-R1@0.5+MR-full-R1@0.7") == pytest.approx(30.5)
    assert selection_score(brief, "MR-full-mIoU") == 35.5
    with pytest.raises(MrhdError, match=r"\['MR-full-mAP'\] not among the metrics"):
        selection_score(brief, "MR-full-mAP")


def test_windows_only_validation_gets_charades_metrics():
    gt = [{"qid": 1, "vid": "a", "duration": 30.0, "relevant_windows": [[10.0, 20.0]]},
          {"qid": 2, "vid": "b", "duration": 30.0, "relevant_windows": [[0.0, 5.0]]}]
    preds = [{"qid": 1, "pred_relevant_windows": [[10.0, 20.0, 0.9], [0.0, 4.0, 0.1]]},
             {"qid": 2, "pred_relevant_windows": [[20.0, 30.0, 0.8], [0.0, 5.0, 0.7]]}]
    brief = evaluate_lines(preds, gt, "charades")["brief"]
    assert brief["MR-full-R1@0.7"] == 50.0 and brief["MR-full-R5@0.7"] == 100.0
    assert brief["MR-full-mIoU"] == 50.0 and "MR-full-mAP" not in brief


# ---- `mrhd train --dataset charades_sta` --------------------------------------------------------
def _charades_style(lines_path, out_path):
    """QVHighlights-style synthetic lines as Charades-STA lines: one window, no saliency, a
    duration that is not a multiple of the clip length."""
    rows = []
    for line in load_annotations(lines_path):
        duration = line["duration"] - 0.37
        st, ed = line["relevant_windows"][0]
        rows.append({"qid": line["qid"], "query": line["query"], "duration": round(duration, 2),
                     "vid": line["vid"], "relevant_windows": [[st, min(ed, round(duration, 2))]]})
    out_path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def charades_data(tmp_path_factory):
    """Generated stores + Charades-STA files named as configs/datasets/charades_sta.yaml says."""
    root = tmp_path_factory.mktemp("charades")
    data = make_synthetic(root / "features", load_profile("slowfast_clip"),
                          SyntheticSpec(n_train=24, n_val=8, min_clips=8, max_clips=14, n_concepts=3))
    ds = load_dataset_config(CHARADES)
    ann = root / "annotations"
    ann.mkdir()
    _charades_style(data["train"], ann / ds.split_file("train"))
    _charades_style(data["val"], ann / ds.split_file(ds.validate_on))
    return {"features": data["features"], "ann": ann, "qvh_train": data["train"], "qvh_val": data["val"]}


def _tiny_flags() -> list[str]:
    flags = ["--model", "moment_detr", "--batch-size", "8", "--num-workers", "0", "--quiet", "--eval-every", "1"]
    for key, value in TINY.items():
        flags += ["--set", f"{key}={value}"]
    return flags


def _rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_charades_run_validates_with_its_metrics_and_resumes_on_them(charades_data, tmp_path, capsys):
    d, run = charades_data, tmp_path / "run"
    ds = load_dataset_config(CHARADES)
    common = ["--features", d["features"], "--out", run, *_tiny_flags()]
    assert _cli(*common, "--dataset", CHARADES, "--data-dir", d["ann"], "--epochs", "2") == 0
    # resume without --dataset: the run's dataset (its files, metrics, model selection) carries on
    assert _cli(*common, "--data-dir", d["ann"], "--epochs", "3", "--resume") == 0

    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mIoU"} <= set(r)
        assert "MR-full-mAP" not in r
    # best = the first epoch with the highest (R1@0.5 + R1@0.7) / 2 (wjun0830/CGDETR cg_detr/train.py)
    scores = [(r["MR-full-R1@0.5"] + r["MR-full-R1@0.7"]) / 2 for r in rows]
    best_epoch = rows[scores.index(max(scores))]["epoch"]
    best, last = load_checkpoint(run / "best.ckpt"), load_checkpoint(run / "last.ckpt")
    assert best["epoch"] == best_epoch and last["best_score"] == pytest.approx(max(scores))
    assert best["metrics"]["MR-full-R1@0.7"] == rows[best_epoch - 1]["MR-full-R1@0.7"]
    assert last["train_config"]["dataset"] == CHARADES and last["train_config"]["best_metric"] == ds.best_metric
    assert last["profile_spec"]["max_v_l"] is None       # charades_sta.yaml: max_v_l -1, no cap
    preds = [json.loads(x) for x in (run / "best_val_preds.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(p["pred_relevant_windows"] for p in preds)

    # resuming with another dataset is refused before anything is written
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert _cli(*common, "--dataset", "tacos", "--train", d["ann"] / ds.split_file("train"),
                "--val", d["ann"] / ds.split_file("test"), "--epochs", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "trained on dataset charades_sta, not tacos" in err and len(err.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_text() == before


def test_best_checkpoint_is_the_one_the_dataset_rule_picks(charades_data, tmp_path):
    """Scripted validation scores: R1@0.3 peaks at epoch 1, R1@0.7 alone at epoch 3, and the
    Charades-STA rule (R1@0.5 + R1@0.7) / 2 at epoch 2, which must win."""
    d = charades_data
    ds = load_dataset_config(CHARADES)
    cfg = load_train_config("moment_detr", dataset=CHARADES, epochs=3, batch_size=8, num_workers=0,
                            eval_every=1, progress=False, model_config=TINY)
    tr = Trainer(cfg, d["features"], d["ann"] / ds.split_file("train"), d["ann"] / ds.split_file("test"),
                 tmp_path / "run", log=lambda m: None)
    script = iter([(90.0, 30.0, 10.0), (50.0, 40.0, 20.0), (60.0, 20.0, 30.0)])
    real_evaluate = tr.evaluate

    def scripted():
        metrics, lines = real_evaluate()
        r3, r5, r7 = next(script)
        metrics["brief"].update({"MR-full-R1@0.3": r3, "MR-full-R1@0.5": r5, "MR-full-R1@0.7": r7})
        return metrics, lines

    tr.evaluate = scripted
    result = tr.run()
    assert result["best_score"] == 30.0
    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["epoch"] == 2
    assert [r["MR-full-R1@0.7"] for r in _rows(tmp_path / "run")] == [10.0, 20.0, 30.0]


def _trainer(d, out, model="moment_detr", model_config=TINY, **kw) -> Trainer:
    cfg = load_train_config(model, epochs=1, batch_size=8, num_workers=0, eval_every=1, progress=False,
                            model_config=model_config, **kw)
    return Trainer(cfg, d["features"], d["qvh_train"], d["qvh_val"], out, log=lambda m: None)


def test_qvhighlights_dataset_trains_as_without_one(charades_data, tmp_path):
    plain = _trainer(charades_data, tmp_path / "a")
    plain.run()   # the trainer seeds at construction: build each right before its run
    named = _trainer(charades_data, tmp_path / "b", dataset="qvhighlights")
    named.run()
    assert named.profile == plain.profile and named.cfg.best_metric == plain.cfg.best_metric
    assert named.step_losses == plain.step_losses
    assert _rows(tmp_path / "a")[0].keys() == _rows(tmp_path / "b")[0].keys()


def test_models_get_the_authors_dset_name(charades_data, tmp_path):
    tiny_cg = {**TINY, "t2v_layers": 1}
    assert _trainer(charades_data, tmp_path / "a", "cg_detr", tiny_cg).model_cfg.dset_name == "hl"
    assert _trainer(charades_data, tmp_path / "b", "cg_detr", tiny_cg,
                    dataset=CHARADES).model_cfg.dset_name == "charadesSTA"
    explicit = _trainer(charades_data, tmp_path / "c", "cg_detr", {**tiny_cg, "dset_name": "tacos"},
                        dataset=CHARADES)
    assert explicit.model_cfg.dset_name == "tacos"          # --set dset_name=... wins


def test_data_dir_errors_and_a_best_metric_the_dataset_lacks(charades_data, tmp_path, capsys):
    d = charades_data
    base = ["--features", d["features"], *_tiny_flags(), "--epochs", "1"]

    def one_line_error(*args) -> str:
        assert _cli(*base, *args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        return err

    half = tmp_path / "half"
    half.mkdir()
    (half / "charades_train_release.jsonl").write_text((d["ann"] / "charades_train_release.jsonl").read_text())
    err = one_line_error("--out", tmp_path / "r1", "--dataset", CHARADES, "--data-dir", half)
    assert "has no charades_test_release.jsonl (the charades_sta test split)" in err
    assert "--data-dir needs --dataset" in one_line_error("--out", tmp_path / "r2", "--data-dir", d["ann"])
    assert "--train is required" in one_line_error("--out", tmp_path / "r3", "--val", d["qvh_val"])
    assert "unknown dataset 'nope'" in one_line_error("--out", tmp_path / "r4", "--dataset", "nope",
                                                      "--data-dir", d["ann"])
    # QVHighlights' mAP is no Charades-STA metric: refused before the first epoch
    err = one_line_error("--out", tmp_path / "r5", "--dataset", CHARADES, "--data-dir", d["ann"],
                         "--set", "best_metric=MR-full-mAP")
    assert "best_metric 'MR-full-mAP'" in err and not (tmp_path / "r5").exists()
    # a split name with --data-dir picks that split's file (here the val run on the train split)
    assert _cli(*base, "--out", tmp_path / "r6", "--dataset", CHARADES, "--data-dir", d["ann"],
                "--val", "train", "--eval-every", "100") == 0
    assert load_checkpoint(tmp_path / "r6" / "best.ckpt")["train_config"]["dataset"] == CHARADES
    assert sum(1 for _ in (tmp_path / "r6" / "best_val_preds.jsonl").open()) == 24
