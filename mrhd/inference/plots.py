"""`--plot`: the saliency curve over time with the top moments shaded (and ground truth if given).

Matplotlib runs on the Agg backend (no display needed); one panel per query; the PNG is written
through a temporary file so a failed plot leaves nothing behind.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from mrhd.inference.results import CLIP_LEN, Prediction, fmt_time
from mrhd.io import write_atomic


def _tick_step(duration: float) -> float:
    """Whole-second tick spacing giving at most about 12 labels."""
    for step in (2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600):
        if duration / step <= 12:
            return step
    return 7200


def plot_predictions(path: str | Path, preds: Sequence[Prediction], *, top_k: int = 3,
                     gt_windows: Sequence[Sequence[Sequence[float]]] | None = None,
                     gt_saliency: Sequence[Sequence[float]] | None = None) -> Path:
    """Draw each prediction (saliency per clip centre, top ``top_k`` moments shaded, darker = better
    ranked); ``gt_windows[i]`` / ``gt_saliency[i]`` (per clip) overlay query ``i``'s ground truth."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    n = max(len(preds), 1)
    fig = Figure(figsize=(10, 2.4 * n + 0.4), dpi=100)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for i, (ax, pred) in enumerate(zip(axes, preds)):
        centres = [(k + 0.5) * CLIP_LEN for k in range(len(pred.saliency))]
        for rank, (st, ed, score) in enumerate(pred.windows[:top_k]):
            ax.axvspan(st, ed, color="tab:orange", alpha=0.45 - 0.1 * rank, lw=0,
                       label=f"#{rank + 1} {fmt_time(st)}-{fmt_time(ed)} ({score:.2f})")
        if gt_windows is not None and i < len(gt_windows):
            for j, (st, ed) in enumerate(gt_windows[i]):
                ax.axvspan(st, ed, ymax=0.06, color="tab:green", lw=0, label="ground truth" if j == 0 else None)
        ax.plot(centres, pred.saliency, color="tab:blue", lw=1.5, marker=".", ms=3, label="saliency")
        if gt_saliency is not None and i < len(gt_saliency):
            ax2 = ax.twinx()
            ax2.plot(centres[: len(gt_saliency[i])], gt_saliency[i], color="tab:green", lw=1, ls="--")
            ax2.set_ylabel("GT saliency", fontsize=8)
        ax.set_xlim(0, max(pred.duration, CLIP_LEN))
        ax.xaxis.set_major_locator(MultipleLocator(_tick_step(pred.duration)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_time(x)))
        ax.set_title(f'"{pred.query}"', fontsize=9, loc="left")
        ax.set_ylabel("saliency", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    axes[-1].set_xlabel("time (m:ss)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic(path, buf.getvalue())
