"""Clip length is a property of the store: read it, and check it against what it must agree with.

Why: the seconds one feature row covers decide every label (``window / (L * clip_len)``), every
predicted timestamp and the post-processing's rounding. Charades-STA's released features use 1-s
clips, QVHighlights' 2 s, VGG 1/6 s; a run that takes the wrong one trains on labels that miss the
moments, silently. So training takes the clip length from the video stores (root attribute
``clip_len``), and refuses when the stores disagree with each other or with the annotations'
durations (a 150-s video with 150 rows has 1-s clips, whatever a store says).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from mrhd.errors import MrhdError
from mrhd.features.store import FeatureStore

# rows * clip_len / duration may stray this far from 1 (clip counts round up or down, SlowFast pads,
# PANNs drops the tail) before the clip length is called wrong; a factor of 2 is always caught
COVERAGE_BAND = (0.6, 1.6)
SAMPLE = 300


def stores_clip_len(stores: Mapping, streams: Iterable[str]) -> float:
    """The clip length (seconds) the video/audio ``stores`` (StoreReaders, by stream) agree on."""
    lengths = {}
    for stream in streams:
        reader = stores[stream]
        value = reader.info.get("clip_len")
        if value is None:
            raise MrhdError(f"{reader.path} has no clip_len root attribute (seconds per row); add it "
                            "(docs/STORE.md) or re-import with `mrhd features import --clip-len S`")
        lengths[stream] = float(value)
    if not lengths:
        raise MrhdError("no video store to read the clip length from")
    if len(set(lengths.values())) > 1:
        what = ", ".join(f"{s}.h5 {v:g} s" for s, v in lengths.items())
        raise MrhdError(f"the video stores disagree on the clip length ({what}); use stores of one clip "
                        "length (re-extract with --clip-len, or re-import)")
    return next(iter(lengths.values()))


def check_against_annotations(stores: Mapping, streams: Iterable[str], clip_len: float,
                              annotations: list[dict], what: str = "the annotations") -> None:
    """Refuse a clip length that the annotations' durations contradict: over the annotated videos
    found in the first video store, the median of ``rows * clip_len / duration`` must be near 1."""
    streams = list(streams)
    if not streams:
        return
    reader = stores[streams[0]]
    durations: dict[str, float] = {}
    for line in annotations:
        try:
            duration = float(line.get("duration") or 0)
        except (TypeError, ValueError):
            continue
        vid = str(line.get("vid"))
        if duration > 0 and vid not in durations and reader.has(vid):
            durations[vid] = duration
        if len(durations) >= SAMPLE:
            break
    if not durations:
        return
    store = FeatureStore(reader.path, "r")
    try:
        ratios, examples = [], []
        for vid, duration in durations.items():
            described = store.describe(vid)
            if described is None:
                continue
            rows = described[0][0]
            ratios.append(rows * clip_len / duration)
            examples.append((rows, duration))
    finally:
        store.close_reader()
    if not ratios:
        return
    ratio = statistics.median(ratios)
    if COVERAGE_BAND[0] <= ratio <= COVERAGE_BAND[1]:
        return
    rows, duration = examples[ratios.index(min(ratios, key=lambda r: abs(r - ratio)))]
    seems = statistics.median(d / r for r, d in examples)
    raise MrhdError(f"{reader.path.name} says {clip_len:g}-s clips, but {what} say about {seems:.3g} s per row "
                    f"(e.g. {rows} rows for a {duration:g}-s video, median over {len(ratios)} videos); "
                    f"re-import with --clip-len {round(seems, 3):g} or point --features at the right stores")
