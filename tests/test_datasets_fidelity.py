"""Dataset + collate reproduce the official batches (inputs.pt, targets.pt) bit for bit."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mrhd.features.profiles import open_stores
from mrhd.pipeline.collate import collate, prepare_batch
from mrhd.pipeline.datasets import DatasetConfig, MomentDataset
from tests.conftest import open_case
from tests.helpers.fixture_recipe import batch_seeds
from tests.helpers.model_fixtures import model_cases
from tests.test_profiles import fixture_profile, fixture_raw_features, write_fixture_stores


def assert_same(ours, ref, where="targets"):
    if isinstance(ref, dict):
        assert set(ours) == set(ref), f"{where}: keys {sorted(ours)} != {sorted(ref)}"
        for k in ref:
            assert_same(ours[k], ref[k], f"{where}.{k}")
    elif isinstance(ref, list | tuple):
        assert len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, f"{where}[{i}]")
    elif torch.is_tensor(ref):
        assert torch.is_tensor(ours) and ours.dtype == ref.dtype and ours.shape == ref.shape, \
            f"{where}: {getattr(ours, 'dtype', type(ours))} {getattr(ours, 'shape', '')} vs {ref.dtype} {ref.shape}"
        assert torch.equal(ours, ref), f"{where}: values differ"
    else:
        assert ours == ref, where


@pytest.mark.fidelity
# MESM's official dataset batches videos with all their queries (collate_qvh), not queries: its
# batch is checked through the model (test_models_mesm_fidelity.py) and its profile (test_profiles.py).
@pytest.mark.parametrize("case", model_cases(exclude=("mesm",), required_file="targets.pt"))
def test_dataset_batch_equals_official(case, tmp_path):
    case = open_case(case, "targets.pt")
    config = json.loads((case / "config.json").read_text())
    kw = config["dataset_kwargs"]
    ref_inputs = torch.load(case / "inputs.pt")
    ref_targets = torch.load(case / "targets.pt")
    profile = fixture_profile(config)
    videos, texts = fixture_raw_features(case, config, ref_inputs)
    stores = open_stores(write_fixture_stores(tmp_path, videos, texts), profile)
    cfg = DatasetConfig(labels=config["model"], clip_len=kw["clip_len"], max_windows=kw["max_windows"])
    ds = MomentDataset(json.loads(json.dumps(config["fixture_annotations"])), stores, profile, cfg)
    py_seed, np_seed = batch_seeds(case, config)
    random.seed(py_seed)
    np.random.seed(np_seed)
    _, batched = collate([ds[i] for i in range(len(ds))])
    inputs, targets = prepare_batch(batched)
    assert_same(inputs, ref_inputs, "inputs")
    assert_same(targets, ref_targets, "targets")
