"""What `mrhd predict` returns per query, and how it is printed and written.

JSON (DESIGN.md): one object per query with ``query``, ``vid``, ``duration``,
``pred_relevant_windows`` ([[start_s, end_s, score], ...], best first), ``pred_saliency_scores`` (one
per 2-s clip), ``model`` and ``weights``. Files are written atomically, so a failed run never leaves
a half-written output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrhd.io import jsonl_text, write_atomic

CLIP_LEN = 2.0


@dataclass
class Prediction:
    """Moments and saliency of one query on one video."""

    query: str
    vid: str
    duration: float
    windows: list[list[float]]          # [[start_s, end_s, score], ...] best first
    saliency: list[float]               # one score per 2-s clip
    model: str
    weights: str
    qid: int | None = None
    extra: dict = field(default_factory=dict)

    def top_clips(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` highest-saliency clips as ``(clip_index, score)``, best first."""
        order = sorted(range(len(self.saliency)), key=lambda i: -self.saliency[i])
        return [(i, self.saliency[i]) for i in order[:k]]

    def to_json(self) -> dict:
        out = {"query": self.query, "vid": self.vid, "duration": round(float(self.duration), 4),
               "pred_relevant_windows": [[float(a), float(b), float(s)] for a, b, s in self.windows],
               "pred_saliency_scores": [float(s) for s in self.saliency],
               "model": self.model, "weights": self.weights}
        if self.qid is not None:
            out = {"qid": self.qid, **out}
        return {**out, **self.extra}


def fmt_time(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on); seconds rounded to the nearest whole second."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_table(pred: Prediction, top_k: int = 5) -> str:
    """A readable block: the query, its top moments (rank, start-end, score), the top clips."""
    lines = [f'query: "{pred.query}"  ({pred.vid}, {fmt_time(pred.duration)})',
             f"  {'rank':>4}  {'start-end':<15} {'score':>6}"]
    seen: set = set()
    unique = []   # the official lines may repeat a window after rounding to clips; show it once
    for st, ed, score in pred.windows:
        if (st, ed) not in seen:
            seen.add((st, ed))
            unique.append((st, ed, score))
    for rank, (st, ed, score) in enumerate(unique[:top_k], 1):
        lines.append(f"  {rank:>4}  {fmt_time(st) + '-' + fmt_time(ed):<15} {score:>6.4f}")
    if not pred.windows:
        lines.append("  (no moments)")
    clips = ", ".join(f"{fmt_time(i * CLIP_LEN)}-{fmt_time(min((i + 1) * CLIP_LEN, pred.duration))} ({s:.3f})"
                      for i, s in pred.top_clips(top_k))
    lines.append(f"  top highlight clips: {clips or '-'}")
    return "\n".join(lines)


def predictions_text(preds: Sequence[Prediction], jsonl: bool = False) -> str:
    """The prediction file's text: one object per line (``jsonl``, the submission format) or a JSON list."""
    objs = [p.to_json() for p in preds]
    return jsonl_text(objs) if jsonl else json.dumps(objs, indent=1) + "\n"


def write_predictions(path: str | Path, preds: Sequence[Prediction]) -> Path:
    """``.jsonl``: one object per line (the submission format); otherwise a JSON list."""
    path = Path(path)
    return write_atomic(path, predictions_text(preds, jsonl=path.suffix == ".jsonl"))
