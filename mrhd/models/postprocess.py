"""From model outputs to the official QVHighlights prediction lines.

:func:`prediction_lines` reproduces ``compute_mr_results`` of the official inference code
(jayleicn/moment_detr, identical in QD-DETR / TR-DETR): score = softmax(logits)[..., 0]; windows =
cxw -> xx times the duration; sorted by score (stable, best first); every number rounded to 4
decimals; saliency cast to float16 and cut to the valid length. :class:`PostProcessorDETR` then
clamps windows to [min_ts_val, max_ts_val] and rounds them to multiples of ``clip_length`` with
``torch.round`` (round half to even), computing in float32 as the official code does.

Quirk kept by default: the official call clamps to a hard-coded 150 s, not to the video's
duration. ``clamp_to_duration=True`` clamps each line to its own ``duration`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mrhd.annotations import annotation_kind
from mrhd.models.spans import span_cxw_to_xx


class PostProcessorDETR:
    """The official ``clip_ts`` then ``round_multiple`` steps (``clip_window_l`` is available too)."""

    def __init__(self, clip_length: float = 2, min_ts_val: float = 0, max_ts_val: float = 150,
                 min_w_l: float = 2, max_w_l: float = 150, move_window_method: str = "left",
                 process_func_names: Sequence[str] = ("clip_ts", "round_multiple"),
                 clamp_to_duration: bool = False):
        self.clip_length = clip_length
        self.min_ts_val = min_ts_val
        self.max_ts_val = max_ts_val
        self.min_w_l = min_w_l
        self.max_w_l = max_w_l
        self.move_window_method = move_window_method
        self.process_func_names = tuple(process_func_names)
        self.clamp_to_duration = clamp_to_duration
        unknown = set(self.process_func_names) - {"clip_ts", "round_multiple", "clip_window_l"}
        if unknown:
            raise ValueError(f"unknown post-processing steps {sorted(unknown)}")

    def clip_timestamps(self, windows: torch.Tensor, duration: float | None) -> torch.Tensor:
        max_val = duration if (self.clamp_to_duration and duration is not None) else self.max_ts_val
        return torch.clamp(windows, min=self.min_ts_val, max=max_val)

    def round_to_clip_multiples(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.round(windows / self.clip_length) * self.clip_length

    def clip_window_lengths(self, windows: torch.Tensor) -> torch.Tensor:
        lengths = windows[:, 1] - windows[:, 0]
        for rows, new_len in ((lengths < self.min_w_l, self.min_w_l), (lengths > self.max_w_l, self.max_w_l)):
            if rows.any():
                windows = self.move_windows(windows, rows, new_len)
        return windows

    def move_windows(self, windows, rows, new_length):
        if self.move_window_method == "left":
            windows[rows, 1] = windows[rows, 0] + new_length
        elif self.move_window_method == "right":
            windows[rows, 0] = windows[rows, 1] - new_length
        else:  # center
            center = (windows[rows, 1] + windows[rows, 0]) / 2.0
            windows[rows, 0] = center - new_length / 2.0
            windows[rows, 1] = center + new_length / 2.0
        return windows

    def __call__(self, lines: list[dict]) -> list[dict]:
        out = []
        for line in lines:
            ws = torch.tensor(line["pred_relevant_windows"])  # float32, as the official code
            windows = ws[:, :2]
            for name in self.process_func_names:
                if name == "clip_ts":
                    windows = self.clip_timestamps(windows, line.get("duration"))
                elif name == "round_multiple":
                    windows = self.round_to_clip_multiples(windows)
                else:
                    windows = self.clip_window_lengths(windows)
            rows = torch.cat([windows, ws[:, 2:3]], dim=1).tolist()
            out.append({**line, "pred_relevant_windows": [r[:2] + [float(f"{r[2]:.4f}")] for r in rows]})
        return out


def postprocessor_for(dset_name: str, clip_length: float, v_feat_dim: int = 2818) -> PostProcessorDETR:
    """The PostProcessorDETR ``compute_mr_results`` builds for ``dset_name`` in CG-DETR
    (wjun0830/CGDETR@212b2e4 cg_detr/inference.py; VideoLights' fixture uses the same settings):
    QVHighlights clamps to 150 s and rounds to clip multiples; Charades-STA by its feature kind."""
    if dset_name == "hl":
        return PostProcessorDETR(clip_length, 0, 150, 2, 150, "left", ("clip_ts", "round_multiple"))
    if dset_name == "charadesSTA":
        if v_feat_dim == 4096:  # VGG features
            return PostProcessorDETR(clip_length, 0, 360, 12, 360, "left", ("clip_ts", "round_multiple"))
        return PostProcessorDETR(clip_length, 0, 150, 2, 60, "left", ("clip_ts", "round_multiple"))
    return PostProcessorDETR(clip_length, 0, 50000, 0, 50000, "left", ("round_multiple",))


def prediction_lines(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict],
                     sort_results: bool = True) -> list[dict]:
    """Model outputs + per-sample meta (qid, query, vid, duration) -> official lines before
    post-processing: {qid, query, vid, pred_relevant_windows [[st, ed, score], ...],
    pred_saliency_scores}. ``duration`` is kept in the line only when the meta has it."""
    prob = F.softmax(outputs["pred_logits"], -1)
    scores = prob[..., 0].detach().cpu()
    pred_spans = outputs["pred_spans"].detach().cpu()
    saliency = outputs["saliency_scores"].detach().half().cpu()
    valid_lengths = src_vid_mask.sum(1).cpu().tolist()
    lines = []
    for i, meta in enumerate(metas):
        spans = span_cxw_to_xx(pred_spans[i]) * meta["duration"]
        ranked = torch.cat([spans, scores[i][:, None]], dim=1).tolist()
        if sort_results:
            ranked = sorted(ranked, key=lambda x: x[2], reverse=True)
        ranked = [[float(f"{e:.4f}") for e in row] for row in ranked]
        lines.append(dict(qid=meta["qid"], query=meta["query"], vid=meta["vid"],
                          pred_relevant_windows=ranked,
                          pred_saliency_scores=saliency[i, :int(valid_lengths[i])].tolist()))
    return lines


def predict_lines(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict],
                  postprocessor: PostProcessorDETR | None = None) -> list[dict]:
    """:func:`prediction_lines` followed by the post-processor (official defaults when None).

    With ``clamp_to_duration`` the post-processor reads each meta's duration."""
    pp = postprocessor or PostProcessorDETR()
    lines = prediction_lines(outputs, src_vid_mask, metas)
    if pp.clamp_to_duration:
        lines = [{**ln, "duration": m["duration"]} for ln, m in zip(lines, metas)]
        return [{k: v for k, v in ln.items() if k != "duration"} for ln in pp(lines)]
    return pp(lines)


def detr_postprocess(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict], cfg) -> list[dict]:
    """The post-processing of Moment-DETR, QD-DETR, TR-DETR and the models built on them (a
    :data:`~mrhd.models.registry.PostProcess`): :func:`prediction_lines`, then clamping and rounding
    to multiples of ``cfg.clip_length``. A QVHighlights annotation line keeps the official clamp to
    a hard-coded 150 s; any other line (Charades-STA, TACoS, a window of ``mrhd predict``) is
    clamped to its own ``duration``."""
    clamp = any(annotation_kind(m) != "hl" for m in metas)
    pp = PostProcessorDETR(clip_length=getattr(cfg, "clip_length", 2), clamp_to_duration=clamp)
    return predict_lines(outputs, src_vid_mask, [{"query": "", **m} for m in metas], pp)
