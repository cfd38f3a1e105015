"""Build an encoder by stream name.

Each encoder module registers a builder with :func:`register_encoder`; modules are imported lazily
(the ``module`` of :data:`mrhd.encoders.streams.STREAMS`) so that asking for ``clip`` never imports
BLIP-2 or InternVideo2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from mrhd.encoders.streams import STREAMS, VIDEO_ENCODERS
from mrhd.errors import MrhdError

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
    if name not in STREAMS:
        raise MrhdError(f"unknown encoder {name!r}; choose from: {', '.join(VIDEO_ENCODERS)}")
    module = STREAMS[name].module
    if module is None:
        raise MrhdError(f"stream {name!r} has no encoder in mrhd (import-only); bring the authors' released "
                        "files in with `mrhd features import`")
    if name not in _BUILDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                raise MrhdError(f"encoder {name!r} is not available in this build") from err
            raise
    encoder = _BUILDERS[name](device=device, weights=weights, random_weights=random_weights, size=size)
    if size != "full":
        # the store records the size (training reads it, so that predict rebuilds the same encoders);
        # full-size recipes stay as they were, so existing stores still match
        encoder.info.recipe.setdefault("size", size)
    return encoder
