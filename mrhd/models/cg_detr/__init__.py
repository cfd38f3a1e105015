"""CG-DETR (Moon et al., 2023): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.cg_detr.model import CGDETR, SPEC, CGDETRConfig, build

__all__ = ["SPEC", "CGDETR", "CGDETRConfig", "build"]
