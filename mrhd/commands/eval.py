"""Score a prediction file with the official metrics (QVHighlights by default).

Prints the brief block; --out writes brief and full blocks as JSON. The file is checked first:
problems are listed with their line and qid; errors stop the run, warnings do not (--strict).

  mrhd eval --submission preds.jsonl --gt highlight_val_release.jsonl --out metrics.json
  mrhd eval --dataset charades_sta --submission preds.jsonl --gt charades_test_release.jsonl
  mrhd eval --pack submission.zip --val val_preds.jsonl --test test_preds.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrhd.errors import MrhdError
from mrhd.io import read_jsonl_numbered, write_atomic
from mrhd.paths import shared_dir
from mrhd.pipeline.dataset_configs import metric_families
from mrhd.pipeline.evaluate import EVALUATORS
from mrhd.pipeline.evaluate.submission import pack_submission
from mrhd.pipeline.evaluate.validate import MAX_LISTED, Issue, raise_on_errors, validate

# metric family -> what the printed block calls it
FAMILY_TITLES = {"qvhighlights": "QVHighlights", "charades": "Charades-STA", "tacos": "TACoS",
                 "tvsum": "TVSum", "youtube": "YouTube Highlights"}


def _dataset_name(value: str) -> str:
    """--dataset: a benchmark name as `mrhd train` takes it; a metric family's name stands for the
    one benchmark it scores (``charades`` -> ``charades_sta``, as before the names were shared)."""
    families = metric_families()
    if value in families:
        return value
    scored = [name for name, family in families.items() if family == value]
    return scored[0] if len(scored) == 1 else value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--submission", default=None, metavar="PRED.jsonl", help="predictions")
    p.add_argument("--gt", default=None, metavar="GT.jsonl", help="ground-truth annotations")
    p.add_argument("--out", default=None, metavar="METRICS.json", help="write all metrics as JSON")
    p.add_argument("--dataset", default="qvhighlights", type=_dataset_name, choices=list(metric_families()),
                   help="benchmark whose official metrics score the file (default: qvhighlights; "
                        "charades is an alias of charades_sta)")
    p.add_argument("--strict", action="store_true", help="treat validation warnings as errors")
    pack = p.add_argument_group("QVHighlights server submission (CodaLab zip)")
    pack.add_argument("--pack", default=None, metavar="OUT.zip",
                      help="write hl_val_submission.jsonl + hl_test_submission.jsonl into OUT.zip")
    pack.add_argument("--val", default=None, metavar="VAL_PREDS.jsonl", help="val-split predictions")
    pack.add_argument("--test", default=None, metavar="TEST_PREDS.jsonl", help="test-split predictions")
    pack.add_argument("--val-gt", default=None, metavar="GT.jsonl",
                      help="val annotations (default: $MRHD_SHARED/data/qvhighlights/highlight_val_release.jsonl)")
    pack.add_argument("--test-ann", default=None, metavar="ANN.jsonl",
                      help="test release with qids and durations "
                           "(default: $MRHD_SHARED/data/qvhighlights/highlight_test_release.jsonl)")


def _report(issues: list[Issue], source: str) -> None:
    for issue in issues[:MAX_LISTED]:
        print(f"{source}: {issue}", file=sys.stderr)
    if len(issues) > MAX_LISTED:
        print(f"{source}: ... and {len(issues) - MAX_LISTED} more problems", file=sys.stderr)


def print_brief(title: str, brief: dict) -> None:
    """The brief block as a two-column table."""
    width = max((len(k) for k in brief), default=6)
    print(title)
    print(f"  {'metric':<{width}}  {'value':>7}")
    for key, value in brief.items():
        print(f"  {key:<{width}}  {value:>7.2f}")


def _default_annotation(given: str | None, name: str, flag: str) -> Path:
    path = Path(given) if given else shared_dir() / "data" / "qvhighlights" / name
    if not path.is_file():
        raise MrhdError(f"{path}: annotation file not found; pass {flag} PATH to the QVHighlights {name}")
    return path


def _score(dataset: str, pred_path: str, gt_path: str, strict: bool) -> dict:
    """Validate, then score with the metrics of benchmark ``dataset``."""
    family = metric_families()[dataset]
    rows = read_jsonl_numbered(pred_path)
    gt_rows = read_jsonl_numbered(gt_path)
    preds, gt = [r for _, r in rows], [g for _, g in gt_rows]
    issues = validate(family, preds, gt, [ln for ln, _ in rows], [ln for ln, _ in gt_rows])
    _report(issues, pred_path)
    raise_on_errors(issues, pred_path, strict=strict)
    metrics = EVALUATORS[family](preds, gt)
    print_brief(f"{FAMILY_TITLES[family]}: {pred_path} ({len(preds)} queries)", metrics["brief"])
    return metrics


def run(args: argparse.Namespace) -> int:
    if args.pack:
        if not (args.val and args.test):
            raise MrhdError("--pack needs --val VAL_PREDS.jsonl and --test TEST_PREDS.jsonl")
        if args.dataset != "qvhighlights":
            raise MrhdError("--pack writes the QVHighlights server zip; drop --dataset or use qvhighlights")
        val_gt = _default_annotation(args.val_gt, "highlight_val_release.jsonl", "--val-gt")
        test_ann = _default_annotation(args.test_ann, "highlight_test_release.jsonl", "--test-ann")
        pack_submission(args.pack, args.val, args.test, val_gt, test_ann, strict=args.strict,
                        report=lambda line: print(line, file=sys.stderr))
        print(f"wrote {args.pack} (hl_val_submission.jsonl, hl_test_submission.jsonl)")
        metrics = _score("qvhighlights", args.val, str(val_gt), strict=False)
    else:
        if not (args.submission and args.gt):
            raise MrhdError("give --submission PRED.jsonl and --gt GT.jsonl "
                            "(or --pack OUT.zip --val VAL.jsonl --test TEST.jsonl)")
        metrics = _score(args.dataset, args.submission, args.gt, args.strict)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, json.dumps(metrics, indent=4) + "\n")
        print(f"wrote {args.out}")
    return 0
