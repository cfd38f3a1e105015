"""VideoLights (Paul et al., 2024): ``build(cfg)`` and its :class:`~mrhd.models.registry.ModelSpec` ``SPEC``."""

from mrhd.models.videolights.model import SPEC, VideoLights, VideoLightsConfig, build

__all__ = ["SPEC", "VideoLights", "VideoLightsConfig", "build"]
