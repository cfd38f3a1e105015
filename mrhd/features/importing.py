"""``mrhd features import``: the authors' released feature folders into ``<stream>.h5`` stores.

Why: training and evaluating on the features a paper used is how one reproduces its table, and
those features come as ``.npz`` / ``.npy`` / ``.pt`` folders or merged HDF5 files
(:mod:`mrhd.features.layouts`). The import copies every array without changing a value (float16
stays float16, float32 stays float32; only non-float arrays become float32, and bfloat16 tensors,
which numpy cannot hold, become the float32 numbers they equal) and writes where they came from into
the stores' root attributes (``weights = released:<layout>``, ``recipe`` naming the files and the
authors' loader, ``source`` with the folder and layout) and each entry's ``source`` attribute.

Like extraction it is resumable and atomic: entries go to the store in batches, each batch one part
file that appears whole or not at all (:meth:`FeatureStore.write_entries`); a re-run (after Ctrl-C or
a kill) skips what is stored. Every check that can refuse the whole job (unknown layout, a stream
asked for and absent, a width that is not the stream's, a store made from other files) runs before
anything is written. A file that cannot be read is named in the summary and the others go on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mrhd.encoders.base import EncoderInfo
from mrhd.encoders.streams import STREAMS
from mrhd.errors import MrhdError
from mrhd.features.layouts import (
    DATASETS,
    DEFAULT_CLIP_LEN,
    Found,
    Layout,
    clip_len_of,
    dataset_of_ids,
    detect_layout,
    find_sources,
    get_layout,
    suffixes,
)
from mrhd.features.store import POOLED, FeatureStore, differs_from, store_path
from mrhd.io import read_jsonl

BATCH_ENTRIES = 256            # entries per part file
BATCH_BYTES = 64 << 20         # or this many bytes, whichever comes first
COMMIT_EVERY = 16              # merge the parts into the main file after this many batches
FIRST_TRIES = 20               # files tried per source before the job is refused as unreadable


class BadFile(Exception):
    """One released file that cannot be imported (reported, the import goes on)."""


@dataclass
class StreamResult:
    stream: str
    place: str
    clip_len: float
    clip_len_from: str
    dim: int
    imported: int = 0
    skipped: int = 0
    broken: int = 0
    dtypes: set = field(default_factory=set)

    @property
    def kind(self) -> str:
        return STREAMS[self.stream].kind


@dataclass
class ImportSummary:
    layout: str
    src: Path
    out: Path
    dataset: str | None
    streams: list[StreamResult] = field(default_factory=list)
    broken: list[tuple[str, str]] = field(default_factory=list)     # (file, reason)
    unread: list[str] = field(default_factory=list)                 # SRC entries no source reads
    length_gaps: dict[int, int] = field(default_factory=dict)       # clips of difference -> videos
    lengths: dict = field(default_factory=lambda: defaultdict(dict), repr=False)   # stream -> video -> rows
    coverage: list[str] = field(default_factory=list)               # --queries: what is present
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)               # stores repaired on the way
    interrupted: bool = False

    def report(self) -> str:
        unit = {"text": "queries"}
        lines = [f"imported layout {self.layout} from {self.src} into {self.out}"
                 + (f" ({self.dataset} video ids)" if self.dataset else "")]
        for r in self.streams:
            what = unit.get(r.kind, "videos")
            clip = "" if r.kind == "text" else f", clip {r.clip_len:g} s ({r.clip_len_from})"
            dtypes = "/".join(sorted(r.dtypes)) or "-"
            lines.append(f"  {r.stream:<18} {r.place:<34} {r.dim:>5}-d {dtypes:<8} "
                         f"{r.imported} {what} imported, {r.skipped} already stored, {r.broken} broken{clip}")
        if self.length_gaps:
            n = sum(self.length_gaps.values())
            lines.append(f"  {n} video(s) whose streams differ in length (by at most {max(self.length_gaps)} "
                         "clip(s); stored as released, the loaders trim to the shortest)")
        lines += [f"  {line}" for line in self.coverage]
        if self.unread:
            lines.append(f"  not read (no rule of layout {self.layout}): {', '.join(self.unread[:10])}"
                         + (f" and {len(self.unread) - 10} more" if len(self.unread) > 10 else ""))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.interrupted:
            lines.append("  interrupted: re-run the same command to finish")
        if self.broken:
            lines.append(f"broken files ({len(self.broken)}), not imported:")
            lines += [f"  {path}: {reason}" for path, reason in self.broken]
        return "\n".join(lines)


# ---- reading one released file -------------------------------------------------------------------
def _as_rows(array: np.ndarray, dim: int, what: str) -> np.ndarray:
    """[n, dim]: a leading batch axis of 1 is dropped (QD-DETR start_end_dataset_audio.py:120-123
    strips it from text, MESM data/npy2hdf5.py squeezes), a single [dim] row becomes [1, dim]."""
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1 and array.shape[0] == dim:
        array = array[None]
    if array.ndim != 2:
        raise BadFile(f"{what} has shape {list(array.shape)}, expected [n, {dim}]")
    if array.shape[1] != dim:
        raise BadFile(f"{what} has width {array.shape[1]}, but stream is {dim}-d")
    if array.shape[0] == 0:
        raise BadFile(f"{what} is empty (0 rows)")
    return _exact(array)


def _exact(array: np.ndarray) -> np.ndarray:
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float32)


def _load_pt(path: Path, key: str | None):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        if key is None or key not in obj:
            raise BadFile(f"holds a dict without {key!r} (keys: {', '.join(map(str, list(obj)[:5]))})")
        obj = obj[key]
    if not isinstance(obj, torch.Tensor):
        raise BadFile(f"holds a {type(obj).__name__}, not a tensor")
    if obj.dtype == torch.bfloat16:   # numpy has no bfloat16; float32 holds every bfloat16 value exactly
        obj = obj.float()
    return obj.numpy()


def read_file(path: Path, found: Found) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rows, pooled or None)`` of one released file, exactly as stored."""
    source = found.source
    dim = source.width
    pooled = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if source.key not in z.files:
                    raise BadFile(f"has no key {source.key!r} (keys: {', '.join(z.files[:5])})")
                array = z[source.key]
                if source.pooled_key and source.pooled_key in z.files:
                    pooled = z[source.pooled_key]
        elif path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            array = _load_pt(path, source.key)
        else:
            raise BadFile(f"unknown file type {path.suffix}")
    except BadFile:
        raise
    except Exception as err:  # noqa: BLE001  (a damaged file must not end the import)
        if path.suffix in (".npz", ".npy") and "pickled" in str(err):   # numpy's guess for a non-array file
            raise BadFile(f"not a valid {path.suffix} file (damaged or truncated download)") from None
        raise BadFile(f"not readable ({type(err).__name__}: {err})") from None
    rows = _as_rows(np.asarray(array), dim, "the array")
    if pooled is not None:
        pooled = _exact(np.asarray(pooled).reshape(-1))
        if pooled.shape[0] != dim:
            raise BadFile(f"{source.pooled_key} has {pooled.shape[0]} values, expected {dim}")
    return rows, pooled


