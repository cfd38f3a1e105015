"""Moment-DETR (Lei et al., NeurIPS 2021): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.moment_detr.model import SPEC, MomentDETR, MomentDETRConfig, build

__all__ = ["SPEC", "MomentDETR", "MomentDETRConfig", "build"]
