"""The QVHighlights evaluator reproduces the published metrics of released prediction files."""

from __future__ import annotations

import json

import pytest

from mrhd.io import read_jsonl
from mrhd.pipeline.evaluate import evaluate
from tests.conftest import fixture_cases, open_case


@pytest.mark.fidelity
@pytest.mark.parametrize("case", fixture_cases("eval", "metrics.json"))
def test_metrics_equal_the_published_ones(case, data_dir):
    case = open_case(case, "metrics.json")
    meta = json.loads((case / "case.json").read_text())
    # case.json names the ground truth relative to ../../data of the eval folder (fixtures README);
    # where the fixtures live elsewhere ($MRHD_FIXTURES), the shared data folder holds it.
    gt_path = (case.parent / ".." / ".." / "data" / meta["ground_truth"]).resolve()
    if not gt_path.is_file():
        gt_path = data_dir / meta["ground_truth"]
    expected = json.loads((case / "metrics.json").read_text())
    got = evaluate(meta["dataset"], read_jsonl(case / "submission.jsonl"), read_jsonl(gt_path))
    got = json.loads(json.dumps(got))
    for key in expected:
        assert got.get(key) == expected[key], key
    # same keys in the same order, every value identical
    assert json.dumps(got) == json.dumps(expected)
