"""Per-dataset training settings (``configs/datasets/<name>.yaml``).

Why: the benchmarks differ in what ``mrhd train`` must do besides the data itself: which official
metrics validate a run (QVHighlights mAP, Charades-STA/TACoS R1@IoU, TVSum top-5 mAP), which metric
picks the best checkpoint, the authors' clip/token caps, and the ``dset_name`` some models branch on
(CG-DETR, TR-DETR). Each YAML cites the authors' file its values come from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mrhd.errors import MrhdError
from mrhd.paths import config_dir


@dataclass(frozen=True)
class DatasetConfig:
    """One benchmark's settings; see the module docstring."""

    name: str
    metrics: str                     # key of mrhd.pipeline.evaluate.EVALUATORS
    best_metric: str                 # brief key, or "A+B": the mean of those brief keys
    splits: dict = field(default_factory=dict)   # split name -> annotation file name
    validate_on: str = "val"         # the split --val defaults to
    dset_name: str | None = None     # the authors' dset_name, for models with that config field
    max_v_l: int | None = None       # clip cap; -1: none (the authors' -1); None: the profile's
    max_q_l: int | None = None       # token cap; -1: none; None: the profile's

    def split_file(self, split: str) -> str:
        if split not in self.splits:
            raise MrhdError(f"dataset {self.name!r} has no split {split!r}; "
                            f"choose one of: {', '.join(self.splits)}")
        return self.splits[split]

    def apply_to_profile(self, profile):
        """The feature profile with this dataset's clip/token caps (-1 lifts a cap)."""
        caps = {k: (None if v == -1 else v) for k, v in (("max_v_l", self.max_v_l), ("max_q_l", self.max_q_l))
                if v is not None}
        return profile.replace(**caps) if caps else profile


def dataset_names(folder: str | Path | None = None) -> list[str]:
    """Names of the dataset configs in ``folder`` (None: the shipped ones)."""
    return sorted(p.stem for p in Path(folder or config_dir() / "datasets").glob("*.yaml"))


def metric_families() -> dict[str, str]:
    """Benchmark name -> the metric family (``mrhd.pipeline.evaluate.EVALUATORS`` key) that scores
    it: every shipped dataset config, plus the families no config names (``youtube``)."""
    from mrhd.pipeline.evaluate import EVALUATORS

    names = {name: load_dataset_config(name).metrics for name in dataset_names()}
    names.update({family: family for family in EVALUATORS if family not in names.values()})
    return names


def load_dataset_config(name: str, folder: str | Path | None = None) -> DatasetConfig:
    """``<folder>/<name>.yaml`` (None: the shipped configs), checked: known keys only, a metric
    family with an evaluator, the validation split among the splits."""
    from mrhd.pipeline.evaluate import EVALUATORS

    path = Path(folder or config_dir() / "datasets") / f"{name}.yaml"
    if not isinstance(name, str) or not name or "/" in name or not path.is_file():
        raise MrhdError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names(folder))}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MrhdError(f"{path} is not valid YAML ({err}); fix it") from None
    if not isinstance(raw, dict):
        raise MrhdError(f"{path} must be a mapping of dataset settings; fix it")
    known = {f.name for f in dataclasses.fields(DatasetConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MrhdError(f"{path} has unknown keys {unknown}; allowed: {', '.join(sorted(known))}")
    missing = [k for k in ("metrics", "best_metric", "splits") if not raw.get(k)]
    if missing:
        raise MrhdError(f"{path} lacks {', '.join(missing)}; add them")
    raw.setdefault("name", name)
    if raw["name"] != name:
        raise MrhdError(f"{path} names itself {raw['name']!r}; the name must be the file's stem {name!r}")
    if raw["metrics"] not in EVALUATORS:
        raise MrhdError(f"{path}: metrics {raw['metrics']!r} has no evaluator; "
                        f"choose one of: {', '.join(EVALUATORS)}")
    cfg = DatasetConfig(**raw)
    if not isinstance(cfg.splits, dict) or not all(isinstance(v, str) for v in cfg.splits.values()):
        raise MrhdError(f"{path}: splits must map split names to file names")
    if cfg.validate_on not in cfg.splits:
        raise MrhdError(f"{path}: validate_on {cfg.validate_on!r} is not among the splits {list(cfg.splits)}")
    for key in ("max_v_l", "max_q_l"):
        value = getattr(cfg, key)
        if value is not None and (not isinstance(value, int) or value == 0 or value < -1):
            raise MrhdError(f"{path}: {key} must be a positive integer or -1 (no cap), not {value!r}")
    return cfg
