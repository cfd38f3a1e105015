"""CG-DETR's prediction lines (wjun0830/CGDETR@212b2e4, cg_detr/inference.py ``compute_mr_results``).

As the shared Moment-DETR routine, except that windows are clamped to [0, duration] *before* the
4-decimal rounding; then the shared :class:`~mrhd.models.postprocess.PostProcessorDETR` with the
per-dataset settings upstream picks (:func:`~mrhd.models.postprocess.postprocessor_for`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mrhd.models.postprocess import postprocessor_for
from mrhd.models.spans import span_cxw_to_xx


def prediction_lines(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict]) -> list[dict]:
    """Lines before post-processing: windows clamped to [0, duration], sorted by score, 4 decimals."""
    scores = F.softmax(outputs["pred_logits"], -1)[..., 0].detach().cpu()
    spans = outputs["pred_spans"].detach().cpu()
    saliency = outputs["saliency_scores"].detach().half().cpu()
    lengths = src_vid_mask.sum(1).cpu().tolist()
    lines = []
    for i, meta in enumerate(metas):
        windows = torch.clamp(span_cxw_to_xx(spans[i]) * meta["duration"], 0, meta["duration"])
        ranked = sorted(torch.cat([windows, scores[i][:, None]], dim=1).tolist(), key=lambda r: r[2], reverse=True)
        lines.append({"qid": meta["qid"], "query": meta["query"], "vid": meta["vid"],
                      "pred_relevant_windows": [[float(f"{v:.4f}") for v in row] for row in ranked],
                      "pred_saliency_scores": saliency[i, :int(lengths[i])].tolist()})
    return lines


def predict_lines(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict], dset_name: str = "hl",
                  clip_length: float = 2, v_feat_dim: int = 2818) -> list[dict]:
    """:func:`prediction_lines` then the dataset's post-processor: the official output lines."""
    return postprocessor_for(dset_name, clip_length, v_feat_dim)(prediction_lines(outputs, src_vid_mask, metas))


def postprocess(outputs: dict, src_vid_mask: torch.Tensor, metas: Sequence[dict], cfg) -> list[dict]:
    """CG-DETR's official lines (a :data:`~mrhd.models.registry.PostProcess`): :func:`predict_lines`
    with the post-processor of the config's ``dset_name``."""
    metas = [{"query": "", **m} for m in metas]
    return predict_lines(outputs, src_vid_mask, metas, cfg.dset_name, cfg.clip_length, cfg.v_feat_dim)
