"""Per-clip features of one video for `mrhd predict`, cached by the video's content.

Only the streams the model's profile needs are extracted, in one decoding pass
(:class:`mrhd.extract.decode.VideoDecoder`, plus the audio chunks where a profile has audio). The raw
features (as a store would hold them) are cached in ``$MRHD_CACHE/features/<sha256 of the file>/``,
one ``.npy`` per stream and encoder recipe, so a second run on the same file -- under any name, with
any query -- decodes nothing. Writes are atomic (temporary file + rename). Each entry's JSON holds a
sha256 of the array's bytes and of the JSON's other fields, checked on every read: a cache file
changed on disk is computed again (with a warning), never silently used.

Finding a file's entry must not cost a read of the file (a 2-GB video takes seconds to hash), so the
cache keeps an index from what ``stat`` says about a path (:class:`FileIdentity`) to the content
hash: the hash is computed once per version of a file, and a warm lookup is one ``stat`` and one
small JSON read (none at all within a process).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mrhd.encoders.base import encode_clips
from mrhd.errors import MrhdError
from mrhd.io import file_sha256, write_atomic
from mrhd.paths import cache_dir

# (clips done, clips expected) while a video is decoded and encoded; the expected count is the
# probed duration's, so the last call may pass it by one
Progress = Callable[[int, int], None]


@dataclass
class VideoFeatures:
    """Raw per-clip features of one video, reusable across queries and predictors with the same
    encoders (``streams`` maps a store stream name to ``[n_clips, dim]`` float32)."""

    path: str
    vid: str
    duration: float
    content_hash: str
    streams: dict[str, np.ndarray]
    encoders: dict[str, str] = field(default_factory=dict)   # stream -> weights label

    @property
    def n_clips(self) -> int:
        return min((len(v) for v in self.streams.values()), default=0)


def _recipe_key(encoder) -> str:
    """Encoders with the same recipe (weights, arch, sampling) give the same numbers."""
    return hashlib.sha1(encoder.info.recipe_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileIdentity:
    """What ``stat`` says about one version of a file. Size, mtime and inode change when a file is
    replaced or rewritten; ctime also catches an in-place rewrite of the same size whose mtime was
    set back (``cp -p`` onto an existing file), which no tool can fake. A rename or ``chmod`` also
    moves ctime: that costs one re-hash, never a wrong entry."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str | Path) -> FileIdentity:
        resolved = Path(path).resolve()
        st = resolved.stat()
        return cls(str(resolved), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class FeatureCache:
    """``<root>/<content hash>/<stream>-<recipe key>.npy`` + a small JSON with the duration, and
    ``<root>/index/`` (one JSON per file path: its :class:`FileIdentity` and content hash)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "features"
        self._known: dict[FileIdentity, str] = {}
        self._lock = threading.Lock()
        self.hashed = 0   # files read to hash them (tests, benchmarks)

    # ---- content hash by path ----------------------------------------------------------------
    def _index_path(self, identity: FileIdentity) -> Path:
        key = hashlib.sha1(identity.path.encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / "index" / key[:2] / f"{key}.json"

    def content_hash(self, path: str | Path) -> str:
        """sha256 of the file's bytes, read only when this version of the file was never hashed."""
        identity = FileIdentity.of(path)
        with self._lock:
            known = self._known.get(identity)
        if known is not None:
            return known
        try:
            entry = json.loads(self._index_path(identity).read_text())
        except (OSError, ValueError):
            entry = None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if isinstance(digest, str) and {k: v for k, v in entry.items() if k != "sha256"} == asdict(identity):
            with self._lock:
                self._known[identity] = digest
            return digest
        digest = file_sha256(path)
        self.hashed += 1
        if FileIdentity.of(path) == identity:   # unchanged while it was read: the hash is of this version
            self.remember_hash(identity, digest)
        return digest

    def remember_hash(self, file: str | Path | FileIdentity, digest: str) -> None:
        """Record a hash computed elsewhere (``mrhd serve`` hashes an upload while it arrives)."""
        identity = file if isinstance(file, FileIdentity) else FileIdentity.of(file)
        with self._lock:
            self._known[identity] = digest
        index = self._index_path(identity)
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(index, json.dumps({**asdict(identity), "sha256": digest}).encode())
        except OSError:
            pass   # an unwritable index only costs a re-hash in the next process

    # ---- features by content hash ------------------------------------------------------------

    def _paths(self, content_hash: str, stream: str, key: str) -> tuple[Path, Path]:
        base = self.root / content_hash[:2] / content_hash
        return base / f"{stream}-{key}.npy", base / f"{stream}-{key}.json"

    def load(self, content_hash: str, stream: str, key: str) -> tuple[np.ndarray, float] | None:
        arr_path, meta_path = self._paths(content_hash, stream, key)
        if not (arr_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            data = arr_path.read_bytes()
            if not isinstance(meta, dict) or "sha256" not in meta:
                return None   # written before entries carried a checksum: computed again
            if meta["sha256"] != _entry_sha256(data, meta):
                warnings.warn(f"cached features {arr_path} do not match their checksum (changed on disk); "
                              "computing them again", stacklevel=2)
                return None
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError):
            return None   # a damaged entry is recomputed
        if arr.ndim != 2 or len(arr) != meta.get("n_clips"):
            return None
        if meta.get("note"):
            warnings.warn(meta["note"], stacklevel=2)   # said again on every use, not only the first
        return arr, float(meta["duration"])

    def save(self, content_hash: str, stream: str, key: str, arr: np.ndarray, duration: float,
             recipe: str, note: str | None = None) -> None:
        """``note``: a warning that holds for this video (cut short), repeated whenever it is loaded."""
        arr_path, meta_path = self._paths(content_hash, stream, key)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        meta = {"duration": duration, "n_clips": len(arr), "recipe": recipe, "note": note}
        meta["sha256"] = _entry_sha256(data, meta)
        try:
            arr_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(arr_path, data)
            write_atomic(meta_path, json.dumps(meta))
        except OSError:
            pass   # an unwritable cache only costs the reuse, never the prediction


def _entry_sha256(array_bytes: bytes, meta: dict) -> str:
    """Checksum of a cache entry: the ``.npy`` bytes and every other field of its JSON."""
    fields = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(array_bytes + json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _encode_batches(encoder, items: list, batch_size: int) -> np.ndarray:
    rows = [encode_clips(encoder, encoder.preprocess(items[i: i + batch_size]))
            for i in range(0, len(items), batch_size)]
    if not rows:
        return np.zeros((0, encoder.dim), np.float32)
    return np.concatenate(rows).astype(np.float32)


def decode_streams(path: str | Path, encoders: dict, batch_size: int = 32,
                   progress: Progress | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Decode ``path`` once and run each encoder on its input kind; returns raw features per stream
    and the duration in seconds. Items are encoded in batches as they arrive, so memory holds at
    most one batch of decoded clips per stream. ``progress`` hears of every clip (all streams
    together, as if they were one)."""
    from mrhd.extract.decode import VIDEO_KINDS, VideoDecoder, probe

    video_kinds = sorted({e.input_kind for e in encoders.values() if e.input_kind in VIDEO_KINDS})
    pending: dict[str, list] = {s: [] for s in encoders}
    done: dict[str, list[np.ndarray]] = {s: [] for s in encoders}
    fed = {"items": 0}
    expected = 0
    if progress is not None:
        expected = max(1, int(np.ceil(max(probe(path).duration, 0.0) / 2.0))) * len(encoders)

    def feed(kind: str, item) -> None:
        for stream, enc in encoders.items():
            if enc.input_kind == kind:
                pending[stream].append(item)
                if len(pending[stream]) >= batch_size:
                    done[stream].append(_encode_batches(enc, pending[stream], batch_size))
                    pending[stream] = []
                fed["items"] += 1
                if progress is not None:
                    progress(fed["items"] // len(encoders), expected // len(encoders))

    duration = None
    if video_kinds:
        pickers = {getattr(e, "window_frame_picker", None) for e in encoders.values()
                   if e.input_kind == "window_frames"}
        # convert only the frames a window encoder uses (InternVideo2: 8 per window); whole windows
        # where two encoders would pick differently
        picker = pickers.pop() if len(pickers) == 1 else None
        decoder = VideoDecoder(path, video_kinds, window_picker=picker)
        for kind, _index, array in decoder:
            feed(kind, array)
        duration = float(decoder.t_end) if decoder.t_end is not None else decoder.info.duration
    if any(e.input_kind == "audio_chunk" for e in encoders.values()):
        from mrhd.extract.audio import iter_audio_chunks

        for _index, chunk in iter_audio_chunks(path):
            feed("audio_chunk", chunk)
    if duration is None:
        duration = probe(path).duration
    out = {}
    for stream, enc in encoders.items():
        parts = done[stream] + ([_encode_batches(enc, pending[stream], batch_size)] if pending[stream] else [])
        out[stream] = np.concatenate(parts) if parts else np.zeros((0, enc.dim), np.float32)
    return out, float(duration)


def _cut_short(path: Path, duration: float) -> str | None:
    """A warning when the decoded ``duration`` falls short of what the file's header announces."""
    from mrhd.extract.decode import DecodeError, probe
    from mrhd.extract.sampling import ends_early

    try:
        info = probe(path)
    except DecodeError:
        return None
    short = ends_early(duration, info.stream_duration if info.stream_duration > 0 else info.duration)
    return f"{path}: {short}" if short else None


def extract_video_features(path: str | Path, encoders: dict, *, cache: FeatureCache | None = None,
                           vid: str | None = None, batch_size: int = 32,
                           progress: Progress | None = None) -> VideoFeatures:
    """Features of ``path`` for every encoder in ``encoders`` (stream -> VideoEncoder), from the cache
    where possible; only the missing streams are decoded (``progress`` hears of their clips)."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"video {path} not found; check the path")
    if path.stat().st_size == 0:
        raise MrhdError(f"video {path} is empty (0 bytes); give a real video file")
    digest = cache.content_hash(path) if cache is not None else file_sha256(path)
    streams: dict[str, np.ndarray] = {}
    duration = None
    missing = {}
    with warnings.catch_warnings(record=True) as said:   # one warning per video, not one per stream
        warnings.simplefilter("always")
        for stream, enc in encoders.items():
            hit = cache.load(digest, stream, _recipe_key(enc)) if cache is not None else None
            if hit is None:
                missing[stream] = enc
            else:
                streams[stream], duration = hit
    for message in dict.fromkeys(str(w.message) for w in said):
        warnings.warn(message, stacklevel=2)
    if missing:
        fresh, duration = decode_streams(path, missing, batch_size, progress)
        note = _cut_short(path, duration)
        if note:
            warnings.warn(note, stacklevel=2)
        for stream, arr in fresh.items():
            if len(arr) == 0:
                raise MrhdError(f"video {path} gave no clips for the {stream} stream (too short or no frames); "
                                "give a longer video")
            streams[stream] = arr
            if cache is not None:
                enc = missing[stream]
                cache.save(digest, stream, _recipe_key(enc), arr, duration, enc.info.recipe_json(), note)
    return VideoFeatures(path=str(path), vid=vid or path.stem, duration=float(duration), content_hash=digest,
                         streams=streams, encoders={s: e.info.weights for s, e in encoders.items()})