# ---- what a source holds -------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One entry to import: its store name and where it is (a file, or a dataset of a merged file)."""

    key: str          # video id, or the qid (text)
    where: Path
    dataset: str | None = None   # merged .hdf5: the dataset name

    def label(self, src: Path) -> str:
        rel = _relative(self.where, src)
        return f"{rel}:/{self.dataset}" if self.dataset is not None else rel


def _relative(path: Path, src: Path) -> str:
    try:
        return str(path.relative_to(src))
    except ValueError:
        return str(path)


def _text_key(name: str) -> str:
    """qid of a text file stem: ``qid123`` -> ``123`` (QVHighlights), ``s13-d21_3`` as is (TACoS)."""
    return name[3:] if name.startswith("qid") and len(name) > 3 else name


def list_items(found: Found) -> list[Item]:
    """Every entry of one source, sorted by key (a key found twice keeps its first file)."""
    text = STREAMS[found.source.stream].kind == "text"
    items: dict[str, Item] = {}
    if found.source.merged:
        try:
            with h5py.File(found.path, "r") as f:
                names = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
        except OSError as err:
            raise MrhdError(f"{found.path} is not a readable HDF5 file ({err}); re-download it") from None
        for name in names:
            key = _text_key(name) if text else name
            items.setdefault(key, Item(key, found.path, name))
    else:
        for suffix in suffixes(found.source):
            for path in sorted(found.path.iterdir()):
                if path.name.startswith(".") or not path.name.endswith(suffix) or not path.is_file():
                    continue
                stem = path.name[: -len(suffix)]
                key = _text_key(stem) if text else stem
                items.setdefault(key, Item(key, path))
    return [items[k] for k in sorted(items)]


