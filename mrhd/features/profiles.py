"""Feature profiles: how a model's input is assembled from raw per-encoder features.

Models never read raw features. A profile (``configs/features/<name>.yaml``) names the streams a
model consumes and the official loading recipe (moment_detr ``start_end_dataset.py``; the same in
QD-DETR, TR-DETR, CG-DETR, VideoLights): per stream keep the first ``max_v_l`` clips as float32,
L2-normalise each stream separately as ``x / (||x|| + 1e-5)``, trim all streams to the shortest,
concatenate in the profile's order, append the temporal endpoint feature ``[t/L, (t+1)/L]``.
Text: per stream ``tokens[:max_q_l]``, each token L2-normalised, trimmed to the shorter stream,
concatenated (VideoLights' CLIP + BLIP-2 text).
Two released recipes differ, and have a field each: TVSum's I3D RGB and flow rows are concatenated
FIRST and the concatenation L2-normalised (QD-DETR ``start_end_dataset_audio.py:321-336``:
``normalize_jointly``), and TVSum's and the GloVe text are used as loaded, neither normalised nor cut
(QD-DETR ``start_end_dataset_audio.py:291-294``, CG-DETR ``start_end_dataset.py:221-223``:
``normalize_text: false``).

The numpy operations and their order are the official ones, so assembled inputs equal the authors'
bit for bit (the fidelity tests compare with ``inputs.pt``).

Encoders: a profile also says which encoders made its features when they are not the official
ones: random weights (``random_encoders``) and/or the tiny test size (``encoder_size``, whose widths
``stream_dims`` holds). Training follows the stores (:func:`fit_to_stores`) and the checkpoint keeps
the profile, so that `mrhd predict` rebuilds the same encoders: features of a random or tiny encoder
fed to a model trained on the official ones (or the reverse) would give numbers with no meaning.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mrhd.encoders.streams import STREAMS, encoder_of
from mrhd.errors import MrhdError
from mrhd.paths import config_dir

TEF_DIM = 2
L2_EPS = 1e-5   # moment_detr utils/basic_utils.py l2_normalize_np_array


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise ``x / (||x|| + 1e-5)`` in float32 numpy, exactly as the official loaders do."""
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + L2_EPS)


