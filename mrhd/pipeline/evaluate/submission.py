"""The zip the QVHighlights benchmark server (CodaLab) takes.

jayleicn/moment_detr standalone_eval/README.md: a single ``.zip`` with no enclosing folder that
holds ``hl_val_submission.jsonl`` and ``hl_test_submission.jsonl``, each in the prediction format
(``qid``, ``query``, ``vid``, ``pred_relevant_windows``, ``pred_saliency_scores``). Both files are
validated first (val against the val annotations, test against the test release, which has qids
and durations but no labels) and the zip is written atomically: nothing is written on an error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mrhd.io import atomic_path, jsonl_text, read_jsonl_numbered
from mrhd.pipeline.evaluate.validate import Issue, raise_on_errors, validate

VAL_NAME = "hl_val_submission.jsonl"
TEST_NAME = "hl_test_submission.jsonl"


def check_split(preds_path: Path, annotations_path: Path, labels: bool) -> tuple[list[dict], list[Issue]]:
    """Predictions of one split and the problems found against that split's annotations
    (``labels=False``: a release without labels, checked for qids and durations only)."""
    rows = read_jsonl_numbered(preds_path)
    gt_rows = read_jsonl_numbered(annotations_path)
    preds = [r for _, r in rows]
    issues = validate("qvhighlights", preds, [g for _, g in gt_rows],
                      pred_lines=[ln for ln, _ in rows], gt_lines=[ln for ln, _ in gt_rows], labels=labels)
    return preds, issues


def pack_submission(out_zip: str | Path, val_preds: str | Path, test_preds: str | Path,
                    val_annotations: str | Path, test_annotations: str | Path,
                    strict: bool = False, report=None) -> dict[str, list[Issue]]:
    """Validate both splits and write ``out_zip``; returns the issues found per split.

    ``report(issue_line)`` receives every issue as text (the command prints them).
    """
    found = {}
    entries = {}
    for name, preds_path, ann_path, labels in ((VAL_NAME, val_preds, val_annotations, True),
                                               (TEST_NAME, test_preds, test_annotations, False)):
        preds, issues = check_split(Path(preds_path), Path(ann_path), labels)
        if report:
            for i in issues:
                report(f"{preds_path}: {i}")
        found[name] = issues
        entries[name] = preds
    for name, preds_path in ((VAL_NAME, val_preds), (TEST_NAME, test_preds)):
        raise_on_errors(found[name], str(preds_path), strict=strict)

    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, preds in entries.items():
            zf.writestr(name, jsonl_text(preds))
    return found