def read_item(item: Item, found: Found, merged: h5py.File | None) -> tuple[np.ndarray, np.ndarray | None]:
    if item.dataset is None:
        return read_file(item.where, found)
    try:
        array = merged[item.dataset][()]
    except Exception as err:  # noqa: BLE001
        raise BadFile(f"not readable ({type(err).__name__}: {err})") from None
    return _as_rows(np.asarray(array), found.source.width, "the dataset"), None


# ---- GloVe: vectors of the query words ------------------------------------------------------------
GLOVE_DIM = 300


def _query_words(queries: Path) -> dict[str, list[str]]:
    """qid -> the query's words, split on whitespace (CG-DETR start_end_dataset.py:221-223)."""
    return {str(line["qid"]): str(line.get("query") or "").split() for line in read_jsonl(queries)
            if "qid" in line}


def _glove_vectors(path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The rows of glove.6B.300d.txt for ``wanted`` (lower-case) words; the first row of a word wins,
    as in torchtext's vocabulary."""
    vectors: dict[str, np.ndarray] = {}
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < GLOVE_DIM + 1:
                if lineno == 1:
                    raise MrhdError(f"{path} has {len(parts) - 1} numbers a line, not {GLOVE_DIM}; "
                                    "give glove.6B.300d.txt")
                continue
            word = " ".join(parts[:-GLOVE_DIM])
            if word in wanted and word not in vectors:
                vectors[word] = np.asarray(parts[-GLOVE_DIM:], dtype=np.float32)
    return vectors


# ---- the job -------------------------------------------------------------------------------------
def _store_info(layout: Layout, found: Found, clip_len: float) -> EncoderInfo:
    source = found.source
    recipe = {"imported": layout.name, "files": f"{found.label}*{source.suffix}" if not source.merged
              else found.label, "key": source.key, "loader": source.cite}
    if source.pooled_key:
        recipe["pooled_key"] = source.pooled_key
    if source.normalized:
        recipe["normalized"] = "L2 (x / (||x|| + 1e-5)) before release"
    return EncoderInfo(stream=source.stream, dim=source.width, weights=f"released:{layout.name}",
                       recipe=recipe, clip_len=clip_len)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="import", dynamic_ncols=True, file=sys.stderr)


