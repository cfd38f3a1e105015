"""Evaluation with the official metrics of each benchmark.

``evaluate(dataset, predictions, ground_truth)`` is what training and ``mrhd eval`` call:
predictions and ground truth are lists of dicts in the submission / annotation formats
(:func:`mrhd.io.read_jsonl` reads them). It raises :class:`mrhd.errors.MrhdError` when the predictions cannot
be scored faithfully (see :mod:`.validate`); warnings do not stop it.
"""

from __future__ import annotations

from mrhd.errors import MrhdError
from mrhd.pipeline.evaluate.charades import evaluate_charades
from mrhd.pipeline.evaluate.qvhighlights import evaluate_qvhighlights
from mrhd.pipeline.evaluate.tvsum import evaluate_tvsum, evaluate_youtube
from mrhd.pipeline.evaluate.validate import Issue, raise_on_errors, validate

EVALUATORS = {
    "qvhighlights": evaluate_qvhighlights,
    "charades": evaluate_charades,
    "tacos": evaluate_charades,
    "tvsum": evaluate_tvsum,
    "youtube": evaluate_youtube,
}
DATASETS = tuple(EVALUATORS)

__all__ = ["DATASETS", "Issue", "evaluate", "evaluate_qvhighlights", "validate"]


def evaluate(dataset: str, predictions: list[dict], ground_truth: list[dict], strict: bool = False) -> dict:
    """Metrics of ``dataset`` for ``predictions`` against ``ground_truth`` (brief + full blocks)."""
    if dataset not in EVALUATORS:
        raise MrhdError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    raise_on_errors(validate(dataset, predictions, ground_truth), "predictions", strict=strict)
    return EVALUATORS[dataset](predictions, ground_truth)
