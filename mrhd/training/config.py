"""Training options: the official per-model settings (configs/train/<model>.yaml) plus overrides.

Precedence, lowest first: the TrainConfig defaults (Moment-DETR's official QVHighlights training,
which QD-DETR, CG-DETR and VideoLights keep), configs/train/<model>.yaml (only what a model's
authors changed, with where it comes from), the dataset's model selection (``best_metric`` of
configs/datasets/<dataset>.yaml, when a dataset is named: the model YAMLs name QVHighlights'
MR-full-mAP), the authors' recipe for that benchmark
(configs/recipes/<dataset>/<model>.yaml, :func:`load_recipe`), then explicit overrides (command-line
flags and ``--set`` of a training option, e.g. ``--set best_metric=MR-full-R1@0.7``).

Why recipes: the defaults are each model's QVHighlights run; on Charades-STA or TACoS the authors'
scripts change the learning rate, schedule, batch, loss weights and model sizes. A recipe holds
those (``train:`` options, ``model:`` config fields below ``--set``, ``caps:`` clip/token caps over
the dataset's), each with the script it comes from, so ``mrhd train --dataset D --model M`` runs the
authors' recipe. The clip length is not in a recipe: it is the feature store's.
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
    num_workers: int | None = None      # DataLoader workers; None: what fits the machine (speed.py)
    best_metric: str = "MR-full-mAP"    # official model selection; "A+B": the mean of brief keys A, B
    dataset: str | None = None          # configs/datasets name; None: QVHighlights metrics, as before
    device: str = "cpu"
    amp: bool = True                    # mixed precision: CUDA bfloat16 where supported, else float16 +
                                        # GradScaler; CPU see cpu_amp; False: float32 everywhere
    cpu_amp: bool = False               # with amp, CPU bfloat16 autocast, only where the cores compute
                                        # bfloat16 natively (speed.py); per model where 3-seed runs
                                        # learned as in float32 (docs/training-speed.md)
    model_config: dict = field(default_factory=dict)   # overrides of the model's config fields
    clip_len: float | None = None       # seconds per feature row; None: the stores' clip_len (a value must agree)
    max_windows: int = 5
    progress: bool = True               # tqdm bar with loss and ETA
    # Speed (docs/training-speed.md). ``exact`` runs the eager path whose numbers equal the authors'
    # code bit for bit and turns off every option below that changes numbers.
    exact: bool = False
    optimizer: str = "fused"            # AdamW kernel: fused | foreach | loop (official, bit-exact)
    fast_dropout: bool = True           # CPU: cheaper dropout masks (mrhd.training.fast_dropout)
    fast_prelu: bool = True             # CPU: cheaper PReLU backward (mrhd.training.fast_prelu)
    bucket_by_length: bool = False      # batches of similar lengths (mrhd.training.buckets): on in the
                                        # configs of models whose losses do not depend on padding
    compile: bool = False               # torch.compile the model (mrhd.training.speed)
    cache_features: bool = True         # keep features read from the stores in RAM (no effect on numbers)

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


@dataclass(frozen=True)
class Recipe:
    """The authors' settings of one model on one benchmark (module docstring); empty where the
    defaults are already theirs."""

    train: dict = field(default_factory=dict)    # TrainConfig options
    model: dict = field(default_factory=dict)    # model config fields (below --set; a variant's first)
    caps: dict = field(default_factory=dict)     # max_v_l / max_q_l over the dataset's (-1: none)
    path: Path | None = None


def load_recipe(model: str, dataset: str | None) -> Recipe:
    """configs/recipes/<dataset>/<model>.yaml, checked; an empty Recipe where there is none."""
    if dataset is None:
        return Recipe()
    path = config_dir() / "recipes" / dataset / f"{model}.yaml"
    if not path.is_file():
        return Recipe()
    raw = _read_yaml(path)
    unknown = sorted(set(raw) - {"train", "model", "caps", "variant"})
    if unknown or not all(isinstance(raw.get(k) or {}, dict) for k in ("train", "model", "caps")):
        raise MrhdError(f"{path}: a recipe has mappings train, model and caps (and a variant name) only; "
                        f"fix {unknown or 'its values'}")
    bad_caps = sorted(set(raw.get("caps") or {}) - {"max_v_l", "max_q_l"})
    if bad_caps:
        raise MrhdError(f"{path}: caps takes max_v_l and max_q_l, not {bad_caps}")
    # variant: a configs/models/<variant>.yaml whose fields come first (MESM's Charades-STA model)
    model_fields = {**(model_defaults(raw["variant"]) if raw.get("variant") else {}), **(raw.get("model") or {})}
    return Recipe(dict(raw.get("train") or {}), model_fields, dict(raw.get("caps") or {}), path)


def load_train_config(model: str, **overrides) -> TrainConfig:
    """configs/train/<model>.yaml, the dataset's best_metric, its recipe, then ``overrides`` (None
    values are ignored); see the module docstring."""
    path = config_dir() / "train" / f"{model}.yaml"
    raw = _read_yaml(path) if path.is_file() else {}
    raw["model"] = model
    if "datasets" in raw:
        raise MrhdError(f"{path}: per-dataset settings belong in configs/recipes/<dataset>/{model}.yaml, "
                        "not under 'datasets:'; move them there")
    explicit = {k: v for k, v in overrides.items() if v is not None}
    dataset = explicit.get("dataset", raw.get("dataset"))
    if dataset is not None:
        from mrhd.pipeline.dataset_configs import load_dataset_config

        raw["best_metric"] = load_dataset_config(dataset).best_metric
    recipe = load_recipe(model, dataset)
    raw.update(recipe.train)
    # model fields: the train YAML's, the recipe's, then the command line's, each key overriding
    model_fields = {**(raw.get("model_config") or {}), **recipe.model, **(explicit.get("model_config") or {})}
    if model_fields:
        explicit["model_config"] = model_fields
    raw.update(explicit)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MrhdError(f"unknown training options {unknown} (from {path}, {recipe.path or 'no recipe'} or the "
                        "command line)")
    return TrainConfig(**raw)