def import_features(src: str | Path, out: str | Path, *, layout: str | None = None,
                    streams: list[str] | None = None, clip_len: float | None = None,
                    dataset: str | None = None, queries: str | Path | None = None,
                    overwrite: bool = False, progress: bool = False) -> ImportSummary:
    """Import the released features in ``src`` into stores in ``out`` (module docstring). Ctrl-C
    ends it early with the summary marked ``interrupted`` (a re-run finishes the job)."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise MrhdError(f"{src} not found; give the folder the release was unpacked into")
    only = None
    if src.is_file():   # a merged file (MESM's clip_image.hdf5, glove.6B.300d.txt): its folder, that file
        only, src = src.name, src.parent
    if clip_len is not None and not clip_len > 0:
        raise MrhdError(f"--clip-len must be a positive number of seconds, not {clip_len}")
    if dataset is not None and dataset not in DATASETS:
        raise MrhdError(f"--dataset {dataset!r} is not one whose releases mrhd knows; choose one of: "
                        f"{', '.join(DATASETS)} (or give --clip-len)")
    if queries is not None and not Path(queries).is_file():
        raise MrhdError(f"--queries {queries}: file not found")
    if out.exists() and not out.is_dir():
        raise MrhdError(f"--out {out} is a file; give a folder")

    lay, found, every_found = _select_sources(src, layout, streams, only, queries)
    items, words, vectors = _list_and_check(found, src, queries)
    video_ids = [i.key for f in found if STREAMS[f.source.stream].kind != "text" for i in items[f.source.stream]]
    summary = ImportSummary(lay.name, src, out, dataset or dataset_of_ids(video_ids))
    infos = _plan_stores(lay, found, summary, clip_len)
    if not overwrite:
        for stream, info in infos.items():
            diff = differs_from(store_path(out, stream), info)
            if diff:
                raise MrhdError(f"{store_path(out, stream)} holds {stream} features with another "
                                f"{', '.join(diff)} (not from these files); import into another --out, or pass "
                                "--overwrite to replace it")
    summary.unread = _unread(src, every_found) if only is None else []
    summary.notes = list(lay.notes)

    # nothing was written up to here; from now on every batch is a whole part file
    with _store_warnings(summary):
        _write_stores(lay, src, out, found, items, words, vectors, infos, summary, overwrite, progress)
    summary.length_gaps = _length_gaps(summary.lengths)
    if queries is not None and lay.name != "glove" and not summary.interrupted:
        summary.coverage = _coverage(Path(queries), out, found)
    return summary


@contextlib.contextmanager
def _store_warnings(summary: ImportSummary):
    """A store repaired on the way (a killed merge rebuilt) is said in the summary, not as a Python
    warning with a file and line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    summary.warnings += [str(w.message) for w in caught]


def _write_stores(lay: Layout, src: Path, out: Path, found: list[Found], items: dict, words: dict, vectors: dict,
                  infos: dict[str, EncoderInfo], summary: ImportSummary, overwrite: bool, progress: bool) -> None:
    stores = {s: FeatureStore(store_path(out, s), "w" if overwrite else "a", info) for s, info in infos.items()}
    results = {r.stream: r for r in summary.streams}
    lengths = summary.lengths
    bar = _progress(sum(len(v) for v in items.values()), progress)
    try:
        for f in found:
            stream = f.source.stream
            entries = (_glove_entries(items[stream], words, vectors) if stream == "glove"
                       else _entries(items[stream], f))
            _import_stream(stores[stream], entries, results[stream], summary, lengths, bar)
    except KeyboardInterrupt:   # what is written stays (whole batches); the summary says how to finish
        summary.interrupted = True
    finally:
        if bar is not None:
            bar.close()
        for stream, store in stores.items():
            store.close()
            if results[stream].imported:
                store.set_root_attrs(source=json.dumps({
                    "tool": "mrhd features import", "layout": lay.name, "path": str(src.resolve()),
                    "files": results[stream].place, "dataset": summary.dataset,
                    "clip_len_from": results[stream].clip_len_from}, sort_keys=True))


