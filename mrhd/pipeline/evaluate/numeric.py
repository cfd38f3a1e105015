"""Float arithmetic that reproduces the official evaluators bit for bit.

The official scripts average short per-query arrays with ``np.sum`` / ``np.mean``. NumPy adds a
contiguous float64 array with *pairwise summation* (``DOUBLE_pairwise_sum`` in
numpy/_core/src/umath/loops_utils.h.src): fewer than 8 values are added left to right; 8 to 128
values go into 8 interleaved partial sums that are combined as a tree, then the tail is added.
Summing the same values in another order can change the last bit, and a last bit can flip a
2-decimal rounding. When we vectorise over queries we therefore emulate that order exactly.
"""

from __future__ import annotations

import numpy as np

PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE: above this, numpy recurses (we fall back to np.sum)


def compact_left(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move the selected values of each row to the front (keeping their order), zeros after.

    Returns ``(packed, counts)``; ``packed[..., :counts]`` are the selected values of that row.
    """
    order = np.argsort(~mask, axis=-1, kind="stable")
    packed = np.take_along_axis(np.where(mask, values, 0.0), order, axis=-1)
    return packed, mask.sum(axis=-1)


def numpy_sum_rows(packed: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.sum(row[:n])`` for every row, with numpy's own addition order (see module docstring).

    ``packed`` is ``[..., W]`` with each row's ``n = counts[...]`` values first and zeros after
    (adding a trailing 0.0 never changes a float sum). Rows longer than 128 values use np.sum.
    """
    packed = np.asarray(packed, dtype=np.float64)
    counts = np.asarray(counts)
    width = packed.shape[-1]
    if width == 0:
        return np.zeros(packed.shape[:-1])
    if width < 8:
        padded = np.concatenate([packed, np.zeros(packed.shape[:-1] + (8 - width,))], axis=-1)
        return numpy_sum_rows(padded, counts)

    # n < 8: plain left-to-right sum.
    sequential = np.zeros(packed.shape[:-1])
    for j in range(width):
        sequential = sequential + packed[..., j]

    # 8 <= n <= 128: 8 partial sums over whole blocks of 8, combined as a tree, then the tail.
    pos = np.arange(width)
    whole = (counts[..., None] // 8) * 8
    in_blocks = np.where(pos < whole, packed, 0.0)
    tail = np.where(pos >= whole, packed, 0.0)
    partial = [packed[..., k].copy() for k in range(8)]
    for start in range(8, width, 8):
        for k in range(8):
            if start + k < width:
                partial[k] = partial[k] + in_blocks[..., start + k]
    r = partial
    pairwise = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for j in range(8, width):
        pairwise = pairwise + tail[..., j]

    out = np.where(counts < 8, sequential, pairwise)
    big = counts > PAIRWISE_BLOCK
    if np.any(big):
        for idx in zip(*np.nonzero(big)):
            out[idx] = np.sum(packed[idx][: counts[idx]])
    return out


def pct2(value: float) -> float:
    """The official formatting: a fraction as a percentage rounded to 2 decimals."""
    return float(f"{100 * value:.2f}")


def iou_threshold_keys(start: float, stop: float, num: int) -> list[float]:
    """IoU thresholds as the official code spells them: ``np.linspace`` rounded to 2 decimals."""
    return [float(f"{e:.2f}") for e in np.linspace(start, stop, num)]