def torch_l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise ``F.normalize(x, dim=1)`` (``x / max(||x||, 1e-12)``) in float32 torch, as MESM's
    loader normalises each feature file (lntzm/MESM dataset/qvhighlights.py:201-211)."""
    import torch
    import torch.nn.functional as F

    return F.normalize(torch.from_numpy(np.ascontiguousarray(x)), dim=1).numpy()


def tef(length: int) -> np.ndarray:
    """Temporal endpoint feature ``[t/L, (t+1)/L]``, float32, computed with the same torch ops as
    the official loaders so that the numbers match bit for bit."""
    import torch

    st = torch.arange(0, length, 1.0) / length
    ed = st + 1.0 / length
    return torch.stack([st, ed], dim=1).numpy()


@dataclass(frozen=True)
class Profile:
    """One model-input recipe; see the module docstring."""

    name: str
    video: tuple[str, ...]
    text: tuple[str, ...]
    audio: tuple[str, ...] = ()
    audio_optional: bool = False      # audio is used only where its store exists
    tef: bool = True
    audio_tef: bool = True            # QD-DETR's audio loader appends tef to audio too
    max_v_l: int | None = 75          # None: no cap (UniVTG)
    max_q_l: int | None = 32          # None: no cap (UniVTG)
    text_keep_last: bool = False      # MESM: body cut so that the last (EOT) token survives
    normalize: bool = True
    normalize_text: bool | None = None       # None: as ``normalize``; false: TVSum / GloVe text as loaded
    normalize_jointly: tuple[str, ...] = ()  # video streams concatenated, then normalised as one (TVSum I3D)
    l2: str = "loader"                # "loader": x / (||x|| + 1e-5); "torch": F.normalize (MESM's loader)
    dims: dict | None = None          # stream -> width where the encoder variant differs from STREAMS
    # the encoders behind the features when not the official ones (module docstring)
    random_encoders: bool = False
    encoder_size: str = "full"
    stream_dims: tuple[tuple[str, int], ...] = ()   # (stream, width) the stores hold where not ``dims`` (tiny)

    # ---- what it needs -------------------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """Every store this profile can read (video, text, audio)."""
        return self.video + self.text + self.audio

    @property
    def required_streams(self) -> tuple[str, ...]:
        """The stores that must exist (optional audio excluded)."""
        return self.video + self.text + (() if self.audio_optional else self.audio)

    def dim_of(self, stream: str) -> int:
        """The width of one stream's features: what the stores hold (``stream_dims``: tiny random
        encoders), else the profile's encoder variant (``dims``, e.g. InternVideo2-6B), else the
        official encoder's."""
        return dict(self.stream_dims).get(stream, self.variant_dim(stream))

    def variant_dim(self, stream: str) -> int:
        """The width the profile's encoder variant gives ``stream`` (``dims``, else STREAMS)."""
        return (self.dims or {}).get(stream, STREAMS[stream].dim)

    @property
    def video_dim(self) -> int:
        return sum(self.dim_of(s) for s in self.video) + (TEF_DIM if self.tef else 0)

    @property
    def text_dim(self) -> int:
        return sum(self.dim_of(s) for s in self.text)

    @property
    def audio_dim(self) -> int:
        if not self.audio:
            return 0
        return sum(self.dim_of(s) for s in self.audio) + (TEF_DIM if self.tef and self.audio_tef else 0)

    @property
    def official_encoders(self) -> bool:
        return not self.random_encoders and self.encoder_size == "full"

    def encoders_text(self) -> str:
        """``official`` or e.g. ``random tiny``: what made the features, for messages."""
        if self.official_encoders:
            return "official"
        return " ".join(w for w in ("random" if self.random_encoders else "", self.encoder_size) if w) + " encoders"

    def with_encoders_of(self, other: Profile) -> Profile:
        """This profile with the encoder fields of ``other`` (a checkpoint's record)."""
        return self.replace(random_encoders=other.random_encoders, encoder_size=other.encoder_size,
                            stream_dims=other.stream_dims)

    def replace(self, **changes) -> Profile:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("video", "text", "audio", "normalize_jointly"):
            d[key] = list(d[key])
        d["stream_dims"] = dict(self.stream_dims)
        return d

    # ---- assembly ------------------------------------------------------------------------
    def _stack(self, names: tuple[str, ...], arrays: Mapping[str, np.ndarray], cap: int | None,
               what: str) -> np.ndarray:
        normalize = self.normalize if what != "text" or self.normalize_text is None else self.normalize_text
        parts = []
        for name in names:
            if name not in arrays:
                raise MrhdError(f"profile {self.name!r} needs {what} stream {name!r}, which was not given")
            x = np.asarray(arrays[name])
            x = x[:cap] if cap is not None else x
            x = x.astype(np.float32, copy=False)   # readers return fresh float32 arrays
            if normalize and name not in self.normalize_jointly:
                x = torch_l2_normalize(x) if self.l2 == "torch" else l2_normalize(x)
            parts.append(x)
        n = min(len(p) for p in parts)   # encoders disagree by a clip or two; trim to the shortest
        if normalize and any(name in self.normalize_jointly for name in names):
            return self._joined(names, [p[:n] for p in parts])
        return np.concatenate([p[:n] for p in parts], axis=1)

    def _joined(self, names: tuple[str, ...], parts: list[np.ndarray]) -> np.ndarray:
        """Runs of ``normalize_jointly`` streams concatenated, then normalised as one row."""
        out, run = [], []
        for name, x in zip(names, parts):
            if name in self.normalize_jointly:
                run.append(x)
                continue
            if run:
                out.append(l2_normalize(np.concatenate(run, axis=-1)))
                run = []
            out.append(x)
        if run:
            out.append(l2_normalize(np.concatenate(run, axis=-1)))
        return np.concatenate(out, axis=1)

    def assemble_video(self, arrays_by_stream: Mapping[str, np.ndarray],
                       length: int | None = None) -> np.ndarray:
        """``[L, video_dim]`` float32. ``length`` trims further (to the audio's count) before tef."""
        v = self._stack(self.video, arrays_by_stream, self.max_v_l, "video")
        if length is not None:
            v = v[:length]
        if self.tef:
            v = np.concatenate([v, tef(len(v))], axis=1)
        return v

    def assemble_audio(self, arrays_by_stream: Mapping[str, np.ndarray],
                       length: int | None = None) -> np.ndarray | None:
        """``[L, audio_dim]`` float32, or None where the profile has no (or optional, absent) audio."""
        if not self.audio or not all(s in arrays_by_stream for s in self.audio):
            if self.audio and not self.audio_optional:
                missing = [s for s in self.audio if s not in arrays_by_stream]
                raise MrhdError(f"profile {self.name!r} needs audio stream(s) {missing}")
            return None
        a = self._stack(self.audio, arrays_by_stream, self.max_v_l, "audio")
        if length is not None:
            a = a[:length]
        if self.tef and self.audio_tef:
            a = np.concatenate([a, tef(len(a))], axis=1)
        return a

    def assemble_clips(self, arrays_by_stream: Mapping[str, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Video and audio of one video trimmed to a common clip count (qd_detr
        start_end_dataset_audio.py: ``ctx_l = min(video, audio)`` before tef)."""
        audio = None
        length = None
        if self.audio and all(s in arrays_by_stream for s in self.audio):
            raw_v = self._stack(self.video, arrays_by_stream, self.max_v_l, "video")
            raw_a = self._stack(self.audio, arrays_by_stream, self.max_v_l, "audio")
            length = min(len(raw_v), len(raw_a))
            audio = self.assemble_audio(arrays_by_stream, length)
        elif self.audio and not self.audio_optional:
            self.assemble_audio(arrays_by_stream)   # raises the missing-stream error
        return self.assemble_video(arrays_by_stream, length), audio

    def assemble_text(self, arrays_by_stream: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[Lq, text_dim]`` float32 per-token query features."""
        if self.text_keep_last and self.max_q_l is not None:
            arrays_by_stream = {k: _keep_last(np.asarray(v), self.max_q_l) if k in self.text else v
                                for k, v in arrays_by_stream.items()}
        return self._stack(self.text, arrays_by_stream, self.max_q_l, "text")


def _keep_last(tokens: np.ndarray, cap: int) -> np.ndarray:
    if len(tokens) <= cap:
        return tokens
    return np.concatenate([tokens[: cap - 1], tokens[-1:]], axis=0)


# ---- loading profiles ----------------------------------------------------------------------
def available_profiles() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "features").glob("*.yaml"))