def _select_sources(src: Path, layout: str | None, streams: list[str] | None, only: str | None,
                    queries) -> tuple[Layout, list[Found], list[Found]]:
    """The layout and the sources to import (``--streams`` applied), and every source present."""
    lay, found = (get_layout(layout), None) if layout else detect_layout(src)
    if found is None:
        found = find_sources(src, lay)
    if only is not None:
        found = [f for f in found if f.path.name == only]
    if not found:
        places = ", ".join(dict.fromkeys(p for s in lay.sources for p in s.places))
        raise MrhdError(f"{src} holds none of layout {lay.name}'s files (looked for {places}); "
                        "check SRC or --layout")
    if lay.needs_queries and queries is None:
        raise MrhdError(f"layout {lay.name} computes features from the query texts; pass --queries ANN.jsonl")
    if not streams:
        return lay, found, found
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        raise MrhdError(f"unknown stream(s) {', '.join(unknown)}; known: {', '.join(STREAMS)}")
    have = {f.source.stream for f in found}
    missing = [s for s in streams if s not in have]
    if missing:
        looked = {s.stream: s.places for s in lay.sources}
        where = "; ".join(f"{s}: {', '.join(looked.get(s, ('no place in this layout',)))}" for s in missing)
        raise MrhdError(f"{src} has no {', '.join(missing)} files for layout {lay.name} (looked for {where}); "
                        f"import the streams it has ({', '.join(sorted(have))}) or fix SRC")
    return lay, [f for f in found if f.source.stream in streams], found


def _list_and_check(found: list[Found], src: Path, queries) -> tuple[dict, dict, dict]:
    """``(items by stream, query words, GloVe vectors)``; every source's first readable file checked."""
    items: dict[str, list[Item]] = {}
    words: dict[str, list[str]] = {}
    vectors: dict[str, np.ndarray] = {}
    for f in found:
        if f.source.stream == "glove":
            words = _query_words(Path(queries))
            vectors = _glove_vectors(f.path, {w.lower() for ws in words.values() for w in ws})
            items["glove"] = [Item(q, f.path) for q in sorted(words)]
            continue
        items[f.source.stream] = list_items(f)
        if not items[f.source.stream]:
            raise MrhdError(f"{f.path} holds no {'/'.join(suffixes(f.source))} file; check SRC")
        _check_first(f, items[f.source.stream], src)
    return items, words, vectors


def _plan_stores(lay: Layout, found: list[Found], summary: ImportSummary, clip_len: float | None
                 ) -> dict[str, EncoderInfo]:
    """Each stream's store facts and clip length (layouts.clip_len_of); text stores record the clip
    length of the videos imported with them (unused)."""
    lengths = {f.source.stream: clip_len_of(f, summary.dataset, clip_len) for f in found
               if STREAMS[f.source.stream].kind != "text"}
    text_clip = next(iter(lengths.values()), (clip_len or DEFAULT_CLIP_LEN, ""))[0]
    infos = {}
    for f in found:
        length, why = lengths.get(f.source.stream, (text_clip, ""))
        summary.streams.append(StreamResult(f.source.stream, f.label, length, why, f.source.width))
        infos[f.source.stream] = _store_info(lay, f, length)
    return infos


def _check_first(found: Found, items: list[Item], src: Path) -> None:
    """Refuse the job when a source's files are not what the layout says (another width: another
    encoder) or none of its first files can be read."""
    errors = []
    merged = h5py.File(found.path, "r") if found.source.merged else None
    try:
        for item in items[:FIRST_TRIES]:
            try:
                read_item(item, found, merged)
                return
            except BadFile as bad:
                if "width" in str(bad):
                    raise MrhdError(f"{item.label(src)}: {bad} ({found.source.stream}); this is not the "
                                    f"{found.source.stream} stream: pass --layout/--streams for what it holds"
                                    ) from None
                errors.append(f"{item.label(src)}: {bad}")
    finally:
        if merged is not None:
            merged.close()
    raise MrhdError(f"none of the first {len(errors)} {found.source.stream} files can be read (e.g. {errors[0]}); "
                    "re-download the release")


Entry = tuple[Item, "np.ndarray | None", "np.ndarray | None", "str | None"]


def _entries(items: list[Item], found: Found) -> Iterator[Entry]:
    """``(item, rows, pooled, error)`` per item, the merged file opened once."""
    merged = h5py.File(found.path, "r") if found.source.merged else None
    try:
        for item in items:
            try:
                rows, pooled = read_item(item, found, merged)
            except BadFile as bad:
                yield item, None, None, str(bad)
                continue
            yield item, rows, pooled, None
    finally:
        if merged is not None:
            merged.close()


