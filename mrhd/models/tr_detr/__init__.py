"""TR-DETR (Sun et al., AAAI 2024): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.tr_detr.model import SPEC, TRDETR, TRDETRConfig, build

__all__ = ["SPEC", "TRDETR", "TRDETRConfig", "build"]
