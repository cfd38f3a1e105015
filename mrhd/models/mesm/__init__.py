"""MESM (Liu et al., AAAI 2024): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.mesm.model import MESM, SPEC, MESMConfig, build

__all__ = ["SPEC", "MESM", "MESMConfig", "build"]
