"""Encoders built on first use, so that a warm `mrhd predict` (every feature cached) builds none.

Why: building an official video encoder loads hundreds of MB of weights (11 s of a 21.5 s warm
predict), yet the feature cache is keyed by the encoder's recipe (:class:`EncoderInfo`), known only
once the encoder exists. So each build's ``EncoderInfo`` is remembered in the cache folder under a
key of everything that decides it: the stream, random weights or not, the size, the registry's
weights files for that stream (size and mtime of the cached copies), the mrhd version and a digest
of the encoder source files. A later run reads the info from there, finds the features in the cache
and never builds the encoder; the first attribute an encoder needs beyond its info (``preprocess``,
``encode``, ...) builds it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from mrhd.encoders.base import EncoderInfo
from mrhd.io import write_atomic

INFO_FOLDER = "encoder-info"


@functools.cache
def _encoder_code_digest() -> str:
    """sha256 of the encoder sources: a change of code may change a recipe."""
    import mrhd
    import mrhd.encoders

    digest = hashlib.sha256(str(mrhd.__version__).encode())
    for path in sorted(Path(mrhd.encoders.__file__).parent.rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _weights_files(stream: str) -> list:
    """The registry's encoder files for ``stream`` as (id, size, mtime) of the cached copy (or None)."""
    from mrhd.weights.registry import entries
    from mrhd.weights.resolve import cached_path

    out = []
    for entry in entries():
        if entry.kind == "encoder" and entry.model == stream:
            path = cached_path(entry)
            stat = path.stat() if path.is_file() else None
            out.append([entry.id, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return out


def build_key(stream: str, *, random_weights: bool, size: str) -> str:
    """What decides the encoder's recipe (module docstring), hashed."""
    parts = {"stream": stream, "random": random_weights, "size": size, "code": _encoder_code_digest(),
             "files": [] if random_weights else _weights_files(stream)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class LazyEncoder:
    """Stands for the encoder ``build()`` returns: ``info`` (and ``dim``, ``name``) come from the
    remembered info where there is one; anything else builds the encoder once and is read from it."""

    def __init__(self, build: Callable[[], object], key: str, info_folder: Path | None):
        self._build = build
        self._info_path = info_folder / f"{key}.json" if info_folder is not None else None
        self._encoder = None
        self._info: EncoderInfo | None = None

    @property
    def built(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self):
        """The real encoder, built now if it was not yet (and its info remembered)."""
        if self._encoder is None:
            self._encoder = self._build()
            self._info = self._encoder.info
            self._remember(self._info)
        return self._encoder

    @property
    def info(self) -> EncoderInfo:
        if self._info is None:
            self._info = self._recall()
        if self._info is None:
            return self.encoder.info
        return self._info

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def name(self) -> str:
        return self.info.stream

    def __getattr__(self, attr):   # only for what this class does not define: preprocess, encode, ...
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.encoder, attr)

    def _recall(self) -> EncoderInfo | None:
        if self._info_path is None or not self._info_path.is_file():
            return None
        try:
            raw = json.loads(self._info_path.read_text())
            return EncoderInfo(stream=raw["stream"], dim=int(raw["dim"]), weights=raw["weights"],
                               recipe=dict(raw["recipe"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None   # a damaged note costs one build

    def _remember(self, info: EncoderInfo) -> None:
        if self._info_path is None:
            return
        try:
            self._info_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self._info_path, json.dumps({"stream": info.stream, "dim": info.dim,
                                                      "weights": info.weights, "recipe": info.recipe},
                                                     sort_keys=True))
        except (OSError, TypeError, ValueError):
            pass   # an unwritable cache only costs the next run a build


def lazy_encoder(stream: str, build: Callable[[], object], *, random_weights: bool, size: str,
                 cache_root: Path | None) -> LazyEncoder:
    """``build()`` deferred (see module docs); ``cache_root``: the feature cache folder (None: no
    memory between runs, the encoder is built when its info is first needed)."""
    folder = cache_root / INFO_FOLDER if cache_root is not None else None
    return LazyEncoder(build, build_key(stream, random_weights=random_weights, size=size), folder)