def _glove_entries(items: list[Item], words: dict[str, list[str]], vectors: dict[str, np.ndarray]
                   ) -> Iterator[Entry]:
    zero = np.zeros(GLOVE_DIM, np.float32)   # CG-DETR's appended <unk> row (start_end_dataset.py:139-141)
    for item in items:
        ws = words[item.key]
        if not ws:
            yield item, None, None, "the query has no words"
            continue
        yield item, np.stack([vectors.get(w.lower(), zero) for w in ws]), None, None


def _import_stream(store: FeatureStore, entries: Iterator[Entry], result: StreamResult, summary: ImportSummary,
                   lengths: dict, bar) -> None:
    text = result.kind == "text"
    stored = set(store.query_ids() if text else store.video_ids())
    batch: dict[str, tuple[np.ndarray, dict]] = {}
    size = 0
    batches = 0

    def flush():
        nonlocal batch, size, batches
        if batch:
            store.write_entries(batch)
            batches += 1
            if batches % COMMIT_EVERY == 0:
                store.commit()
        batch, size = {}, 0

    for item, rows, pooled, error in entries:
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(result.stream, refresh=False)
        if item.key in stored:
            result.skipped += 1
            continue
        if error is not None:
            result.broken += 1
            summary.broken.append((item.label(summary.src), error))
            continue
        where = item.label(summary.src)
        if text:
            batch[f"qid{item.key}"] = (rows, {"source": where})
            if pooled is not None:
                batch[f"{POOLED}/qid{item.key}"] = (pooled, {})
        else:
            if item.key.startswith("qid") or item.key == POOLED:
                result.broken += 1
                summary.broken.append((where, "a video id cannot start with 'qid' or be 'pooled'"))
                continue
            batch[item.key] = (rows, {"n_clips": int(rows.shape[0]), "source": where})
            lengths[result.stream][item.key] = int(rows.shape[0])
        result.imported += 1
        result.dtypes.add(str(rows.dtype))
        size += rows.nbytes
        if len(batch) >= BATCH_ENTRIES or size >= BATCH_BYTES:
            flush()
    flush()


def _length_gaps(lengths: dict[str, dict[str, int]]) -> dict[int, int]:
    """Clips of difference between the video streams of one video -> how many videos."""
    gaps: dict[int, int] = defaultdict(int)
    if len(lengths) < 2:
        return {}
    ids = set().union(*(set(v) for v in lengths.values()))
    for vid in ids:
        ns = [v[vid] for v in lengths.values() if vid in v]
        if len(ns) > 1 and max(ns) != min(ns):
            gaps[max(ns) - min(ns)] += 1
    return dict(gaps)


def _unread(src: Path, found: list[Found]) -> list[str]:
    """Top-level entries of SRC that no source of the layout read (told, never guessed at)."""
    used = set()
    for f in found:
        rel = f.path.relative_to(src)
        used.add(rel.parts[0])
    return sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir()
                  if not p.name.startswith(".") and p.name not in used)


def _coverage(queries: Path, out: Path, found: list[Found]) -> list[str]:
    """How much of an annotation file the stores now cover."""
    lines = read_jsonl(queries)
    vids = {str(line.get("vid")) for line in lines}
    qids = {str(line.get("qid")) for line in lines}
    report = []
    for f in found:
        store = FeatureStore(store_path(out, f.source.stream), "r")
        if STREAMS[f.source.stream].kind == "text":
            have = qids & set(store.query_ids())
            report.append(f"{f.source.stream}: {len(have)}/{len(qids)} queries of {queries.name}")
        else:
            have = vids & set(store.video_ids())
            report.append(f"{f.source.stream}: {len(have)}/{len(vids)} videos of {queries.name}")
        store.close_reader()
    return report
