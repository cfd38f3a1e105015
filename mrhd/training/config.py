"""Training options: the official per-model settings (configs/train/<model>.yaml) plus overrides.

Precedence, lowest first: the TrainConfig defaults (Moment-DETR's official QVHighlights training,
which QD-DETR, CG-DETR and VideoLights keep), configs/train/<model>.yaml (only what a model's
authors changed, with where it comes from), its preset for the named dataset (the YAML's
``datasets: {<dataset>: {...}}``, e.g. SG-DETR's per-dataset schedules), the dataset's
model selection (``best_metric`` of configs/datasets/<dataset>.yaml, when a dataset is named: the
model YAMLs name QVHighlights' MR-full-mAP), then explicit overrides (command-line flags and
``--set`` of a training option, e.g. ``--set best_metric=MR-full-R1@0.7``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mrhd.errors import MrhdError
from mrhd.paths import config_dir


@dataclass
class TrainConfig:
    """Everything that defines a training run besides the data paths. Defaults: jayleicn/moment_detr
    moment_detr/config.py + scripts/train.sh (AdamW, StepLR(lr_drop) stepped once per epoch,
    grad-norm clip, evaluation every 5 epochs, best checkpoint by MR-full-mAP)."""

    model: str
    profile: str | None = None          # None: the model's default profile (ModelSpec)
    labels: str | None = None           # build the training labels of this model (None: --model's own)
    seed: int = 2018
    epochs: int = 200
    batch_size: int = 32
    eval_batch_size: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_drop: int = 400                  # StepLR step (epochs)
    lr_gamma: float = 0.1
    lr_warmup: int = 0                  # UniVTG / SG-DETR: linear warm-up epochs
    lr_milestones: list | None = None   # SG-DETR: WarmupMultiStepLR milestones (epochs); replaces lr_drop
    lr_warmup_factor: float = 1 / 3     # WarmupMultiStepLR's starting factor
    grad_clip: float = 0.1
    eval_every: int = 5                 # epochs
    max_es_cnt: int = 200               # early stop after this many evaluations without gain; -1 never
    num_workers: int = 4
    best_metric: str = "MR-full-mAP"    # official model selection; "A+B": the mean of brief keys A, B
    dataset: str | None = None          # configs/datasets name; None: QVHighlights metrics, as before
    device: str = "cpu"
    amp: bool = True                    # mixed precision (float16 autocast + GradScaler) on CUDA only
    model_config: dict = field(default_factory=dict)   # overrides of the model's config fields
    clip_len: float = 2.0
    max_windows: int = 5
    progress: bool = True               # tqdm bar with loss and ETA

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MrhdError(f"{path} is not valid YAML ({err}); fix it") from None


def model_defaults(model: str) -> dict:
    """Fields that differ from the model config's dataclass defaults (which are each model's official
    setting): configs/models/<name>.yaml ``config:`` (e.g. ``mesm_charades``), {} where there is none."""
    path = config_dir() / "models" / f"{model}.yaml"
    return dict(_read_yaml(path).get("config") or {}) if path.is_file() else {}


def load_train_config(model: str, **overrides) -> TrainConfig:
    """configs/train/<model>.yaml, the dataset's best_metric, then ``overrides`` (None values are
    ignored); see the module docstring."""
    path = config_dir() / "train" / f"{model}.yaml"
    raw = _read_yaml(path) if path.is_file() else {}
    raw["model"] = model
    presets = raw.pop("datasets", None) or {}
    explicit = {k: v for k, v in overrides.items() if v is not None}
    dataset = explicit.get("dataset", raw.get("dataset"))
    if dataset is not None and dataset in presets:
        preset = dict(presets[dataset])
        raw["model_config"] = {**(raw.get("model_config") or {}), **(preset.pop("model_config", None) or {})}
        raw.update(preset)
    if dataset is not None:
        from mrhd.pipeline.dataset_configs import load_dataset_config

        raw["best_metric"] = load_dataset_config(dataset).best_metric
    if "model_config" in explicit and raw.get("model_config"):   # a preset's model fields stay unless overridden
        explicit["model_config"] = {**raw["model_config"], **explicit["model_config"]}
    raw.update(explicit)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MrhdError(f"unknown training options {unknown} (from {path} or the command line)")
    return TrainConfig(**raw)