def load_profile(name: str | Profile, **overrides) -> Profile:
    """The profile ``configs/features/<name>.yaml`` (or a path to such a file), plus overrides."""
    if isinstance(name, Profile):
        return name.replace(**overrides) if overrides else name
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else config_dir() / "features" / f"{name}.yaml"
    if not path.is_file():
        raise MrhdError(f"unknown feature profile {name!r}; choose one of: {', '.join(available_profiles())}")
    raw = yaml.safe_load(path.read_text()) or {}
    return profile_from_dict({**raw, **overrides}, default_name=path.stem)


def profile_from_dict(d: dict, default_name: str = "custom") -> Profile:
    """A profile from its dict form (as stored in checkpoints)."""
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = set(d) - known
    if unknown:
        raise MrhdError(f"feature profile {d.get('name', default_name)!r} has unknown keys {sorted(unknown)}")
    d = dict(d)
    d.setdefault("name", default_name)
    for key in ("video", "text", "audio", "normalize_jointly"):
        d[key] = tuple(d.get(key) or ())
    stray = [s for s in d["normalize_jointly"] if s not in d["video"]]
    if stray:
        raise MrhdError(f"feature profile {d['name']!r}: normalize_jointly names {stray}, which are not among "
                        "its video streams")
    d["stream_dims"] = tuple(sorted(dict(d.get("stream_dims") or {}).items()))
    for s in d["video"] + d["text"] + d["audio"]:
        if s not in STREAMS:
            raise MrhdError(f"feature profile {d['name']!r} names unknown stream {s!r}; "
                            f"known: {', '.join(STREAMS)}")
    if set(d.get("dims") or {}) - set(d["video"] + d["text"] + d["audio"]):
        raise MrhdError(f"feature profile {d['name']!r}: dims names streams it does not read")
    if d.get("l2", "loader") not in ("loader", "torch"):
        raise MrhdError(f"feature profile {d['name']!r}: l2 {d['l2']!r} is unknown; choose loader or torch")
    return Profile(**d)


