"""Annotation lines of the moment-retrieval benchmarks (JSONL, one query per line).

Formats: QVHighlights (``relevant_windows``, ``relevant_clip_ids``, ``saliency_scores``), Charades-STA
and TACoS (``relevant_windows`` only), TVSum / YouTube Highlights (a ``label`` matrix of raters).
Read by the datasets, the evaluation and the models' post-processing (QVHighlights lines keep the
official hard-coded clamp).
"""

from __future__ import annotations

import math
from pathlib import Path

from mrhd.errors import MrhdError
from mrhd.io import BadJsonLine, read_jsonl_numbered


def load_annotations(path: str | Path) -> list[dict]:
    """A JSONL annotation file (QVHighlights / Charades-STA / TACoS / TVSum formats)."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"annotation file {path} not found; give a .jsonl file")
    try:
        rows = read_jsonl_numbered(path)
    except BadJsonLine as bad:
        if bad.json_error is not None:
            raise MrhdError(f"{path}:{bad.lineno} is not valid JSON ({bad.json_error}); "
                            "fix or remove that line") from None
        raise MrhdError(f"{path}:{bad.lineno} has no qid, vid; each line needs qid and vid") from None
    for n, item in rows:
        missing = [k for k in ("qid", "vid") if k not in item]
        if missing:
            raise MrhdError(f"{path}:{n} has no {', '.join(missing)}; each line needs qid and vid")
        problem = window_problem(item.get("relevant_windows"))
        if problem:
            raise MrhdError(f"{path}:{n}: qid {item['qid']}: {problem}; fix that line "
                            "(relevant_windows is a list of [start, end] in seconds, start <= end)")
    return [item for _, item in rows]


def window_problem(windows) -> str | None:
    """Why ``relevant_windows`` cannot be a label (None: absent or fine). Checked when the file is
    read, because a reversed window otherwise fails deep inside the loss with a traceback."""
    if windows is None:
        return None
    if not isinstance(windows, list):
        return f"relevant_windows is {windows!r}, not a list of windows"
    for i, w in enumerate(windows):
        if not isinstance(w, list | tuple) or len(w) != 2 or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in w):
            return f"window {i} {w!r} is not [start, end] in seconds"
        if w[0] > w[1]:
            return f"window {i} {list(w)} has start > end"
    return None


def annotation_kind(meta: dict) -> str:
    """``hl`` (QVHighlights), ``tvsum``, ``sta`` (windows only: Charades-STA, TACoS) or ``none``."""
    if meta.get("label") is not None:
        return "tvsum"
    if meta.get("saliency_scores") is not None and meta.get("relevant_clip_ids") is not None:
        return "hl"
    if meta.get("relevant_windows"):
        return "sta"
    return "none"
