"""Write feature stores from arrays already in memory (synthetic data, tests, benchmarks).

`mrhd extract` writes stores from videos; training on planted data and the fidelity tests need the
same on-disk format (DESIGN.md "Feature store") from numbers they make themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

FORMAT = "mrhd-features/1"


def write_store(path: str | Path, stream: str, *, videos: Mapping[str, np.ndarray] | None = None,
                texts: Mapping[object, np.ndarray] | None = None,
                pooled: Mapping[object, np.ndarray] | None = None, clip_len: float = 2.0,
                weights: str = "random", recipe: dict | None = None, dtype: str = "float32") -> Path:
    """One ``<stream>.h5``: ``/<vid>`` [n_clips, dim] for video/audio, ``/qid<qid>`` [L, dim] and
    ``/pooled/qid<qid>`` [dim] for text."""
    import h5py

    path = Path(path)
    first = next(iter((videos or texts or {}).values()), None)
    dim = int(first.shape[-1]) if first is not None else 0
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["encoder"] = stream
        f.attrs["dim"] = dim
        f.attrs["clip_len"] = float(clip_len)
        f.attrs["weights"] = weights
        f.attrs["recipe"] = json.dumps(recipe or {"source": "synthetic"}, sort_keys=True)
        for vid, arr in (videos or {}).items():
            ds = f.create_dataset(str(vid), data=np.asarray(arr, dtype=dtype))
            ds.attrs["n_clips"] = int(len(arr))
            ds.attrs["duration"] = float(len(arr) * clip_len)
        for qid, arr in (texts or {}).items():
            f.create_dataset(f"qid{qid}", data=np.asarray(arr, dtype=dtype))
        for qid, arr in (pooled or {}).items():
            f.create_dataset(f"pooled/qid{qid}", data=np.asarray(arr, dtype=dtype))
    return path
