"""Checks a prediction file against its ground truth before scoring it.

The official evaluators score whatever they are given: a NaN score, a reversed window or a
missing query silently changes the numbers (or crashes deep inside). We report each problem with
the qid and the line it is on. *Errors* make the file impossible to score faithfully; *warnings*
are things the official code tolerates (it pads or cuts saliency lists, keeps only the first 10
windows, scores windows outside the video) but that usually mean a bug in the producer.
``--strict`` turns warnings into errors.

Which metric families are scored is decided by the whole file, not by its first line (the official
code looks at line 1 only, so a first line without ``pred_saliency_scores`` silently drops the
highlight metrics): a QVHighlights family is scored when its field is on every line, skipped when it
is on none, and a file where only some lines have it is an error (:func:`scored_families`).
Problems of the ground truth are reported as such (``Issue.in_ground_truth``): a bad annotation is
not the submission's fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mrhd.errors import MrhdError

MR_DATASETS = ("qvhighlights", "charades", "tacos")
HL_DATASETS = ("qvhighlights", "tvsum", "youtube")
MAX_SCORED_WINDOWS = 10  # the official mAP only reads the first 10 windows of each query
CLIP_LENGTH = 2.0
MAX_LISTED = 20  # problems listed before "... and N more"
# metric family -> the prediction field it scores
FAMILY_FIELDS = {"MR": "pred_relevant_windows", "HD": "pred_saliency_scores"}
FAMILY_NAMES = {"MR": "moment retrieval", "HD": "highlight detection"}


@dataclass
class Issue:
    """One problem in a prediction file."""

    severity: str  # "error" or "warning"
    message: str
    line: int | None = None
    qid: object = None
    in_ground_truth: bool = False   # a problem of the ground-truth file (``line`` is its line)

    @property
    def text(self) -> str:
        """``[ground-truth ]line N: qid Q: message`` (the parts that are known)."""
        if self.line is not None:
            where = f"{'ground-truth ' if self.in_ground_truth else ''}line {self.line}: "
        else:
            where = "ground truth: " if self.in_ground_truth else ""
        who = f"qid {self.qid!r}: " if isinstance(self.qid, str) else \
            (f"qid {self.qid}: " if self.qid is not None else "")
        return f"{where}{who}{self.message}"

    def __str__(self) -> str:
        return f"{self.severity}: {self.text}"


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _expected_clips(dataset: str, gt: dict) -> set[int] | None:
    """Saliency lengths we accept without a warning, or None where the GT does not say."""
    if dataset == "qvhighlights" and isinstance(gt.get("duration"), (int, float)):
        d = gt["duration"] / CLIP_LENGTH
        # The official grid has int(duration / 2) clips; feature extractors give ceil(duration / 2).
        return {int(d), math.ceil(d)}
    if dataset == "tvsum" and isinstance(gt.get("label"), list):
        return {len(gt["label"])}
    if dataset == "youtube":
        label = gt.get("label", gt.get("match"))
        return {len(label)} if isinstance(label, list) else None
    return None


def _check_windows(dataset: str, pred: dict, gt: dict, issue) -> None:
    windows = pred.get("pred_relevant_windows")
    if not isinstance(windows, list):
        issue("error", "pred_relevant_windows is missing or not a list of [start, end, score]")
        return
    if not windows:
        issue("error", "pred_relevant_windows is empty; give at least one [start, end, score]")
        return
    duration = gt.get("duration")
    width = 3 if dataset == "qvhighlights" else 2
    scores = []
    for i, w in enumerate(windows):
        if not isinstance(w, list) or len(w) < width:
            issue("error", f"window {i} is {w!r}; expected [start, end, score]")
            continue
        if not all(_finite_number(x) for x in w[:3]):
            issue("error", f"window {i} {w!r} has a NaN, infinite or non-numeric value")
            continue
        start, end = w[0], w[1]
        if start > end:
            issue("error", f"window {i} [{start}, {end}] has start > end")
        elif isinstance(duration, (int, float)) and (start < 0 or end > duration + 1e-6):
            issue("warning", f"window {i} [{start}, {end}] lies outside the video [0, {duration}]")
        if len(w) >= 3:
            scores.append(w[2])
    if len(scores) == len(windows) and any(a < b for a, b in zip(scores, scores[1:])):
        issue("warning", "windows are not sorted by score (R1 uses the first window, not the best one)")
    if dataset == "qvhighlights" and len(windows) > MAX_SCORED_WINDOWS:
        issue("warning", f"{len(windows)} windows; the official mAP only reads the first {MAX_SCORED_WINDOWS}")


def _check_saliency(dataset: str, pred: dict, gt: dict, issue) -> None:
    scores = pred.get("pred_saliency_scores")
    if not isinstance(scores, list) or not scores:
        issue("error", "pred_saliency_scores is missing, empty or not a list of numbers")
        return
    bad = [i for i, x in enumerate(scores) if not _finite_number(x)]
    if bad:
        issue("error", f"pred_saliency_scores has NaN, infinite or non-numeric values (clip {bad[0]}"
              f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})")
        return
    expected = _expected_clips(dataset, gt)
    if expected and len(scores) not in expected:
        want = " or ".join(str(n) for n in sorted(expected))
        issue("warning", f"pred_saliency_scores has {len(scores)} values, the video has {want} clips "
              "(the official evaluator cuts or zero-pads it)")


def _gt_label_problem(dataset: str, g: dict, has_mr: bool, has_hl: bool) -> str | None:
    """Why a ground-truth entry cannot be scored against, or None."""
    if has_mr:
        windows = g.get("relevant_windows")
        if not isinstance(windows, list) or not windows:
            return "has no relevant_windows (an unlabelled test release? pass annotations with labels)"
        if not all(isinstance(w, list) and len(w) >= 2 and all(_finite_number(x) for x in w[:2])
                   and w[0] <= w[1] for w in windows):
            return f"has a malformed relevant window in {windows!r}"
    if has_hl and dataset == "qvhighlights":
        ids, scores = g.get("relevant_clip_ids"), g.get("saliency_scores")
        if not _finite_number(g.get("duration")):
            return "has no numeric duration"
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores):
            return "needs relevant_clip_ids and saliency_scores of equal length (wrong --dataset or file?)"
        n_clips = int(g["duration"] / CLIP_LENGTH)
        if any(not isinstance(i, int) or not 0 <= i < n_clips for i in ids):
            return f"has relevant_clip_ids outside the {n_clips} clips of the video"
        if any(not isinstance(s, list) or len(s) != 3 for s in scores):
            return "has saliency_scores that are not 3 annotator scores per clip"
    if dataset == "tvsum" and (not isinstance(g.get("label"), list) or not g["label"]
                               or not all(isinstance(r, list) and r for r in g["label"])):
        return "has no label matrix [clips x annotators] (wrong --dataset or file?)"
    if dataset == "youtube" and not isinstance(g.get("label", g.get("match")), list):
        return "has no per-clip label (or match) list (wrong --dataset or file?)"
    return None


def scored_families(dataset: str, predictions: list[dict]) -> tuple[bool, bool]:
    """``(moment retrieval, highlight detection)``: which families the file is scored on. Charades-STA
    and TACoS are MR only, TVSum and YouTube HD only; QVHighlights scores a family when its field is
    on any line (and :func:`validate` then requires it on every line)."""
    def present(family: str) -> bool:
        return any(FAMILY_FIELDS[family] in p for p in predictions)

    has_mr = dataset in MR_DATASETS and (dataset != "qvhighlights" or present("MR"))
    has_hl = dataset in HL_DATASETS and (dataset != "qvhighlights" or present("HD"))
    return has_mr, has_hl


def _qid_types_differ(qid, gt_by_qid: dict):
    """The ground truth's qid equal to ``qid`` but for its type (``"5"`` vs ``5``), or None."""
    if isinstance(qid, str):
        try:
            other = int(qid)
        except ValueError:
            return None
    elif isinstance(qid, int) and not isinstance(qid, bool):
        other = str(qid)
    else:
        return None
    return other if other in gt_by_qid else None


