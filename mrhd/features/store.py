"""The HDF5 feature store of DESIGN.md ("Feature store (HDF5)"): one file per encoder stream.

Layout of ``DIR/<stream>.h5``: root attributes ``format``, ``encoder``, ``dim``, ``clip_len``,
``weights``, ``recipe`` (JSON); ``/<video_id>`` ``[n_clips, dim]`` with ``duration`` and ``n_clips``;
text ``/qid<qid>`` ``[L, dim]`` and ``/pooled/qid<qid>`` ``[dim]``.

Why parts and a merge: h5py files are not crash-safe (a process killed while HDF5 metadata is being
written can leave the whole file unreadable) and HDF5 allows one writer per file, while several
shards may run at once. So a writer never touches the main file per video. Each finished video goes
to its own small part file ``DIR/.<stream>.parts/<video_id>.h5``, written under a temporary name,
fsync'ed and renamed into place (``os.replace`` is atomic), so a part either exists complete or not
at all. Readers see the main file plus the parts. ``commit()`` merges parts into the main file under
an exclusive lock and deletes a part only after the main file is flushed and closed; a merge killed
half-way leaves its parts behind (merged again next time) and a ``merging`` root attribute that makes
the next writer rebuild the main file from the entries that merge had finished. Every dataset the
merge writes carries ``complete=1``, set last.

What ``complete`` means (docs/STORE.md): it matters only in a file whose root carries ``merging=1``,
i.e. a merge was under way or killed, and only for a name a pending part also holds: the merge was
writing it, so the main file's copy may be truncated; the part's copy is read instead, the next
writer's rebuild leaves it out, and it merges again. Every other dataset is stored, flag or not:
those of part files (which appear only whole), of a merged main file, of a store written by another
tool, and those such a store held before mrhd merged into it (no part holds them).

Writing without an encoder (another tool, ``mrhd features import``): :meth:`FeatureStore.create`
names the root attributes directly; :meth:`FeatureStore.write_entries` writes any batch of
entries in their own dtype as one atomic part.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from mrhd.errors import MrhdError
from mrhd.io import atomic_path

FORMAT = "mrhd-features/1"
CLIP_LEN = 2.0
POOLED = "pooled"
COMPLETE = "complete"   # per-dataset flag, set last: a dataset without it is never taken as stored
_MERGING = "merging"
_INFO_KEYS = ("format", "encoder", "dim", "clip_len", "weights", "recipe")
READ_WAIT_S = 60.0     # how long a reader waits while a writer merges into the main file
_TMP_PREFIX = ".tmp-"   # part files being written: .tmp-<pid>-<part name>...
# part file names: dataset names are free text (file stems), file names must stay portable
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


SOURCE_KEYS = ("sha256", "size", "path", "mtime_ns")  # stored as ``source_<key>`` on a video entry


def video_id_problem(video_id: str) -> str | None:
    """Why ``video_id`` cannot name a video entry, or None: text entries own ``qid...`` and
    ``pooled``, and HDF5 reads ``/`` as a group."""
    if not video_id or video_id in (".", ".."):
        return "is empty"
    if video_id.startswith("qid"):
        return "starts with 'qid', which names the query entries of a store"
    if video_id == POOLED:
        return f"is {POOLED!r}, which holds the pooled query entries of a store"
    if "/" in video_id:
        return "contains '/'"
    return None


def _part_name(key: str) -> str:
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", key) + ".h5"


def store_path(out_dir: str | Path, stream: str) -> Path:
    """Where the store of ``stream`` lives inside an output folder."""
    return Path(out_dir) / f"{stream}.h5"


def root_attrs(info) -> dict:
    """The required root attributes for an :class:`~mrhd.encoders.base.EncoderInfo`."""
    return {
        "format": FORMAT,
        "encoder": info.stream,
        "dim": int(info.dim),
        "clip_len": float(getattr(info, "clip_len", CLIP_LEN)),
        "weights": str(info.weights),
        "recipe": json.dumps(info.recipe, sort_keys=True),
    }


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _attrs_of(f: h5py.File) -> dict:
    return {k: f.attrs[k] for k in _INFO_KEYS if k in f.attrs}


def is_stored(f: h5py.File, name: str, pending: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether dataset ``name`` of file ``f`` counts as stored: always, unless the file's root says a
    merge is under way or was killed (``merging``) and ``name`` is one of the ``pending`` parts'
    names (what that merge was writing); then only with ``complete=1`` (module docstring)."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        return False
    if not f.attrs.get(_MERGING, 0) or name not in pending:
        return True
    return bool(obj.attrs.get(COMPLETE, 0))


def _same_info(have: dict, want: dict) -> list[str]:
    """Names of the root attributes that differ (recipe compared as parsed JSON)."""
    diff = []
    for key in _INFO_KEYS:
        a, b = have.get(key), want.get(key)
        if key == "recipe":
            try:
                same = json.loads(_as_str(a)) == json.loads(_as_str(b))
            except (TypeError, ValueError):
                same = False
        elif key in ("dim",):
            same = a is not None and int(a) == int(b)
        elif key == "clip_len":
            same = a is not None and float(a) == float(b)
        else:
            same = a is not None and _as_str(a) == _as_str(b)
        if not same:
            diff.append(key)
    return diff


def differs_from(path: str | Path, info) -> list[str]:
    """Names of the root attributes of the store at ``path`` that differ from those ``info`` (an
    EncoderInfo) would write; [] when there is no store yet. Lets a writer refuse before it writes."""
    path = Path(path)
    parts = Path(path).parent / f".{path.stem}.parts"
    if not path.exists() and not (parts.is_dir() and any(parts.glob("*.h5"))):
        return []
    have = FeatureStore(path, "r")._info
    return _same_info(have, root_attrs(info))


class FeatureStore:
    """Read (``mode="r"``) or write (``mode="a"``, ``"w"`` = start empty) one stream's store.

    ``info`` (an EncoderInfo) is required to write: a new file gets its root attributes, an existing
    file must carry the same ones (other weights or another recipe -> :class:`MrhdError`).
    """

    def __init__(self, path: str | Path, mode: str = "r", info=None, *, store_dtype: str = "float16"):
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be r, a or w, not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.parts_dir = self.path.parent / f".{self.path.stem}.parts"
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self.store_dtype = np.dtype(store_dtype)
        self._want = root_attrs(info) if info is not None else None
        self._file: h5py.File | None = None
        if mode == "r":
            if not self.path.exists() and not self._part_files():
                raise MrhdError(f"feature store {self.path} does not exist; run `mrhd extract` first")
            self._info = self._read_info()
            return
        if self._want is None:
            raise ValueError("writing a store needs its EncoderInfo")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.parts_dir.mkdir(exist_ok=True)
        except OSError as err:
            raise MrhdError(f"cannot write to {self.path.parent} ({err.strerror}); "
                            "choose a writable --out folder") from err
        if not os.access(self.path.parent, os.W_OK) or not os.access(self.parts_dir, os.W_OK):
            raise MrhdError(f"cannot write to {self.path.parent}; choose a writable --out folder")
        self._remove_stale_tmp()
        if mode == "w":
            with self._locked():
                for part in self._part_files():
                    part.unlink(missing_ok=True)
                self.path.unlink(missing_ok=True)
        self._check_or_create()
        self._info = dict(self._want)

    # ------------------------------------------------------------------ reading
    @property
    def info(self) -> dict:
        """Root attributes; ``recipe`` parsed back into a dict."""
        info = {k: (_as_str(v) if isinstance(v, bytes | str) else v) for k, v in self._info.items()}
        if "dim" in info:
            info["dim"] = int(info["dim"])
        if "clip_len" in info:
            info["clip_len"] = float(info["clip_len"])
        if "recipe" in info:
            info["recipe"] = json.loads(info["recipe"])
        return info

    @property
    def root(self) -> dict:
        """Every root attribute as stored, unparsed: the identity attributes and any others of the main
        file (``source`` of an import); ``merging`` left out."""
        attrs = dict(self._info)
        main = self._main()
        if main is not None:
            attrs.update({k: v for k, v in main.attrs.items() if k != _MERGING})
        return {k: _as_str(v) if isinstance(v, bytes) else v for k, v in attrs.items()}

    def _read_info(self) -> dict:
        sources = ([self.path] if self.path.exists() else []) + self._part_files()
        for src in sources:
            try:
                with h5py.File(src, "r") as f:
                    attrs = _attrs_of(f)
            except OSError:
                continue
            if attrs.get("format") is not None:
                if _as_str(attrs["format"]) != FORMAT:
                    raise MrhdError(f"{src} is not an mrhd feature store (format "
                                    f"{_as_str(attrs['format'])!r}); re-extract it with `mrhd extract`")
                return attrs
        raise MrhdError(f"{self.path} cannot be read (damaged, truncated, or no `format` root attribute); "
                        "re-run `mrhd extract` with the same arguments to repair it, or give a store written "
                        "by another tool the root attributes of docs/STORE.md")

    def _main(self) -> h5py.File | None:
        if self._file is None and self.path.exists():
            try:
                self._file = _open_for_reading(self.path)
            except OSError as err:
                if self.mode == "r":  # never read the parts alone as if they were the whole store
                    if _held_open(self.path):
                        raise MrhdError(f"feature store {self.path} is being written by another process "
                                        "(a merge of `mrhd extract`); try again when it is done") from err
                    raise MrhdError(f"cannot read feature store {self.path} (damaged or truncated: "
                                    f"{_hdf5_reason(err)}); re-run `mrhd extract` with the same arguments "
                                    "to repair it") from err
                return None
        return self._file

    def _part_files(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(p for p in self.parts_dir.glob("*.h5"))

    def _locate(self, name: str) -> tuple[h5py.File | None, Path | None]:
        main = self._main()
        in_main = main is not None and isinstance(main.get(name), h5py.Dataset)
        if in_main and (not main.attrs.get(_MERGING, 0) or main[name].attrs.get(COMPLETE, 0)):
            return main, None
        named = self.parts_dir / _part_name(name)   # a video's own part: found without opening the others
        if "/" not in name and named.exists():
            part = _part_holding(name, [named])
            if part is not None:
                return None, part
        part = _part_holding(name, self._part_files())
        if part is None and in_main:   # unflagged under `merging`, but no merge was writing it: stored
            return main, None
        return None, part

    def has(self, video_id: str) -> bool:
        """True when ``video_id`` is completely stored (main file or a finished part)."""
        main, part = self._locate(video_id)
        return main is not None or part is not None

    def _stored_names(self) -> set[str]:
        """Names of the stored top-level datasets in the main file and the parts (groups excluded).
        Every dataset of the main file counts: one a killed merge may have cut short is also in a
        pending part (module docstring), which :meth:`_locate` reads instead."""
        main = self._main()
        # Names only: ``pooled`` is the one group any writer makes (no video id or ``qid`` name can be
        # it), so nothing else needs opening; opening each entry to check its type cost 3.5 s per
        # listing of QVHighlights' 8,768 entries (docs/training-speed.md, start-up).
        names = set(main.keys()) - {POOLED} if main is not None else set()
        for part in self._part_files():
            names |= {n for n in _names_in_part(part) if "/" not in n}
        return names

    def video_ids(self) -> list[str]:
        """Every completely stored video (text entries and groups excluded), sorted."""
        return sorted(k for k in self._stored_names() if not k.startswith("qid"))

    def query_ids(self) -> list[str]:
        """Every completely stored query id (the part after ``qid``), sorted."""
        return sorted(k[3:] for k in self._stored_names() if k.startswith("qid"))

    def _read_dataset(self, name: str) -> tuple[np.ndarray, dict] | None:
        main, part = self._locate(name)
        if main is not None:
            ds = main[name]
            return ds[()].astype(np.float32), dict(ds.attrs)
        if part is not None:
            with h5py.File(part, "r") as f:
                ds = f[name]
                return ds[()].astype(np.float32), dict(ds.attrs)
        return None

    def read_stored(self, name: str) -> np.ndarray | None:
        """One dataset's array as stored (float16 or float32), without its attributes; None when it
        is not stored. The per-item read of training (:class:`~mrhd.features.profiles.StoreReader`)."""
        main, part = self._locate(name)
        if main is not None:
            return main[name][()]
        if part is not None:
            with h5py.File(part, "r") as f:
                return f[name][()]
        return None

    def read(self, video_id: str) -> np.ndarray:
        """``[n_clips, dim]`` float32 features of one video."""
        got = self._read_dataset(video_id)
        if got is None:
            raise MrhdError(f"video {video_id!r} is not in {self.path}; extract it with `mrhd extract`")
        return got[0]

    def read_attrs(self, video_id: str) -> dict:
        """Per-dataset attributes (``duration``, ``n_clips``, ``source_*`` where recorded)."""
        got = self._read_dataset(video_id)
        if got is None:
            raise MrhdError(f"video {video_id!r} is not in {self.path}; extract it with `mrhd extract`")
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in got[1].items() if k != COMPLETE}

    def entry_attrs(self, name: str) -> dict:
        """The attributes of one stored entry (``qid<qid>`` for a query), without reading its data;
        :class:`MrhdError` when it is not stored."""
        main, part = self._locate(name)
        if main is None and part is None:
            raise MrhdError(f"{name!r} is not in {self.path}; extract it with `mrhd extract`")
        if main is not None:
            return dict(main[name].attrs)
        with h5py.File(part, "r") as f:
            return dict(f[name].attrs)

    def source_of(self, video_id: str) -> dict | None:
        """The file a stored video came from (``sha256``, ``size``, ``path``, ``mtime_ns``), or None
        for an entry written before stores recorded it; :class:`MrhdError` when it is not stored."""
        attrs = self.entry_attrs(video_id)
        if f"source_{SOURCE_KEYS[0]}" not in attrs:
            return None
        got = {k: attrs.get(f"source_{k}") for k in SOURCE_KEYS}
        return {k: (_as_str(v) if isinstance(v, bytes | str) else int(v)) for k, v in got.items() if v is not None}

    def claim_path(self, video_id: str) -> Path:
        """The file whose lock says which `mrhd extract` run works on this video (extract/claims.py)."""
        return self.parts_dir / (_part_name(video_id)[: -len(".h5")] + ".claim")

    def read_text(self, qid) -> tuple[np.ndarray, np.ndarray | None]:
        """``(tokens [L, dim], pooled [dim] or None)`` float32 of one query."""
        key = f"qid{qid}"
        got = self._read_dataset(key)
        if got is None:
            raise MrhdError(f"query {qid} is not in {self.path}; run `mrhd extract --queries` for it")
        pooled = self._read_dataset(f"{POOLED}/{key}")
        return got[0], (pooled[0] if pooled is not None else None)

    # ------------------------------------------------------------------ writing
    def _locked(self):
        return _FileLock(self.lock_path)

    def _check_or_create(self) -> None:
        """Validate the root attributes of whatever is already there, or create the main file."""
        with self._locked():
            existing = None
            if self.path.exists():
                f = self._open_main_for_write()
                if f is not None:
                    with f:
                        existing = _attrs_of(f)
                        if not existing:
                            f.attrs.update(self._want)
                            existing = None
                else:  # held by a reader: reading its attributes is still allowed
                    try:
                        with h5py.File(self.path, "r") as fr:
                            existing = _attrs_of(fr) or None
                    except OSError:
                        existing = None
            if existing is None:
                for part in self._part_files():
                    try:
                        with h5py.File(part, "r") as pf:
                            existing = _attrs_of(pf) or None
                    except OSError:
                        continue
                    if existing:
                        break
            if existing:
                diff = _same_info(existing, self._want)
                if diff:
                    what = ", ".join(f"{k}={_as_str(existing.get(k))!r}" for k in diff if k != "recipe")
                    if "recipe" in diff:
                        what = (what + ", " if what else "") + "another recipe"
                    raise MrhdError(
                        f"{self.path} holds features made with {what}, not with these settings; "
                        "use another --out folder or delete the file to start over")
            if not self.path.exists():
                with h5py.File(self.path, "w") as f:
                    f.attrs.update(self._want)

    def _open_append(self) -> tuple[h5py.File | None, OSError | None]:
        """``h5py.File(path, "a")``, or why not. HDF5 fails to take its lock also when another
        process's handle was open at that instant and is closed by the time we look (another run's
        short read): that is tried again, for up to READ_WAIT_S."""
        deadline = time.monotonic() + READ_WAIT_S
        while True:
            try:
                return h5py.File(self.path, "a"), None
            except BlockingIOError as err:  # the lock, not the content
                if _held_open(self.path) or time.monotonic() >= deadline:
                    return None, err
                time.sleep(0.05)
            except OSError as err:
                return None, err

    def _open_main_for_write(self) -> h5py.File | None:
        """Open the main file for appending; rebuild it after an interrupted merge and salvage what can
        be read when it is damaged (the damaged file is kept beside it as ``*.corrupt-<time>``)."""
        f, err = self._open_append()
        if f is None:
            if _held_open(self.path):
                return None  # a reader (this or another process) has it open; parts wait for a later merge
            if not os.access(self.path, os.W_OK):
                raise MrhdError(f"cannot write to {self.path}; make it writable or choose another --out "
                                "folder") from err
            try:  # only a file that cannot even be read is damaged
                with h5py.File(self.path, "r"):
                    pass
            except OSError as err_read:
                if _held_open(self.path):
                    return None
                self._salvage(f"is damaged or truncated ({_hdf5_reason(err_read)})")
                return h5py.File(self.path, "a")
            raise MrhdError(f"cannot open {self.path} for writing ({err}); close what holds it and re-run") from err
        if f.attrs.get(_MERGING, 0):
            # A merge was killed. HDF5 writes its metadata in no fixed order, so the file may look whole
            # and still fail later ("addr overflow"): rebuild it from the entries the killed merge had
            # finished. Parts are removed only after a whole merge, so what it had not finished merges again.
            f.close()
            self._salvage("was left by an interrupted merge", keep_damaged=False)
            return h5py.File(self.path, "a")
        return f

    def _pending_names(self) -> frozenset[str]:
        """Every entry name the part files hold: what a killed merge may have been writing."""
        names: set[str] = set()
        for part in self._part_files():
            names |= _names_in_part(part)
        return frozenset(names)

    def _salvage(self, why: str, keep_damaged: bool = True) -> None:
        """Rebuild the main file from its readable stored entries (:func:`is_stored`: under ``merging``,
        not what a pending part holds unflagged). The old file is kept beside it as
        ``*.corrupt-<time>`` when it is damaged, or when some entry could not be read back."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        os.replace(self.path, aside)
        kept = lost = 0
        pending = self._pending_names()
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as out:
            out.attrs.update(self._want)
            try:
                with h5py.File(aside, "r") as src:
                    for name in list(_complete_names(src, pending)):
                        try:
                            _copy_entry(src, out, name)
                            kept += 1
                        except Exception:  # noqa: BLE001  (any HDF5 error: the entry is lost, re-extracted)
                            lost += 1
            except Exception:  # noqa: BLE001
                lost += 1
        if keep_damaged or lost:
            warnings.warn(f"{self.path} {why}; kept {kept} readable entries, moved the damaged file to "
                          f"{aside.name}; missing videos are extracted again", stacklevel=3)
        else:
            aside.unlink()
            warnings.warn(f"{self.path} {why}; rebuilt it from its {kept} finished entries, the rest "
                          "merges again from the parts", stacklevel=3)

    def _remove_stale_tmp(self) -> None:
        """Temporary part files of writers that died before their rename."""
        for tmp in self.parts_dir.glob(f"{_TMP_PREFIX}*"):
            try:
                pid = int(tmp.name.split("-")[1])
                os.kill(pid, 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except (ValueError, IndexError, PermissionError):
                continue

    def _write_part(self, key: str, entries: dict[str, tuple[np.ndarray, dict]]) -> None:
        """Write entries (name -> (array, attrs)) to one part file, atomically."""
        # the writer's pid in the temporary name lets a later writer remove it if this one dies
        with atomic_path(self.parts_dir / _part_name(key), durable=True, tmp_prefix=f"{_TMP_PREFIX}{os.getpid()}-") \
                as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(self._want)
            for name, (array, attrs) in entries.items():
                ds = f.create_dataset(name, data=array)
                ds.attrs.update(attrs)
                ds.attrs[COMPLETE] = 1

    def write(self, video_id: str, features, duration: float, source: dict | None = None) -> None:
        """Store one video's ``[n_clips, dim]`` features (atomic; replaces an older entry).
        ``source``: the file they came from (``SOURCE_KEYS``; ``mrhd.extract.sources.source_file``),
        so that a later run can tell another file of the same id from this one."""
        if self.mode == "r":
            raise ValueError("store opened read-only")
        problem = video_id_problem(video_id)
        if problem:
            raise MrhdError(f"video id {video_id!r} cannot be stored: it {problem}; rename the file")
        array = np.asarray(features, dtype=self.store_dtype)
        dim = int(self._want["dim"])
        if array.ndim != 2 or array.shape[1] != dim:
            raise ValueError(f"features of {video_id} have shape {array.shape}, expected [n, {dim}]")
        attrs = {"duration": float(duration), "n_clips": int(array.shape[0])}
        for key in SOURCE_KEYS:
            if source and source.get(key) is not None:
                attrs[f"source_{key}"] = source[key]
        self._write_part(video_id, {video_id: (array, attrs)})

    def write_texts(self, items, batch_name: str | None = None) -> None:
        """Store queries: ``items`` is an iterable of ``(qid, tokens [L, dim], pooled [dim] | None)``
        or ``(qid, tokens, pooled, query text)``; the text is kept as the entry's ``query``
        attribute, so that another annotation file's qid of the same number is told apart. All go
        into one part (a part per query would mean thousands of files)."""
        entries = {}
        for qid, tokens, pooled, *text in items:
            entries[f"qid{qid}"] = (np.asarray(tokens, dtype=np.float32), {"query": text[0]} if text else {})
            if pooled is not None:
                entries[f"{POOLED}/qid{qid}"] = (np.asarray(pooled, dtype=np.float32), {})
        if entries:
            self._write_part(batch_name or f"qid-batch-{os.getpid()}-{time.time_ns()}", entries)

    @classmethod
    def create(cls, path: str | Path, *, stream: str, dim: int, clip_len: float, weights: str = "unknown",
               recipe: dict | None = None, mode: str = "a", dtype: str = "float32") -> FeatureStore:
        """A store to write without an encoder object: the root attributes given directly (another
        tool, ``mrhd features import``). ``mode`` "a" resumes (an existing store must carry the same
        attributes), "w" starts empty; ``dtype`` is what :meth:`write` casts to."""
        from mrhd.encoders.base import EncoderInfo

        info = EncoderInfo(stream=stream, dim=int(dim), weights=str(weights), recipe=dict(recipe or {}),
                           clip_len=float(clip_len))
        return cls(path, mode, info, store_dtype=dtype)

    def write_entries(self, entries: dict[str, tuple[np.ndarray, dict]], part: str | None = None) -> None:
        """Write a batch of entries as ONE atomic part, each array in its own dtype: ``name -> (array,
        attrs)`` with names ``<video_id>`` ([n, dim]), ``qid<qid>`` ([L, dim]) or ``pooled/qid<qid>``
        ([dim]). After a crash the whole batch is there or none of it. ``part`` names the part file."""
        if self.mode == "r":
            raise ValueError("store opened read-only")
        dim = int(self._want["dim"])
        checked = {}
        for name, (array, attrs) in entries.items():
            array = np.asarray(array)
            pooled = name.startswith(f"{POOLED}/")
            key = name[len(POOLED) + 1:] if pooled else name
            text = key.startswith("qid") and len(key) > 3 and "/" not in key
            if (pooled and not text) or (not text and video_id_problem(key)):
                raise MrhdError(f"entry name {name!r} cannot be stored (a video id without '/', qid<qid> or "
                                f"{POOLED}/qid<qid>); rename it")
            want_ndim = 1 if pooled else 2
            if array.ndim != want_ndim or array.shape[-1] != dim:
                shape = "[dim]" if pooled else "[n, dim]"
                raise MrhdError(f"entry {name!r} has shape {list(array.shape)}, expected {shape} with dim {dim}")
            if not np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float32)
            checked[name] = (array, dict(attrs or {}))
        if checked:
            self._write_part(part or f"batch-{os.getpid()}-{time.time_ns()}", checked)

    def describe(self, name: str) -> tuple[tuple, np.dtype, dict] | None:
        """``(shape, dtype, attrs)`` of a stored entry without reading its numbers; None if absent."""
        main, part = self._locate(name)
        if main is not None:
            ds = main[name]
            return ds.shape, ds.dtype, dict(ds.attrs)
        if part is not None:
            with h5py.File(part, "r") as f:
                ds = f[name]
                return ds.shape, ds.dtype, dict(ds.attrs)
        return None

    def set_root_attrs(self, **attrs) -> bool:
        """Extra root attributes of the main file (e.g. ``source``: where imported numbers came from),
        beside the identity attributes a writer compares; False when a reader holds the file."""
        if self.mode == "r":
            raise ValueError("store opened read-only")
        self.close_reader()
        with self._locked():
            f = self._open_main_for_write()
            if f is None:
                return False
            with f:
                for key, value in attrs.items():
                    if key in _INFO_KEYS or key == _MERGING:
                        raise ValueError(f"{key} is an identity attribute; give it to create()")
                    f.attrs[key] = value
        return True

    def commit(self) -> int:
        """Merge finished parts into the main file; returns how many entries were merged. When the main
        file is held by a reader, the parts stay (readers still see them) and merge on a later run."""
        if self.mode == "r":
            return 0
        self.close_reader()
        merged = 0
        with self._locked():
            parts = self._part_files()
            if not parts:
                return 0
            f = self._open_main_for_write()
            if f is None:
                return 0
            done = []
            with f:
                f.attrs[_MERGING] = 1
                f.flush()
                for part in parts:
                    try:
                        with h5py.File(part, "r") as src:
                            if _same_info(_attrs_of(src), self._want):
                                continue  # a part from another recipe is never mixed in
                            for name in _complete_names(src):
                                _copy_entry(src, f, name)
                                merged += 1
                    except OSError:
                        continue
                    done.append(part)
                f.flush()  # everything merged is on disk before the flag goes
                del f.attrs[_MERGING]
                f.flush()
            for part in done:
                part.unlink(missing_ok=True)
        return merged

    def close_reader(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.close_reader()
        if self.mode != "r":
            self.commit()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.close_reader()


def _held_open(path: Path) -> bool:
    """Whether an open HDF5 handle, of this process or another, holds ``path`` (busy, not damaged).

    Decided by the lock itself, never by the words of an error (HDF5's message for a truncated file,
    "sblock->base_addr", contains "lock"): HDF5 keeps an ``flock`` on every file it has open, shared
    for readers and exclusive for writers, so an exclusive non-blocking ``flock`` of our own fails
    exactly while some handle is open. This process's own handles are also looked up directly, for
    when HDF5's locking is turned off (``HDF5_USE_FILE_LOCKING=FALSE``)."""
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            if os.path.samefile(os.fsdecode(fid.name), path):
                return True
        except (OSError, ValueError):
            continue
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # no flock here (some network file systems): nothing can be holding one
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return False


def _open_for_reading(path: Path, wait_s: float = READ_WAIT_S) -> h5py.File:
    """``h5py.File(path, "r")``, waiting up to ``wait_s`` while a writer holds the file (a merge
    takes seconds); a damaged file raises at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return h5py.File(path, "r")
        except OSError:
            if time.monotonic() >= deadline or not _held_open(path):
                raise
            time.sleep(0.2)


def _hdf5_reason(err: OSError) -> str:
    """HDF5's reason without h5py's prefix ("Unable to synchronously open file (...)")."""
    text = str(err)
    inner = re.search(r"\((.*)\)\s*$", text)
    return inner.group(1) if inner else text


_PART_NAMES: dict[str, tuple[tuple[int, int, int], frozenset[str]]] = {}


def _names_in_part(part: Path) -> frozenset[str]:
    """The complete entries of a part file, read once per file: a part never changes after its
    rename into place (a rewrite is a new file), so its inode, time and size identify what it
    holds. Opening every part on every lookup cost ~3 ms a part, 0.3 s a lookup with 100 parts."""
    try:
        st = part.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = _PART_NAMES.get(str(part))
        if hit is not None and hit[0] == key:
            return hit[1]
        with h5py.File(part, "r") as f:
            names = frozenset(_complete_names(f))
    except OSError:
        return frozenset()
    if len(_PART_NAMES) > 100_000:  # parts merged long ago
        _PART_NAMES.clear()
    _PART_NAMES[str(part)] = (key, names)
    return names


def _part_holding(name: str, parts: list[Path]) -> Path | None:
    """The first of ``parts`` that holds ``name`` completely."""
    return next((part for part in parts if name in _names_in_part(part)), None)


def _dataset_names(f: h5py.File) -> list[str]:
    """Every dataset of a store file: top level and one group deep (``pooled/qid...``)."""
    names = []
    for name, obj in f.items():
        if isinstance(obj, h5py.Group):
            names += [f"{name}/{sub}" for sub, sobj in obj.items() if isinstance(sobj, h5py.Dataset)]
        else:
            names.append(name)
    return names


def _complete_names(f: h5py.File, pending: frozenset[str] = frozenset()) -> Iterator[str]:
    """The stored datasets of ``f`` (:func:`is_stored`; ``pending``: the names the parts hold)."""
    for name in _dataset_names(f):
        if is_stored(f, name, pending):
            yield name


def _copy_entry(src: h5py.File, dst: h5py.File, name: str) -> None:
    """Copy one dataset; an older entry of the same name is replaced. ``complete`` is set last."""
    if name in dst:
        del dst[name]
    ds_src = src[name]
    ds = dst.create_dataset(name, data=ds_src[()])
    for key, value in ds_src.attrs.items():
        if key != COMPLETE:
            ds.attrs[key] = value
    ds.attrs[COMPLETE] = 1


class _FileLock:
    """An exclusive ``flock`` on a side file: one merger at a time across shards and processes."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self):
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # minus the umask, as open() does
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
