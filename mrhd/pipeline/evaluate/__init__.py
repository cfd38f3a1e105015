"""Evaluation with the official metrics of each benchmark.

``evaluate(dataset, predictions, ground_truth)`` is what training and ``mrhd eval`` call:
predictions and ground truth are lists of dicts in the submission / annotation formats
(``load_jsonl`` reads them). It raises :class:`mrhd.errors.MrhdError` when the predictions cannot
be scored (see :mod:`.validate`).
"""

from __future__ import annotations

from mrhd.errors import MrhdError
from mrhd.pipeline.evaluate.jsonl import load_jsonl
from mrhd.pipeline.evaluate.qvhighlights import evaluate_qvhighlights

DATASETS = ("qvhighlights",)

__all__ = ["DATASETS", "evaluate", "evaluate_qvhighlights", "load_jsonl"]


def evaluate(dataset: str, predictions: list[dict], ground_truth: list[dict]) -> dict:
    """Metrics of ``dataset`` for ``predictions`` against ``ground_truth`` (brief + full blocks)."""
    if dataset == "qvhighlights":
        return evaluate_qvhighlights(predictions, ground_truth)
    raise MrhdError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