def _type_name(value) -> str:
    return "a string" if isinstance(value, str) else "a number"


def validate(dataset: str, predictions: list[dict], ground_truth: list[dict],
             pred_lines: list[int] | None = None, gt_lines: list[int] | None = None,
             labels: bool = True) -> list[Issue]:
    """All problems of ``predictions`` against ``ground_truth``.

    ``pred_lines`` / ``gt_lines`` are the file line numbers of each entry (default: position + 1).
    ``labels=False`` checks against a release without labels (the QVHighlights test split):
    qids and durations only.
    """
    issues: list[Issue] = []
    pred_lines = pred_lines or list(range(1, len(predictions) + 1))
    gt_lines = gt_lines or list(range(1, len(ground_truth) + 1))

    def gt_issue(message: str, line=None, qid=None) -> None:
        issues.append(Issue("error", message, line, qid, in_ground_truth=True))

    if not ground_truth:
        gt_issue("the ground-truth file has no entries")
    gt_by_qid: dict = {}
    for g, ln in zip(ground_truth, gt_lines):
        if "qid" not in g:
            gt_issue("entry has no qid", ln)
            continue
        if not isinstance(g["qid"], str | int) or isinstance(g["qid"], bool):
            gt_issue(f"qid {g['qid']!r} is neither a number nor a string", ln)
            continue
        if g["qid"] in gt_by_qid:
            gt_issue(f"duplicate qid (first on line {gt_by_qid[g['qid']][1]}); the ground truth needs one "
                     "line per qid", ln, g["qid"])
            continue
        gt_by_qid[g["qid"]] = (g, ln)
    if not predictions:
        return issues + [Issue("error", "the prediction file has no entries")]

    has_mr, has_hl = scored_families(dataset, predictions)
    if dataset == "qvhighlights" and not (has_mr or has_hl):
        issues.append(Issue("error", "no entry has pred_relevant_windows or pred_saliency_scores; "
                                     "nothing to score", pred_lines[0]))
    if dataset == "qvhighlights":
        for family, on in (("MR", has_mr), ("HD", has_hl)):
            field_name = FAMILY_FIELDS[family]
            lacking = [(p, ln) for p, ln in zip(predictions, pred_lines) if on and field_name not in p]
            if lacking:
                first = next(ln for p, ln in zip(predictions, pred_lines) if field_name in p)
                p, ln = lacking[0]
                more = f" (and {len(lacking) - 1} more lines)" if len(lacking) > 1 else ""
                issues.append(Issue("error", f"no {field_name}, which line {first} has{more}: give it on every "
                                    f"line, or on none to skip the {FAMILY_NAMES[family]} metrics",
                                    ln, p.get("qid")))

    if labels:
        for q, (g, gln) in gt_by_qid.items():
            problem = _gt_label_problem(dataset, g, has_mr, has_hl)
            if problem:
                gt_issue(problem, gln, q)

    seen: dict = {}
    for pred, ln in zip(predictions, pred_lines):
        qid = pred.get("qid")

        def issue(severity, message, ln=ln, qid=qid):
            issues.append(Issue(severity, message, ln, qid))

        if qid is None:
            issue("error", "entry has no qid")
            continue
        if not isinstance(qid, str | int) or isinstance(qid, bool):
            issue("error", f"qid {qid!r} is neither a number nor a string; use the ground truth's qids")
            continue
        if qid in seen:
            issue("error", f"duplicate qid (first on line {seen[qid]}); keep one entry per qid")
            continue
        seen[qid] = ln
        if qid not in gt_by_qid:
            other = _qid_types_differ(qid, gt_by_qid)
            if other is not None:
                issue("error", f"qid is {_type_name(qid)} but the ground truth's qid {other!r} is "
                      f"{_type_name(other)} (line {gt_by_qid[other][1]}); write qids as the ground truth does")
            else:
                issue("error", "unknown qid: it is not in the ground truth (wrong split or file?)")
            continue
        gt = gt_by_qid[qid][0]
        if has_mr and (dataset != "qvhighlights" or "pred_relevant_windows" in pred):
            _check_windows(dataset, pred, gt, issue)
        if has_hl and (dataset != "qvhighlights" or "pred_saliency_scores" in pred):
            _check_saliency(dataset, pred, gt, issue)

    seen_other_type = {_qid_types_differ(q, gt_by_qid) for q in seen}
    missing = [(q, ln) for q, (_, ln) in gt_by_qid.items() if q not in seen and q not in seen_other_type]
    if missing:
        for q, gln in missing[:MAX_LISTED]:
            issues.append(Issue("error", f"no prediction for this qid (ground-truth line {gln})", None, q))
        if len(missing) > MAX_LISTED:
            issues.append(Issue("error", f"... and {len(missing) - MAX_LISTED} more missing qids"))
    return issues


def raise_on_errors(issues: list[Issue], source: str, strict: bool = False,
                    ground_truth: str = "the ground truth") -> None:
    """Raise one MrhdError summarising the errors (and warnings when ``strict``). Problems of the
    ground truth come first and are blamed on ``ground_truth`` (its path), not on ``source``."""
    blocking = [i for i in issues if i.severity == "error" or strict]
    if not blocking:
        return
    blocking.sort(key=lambda i: not i.in_ground_truth)
    first = blocking[0]
    more = f" (and {len(blocking) - 1} more problems)" if len(blocking) > 1 else ""
    if first.in_ground_truth:
        raise MrhdError(f"{ground_truth}: invalid ground truth: {first.text}{more}; fix the ground-truth file "
                        "or pass the right one (and --dataset)")
    hint = "; --strict treats warnings as errors" if strict and first.severity == "warning" else ""
    kind = "warning" if first.severity == "warning" else "invalid prediction"
    raise MrhdError(f"{source}: {kind}: {first.text}{more}; fix the prediction file{hint}")
