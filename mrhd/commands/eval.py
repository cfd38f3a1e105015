"""Score a prediction file with the official metrics (QVHighlights by default).

Prints the brief block and which metric families were scored; --out writes brief and full blocks
as strict JSON (an undefined value is null). The file is checked first: problems are listed with
their line and qid; errors stop the run, warnings do not (--strict). The submission is JSON lines
(the official format) or what `mrhd predict --out` writes (matched to the ground truth by vid and
query, since predict's qids are positions).

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
from mrhd.io import check_writable, json_safe, read_jsonl_numbered, write_atomic
from mrhd.paths import shared_dir
from mrhd.pipeline.dataset_configs import metric_families
from mrhd.pipeline.evaluate import EVALUATORS
from mrhd.pipeline.evaluate.submission import pack_submission, read_predictions
from mrhd.pipeline.evaluate.validate import (
    FAMILY_FIELDS,
    FAMILY_NAMES,
    MAX_LISTED,
    Issue,
    raise_on_errors,
    scored_families,
    validate,
)

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
    p.add_argument("--submission", default=None, metavar="PRED.jsonl",
                   help="predictions: JSON lines in the official submission format, or `mrhd predict --out` output")
    p.add_argument("--gt", default=None, metavar="GT.jsonl", help="ground-truth annotations (JSON lines)")
    p.add_argument("--out", default=None, metavar="METRICS.json",
                   help="write all metrics as strict JSON (undefined values as null)")
    p.add_argument("--dataset", default="qvhighlights", type=_dataset_name, choices=list(metric_families()),
                   help=f"benchmark whose official metrics score the file: {', '.join(metric_families())} "
                        "(default: qvhighlights; charades is an alias of charades_sta)")
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


def _report(issues: list[Issue], source: str, gt_source: str) -> None:
    for issue in issues[:MAX_LISTED]:
        print(f"{gt_source if issue.in_ground_truth else source}: {issue}", file=sys.stderr)
    if len(issues) > MAX_LISTED:
        print(f"{source}: ... and {len(issues) - MAX_LISTED} more problems", file=sys.stderr)


def print_brief(title: str, brief: dict) -> None:
    """The brief block as a two-column table (``n/a``: undefined, e.g. no ground truth of that length)."""
    width = max((len(k) for k in brief), default=6)
    print(title)
    print(f"  {'metric':<{width}}  {'value':>7}")
    for key, value in brief.items():
        shown = "n/a" if value is None or value != value else f"{value:.2f}"
        print(f"  {key:<{width}}  {shown:>7}")


def families_line(dataset_family: str, predictions: list[dict]) -> str:
    """Which metric families were scored, and why one was not (QVHighlights: a field on no line)."""
    has = dict(zip(("MR", "HD"), scored_families(dataset_family, predictions)))
    scored = [f"{FAMILY_NAMES[f]} ({f})" for f, on in has.items() if on]
    line = "  scored: " + ", ".join(scored)
    skipped = [f for f, on in has.items() if not on]
    if dataset_family == "qvhighlights" and skipped:
        line += "; not scored: " + ", ".join(f"{FAMILY_NAMES[f]} (no line has {FAMILY_FIELDS[f]})" for f in skipped)
    return line


def _default_annotation(given: str | None, name: str, flag: str) -> Path:
    path = Path(given) if given else shared_dir() / "data" / "qvhighlights" / name
    if not path.is_file():
        raise MrhdError(f"{path}: annotation file not found; pass {flag} PATH to the QVHighlights {name}")
    return path


def _score(dataset: str, pred_path: str, gt_path: str, strict: bool) -> dict:
    """Validate, then score with the metrics of benchmark ``dataset``."""
    family = metric_families()[dataset]
    gt_rows = read_jsonl_numbered(gt_path)
    gt = [g for _, g in gt_rows]
    preds = read_predictions(pred_path, gt)
    if preds.note:
        print(f"{pred_path}: {preds.note}", file=sys.stderr)
    issues = validate(family, preds.entries, gt, preds.lines, [ln for ln, _ in gt_rows])
    _report(issues, pred_path, gt_path)
    raise_on_errors(issues, pred_path, strict=strict, ground_truth=gt_path)
    metrics = EVALUATORS[family](preds.entries, gt)
    print_brief(f"{FAMILY_TITLES[family]}: {pred_path} ({len(preds.entries)} queries)", metrics["brief"])
    print(families_line(family, preds.entries))
    return metrics


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_writable(args.out, "--out", make_parents=True)
    if args.pack:
        if not (args.val and args.test):
            raise MrhdError("--pack needs --val VAL_PREDS.jsonl and --test TEST_PREDS.jsonl")
        if args.dataset != "qvhighlights":
            raise MrhdError("--pack writes the QVHighlights server zip; drop --dataset or use qvhighlights")
        check_writable(args.pack, "--pack", make_parents=True)
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
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, json.dumps(json_safe(metrics), indent=4) + "\n")
        except OSError as err:
            raise MrhdError(f"cannot write --out {out} ({err.strerror or err}); choose a writable path") from None
        print(f"wrote {args.out}")
    return 0
