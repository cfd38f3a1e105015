"""Validation during training: predictions in the submission format, then the official metrics.

Predictions come from the models' own post-processing: UniVTG's dense predictions + 0.7 NMS
(``mrhd.models.univtg_postprocess``), the DETR family's ``compute_mr_results`` + PostProcessorDETR
(``mrhd.models.postprocess``); a model may provide its own as ``ModelSpec.extras["predict_lines"]``
``(outputs, src_vid_mask, metas, cfg) -> lines``. Metrics: ``mrhd.pipeline.evaluate``.
"""

from __future__ import annotations

import inspect

import torch

from mrhd.pipeline.collate import prepare_batch
from mrhd.pipeline.datasets import annotation_kind


def forward_kwargs(model: torch.nn.Module, inputs: dict, targets: dict | None = None) -> dict:
    """The batch entries the model's forward() accepts (CG-DETR also takes vid/qid and, in
    training, the targets)."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = dict(inputs)
    else:
        kwargs = {k: v for k, v in inputs.items() if k in params}
    if targets is not None and "targets" in params:
        kwargs["targets"] = targets
    return kwargs


def predict_lines(spec, model_cfg, outputs: dict, src_vid_mask: torch.Tensor, metas: list[dict]) -> list[dict]:
    """Submission lines (qid, query, vid, pred_relevant_windows, pred_saliency_scores) of one batch."""
    custom = spec.extras.get("predict_lines") if spec.extras else None
    if custom is not None:
        return custom(outputs, src_vid_mask, metas, model_cfg)
    if spec.name == "univtg":
        from mrhd.models.univtg_postprocess import apply_nms, predictions

        lines = predictions(outputs, src_vid_mask, metas, model_cfg.clip_len, model_cfg.eval_mode)
        return apply_nms(lines, model_cfg.nms_thd, model_cfg.max_before_nms, model_cfg.max_after_nms)
    from mrhd.models.postprocess import PostProcessorDETR
    from mrhd.models.postprocess import predict_lines as detr_lines

    # QVHighlights clips are <= 150 s: the official clamp is a hard-coded 150; other datasets
    # (Charades-STA, TACoS) clamp to each video's duration.
    clamp = any(annotation_kind(m) != "hl" for m in metas)
    pp = PostProcessorDETR(clip_length=getattr(model_cfg, "clip_length", 2), clamp_to_duration=clamp)
    metas = [{"query": "", **m} for m in metas]
    return detr_lines(outputs, src_vid_mask, metas, pp)


@torch.no_grad()
def predict_loader(spec, model, model_cfg, loader, device, amp_dtype=None) -> list[dict]:
    model.eval()
    lines: list[dict] = []
    for metas, batched in loader:
        inputs, _ = prepare_batch(batched, device)
        with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(**forward_kwargs(model, inputs))
        outputs = to_float32(outputs)
        lines.extend(predict_lines(spec, model_cfg, outputs, inputs["src_vid_mask"], metas))
    return lines


def to_float32(x):
    """Outputs of an autocast forward, back in float32 for the loss and post-processing."""
    if torch.is_tensor(x):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_float32(v) for v in x)
    return x


def evaluate_lines(lines: list[dict], ground_truth: list[dict]) -> dict:
    """Official QVHighlights metrics; windows-only ground truth (Charades-STA, TACoS) gets the
    moment-retrieval block only."""
    from mrhd.pipeline.evaluate import evaluate_qvhighlights

    if any(annotation_kind(g) != "hl" for g in ground_truth):
        lines = [{k: v for k, v in ln.items() if k != "pred_saliency_scores"} for ln in lines]
    return evaluate_qvhighlights(lines, ground_truth)
