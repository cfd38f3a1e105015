"""`mrhd eval`: table, --out, --strict, user errors, and the CodaLab submission zip."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

from mrhd.cli import main
from mrhd.io import json_safe, read_jsonl
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
        assert key in printed and (f"{value:.2f}" if value == value else "n/a") in printed
    assert "scored: moment retrieval (MR), highlight detection (HD)" in printed
    # strict JSON: the undefined MR-long values (no long window) are null, never the token NaN
    text = out.read_text()
    assert "NaN" not in text
    written = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert written["brief"]["MR-long-mAP"] is None
    assert written == json.loads(json.dumps(expected).replace("NaN", "null"))
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


# ---- issue 21: one rule for the scored families, blame, qid types, outputs --------------------
def _without(rows, index, key):
    rows = [dict(r) for r in rows]
    del rows[index][key]
    return rows


def _gt_with(change):
    rows = _gt_rows()
    change(rows)
    return rows


def _predict_entries(rows):
    """The entries `mrhd predict --out` writes for the ground truth's queries: qid = the query's
    position on the command line (not the benchmark's qid), plus model and weights."""
    gt = {g["qid"]: g for g in _gt_rows()}
    return [{"qid": i, "query": gt[r["qid"]]["query"], "vid": gt[r["qid"]]["vid"],
             "duration": gt[r["qid"]]["duration"], **{k: v for k, v in r.items() if k != "qid"},
             "model": "qd_detr", "weights": "random"} for i, r in enumerate(rows)]


# (name, ground truth, predictions, exit code, words in the last stderr line, the file blamed)
BAD_EVAL_INPUTS = [
    ("saliency-missing-on-line-1", _gt_rows(), _without(_pred_rows(), 0, "pred_saliency_scores"), 2,
     ["line 1", "no pred_saliency_scores", "line 2 has", "on none"], "pred.jsonl"),
    ("saliency-missing-on-line-2", _gt_rows(), _without(_pred_rows(), 1, "pred_saliency_scores"), 2,
     ["line 2", "no pred_saliency_scores", "line 1 has"], "pred.jsonl"),
    ("windows-missing-on-line-1", _gt_rows(), _without(_pred_rows(), 0, "pred_relevant_windows"), 2,
     ["line 1", "no pred_relevant_windows", "line 2 has"], "pred.jsonl"),
    ("gt-reversed-window", _gt_with(lambda g: g[1].update(relevant_windows=[[20, 10]])), _pred_rows(), 2,
     ["invalid ground truth", "ground-truth line 2", "qid 2", "malformed relevant window",
      "fix the ground-truth file"], "gt.jsonl"),
    ("gt-duplicate-qid", _gt_with(lambda g: g.append(dict(g[0]))), _pred_rows(), 2,
     ["invalid ground truth", "ground-truth line 3", "duplicate qid", "first on line 1"], "gt.jsonl"),
    ("gt-without-qid", _gt_with(lambda g: g[0].pop("qid")), _pred_rows(), 2,
     ["invalid ground truth", "ground-truth line 1", "no qid"], "gt.jsonl"),
    ("qid-string-vs-number", _gt_rows(), [{**_pred_rows()[0], "qid": "1"}, _pred_rows()[1]], 2,
     ["line 1", "qid '1'", "is a string", "qid 1 is a number", "write qids as the ground truth does"],
     "pred.jsonl"),
    ("predict-output-unknown-query", _gt_rows(),
     [{**e, "query": "something else"} if i == 1 else e for i, e in enumerate(_predict_entries(_pred_rows()))],
     2, ["pred.jsonl:", "something else", "no ground-truth line has this vid and query"], "pred.jsonl"),
]


@pytest.mark.parametrize("name, gt_rows, pred_rows, rc, words, blamed", BAD_EVAL_INPUTS,
                         ids=[c[0] for c in BAD_EVAL_INPUTS])
def test_bad_inputs_fail_with_one_line_blaming_the_right_file(tmp_path, capsys, name, gt_rows, pred_rows, rc,
                                                              words, blamed):
    gt = _write_jsonl(tmp_path / "gt.jsonl", gt_rows)
    pred = _write_jsonl(tmp_path / "pred.jsonl", pred_rows)
    out = tmp_path / "metrics.json"
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(out)]) == rc
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith(f"mrhd eval: error: {tmp_path / blamed}"), last
    for word in words:
        assert word in last, last
    if blamed == "gt.jsonl":
        assert "fix the prediction file" not in last
    assert "Traceback" not in captured.err and not captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.jsonl", "pred.jsonl"]   # no partial output


