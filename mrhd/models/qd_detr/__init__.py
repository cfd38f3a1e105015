"""QD-DETR (Moon et al., CVPR 2023): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.qd_detr.model import QDDETR, SPEC, QDDETRConfig, build

__all__ = ["SPEC", "QDDETR", "QDDETRConfig", "build"]
