"""The official temporal NMS of the moment-retrieval evaluation (jayleicn/moment_detr
utils/temporal_nms.py and ``post_processing_mr_nms`` in inference.py, copied as is by UniVTG's
main/inference_mr.py): greedy over [start, end, score] rows, best score first.

Not :func:`mrhd.inference.windows.merge_nms` (plain IoU, for merging sliding windows): this one
measures overlap against the hull of the two windows and keeps the upstream quirks below, so its
lines equal the official ones.
"""

from __future__ import annotations


def apply_nms(results: list[dict], nms_thd: float = 0.7, max_before_nms: int = 1000,
              max_after_nms: int = 10) -> list[dict]:
    """The official ``post_processing_mr_nms``: NMS over the top ``max_before_nms`` windows."""
    out = []
    for entry in results:
        entry = dict(entry)
        entry["pred_relevant_windows"] = temporal_nms(entry["pred_relevant_windows"][:max_before_nms],
                                                      nms_thd, max_after_nms)
        out.append(entry)
    return out


def temporal_nms(windows: list[list[float]], nms_thd: float, max_after_nms: int = 100) -> list[list[float]]:
    """Greedy NMS of [start, end, score] rows (utils/temporal_nms.py of moment_detr / UniVTG).

    Quirks kept for exactness: the "union" is the span from the earliest start to the latest end,
    a lone window is returned untouched, and one window beyond the loop is appended at the end.
    """
    if len(windows) == 1:
        return windows
    rest = sorted(windows, key=lambda w: w[2], reverse=True)
    kept = []
    while len(rest) > 1 and len(kept) < max_after_nms:
        top = rest[0]
        rest = [top] + [w for w in rest[1:] if _hull_iou(top, w) <= nms_thd]
        kept.append(rest.pop(0))
    if len(kept) < max_after_nms and rest:
        kept.append(rest.pop(0))
    return [[w[0], w[1], w[2]] for w in kept]


def _hull_iou(a: list[float], b: list[float]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return 0 if hull == 0 else 1.0 * inter / hull
