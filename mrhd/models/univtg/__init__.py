"""UniVTG (Lin et al., ICCV 2023): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.univtg.model import SPEC, UniVTG, UniVTGConfig, build

__all__ = ["SPEC", "UniVTG", "UniVTGConfig", "build"]
