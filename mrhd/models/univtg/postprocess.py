"""UniVTG's predictions, as the official ``compute_mr_results`` writes them (main/inference_mr.py).

Every clip proposes one window: ``(timestamp + offsets) * duration`` clamped to [0, duration],
scored by its foreground probability (0 on padding, so padded clips still appear, last). The
QVHighlights setting uses no rounding post-processor (round_multiple -1); the official evaluation
then applies temporal NMS at 0.7 (:func:`mrhd.models.nms.apply_nms`).
"""

from __future__ import annotations

import torch

from mrhd.models.nms import apply_nms


def clip_timestamps(vid_mask: torch.Tensor, clip_len: float) -> torch.Tensor:
    """Reference time of each clip, ``(t + clip_len/2) / L`` for both ends, 0 on padding (B, L, 2).

    Upstream adds half a clip length *in seconds* to a clip index (main/dataset.py), i.e. (t+1)/L
    for 2-second clips; reproduced as is because checkpoints were trained with it.
    """
    stamps = torch.zeros(*vid_mask.shape, 2, dtype=torch.float32, device=vid_mask.device)
    for i, n in enumerate(vid_mask.sum(1).long().tolist()):
        t = (torch.arange(0, n, device=vid_mask.device) + clip_len / 2) / n
        stamps[i, :n] = t.unsqueeze(1).repeat(1, 2)
    return stamps


def predictions(outputs: dict, vid_mask: torch.Tensor, metas: list[dict], clip_len: float,
                eval_mode: str = "add") -> list[dict]:
    """One prediction dict per sample (qid, query, vid, pred_relevant_windows, pred_saliency_scores).

    ``metas`` items need ``duration``; qid/query/vid are copied when present. Like upstream, the
    padded scores are zeroed in ``outputs["pred_logits"]`` itself (in place).
    """
    prob = outputs["pred_logits"]
    scores = prob[..., 0]
    spans = clip_timestamps(vid_mask, clip_len) + outputs["pred_spans"]
    scores[~vid_mask.bool()] = 0
    saliency = outputs["saliency_scores"].half()
    if eval_mode == "add":
        saliency = saliency + prob.squeeze(-1)
    lengths = vid_mask.sum(1).long().tolist()
    results = []
    for i, meta in enumerate(metas):
        duration = meta["duration"]
        windows = torch.clamp(spans[i].cpu() * duration, 0, duration)
        rows = torch.cat([windows, scores[i].cpu()[:, None]], dim=1).tolist()
        rows = sorted(rows, key=lambda r: r[2], reverse=True)
        rows = [[float(f"{v:.4f}") for v in row] for row in rows]
        entry = {k: meta[k] for k in ("qid", "query", "vid") if k in meta}
        entry["pred_relevant_windows"] = rows
        entry["pred_saliency_scores"] = saliency[i, :lengths[i]].tolist()
        results.append(entry)
    return results


def postprocess(outputs: dict, src_vid_mask: torch.Tensor, metas: list[dict], cfg) -> list[dict]:
    """UniVTG's official lines (a :data:`~mrhd.models.registry.PostProcess`): one window per clip,
    then the official NMS with the config's ``nms_thd``, ``max_before_nms`` and ``max_after_nms``."""
    lines = predictions(outputs, src_vid_mask, metas, cfg.clip_len, cfg.eval_mode)
    return apply_nms(lines, cfg.nms_thd, cfg.max_before_nms, cfg.max_after_nms)