# ---- reading stores ------------------------------------------------------------------------
class StoreReader:
    """Read-only view of one ``<stream>.h5`` store (:class:`~mrhd.features.store.FeatureStore`).

    Opened lazily and re-opened in each process, because h5py handles must not cross a fork
    (DataLoader workers). The ids are listed once, so membership tests cost nothing per sample.
    Reads take the array alone (no attributes, no pooled text vector). With :meth:`keep_in_memory`
    each array read is kept as stored (float16 video) while the shared :class:`MemoryBudget` lasts,
    so from the second epoch a training run reads from RAM; the kept arrays are not pickled into
    worker processes.
    """

    def __init__(self, path: str | Path):
        from mrhd.features.store import FeatureStore

        self.path = Path(path)
        store = FeatureStore(self.path, "r")
        self.info = store.info
        self.encoder = str(self.info.get("encoder"))
        self.dim = int(self.info.get("dim", 0))
        self._keys = frozenset(store.video_ids()) | frozenset(f"qid{q}" for q in store.query_ids())
        store.close_reader()
        self._store = None
        self._pid = None
        self._kept: dict[str, np.ndarray] | None = None
        self._budget: MemoryBudget | None = None

    def _open(self):
        from mrhd.features.store import FeatureStore

        if self._store is None or self._pid != os.getpid():
            self._store = FeatureStore(self.path, "r")
            self._pid = os.getpid()
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        state["_pid"] = None
        state["_kept"] = None
        state["_budget"] = None
        return state

    def keep_in_memory(self, budget: MemoryBudget) -> None:
        """Keep what is read from now on in RAM, within ``budget`` (shared by several readers)."""
        self._budget = budget
        if self._kept is None:
            self._kept = {}

    def has(self, video_id: str) -> bool:
        return video_id in self._keys

    def has_text(self, qid) -> bool:
        return f"qid{qid}" in self._keys

    def _stored(self, key: str, missing: str) -> np.ndarray:
        kept = self._kept
        if kept is not None and key in kept:
            return kept[key]
        array = self._open().read_stored(key)
        if array is None:
            raise MrhdError(missing)
        if kept is not None and self._budget is not None and self._budget.take(array.nbytes):
            kept[key] = array
        return array

    def read(self, video_id: str) -> np.ndarray:
        """``[n_clips, dim]`` float32 features of one video."""
        return self._stored(video_id, f"video {video_id!r} is not in {self.path}; extract it with "
                                      "`mrhd extract`").astype(np.float32)

    def read_text(self, qid) -> np.ndarray:
        """``[L, dim]`` float32 token features of one query."""
        return self._stored(f"qid{qid}", f"query {qid} is not in {self.path}; run `mrhd extract "
                                         "--queries` for it").astype(np.float32)


