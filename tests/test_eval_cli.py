"""`mrhd eval`: table, --out, --strict, user errors, and the CodaLab submission zip."""

from __future__ import annotations

import json
import zipfile

import pytest

from mrhd.cli import main
from mrhd.io import read_jsonl
from mrhd.pipeline.evaluate import evaluate


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _gt_rows():
    return [{"qid": 1, "query": "a", "vid": "v1", "duration": 20, "relevant_windows": [[0, 4]],
             "relevant_clip_ids": [0, 1], "saliency_scores": [[4, 4, 4], [2, 2, 2]]},
            {"qid": 2, "query": "b", "vid": "v2", "duration": 30, "relevant_windows": [[10, 20]],
             "relevant_clip_ids": [5, 6], "saliency_scores": [[3, 3, 3], [1, 1, 1]]}]


def _pred_rows(n2=15):
    return [{"qid": 1, "pred_relevant_windows": [[0, 4, 0.9], [6, 8, 0.1]],
             "pred_saliency_scores": [0.9, 0.5] + [0.0] * 8},
            {"qid": 2, "pred_relevant_windows": [[10, 18, 0.8]],
             "pred_saliency_scores": [0.0] * 5 + [1.0] + [0.0] * (n2 - 6)}]


def test_eval_prints_brief_table_and_writes_full_json(tmp_path, capsys):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    pred = _write_jsonl(tmp_path / "pred.jsonl", _pred_rows())
    out = tmp_path / "sub" / "metrics.json"
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = evaluate("qvhighlights", _pred_rows(), _gt_rows())
    for key, value in expected["brief"].items():
        assert key in printed and f"{value:.2f}" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected))
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.json"]  # no temp file left


def test_strict_makes_warnings_fatal_and_writes_nothing(tmp_path, capsys):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    pred = _write_jsonl(tmp_path / "pred.jsonl", _pred_rows(n2=9))  # 9 saliency values, 15 clips
    out = tmp_path / "metrics.json"
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    assert "line 2: qid 2" in capsys.readouterr().err
    out.unlink()
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(out), "--strict"]) != 0
    err = capsys.readouterr().err
    assert "qid 2" in err and "--strict" in err
    assert not out.exists()


def test_invalid_predictions_fail_with_one_line_and_no_output(tmp_path, capsys):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    rows = _pred_rows()
    rows[1]["pred_relevant_windows"][0] = [18, 10, 0.8]
    pred = _write_jsonl(tmp_path / "pred.jsonl", rows)
    out = tmp_path / "metrics.json"
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mrhd eval: error:") and "line 2: qid 2" in last and "start > end" in last
    assert not out.exists()


def test_user_errors_are_one_line(tmp_path, capsys):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    assert main(["eval", "--submission", str(tmp_path / "nope.jsonl"), "--gt", str(gt)]) == 2
    assert "file not found" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text('{"qid": 1}\n{"qid": \n')
    assert main(["eval", "--submission", str(tmp_path / "broken.jsonl"), "--gt", str(gt)]) == 2
    assert "broken.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "--submission" in capsys.readouterr().err


def test_charades_dataset_flag(tmp_path, capsys):
    gt = _write_jsonl(tmp_path / "gt.jsonl", [{"qid": 3, "duration": 30.0, "relevant_windows": [[1.0, 5.0]]}])
    pred = _write_jsonl(tmp_path / "p.jsonl", [{"qid": 3, "pred_relevant_windows": [[1.0, 5.0, 1.0]]}])
    assert main(["eval", "--dataset", "charades", "--submission", str(pred), "--gt", str(gt)]) == 0
    out = capsys.readouterr().out
    assert "Charades-STA" in out and "MR-full-R5@0.7" in out and "100.00" in out


def test_dataset_names_are_the_train_names_and_charades_stays_an_alias(tmp_path, capsys):
    """`mrhd eval --dataset` takes the names `mrhd train --dataset` takes (configs/datasets) and lists
    them in --help; the old metric-family name charades still means Charades-STA."""
    from mrhd.cli import build_parser
    from mrhd.pipeline.dataset_configs import dataset_names

    gt = _write_jsonl(tmp_path / "gt.jsonl", [{"qid": 3, "duration": 30.0, "relevant_windows": [[1.0, 5.0]]}])
    pred = _write_jsonl(tmp_path / "p.jsonl", [{"qid": 3, "pred_relevant_windows": [[1.0, 5.0, 1.0]]}])
    for name, title in (("charades_sta", "Charades-STA"), ("charades", "Charades-STA"), ("tacos", "TACoS")):
        assert main(["eval", "--dataset", name, "--submission", str(pred), "--gt", str(gt)]) == 0
        assert capsys.readouterr().out.startswith(f"{title}: ")
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    choices = next(a.choices for a in eval_parser._actions if a.dest == "dataset")
    assert set(dataset_names()) <= set(choices) and "charades" not in choices
    with pytest.raises(SystemExit):
        main(["eval", "--dataset", "kinetics", "--submission", str(pred), "--gt", str(gt)])
    assert "invalid choice" in capsys.readouterr().err

@pytest.mark.slow
def test_pack_writes_the_codalab_zip(tmp_path, data_dir, capsys):
    qvh = data_dir / "qvhighlights"
    val_gt = read_jsonl(qvh / "highlight_val_release.jsonl")
    test_ann = read_jsonl(qvh / "highlight_test_release.jsonl")

    def oracle(g):
        wins = g.get("relevant_windows") or [[0, 2]]
        return {"qid": g["qid"], "query": g["query"], "vid": g["vid"],
                "pred_relevant_windows": [[*w, 1.0 - 0.01 * i] for i, w in enumerate(wins)],
                "pred_saliency_scores": [0.0] * int(g["duration"] / 2)}

    val = _write_jsonl(tmp_path / "val.jsonl", [oracle(g) for g in val_gt])
    test = _write_jsonl(tmp_path / "test.jsonl", [oracle(g) for g in test_ann])
    out = tmp_path / "submission.zip"
    args = ["eval", "--pack", str(out), "--val", str(val), "--test", str(test),
            "--val-gt", str(qvh / "highlight_val_release.jsonl"),
            "--test-ann", str(qvh / "highlight_test_release.jsonl")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "MR-full-R1@0.7" in printed and "100.00" in printed  # val oracle sanity check
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["hl_test_submission.jsonl", "hl_val_submission.jsonl"]
        lines = zf.read("hl_test_submission.jsonl").decode().splitlines()
    assert [json.loads(s)["qid"] for s in lines] == [g["qid"] for g in test_ann]

    # a test file with a foreign qid is refused and no zip is written
    out.unlink()
    bad = _write_jsonl(tmp_path / "bad.jsonl", [oracle(g) for g in test_ann[:-1]] + [oracle(val_gt[0])])
    args[args.index(str(test))] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"qid {val_gt[0]['qid']}" in err and "unknown qid" in err
    assert not out.exists() and not list(tmp_path.glob(".submission.zip*"))
