"""Write feature stores from arrays already in memory (synthetic data, tests, benchmarks).

`mrhd extract` writes stores from videos; training on planted data and the fidelity tests need the
same on-disk format (DESIGN.md "Feature store") from numbers they make themselves, so this goes
through the same :class:`~mrhd.extract.store.FeatureStore` writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrhd.extract.encoders.base import EncoderInfo
from mrhd.extract.store import FeatureStore


def write_store(path: str | Path, stream: str, *, videos: Mapping[str, np.ndarray] | None = None,
                texts: Mapping[object, np.ndarray] | None = None,
                pooled: Mapping[object, np.ndarray] | None = None, clip_len: float = 2.0,
                weights: str = "random", recipe: dict | None = None, dtype: str = "float32") -> Path:
    """One ``<stream>.h5``: ``/<vid>`` [n_clips, dim] for video/audio, ``/qid<qid>`` [L, dim] and
    ``/pooled/qid<qid>`` [dim] for text. Replaces an existing store."""
    path = Path(path)
    first = next(iter((videos or texts or {}).values()), None)
    dim = int(np.asarray(first).shape[-1]) if first is not None else 0
    info = EncoderInfo(stream=stream, dim=dim, weights=weights, recipe=recipe or {"source": "synthetic"})
    with FeatureStore(path, "w", info=info, store_dtype=dtype) as store:
        for vid, arr in (videos or {}).items():
            store.write(str(vid), arr, duration=float(len(arr) * clip_len))
        if texts:
            store.write_texts((qid, arr, (pooled or {}).get(qid)) for qid, arr in texts.items())
    return path
