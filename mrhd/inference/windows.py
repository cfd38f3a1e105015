"""Videos longer than a model's window: overlapping windows, merging NMS, saliency stitching.

The official checkpoints see at most ``max_v_l`` = 75 clips (150 s): their position encodings,
tef and training data stop there. A longer video is cut into windows of that many clips that
overlap, each window runs as its own video (its own tef and masks), moments are shifted to video
time and merged by temporal NMS, and the per-clip saliency of overlapping windows is blended with
weights that fall off towards each window's edges (a clip near a window border has seen less
context, so the window where it sits centrally counts more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """Clips ``[start, end)`` of the video."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_windows(n_clips: int, window: int = 75, overlap: int | None = None) -> list[Window]:
    """Windows of ``window`` clips covering ``n_clips``; consecutive windows share ``overlap`` clips
    (default a third of the window). The last window is aligned to the end of the video, so every
    window is full-length when the video is at least one window long."""
    if n_clips <= 0:
        return []
    if window <= 0:
        raise ValueError("window must be positive")
    if n_clips <= window:
        return [Window(0, n_clips)]
    overlap = window // 3 if overlap is None else overlap
    if not 0 <= overlap < window:
        raise ValueError("overlap must be in [0, window)")
    stride = window - overlap
    starts = list(range(0, n_clips - window, stride)) + [n_clips - window]
    return [Window(s, s + window) for s in sorted(set(starts))]


def moment_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two moments ``[start, end, ...]`` in seconds (one pair of plain numbers, not the
    pairwise span tensors of :func:`mrhd.models.spans.temporal_iou`)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def merge_nms(moments: Sequence[Sequence[float]], iou_threshold: float = 0.7,
              max_keep: int | None = None) -> list[list[float]]:
    """Greedy NMS that merges the ``[start, end, score]`` rows of several windows: best score first,
    drop rows overlapping a kept one with IoU >= ``iou_threshold``. The greedy rule of the official
    ``temporal_nms`` (:func:`mrhd.models.nms.temporal_nms`, which the models' own post-processing
    keeps) without its quirks (a lone row passes unfiltered, one row past the loop is appended).
    Ties keep their input order."""
    order = sorted(range(len(moments)), key=lambda i: -moments[i][2])
    kept: list[list[float]] = []
    for i in order:
        row = list(moments[i])
        if all(moment_iou(row, k) < iou_threshold for k in kept):
            kept.append(row)
            if max_keep is not None and len(kept) >= max_keep:
                break
    return kept


def merge_window_moments(per_window: Sequence[tuple[float, Sequence[Sequence[float]]]],
                         duration: float, iou_threshold: float = 0.7,
                         max_keep: int | None = None) -> list[list[float]]:
    """``[(offset_s, rows in window time), ...]`` -> rows in video time, clamped to
    ``[0, duration]``, merged by :func:`merge_nms`, best first."""
    rows = []
    for offset, moments in per_window:
        for st, ed, score in moments:
            st, ed = min(max(st + offset, 0.0), duration), min(max(ed + offset, 0.0), duration)
            if ed > st:
                rows.append([st, ed, float(score)])
    return merge_nms(rows, iou_threshold, max_keep)


def edge_weights(length: int) -> np.ndarray:
    """Tent weights ``min(i + 1, length - i)``: 1 at both borders, highest in the middle."""
    i = np.arange(length)
    return np.minimum(i + 1, length - i).astype(np.float64)


def stitch_saliency(n_clips: int, per_window: Sequence[tuple[Window, Sequence[float]]]) -> np.ndarray:
    """One score per clip of the video: a weighted mean (:func:`edge_weights`) of the windows that
    contain the clip. A single window is returned unchanged."""
    total = np.zeros(n_clips, np.float64)
    weight = np.zeros(n_clips, np.float64)
    for win, scores in per_window:
        scores = np.asarray(scores, np.float64)[: win.length]
        w = edge_weights(win.length)[: len(scores)]
        total[win.start: win.start + len(scores)] += w * scores
        weight[win.start: win.start + len(scores)] += w
    if (weight == 0).any():
        raise ValueError("the windows do not cover every clip")
    return total / weight
