"""Write feature stores from arrays already in memory (synthetic data, tests, benchmarks).

`mrhd extract` writes stores from videos, one crash-safe part file per video; data made in memory
is written in one go straight into the main file, in the same layout
(:mod:`mrhd.features.store`: root attributes from ``root_attrs``, every dataset marked complete,
which is what :class:`~mrhd.features.store.FeatureStore` requires of a stored entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from mrhd.encoders.base import EncoderInfo
from mrhd.features.store import COMPLETE, POOLED, root_attrs
from mrhd.io import atomic_path


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
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(root_attrs(info))
        f.attrs["clip_len"] = float(clip_len)
        for vid, arr in (videos or {}).items():
            ds = f.create_dataset(str(vid), data=np.asarray(arr, dtype=dtype))
            ds.attrs.update({"duration": float(len(arr) * clip_len), "n_clips": int(len(arr)), COMPLETE: 1})
        for qid, arr in (texts or {}).items():
            f.create_dataset(f"qid{qid}", data=np.asarray(arr, dtype=np.float32)).attrs[COMPLETE] = 1
        for qid, arr in (pooled or {}).items():
            f.create_dataset(f"{POOLED}/qid{qid}", data=np.asarray(arr, dtype=np.float32)).attrs[COMPLETE] = 1
    return path