class MemoryBudget:
    """Bytes that :class:`StoreReader` s may keep in RAM together; by default half of the memory
    available when it is made (Linux; 4 GiB where that cannot be read)."""

    def __init__(self, limit: int | None = None):
        self.limit = int(limit) if limit is not None else available_memory() // 2
        self.used = 0

    def take(self, nbytes: int) -> bool:
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def open_stores(features_dir: str | Path, profile: Profile) -> dict[str, StoreReader]:
    """The stores ``profile`` needs from ``features_dir``, checked to hold the right encoder."""
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise MrhdError(f"features folder {features_dir} not found; run `mrhd extract ... --out {features_dir}`")
    stores: dict[str, StoreReader] = {}
    for stream in profile.streams:
        path = features_dir / f"{stream}.h5"
        if not path.is_file():
            if stream in profile.audio and profile.audio_optional:
                continue
            if STREAMS[stream].module is None:  # released features only: no encoder here
                how = f"import the authors' release with `mrhd features import SRC --out {features_dir}`"
            elif STREAMS[stream].kind == "text":  # written from annotation files, not from videos
                how = (f"encode the queries with `mrhd extract --encoders {encoder_of(stream)} --out {features_dir} "
                       "--queries TRAIN.jsonl VAL.jsonl` (your annotation files), or import a release with "
                       "`mrhd features import`")
            else:
                how = (f"extract it with `mrhd extract VIDEOS --encoders {encoder_of(stream)} --out {features_dir}`, "
                       "or import a release with `mrhd features import`")
            raise MrhdError(f"profile {profile.name!r} needs {path} (stream {stream!r}), which is missing; {how}")
        reader = StoreReader(path)
        if reader.encoder != stream:
            raise MrhdError(f"{path} holds {reader.encoder!r} features but profile {profile.name!r} needs "
                            f"{stream!r} there; point --features at the right folder or re-extract")
        if reader.dim and reader.dim != profile.variant_dim(stream) and store_encoder_size(reader) == "full":
            fits = [n for n in available_profiles() if n != profile.name and stream in load_profile(n).streams
                    and load_profile(n).variant_dim(stream) == reader.dim]
            how = (f"train with --profile {fits[0]} (its {stream} is {reader.dim}-d)" if fits else
                   f"re-extract it with `mrhd extract --encoders {encoder_of(stream)}` (profile {profile.name!r})")
            raise MrhdError(f"{path} has dim {reader.dim}, expected {profile.variant_dim(stream)} for {stream!r}; "
                            f"{how}")
        stores[stream] = reader
    return stores


def store_encoder_size(reader: StoreReader) -> str:
    """``full`` or ``tiny``: the size of the encoder that wrote a store (its recipe's ``size``;
    full-size recipes of CLIP, SlowFast and PANNs have none)."""
    return str((reader.info.get("recipe") or {}).get("size", "full"))


def _made_by_encoder(reader: StoreReader) -> bool:
    """Written by one of mrhd's encoders (its recipe names the model), not generated or imported."""
    recipe = reader.info.get("recipe") or {}
    return isinstance(recipe, dict) and "model" in recipe


def fit_to_stores(profile: Profile, stores: Mapping[str, StoreReader]) -> Profile:
    """``profile`` with the encoders its stores were written with (random weights, the tiny test
    size and its widths), so a model trained on them records what `mrhd predict` must rebuild.
    Stores of different encoder kinds cannot be combined: one-line error."""
    kinds = {s: (str(r.info.get("weights")) == "random", store_encoder_size(r))
             for s, r in stores.items() if _made_by_encoder(r)}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{s}: {'random' if rnd else 'released'} {size}" for s, (rnd, size) in sorted(kinds.items()))
        raise MrhdError(f"the feature stores were made by different kinds of encoders ({listed}); re-extract "
                        "them with the same --random-weights and --encoder-size")
    random_encoders, size = next(iter(kinds.values()), (False, "full"))
    dims = tuple(sorted((s, r.dim) for s, r in stores.items() if r.dim and r.dim != profile.variant_dim(s)))
    return profile.replace(random_encoders=random_encoders, encoder_size=size, stream_dims=dims)


def video_streams(profile: Profile, stores: Mapping[str, StoreReader]) -> tuple[str, ...]:
    """The per-video streams to read (video + audio where present)."""
    return profile.video + tuple(s for s in profile.audio if s in stores)


def read_video_arrays(profile: Profile, stores: Mapping[str, StoreReader], vid: str) -> dict[str, np.ndarray]:
    return {s: stores[s].read(vid) for s in video_streams(profile, stores)}


def read_text_arrays(profile: Profile, stores: Mapping[str, StoreReader], qid) -> dict[str, np.ndarray]:
    return {s: stores[s].read_text(qid) for s in profile.text}
