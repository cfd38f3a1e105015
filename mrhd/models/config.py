"""Fields and helpers shared by the config dataclasses of the DETR-family grounding models.

Every model has its own dataclass config (subclassing :class:`DetrConfig`); field names are the
official option names so that the ``opt`` saved in an official checkpoint maps one-to-one
(:func:`fields_from_opt`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mrhd.errors import MrhdError
from mrhd.models.criterion import CriterionConfig


@dataclass
class DetrConfig:
    v_feat_dim: int = 2818            # [slowfast 2304 | clip 512 | tef 2]
    t_feat_dim: int = 512
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 2
    dec_layers: int = 2
    dim_feedforward: int = 1024
    dropout: float = 0.1
    input_dropout: float = 0.5
    num_queries: int = 10
    n_input_proj: int = 2
    max_q_l: int = 32
    max_v_l: int = 75
    clip_length: float = 2
    use_txt_pos: bool = False
    aux_loss: bool = True
    # losses / matcher (official option names)
    set_cost_class: float = 4
    set_cost_span: float = 10
    set_cost_giou: float = 1
    span_loss_coef: float = 10
    giou_loss_coef: float = 1
    label_loss_coef: float = 4
    lw_saliency: float = 1.0
    eos_coef: float = 0.1
    saliency_margin: float = 0.2

    def criterion_config(self, **extra: Any) -> CriterionConfig:
        names = {f.name for f in dataclasses.fields(CriterionConfig)}
        base = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return CriterionConfig(**{**base, **extra})


def fields_from_opt(config_cls: type, opt: dict, model: str) -> dict:
    """The subset of an official ``opt`` (as a dict) that names fields of ``config_cls``.

    Options this implementation does not provide raise a one-line :class:`MrhdError`."""
    opt = dict(opt)
    if opt.get("span_loss_type", "l1") != "l1":
        raise MrhdError(f"{model}: span_loss_type {opt['span_loss_type']!r} is not supported (only 'l1')")
    if opt.get("contrastive_align_loss"):
        raise MrhdError(f"{model}: contrastive_align_loss is not supported; train without it")
    if opt.get("position_embedding", "sine") not in ("sine", "v2"):
        raise MrhdError(f"{model}: position_embedding {opt['position_embedding']!r} is not supported")
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in opt.items() if k in names and v is not None}
