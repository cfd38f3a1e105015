"""SG-DETR (Gordeev et al., 2024): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.sg_detr.model import SGDETR, SPEC, SGDETRConfig, build

__all__ = ["SPEC", "SGDETR", "SGDETRConfig", "build"]
