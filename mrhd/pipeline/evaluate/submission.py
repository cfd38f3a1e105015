"""Prediction files as ``mrhd eval`` reads them, and the zip the QVHighlights benchmark server takes.

Reading: the official submission format is JSON lines, one object per query (``qid``, ``query``,
``vid``, ``pred_relevant_windows``, ``pred_saliency_scores``). ``mrhd predict --out`` writes a JSON
list (``.json``) or JSON lines (``.jsonl``) of such objects with ``model`` and ``weights`` added, and
its ``qid`` is the query's position on its command line, not a benchmark qid; those entries are
matched to the ground truth by ``vid`` (the video's file name without extension) and ``query`` text,
so predict's own output can be scored as it is.

Packing: jayleicn/moment_detr standalone_eval/README.md: a single ``.zip`` with no enclosing folder
that holds ``hl_val_submission.jsonl`` and ``hl_test_submission.jsonl``, each in the prediction
format. Both files are validated first (val against the val annotations, test against the test
release, which has qids and durations but no labels) and the zip is written atomically: nothing is
written on an error.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mrhd.errors import MrhdError
from mrhd.io import BadJsonLine, atomic_path, jsonl_text, read_jsonl_numbered
from mrhd.pipeline.evaluate.validate import Issue, raise_on_errors, validate

VAL_NAME = "hl_val_submission.jsonl"
TEST_NAME = "hl_test_submission.jsonl"
EXPECTED = ("JSON lines, one object per query with qid, pred_relevant_windows and pred_saliency_scores "
            "(the official submission format), or the JSON that `mrhd predict --out` writes")
PREDICT_KEYS = ("model", "weights")   # what `mrhd predict` adds to each entry


@dataclass
class PredictionFile:
    """The entries of a prediction file, the line each starts on, and how their qids were found
    (``note``: None when the file's own qids are used)."""

    entries: list[dict]
    lines: list[int]
    note: str | None = None


def _json_list(path: Path, text: str) -> tuple[list[dict], list[int]]:
    """The objects of a JSON list and the line each one starts on."""
    decoder = json.JSONDecoder()
    entries, lines = [], []
    pos = text.index("[") + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        return pos

    def bad(pos: int, why: str) -> MrhdError:
        line = text.count("\n", 0, pos) + 1
        return MrhdError(f"{path}:{line}: not valid JSON ({why}); mrhd eval reads {EXPECTED}")

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                raise bad(err.pos, err.msg) from None
            if not isinstance(obj, dict):
                raise bad(pos, f"entry {len(entries) + 1} is a {type(obj).__name__}, not an object")
            entries.append(obj)
            lines.append(text.count("\n", 0, pos) + 1)
            pos = skip(end)
            if pos < len(text) and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise bad(pos, "expected ',' or ']' after an entry")
    if skip(pos) != len(text):
        raise bad(skip(pos), "extra data after the list")
    return entries, lines


def _from_predict(entries: list[dict]) -> bool:
    return bool(entries) and all(all(k in e for k in PREDICT_KEYS) and "vid" in e and "query" in e
                                 for e in entries)


def _words(text) -> str:
    return " ".join(str(text).split())


def _match_predict_qids(path: Path, entries: list[dict], lines: list[int], ground_truth: list[dict]) -> list[dict]:
    """Predict's entries with the qid of the ground-truth line of the same vid and query."""
    if not all("vid" in g and "query" in g for g in ground_truth):
        raise MrhdError(f"{path} is `mrhd predict` output, whose qids are query positions, and the ground truth "
                        "has no vid and query text to match them by; write the benchmark's qids into the file")
    by_key: dict = {}
    for g in ground_truth:
        by_key.setdefault((str(g["vid"]), _words(g["query"])), []).append(g.get("qid"))
    out = []
    for entry, line in zip(entries, lines):
        qids = by_key.get((str(entry["vid"]), _words(entry["query"])), [])
        where = f'{path}:{line}: vid {entry["vid"]!r}, query "{_words(entry["query"])[:60]}"'
        if not qids:
            raise MrhdError(f"{where}: no ground-truth line has this vid and query (mrhd predict output is "
                            "matched by them; its qids are positions). Name the video file after the "
                            "ground truth's vid and pass its query text exactly")
        if len(qids) > 1:
            raise MrhdError(f"{where}: {len(qids)} ground-truth lines (qids {qids[:5]}) have this vid and query; "
                            "write the intended qid into each entry")
        out.append({**entry, "qid": qids[0]})
    return out


def read_predictions(path: str | Path, ground_truth: list[dict] | None = None) -> PredictionFile:
    """A prediction file in any of the formats of the module docstring; ``mrhd predict`` output gets
    the ground truth's qids (by vid and query) when ``ground_truth`` is given."""
    path = Path(path)
    if path.is_dir():
        raise MrhdError(f"{path} is a folder; give the prediction file ({EXPECTED})")
    if not path.is_file():
        raise MrhdError(f"{path}: file not found; pass an existing prediction file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MrhdError(f"{path} is not a text file; mrhd eval reads {EXPECTED}") from None
    if text.lstrip().startswith("["):
        entries, lines = _json_list(path, text)
    else:
        try:
            rows = read_jsonl_numbered(path)
        except BadJsonLine as bad:
            raise MrhdError(f"{bad}; mrhd eval reads {EXPECTED}") from None
        entries, lines = [r for _, r in rows], [ln for ln, _ in rows]
    if ground_truth is not None and _from_predict(entries):
        entries = _match_predict_qids(path, entries, lines, ground_truth)
        return PredictionFile(entries, lines, f"{len(entries)} `mrhd predict` entries matched to ground-truth "
                                              "qids by vid and query")
    return PredictionFile(entries, lines)


def check_split(preds_path: Path, annotations_path: Path, labels: bool) -> tuple[list[dict], list[Issue]]:
    """Predictions of one split and the problems found against that split's annotations
    (``labels=False``: a release without labels, checked for qids and durations only)."""
    gt_rows = read_jsonl_numbered(annotations_path)
    preds = read_predictions(preds_path, [g for _, g in gt_rows])
    issues = validate("qvhighlights", preds.entries, [g for _, g in gt_rows],
                      pred_lines=preds.lines, gt_lines=[ln for ln, _ in gt_rows], labels=labels)
    return preds.entries, issues


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
                report(f"{ann_path if i.in_ground_truth else preds_path}: {i}")
        found[name] = issues
        entries[name] = preds
    for (name, preds_path), ann_path in zip(((VAL_NAME, val_preds), (TEST_NAME, test_preds)),
                                            (val_annotations, test_annotations)):
        raise_on_errors(found[name], str(preds_path), strict=strict, ground_truth=str(ann_path))

    out_zip = Path(out_zip)
    try:
        out_zip.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, preds in entries.items():
                zf.writestr(name, jsonl_text(preds))
    except OSError as err:
        raise MrhdError(f"cannot write {out_zip} ({err.strerror or err}); choose a writable path") from None
    return found
