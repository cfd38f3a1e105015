"""Build an encoder by stream name.

Each encoder module registers a builder with :func:`register_encoder`; modules are imported lazily
from :data:`ENCODER_MODULES` so that asking for ``clip`` never imports BLIP-2 or InternVideo2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from mrhd.errors import MrhdError

# stream name -> module that registers it
ENCODER_MODULES: dict[str, str] = {
    "clip": "mrhd.encoders.clip",
    "clip_text": "mrhd.encoders.clip",
    "slowfast": "mrhd.encoders.slowfast",
    "pann": "mrhd.encoders.pann",
    "blip2": "mrhd.encoders.blip2",
    "blip2_text": "mrhd.encoders.blip2",
    "internvideo2": "mrhd.encoders.internvideo2",
    "internvideo2_text": "mrhd.encoders.internvideo2",
}

# the text stream that belongs to each video encoder (`mrhd extract --queries`)
TEXT_STREAM_OF: dict[str, str] = {
    "clip": "clip_text",
    "blip2": "blip2_text",
    "internvideo2": "internvideo2_text",
}

VIDEO_ENCODERS = ("clip", "slowfast", "pann", "blip2", "internvideo2")

# builder(device, weights, random_weights, size) -> VideoEncoder | TextEncoder
Builder = Callable[..., object]
_BUILDERS: dict[str, Builder] = {}


def register_encoder(name: str, builder: Builder) -> Builder:
    _BUILDERS[name] = builder
    return builder


def build_encoder(name: str, *, device: str = "cpu", weights: str | None = None,
                  random_weights: bool = False, size: str = "full"):
    """The encoder of stream ``name``.

    weights: registry id or local file (None = the official weights of FEATURES.md);
    random_weights: random init with a fixed seed, no file needed (tests, benchmarks);
    size: ``full`` (the real architecture) or ``tiny`` (a reduced random model for CPU tests).
    """
    if name not in ENCODER_MODULES:
        raise MrhdError(f"unknown encoder {name!r}; choose from: {', '.join(VIDEO_ENCODERS)}")
    if name not in _BUILDERS:
        try:
            importlib.import_module(ENCODER_MODULES[name])
        except ModuleNotFoundError as err:
            if err.name == ENCODER_MODULES[name]:
                raise MrhdError(f"encoder {name!r} is not available in this build") from err
            raise
    return _BUILDERS[name](device=device, weights=weights, random_weights=random_weights, size=size)
