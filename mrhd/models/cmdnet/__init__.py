"""CMDNet (Zhou et al., MMSP 2024): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.cmdnet.model import SPEC, CMDNet, CMDNetConfig, build

__all__ = ["SPEC", "CMDNet", "CMDNetConfig", "build"]