def test_a_family_on_no_line_is_skipped_and_the_output_says_so(tmp_path, capsys):
    """Whichever line would have had it: a field on no line means that family is not scored."""
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    for field, scored, skipped in (("pred_saliency_scores", "moment retrieval (MR)", "highlight detection"),
                                   ("pred_relevant_windows", "highlight detection (HD)", "moment retrieval")):
        pred = _write_jsonl(tmp_path / "pred.jsonl", [{k: v for k, v in r.items() if k != field}
                                                      for r in _pred_rows()])
        assert main(["eval", "--submission", str(pred), "--gt", str(gt)]) == 0
        printed = capsys.readouterr().out
        assert f"scored: {scored}; not scored: {skipped} (no line has {field})" in printed


def test_predict_output_is_scored_by_vid_and_query(tmp_path, capsys):
    """`mrhd predict --out` (a JSON list, or JSON lines) is matched to the ground truth by vid and
    query: its qids are command-line positions (here predict's qid 1 is the ground truth's qid 2)."""
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    expected = evaluate("qvhighlights", _pred_rows(), _gt_rows())["brief"]
    entries = _predict_entries(_pred_rows())
    (tmp_path / "preds.json").write_text(json.dumps(entries, indent=1) + "\n")
    _write_jsonl(tmp_path / "preds.jsonl", entries)
    for name in ("preds.json", "preds.jsonl"):
        out = tmp_path / f"{name}.metrics.json"
        assert main(["eval", "--submission", str(tmp_path / name), "--gt", str(gt), "--out", str(out)]) == 0
        captured = capsys.readouterr()
        assert "matched to ground-truth qids by vid and query" in captured.err
        assert json.loads(out.read_text())["brief"] == json.loads(json.dumps(json_safe(expected)))


@pytest.mark.parametrize("content, words", [
    ('[{"qid": 1}, \n  {"qid": 2,,}]\n', ["pred.json:2: not valid JSON", "mrhd predict --out", "JSON lines"]),
    ('{"qid": 1}\n{"qid": \n', ["pred.json:2: not valid JSON", "mrhd predict --out"]),
    ('[1, 2]', ["is a int, not an object"]),
])
def test_unreadable_submission_says_what_eval_expects(tmp_path, capsys, content, words):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    (tmp_path / "pred.json").write_text(content)
    assert main(["eval", "--submission", str(tmp_path / "pred.json"), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for word in words:
        assert word in err


def _unwritable_targets(tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    rows = [("a-folder", "is a folder"), ("a-file/metrics.json", "is a file, not a folder")]
    if os.geteuid() != 0:   # root writes into a 0555 folder
        rows.append(("read-only/metrics.json", "permission denied"))
    return rows


@pytest.mark.parametrize("flag", ["--out", "--pack"])
def test_unwritable_out_and_pack_fail_with_one_line_before_any_work(tmp_path, capsys, flag):
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    pred = _write_jsonl(tmp_path / "pred.jsonl", _pred_rows())
    test_ann = _write_jsonl(tmp_path / "test_ann.jsonl", [{"qid": 9, "query": "c", "vid": "v9", "duration": 20}])
    test = _write_jsonl(tmp_path / "test.jsonl", [{"qid": 9, "pred_relevant_windows": [[0, 2, 1.0]],
                                                    "pred_saliency_scores": [0.0] * 10}])
    for target, words in _unwritable_targets(tmp_path):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        path = str(tmp_path / target)
        argv = (["eval", "--submission", str(pred), "--gt", str(gt), "--out", path] if flag == "--out" else
                ["eval", "--pack", path, "--val", str(pred), "--test", str(test), "--val-gt", str(gt),
                 "--test-ann", str(test_ann)])
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [captured.err.strip()], captured.err
        assert captured.err.startswith(f"mrhd eval: error: cannot write {flag}") or words in captured.err
        assert words in captured.err and not captured.out
        assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_failed_write_is_one_line(tmp_path, capsys, monkeypatch):
    """A file system that refuses the write itself (read-only mount, disk full) after the checks."""
    import errno

    import mrhd.commands.eval as eval_command

    def refuse(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(eval_command, "write_atomic", refuse)
    gt = _write_jsonl(tmp_path / "gt.jsonl", _gt_rows())
    pred = _write_jsonl(tmp_path / "pred.jsonl", _pred_rows())
    assert main(["eval", "--submission", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "Read-only file system" in err and "choose a writable path" in err
