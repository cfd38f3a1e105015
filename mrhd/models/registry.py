"""A registry of grounding models, in the style of timm / open_clip.

Each model package registers one :class:`ModelSpec`, the whole contract between a model and the
rest of mrhd: its config class, how to build the network and its losses, the forward inputs it
reads, the labels its official dataset builds, its official post-processing and how the authors'
checkpoints map onto it. Prediction (``mrhd predict``), validation (``mrhd train``), conversion
(``mrhd weights convert``) and the datasets talk to a model only through its spec.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mrhd.errors import MrhdError

# Model name -> package that registers it (imported lazily so `import mrhd` stays light).
MODEL_MODULES: dict[str, str] = {
    "moment_detr": "mrhd.models.moment_detr",
    "qd_detr": "mrhd.models.qd_detr",
    "tr_detr": "mrhd.models.tr_detr",
    "cg_detr": "mrhd.models.cg_detr",
    "univtg": "mrhd.models.univtg",
    "cmdnet": "mrhd.models.cmdnet",
    "videolights": "mrhd.models.videolights",
    "sg_detr": "mrhd.models.sg_detr",
    "mesm": "mrhd.models.mesm",
}

# The batch entries every model's forward() takes; ``ModelSpec.forward_inputs`` lists the others.
DETR_INPUTS = ("src_txt", "src_txt_mask", "src_vid", "src_vid_mask")
AUDIO_INPUTS = ("src_aud", "src_aud_mask")

# Post-processing: (outputs, src_vid_mask, metas, cfg) -> one prediction line per meta
# (qid, query, vid, pred_relevant_windows [[st, ed, score], ...] best first, pred_saliency_scores).
# A meta holds qid, query, vid, duration and, in validation, the annotation line's fields.
PostProcess = Callable[[dict, Any, Sequence[dict], Any], list[dict]]


@dataclass(frozen=True)
class LabelRecipe:
    """The training targets a model's official dataset class builds beyond Moment-DETR's
    (span labels and the hard/easy saliency pairs, which every recipe has)."""

    all_labels: bool = False       # QD-DETR and later: saliency_all_labels (summed scores per clip)
    pos_mask: bool = False         # TR-DETR: src_pos_mask (relevant clips as 0/1)
    relevant_clips: bool = False   # CG-DETR: relevant_clips (= saliency_all_labels)
    pos_index: bool = False        # VideoLights: saliency_pos_index
    dense: bool = False            # UniVTG: per-clip targets, easy pairs only


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of mrhd needs to know about one model."""

    name: str
    config_cls: type
    build: Callable[[Any], Any]                            # cfg -> nn.Module
    postprocess: PostProcess                               # outputs -> official prediction lines
    build_criterion: Callable[[Any], Any] | None = None    # cfg -> nn.Module (losses); None: no training
    forward_inputs: tuple[str, ...] = DETR_INPUTS          # batch entries and annotation fields forward() reads
    labels: LabelRecipe = field(default_factory=LabelRecipe)
    default_profile: str = "slowfast_clip"                 # feature profile of the official checkpoints
    config_from_opt: Callable[[dict], Any] | None = None   # the authors' saved `opt` (dict) -> config
    convert_state_dict: Callable[[dict], dict] | None = None  # the authors' keys -> ours (None: identity)
    # forward() keywords for prediction only: they skip work whose outputs no prediction reads (the
    # rolled-text negative pass of the saliency losses); outputs that predictions read stay equal
    predict_switches: Mapping[str, Any] = field(default_factory=dict)

    def make_config(self, cfg: Any = None, **overrides: Any) -> Any:
        """The config object from a config, a dict of fields (unknown keys ignored) or defaults."""
        if cfg is None:
            cfg = self.config_cls()
        elif isinstance(cfg, dict):
            known = {f.name for f in dataclasses.fields(self.config_cls)}
            cfg = self.config_cls(**{k: v for k, v in cfg.items() if k in known})
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    def has_field(self, name: str) -> bool:
        return name in {f.name for f in dataclasses.fields(self.config_cls)}


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
    """Model ``name``'s config from a config, a dict of fields, or defaults, plus overrides."""
    return get_spec(name).make_config(cfg, **overrides)


def create_model(name: str, cfg: Any = None, **overrides: Any):
    """Build model ``name`` (random init) from a config object, a dict, or its defaults."""
    spec = get_spec(name)
    return spec.build(spec.make_config(cfg, **overrides))
