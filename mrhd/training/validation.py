"""Validation during training: predictions in the submission format, then the official metrics.

Predictions come from the model's own post-processing (``ModelSpec.postprocess``), the same
function ``mrhd predict`` calls. Metrics: ``mrhd.pipeline.evaluate``, the family
named by the run's dataset (configs/datasets), QVHighlights without one. Model selection
(``best_metric``) is one brief key or ``A+B``: the mean of several (CG-DETR's Charades-STA/TACoS
``(R1@0.7 + R1@0.5) / 2``).
"""

from __future__ import annotations

import inspect
import math

import torch

from mrhd.annotations import annotation_kind
from mrhd.errors import MrhdError
from mrhd.pipeline.collate import prepare_batch


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
    """Submission lines (qid, query, vid, pred_relevant_windows, pred_saliency_scores) of one batch:
    the model's own post-processing, as ``mrhd predict`` runs it."""
    return spec.postprocess(outputs, src_vid_mask, metas, model_cfg)


@torch.no_grad()
def predict_loader(spec, model, model_cfg, loader, device) -> list[dict]:
    """Prediction lines of a loader, in float32 whatever the training autocast: bfloat16 saliency
    scores tie and change the ranking metrics."""
    model.eval()
    lines: list[dict] = []
    for metas, batched in loader:
        inputs, _ = prepare_batch(batched, device)
        outputs = model(**forward_kwargs(model, inputs))
        lines.extend(predict_lines(spec, model_cfg, outputs, inputs["src_vid_mask"], metas))
    return lines


def to_float32(x):
    """Outputs of an autocast training forward, back in float32 for the loss."""
    if torch.is_tensor(x):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_float32(v) for v in x)
    return x


# annotation kinds (mrhd.pipeline.datasets.annotation_kind) each metric family can score
GROUND_TRUTH_KINDS = {
    "qvhighlights": ("hl", "sta"),
    "charades": ("sta", "hl"),
    "tacos": ("sta", "hl"),
    "tvsum": ("tvsum",),
    "youtube": ("tvsum",),
}


def scorable(ground_truth: list[dict], family: str = "qvhighlights") -> list[dict]:
    """The validation lines the family's metrics can score (e.g. no test lines without windows)."""
    kinds = GROUND_TRUTH_KINDS.get(family, ("hl", "sta"))
    return [g for g in ground_truth if annotation_kind(g) in kinds]


def evaluate_lines(lines: list[dict], ground_truth: list[dict], family: str = "qvhighlights") -> dict:
    """The official metrics of ``family`` (a key of ``mrhd.pipeline.evaluate.EVALUATORS``).
    QVHighlights: windows-only ground truth (Charades-STA, TACoS) gets the moment-retrieval block
    only."""
    from mrhd.pipeline.evaluate import EVALUATORS, evaluate_qvhighlights

    if family != "qvhighlights":
        return EVALUATORS[family](lines, ground_truth)
    if any(annotation_kind(g) != "hl" for g in ground_truth):
        lines = [{k: v for k, v in ln.items() if k != "pred_saliency_scores"} for ln in lines]
    return evaluate_qvhighlights(lines, ground_truth)


def metric_keys(best_metric: str) -> list[str]:
    """The brief keys a ``best_metric`` names (``A+B`` -> [A, B])."""
    return [k.strip() for k in str(best_metric).split("+")]


def selection_score(brief: dict, best_metric: str) -> float:
    """The model-selection score of a brief block: the key's value, or the mean of ``A+B``."""
    keys = metric_keys(best_metric)
    absent = [k for k in keys if k not in brief]
    if absent:
        raise MrhdError(f"best_metric {best_metric!r}: {absent} not among the metrics {sorted(brief)}; "
                        "choose brief keys of this dataset (--set best_metric=KEY)")
    values = [brief[k] for k in keys]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return float("nan")
    return float(sum(float(v) for v in values) / len(values))


def check_best_metric(best_metric: str, ground_truth: list[dict], family: str, clip_len: float) -> None:
    """Fail before training when ``best_metric`` names a key the family's brief block lacks: score
    placeholder predictions (one whole-video window, flat saliency) on a few validation lines."""
    sample = ground_truth[:2]
    preds = []
    for g in sample:
        duration = float(g.get("duration") or clip_len)
        n = max(1, math.ceil(duration / clip_len))
        preds.append({"qid": g["qid"], "vid": g["vid"], "pred_relevant_windows": [[0.0, duration, 1.0]],
                      "pred_saliency_scores": [0.0] * n})
    try:
        brief = evaluate_lines(preds, sample, family)["brief"]
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError):
        return   # lines this check cannot score; the first evaluation checks best_metric again
    selection_score(brief, best_metric)
