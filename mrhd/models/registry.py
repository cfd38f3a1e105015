"""A registry of grounding models, in the style of timm / open_clip.

Each model module registers one :class:`ModelSpec`: its config class, ``build(cfg)`` for the
network, ``build_criterion(cfg)`` for its losses, the feature profile its official checkpoints use,
and how an official checkpoint's saved ``opt`` maps to the config. The pipeline (predict, train,
weights) only talks to models through this registry, so adding a model never touches it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mrhd.errors import MrhdError

# Model name -> module that registers it (imported lazily so `import mrhd` stays light).
MODEL_MODULES: dict[str, str] = {
    "moment_detr": "mrhd.models.moment_detr.model",
    "qd_detr": "mrhd.models.qd_detr.model",
    "tr_detr": "mrhd.models.tr_detr.model",
    "cg_detr": "mrhd.models.cg_detr.model",
    "univtg": "mrhd.models.univtg.model",
    "cmdnet": "mrhd.models.cmdnet.model",
    "videolights": "mrhd.models.videolights.model",
    "sg_detr": "mrhd.models.sg_detr.model",
    "mesm": "mrhd.models.mesm.model",
}


@dataclass
class ModelSpec:
    """Everything the pipeline needs to know about one model."""

    name: str
    config_cls: type
    build: Callable[[Any], Any]                      # cfg -> nn.Module
    build_criterion: Callable[[Any], Any] | None     # cfg -> nn.Module (losses), None if no training path
    default_profile: str = "slowfast_clip"           # feature profile of the official checkpoints
    config_from_opt: Callable[[dict], Any] | None = None   # official `opt` (dict) -> config
    convert_state_dict: Callable[[dict], dict] | None = None  # official keys -> ours (identity if None)
    extras: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def available_models() -> list[str]:
    return list(MODEL_MODULES)


def get_spec(name: str) -> ModelSpec:
    if name not in MODEL_MODULES:
        raise MrhdError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_MODULES)}")
    if name not in _REGISTRY:
        try:
            importlib.import_module(MODEL_MODULES[name])
        except ModuleNotFoundError as err:
            if err.name == MODEL_MODULES[name]:
                raise MrhdError(f"model {name!r} is not available in this build") from err
            raise
    return _REGISTRY[name]


def make_config(name: str, cfg: Any = None, **overrides: Any) -> Any:
    """The model's config object from a config, a dict of fields, or defaults, plus overrides."""
    spec = get_spec(name)
    if cfg is None:
        cfg = spec.config_cls()
    elif isinstance(cfg, dict):
        known = {f.name for f in dataclasses.fields(spec.config_cls)}
        cfg = spec.config_cls(**{k: v for k, v in cfg.items() if k in known})
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def create_model(name: str, cfg: Any = None, **overrides: Any):
    """Build model ``name`` (random init) from a config object, a dict, or its defaults."""
    spec = get_spec(name)
    return spec.build(make_config(name, cfg, **overrides))
