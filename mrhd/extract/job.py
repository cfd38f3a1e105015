"""The scheduler behind ``mrhd extract``: list the work, pack clips of several videos into device
batches, write each finished video atomically, resume, report.

Flow: the main process owns the encoders and the stores; ``num_workers`` decoding processes
(:mod:`mrhd.extract.worker`) each take a video and send its clips in chunks. The main process fills
batches of ``batch_size`` clips from whatever videos are ready, encodes them, and writes a video to
its store once all its clips are encoded; finished parts are merged into the stores every
:data:`COMMIT_EVERY_S` seconds and at the end.

Resume: a video already complete in a stream's store is skipped for that stream (``--overwrite``
recomputes), once the store's record of its file (hash, size, path; ``features/store.py``) says it
is the same file: a file changed in place is extracted again, another file of the same video id is
refused (it would silently take the other's place). A killed job leaves at most finished part
files, which the next run merges; the video that was in flight is simply recomputed.

Several runs on one output folder share the list: a video is claimed (``claims.py``) when it is
handed to a decoder; a claimed video is left to the run that holds it, and waited for at the end.

Summary: every input lands in exactly one category (stored, already stored, stored by another run,
partly stored, failed, or not done when interrupted), so the counts add up to the inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import queue
import signal
import sys
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.base import encode_clips
from mrhd.errors import MrhdError
from mrhd.extract import sampling
from mrhd.extract.claims import Claim, holder_pid, try_claim
from mrhd.extract.decode import VIDEO_KINDS
from mrhd.extract.sources import Source
from mrhd.extract.worker import DecodePool, StreamSpec, received, timed_messages
from mrhd.features.store import FeatureStore, store_path
from mrhd.io import file_sha256, read_jsonl_numbered

COMMIT_EVERY_S = 30.0  # merge finished parts into the main files at least this often
CLAIM_POLL_S = 0.5  # how often a run looks whether another run let go of the videos it waits for


@dataclass
class Failure:
    path: str
    stream: str | None
    reason: str


@dataclass
class Summary:
    """What a run did. Every input is counted in exactly one of ``stored``, ``skipped``,
    ``by_other_run``, ``partial``, ``failed`` (or is not done, when interrupted), so the counts add
    up to ``inputs``; ``failures`` and ``warnings`` say why, per file."""

    inputs: int = 0  # videos listed plus inputs that could not be used (missing file, empty folder)
    stored: int = 0  # every asked stream stored, at least one by this run
    skipped: int = 0  # already stored in every asked stream
    by_other_run: int = 0  # stored by another run on the same folder while this one ran
    partial: int = 0  # some streams stored, others failed
    failed: int = 0  # nothing stored (not a video, unreadable, refused)
    failures: list[Failure] = field(default_factory=list)  # per video and stream (or input)
    query_failures: list[Failure] = field(default_factory=list)  # lines of --queries files
    warnings: list[Failure] = field(default_factory=list)  # files cut short, files changed, stores repaired
    clips: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    video_seconds: float = 0.0
    wall_s: float = 0.0
    encode_s: float = 0.0  # main process inside encoder.encode
    wait_s: float = 0.0  # main process idle, waiting for decoded clips (decoding not hidden)
    startup_s: float = 0.0  # waiting for the first decoded clips (worker start-up)
    decode_s: float = 0.0  # wall time spent decoding + preprocessing, summed over videos
    decode_cpu_s: float = 0.0  # CPU time of the decoding workers (0 when decoding inline)
    queries: int = 0
    interrupted: bool = False
    worker_rss_mb: float = 0.0  # peak resident memory of a decoding worker
    queries_note: str = ""  # why --queries were not encoded in this run (e.g. left to shard 0)

    def add_bad_inputs(self, problems: list[tuple[str, str]]) -> None:
        """Inputs that name no usable video (listing problems): each one is a failed input."""
        for path, reason in problems:
            self.inputs += 1
            self.failed += 1
            self.failures.append(Failure(path, None, reason))

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings do not count): the exit status is 0."""
        return not self.failures and not self.query_failures

    def report(self) -> str:
        not_done = self.inputs - (self.stored + self.skipped + self.by_other_run + self.partial + self.failed)
        counts = [(self.stored, "stored"), (self.skipped, "already stored")]
        counts += [(n, name) for n, name in ((self.by_other_run, "stored by another run"),
                                             (self.partial, "partly stored (a stream failed)")) if n]
        counts.append((self.failed, "failed"))
        if not_done > 0:
            counts.append((not_done, "not done"))
        head = (f"{self.inputs} input{'' if self.inputs == 1 else 's'}: " + ", ".join(f"{n} {name}" for n, name in counts)
                if self.inputs or not (self.queries or self.query_failures) else "no videos")
        if self.queries:
            head += f"; {self.queries} quer{'y' if self.queries == 1 else 'ies'} encoded"
        if self.query_failures:
            n = len(self.query_failures)
            head += f"; {n} query line{'' if n == 1 else 's'} failed"
        if self.queries_note:
            head += f"; {self.queries_note}"
        if self.interrupted:
            head += " (interrupted: re-run the same command to finish)"
        lines = [head]
        by_path: dict[str, list[Failure]] = defaultdict(list)
        for f in self.failures + self.query_failures:
            by_path[f.path].append(f)
        for path in sorted(by_path):
            reasons: dict[str, list[str]] = defaultdict(list)
            for f in by_path[path]:
                reasons[f.reason].append(f.stream or "")
            for reason, streams in reasons.items():
                names = ",".join(s for s in streams if s)
                lines.append(f"  FAILED {path}" + (f" [{names}]" if names else "") + f": {reason}")
        for w in self.warnings:
            lines.append(f"  WARNING {w.path}: {w.reason}" if w.path else f"  WARNING {w.reason}")
        return "\n".join(lines)


def info_at_clip_len(info, clip_len: float):
    """The store facts of an encoder run at ``clip_len`` seconds per clip: the clip length and the
    recipe's rate entries follow it (sampling.py); at the official 2 s the info is unchanged, so
    stores made before clip lengths could change resume as they are."""
    if math.isclose(clip_len, sampling.CLIP_LEN):
        return info
    recipe = dict(info.recipe)
    recipe["clip_len"] = clip_len
    if "fps" in recipe and recipe.get("input") == "clip_frame":
        recipe["fps"] = 1 / clip_len
    if "frames_per_clip" in recipe and recipe.get("fps") == sampling.SLOWFAST_FPS:
        recipe["frames_per_clip"] = sampling.slowfast_block(sampling.SLOWFAST_FPS, clip_len)
    if "window_s" in recipe:
        recipe["window_s"] = clip_len
    if "frames" in recipe and isinstance(recipe["frames"], str):
        recipe["frames"] = f"ffmpeg fps={1 / clip_len:g}, one frame per {clip_len:g}-s clip (HERO rules)"
    return dataclasses.replace(info, recipe=recipe, clip_len=clip_len)


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False


@dataclass
class _Stream:
    encoder: object
    store: FeatureStore
    pending: deque = field(default_factory=deque)  # (vid, start, payload tensor or list, n)
    pending_rows: int = 0


@dataclass
class _Video:
    source: Source
    streams: set  # streams still open
    rows: dict = field(default_factory=lambda: defaultdict(dict))  # stream -> start -> features
    expected: dict = field(default_factory=dict)  # stream -> (n_clips, duration)
    stored: set = field(default_factory=set)
    failed: set = field(default_factory=set)
    skipped: set = field(default_factory=set)  # streams already stored before this run
    by_other: set = field(default_factory=set)  # streams another run stored meanwhile
    source_file: dict | None = None  # what the worker read (hash, size, path): recorded with the entry
    video_duration: float | None = None  # the video track's decoded length, stored by an earlier run
    claims: list = field(default_factory=list)  # Claim per open stream while this run works on it
    ended: bool = False


class ExtractJob:
    """One ``mrhd extract`` run over already-built encoders (see ``mrhd.commands.extract``).

    ``encoders``: VideoEncoder objects; ``text_encoders``: TextEncoder objects for ``queries``.
    """

    def __init__(self, encoders: list, out_dir: str | Path, *, text_encoders: list | None = None,
                 batch_size: int = 16, num_workers: int = 1, overwrite: bool = False,
                 progress: bool = True, chunk: int | None = None, worker_threads: int = 1,
                 log=None, pool: DecodePool | None = None, clip_len: float = sampling.CLIP_LEN):
        self.encoders = list(encoders)
        self.text_encoders = list(text_encoders or [])
        self.out_dir = Path(out_dir)
        self.batch_size = max(1, int(batch_size))
        self.num_workers = max(0, int(num_workers))
        self.overwrite = overwrite
        self.progress = progress
        self.chunk = chunk or self.default_chunk(self.batch_size)
        self.worker_threads = worker_threads
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.summary = Summary()
        self._streams: dict[str, _Stream] = {}
        self._videos: dict[str, _Video] = {}
        self._deferred: list[_Video] = []  # claimed by another run: waited for at the end
        self._sha256: dict[Path, str] = {}  # files hashed by this run (each once)
        self._last_commit = time.monotonic()
        self._bar = None
        self._inline = self.num_workers == 0
        self._pool = pool
        self.clip_len = float(clip_len)   # seconds per clip: the stores' clip_len (sampling.py rules)

    @staticmethod
    def default_chunk(batch_size: int) -> int:
        """Clips per message from a worker: small enough to start encoding early, large enough to
        keep the queue overhead low."""
        return max(1, min(batch_size, 16))

    # -- stores
    @contextlib.contextmanager
    def _store_warnings(self):
        """Warnings of the stores (a damaged file salvaged) go to the summary, not to Python's
        warnings output."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            self.summary.warnings.append(Failure("", None, str(w.message)))  # the message names the store
            self._say(f"warning: {w.message}")

    def _open_stores(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MrhdError(f"cannot create output folder {self.out_dir} ({err.strerror}); "
                            "choose a writable --out folder") from err
        with self._store_warnings():
            for enc in self.encoders:
                path = store_path(self.out_dir, enc.info.stream)
                store = FeatureStore(path, "a", info_at_clip_len(enc.info, self.clip_len),
                                     store_dtype=getattr(enc, "store_dtype", "float16"))
                store.commit()  # parts left by a killed run join the store first
                self._streams[enc.info.stream] = _Stream(enc, store)

    def _commit(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_commit > COMMIT_EVERY_S:
            with self._store_warnings():
                for st in self._streams.values():
                    st.store.commit()
            self._last_commit = time.monotonic()

    def _say(self, msg: str) -> None:
        """A line while the progress bar runs (failures as they happen); without the bar the
        summary at the end says it all."""
        if self._bar is not None:
            self._bar.write(f"mrhd extract: {msg}", file=sys.stderr)

    # -- planning
    def _specs(self) -> dict[str, StreamSpec]:
        specs = {}
        for name, st in self._streams.items():
            pre = getattr(st.encoder, "preprocessor", None)
            picker = getattr(st.encoder, "window_frame_picker", None) if st.encoder.input_kind == "window_frames" \
                else None
            specs[name] = StreamSpec(name, st.encoder.input_kind, pre if pre is not None and _picklable(pre) else None,
                                     picker if picker is not None and _picklable(picker) else None,
                                     clip_len=self.clip_len)
        return specs

    def _sha_of(self, src: Source) -> str:
        """The file's sha256, computed at most once per run."""
        if src.sha256:
            return src.sha256
        if src.path not in self._sha256:
            self._sha256[src.path] = file_sha256(src.path)
        return self._sha256[src.path]

    def _verdict(self, store: FeatureStore, src: Source) -> tuple[str, str]:
        """``("todo" | "stored" | "changed" | "refused", why)`` for one video in one store.

        A stored entry counts only when it came from this file: the same path, size and
        modification time, or else the same content hash (a moved or copied file). The same path
        with other content is a file changed in place: extracted again. Another file with the same
        id is refused, not overwritten: both are somebody's video, and re-running would make the
        store flip between them; ``--video-id-from`` gives both a place."""
        vid = src.video_id
        if not store.has(vid):
            return "todo", ""
        if self.overwrite:
            return "todo", ""
        had = store.source_of(vid)
        if had is None:
            return "stored", ""  # written before stores recorded their source: taken as it is
        try:
            st = src.path.stat()
        except OSError:
            return "todo", ""  # gone meanwhile: decoding says so
        here = str(src.path.resolve())
        if had.get("path") == here and had.get("size") == st.st_size and had.get("mtime_ns") == st.st_mtime_ns:
            return "stored", ""
        if had.get("size") == st.st_size and had.get("sha256") == self._sha_of(src):
            return "stored", ""
        if had.get("path") == here:
            return "changed", (f"changed since its {store.path.name} features were stored (other content); "
                               "extracted again")
        return "refused", (f"video id {vid!r} is already in {store.path.name}, from another file "
                           f"({had.get('path')}); use --video-id-from path or hash to keep both, "
                           "--overwrite to replace it, or another --out folder")

    def _plan(self, sources: list[Source]) -> list[_Video]:
        """The videos with work to do; the others are counted (already stored, or refused)."""
        work = []
        for src in sources:
            self.summary.inputs += 1
            video = _Video(src, set())
            verdicts = {name: self._verdict(st.store, src) for name, st in self._streams.items()}
            # an id another file holds in one store is refused in all: else the stores would mix two videos
            refusal = next((why for verdict, why in verdicts.values() if verdict == "refused"), None)
            for name, (verdict, why) in verdicts.items():
                if verdict == "stored":
                    video.skipped.add(name)
                elif refusal:
                    video.failed.add(name)
                    self._add_failure(video, name, refusal)
                else:
                    video.streams.add(name)
                    if verdict == "changed" and not any(w.path == str(src.path) for w in self.summary.warnings):
                        self.summary.warnings.append(Failure(str(src.path), None, why))
            if video.streams:
                video.video_duration = self._stored_video_duration(video)
                work.append(video)
            else:
                self._count(video)
        for st in self._streams.values():
            st.store.close_reader()  # an open handle would keep other runs from merging
        return work

    def _stored_video_duration(self, video: _Video) -> float | None:
        """For a video whose open streams are all audio while a video stream is already stored (a
        resumed run, or an encoder added later): the duration that stream recorded. A pass that
        decodes no video can only measure the audio, which AAC pads past the last frame (4.017 s for
        a 4.0-s file); a run that decodes both records the video's length for every stream, and so
        must this one."""
        if any(self._streams[n].encoder.input_kind in VIDEO_KINDS for n in video.streams):
            return None   # the worker decodes the video and measures it
        for name in sorted(video.skipped):
            st = self._streams[name]
            if st.encoder.input_kind in VIDEO_KINDS:
                try:
                    return float(st.store.entry_attrs(video.source.video_id)["duration"])
                except (MrhdError, KeyError, OSError):
                    continue
        return None

    def _task(self, video: _Video, specs: dict[str, StreamSpec]) -> tuple:
        src = video.source
        return (str(src.path), src.video_id, [specs[n] for n in self._streams if n in video.streams],
                src.sha256 or self._sha256.get(src.path))

    # -- claims
    def _claim(self, video: _Video) -> bool:
        """Claim every open stream of ``video``, or none (then it waits for the run that holds it)."""
        claims: list[Claim] = []
        for name in sorted(video.streams):
            try:
                claim = try_claim(self._streams[name].store.claim_path(video.source.video_id))
            except OSError:
                continue  # no claim file possible here: work without (claims only share work)
            if claim is None:
                for c in claims:
                    c.release()
                return False
            claims.append(claim)
        video.claims = claims
        return True

    def _release(self, video: _Video) -> None:
        for claim in video.claims:
            claim.release()
        video.claims = []

    def _start(self, video: _Video) -> bool:
        """Claim ``video`` and make it live; False when another run holds it (deferred) or stored it
        since this run made its plan."""
        if not self._claim(video):
            self._deferred.append(video)
            return False
        return self._recheck(video)

    def _recheck(self, video: _Video, waited: bool = False) -> bool:
        """With ``video`` claimed, decide again what another run may have done since the plan: what
        it stored is counted as its work; the rest stays to do. True when work is left (the video
        is live), else the video is finished and counted. ``waited``: another run held the claim,
        so with ``--overwrite`` what is stored now is what it just computed."""
        vid = video.source.video_id
        verdicts = {}
        for n in sorted(video.streams):
            store = self._streams[n].store
            verdict, why = self._verdict(store, video.source)
            if verdict == "stored" or (self.overwrite and waited and store.has(vid)):
                video.streams.discard(n)
                video.by_other.add(n)
            verdicts[n] = (verdict, why)
            store.close_reader()
        # another run stored another file under this id: refused in every store (as in _plan)
        refusal = next((why for verdict, why in verdicts.values() if verdict == "refused"), None)
        if refusal:
            for n in sorted(video.streams):
                video.streams.discard(n)
                video.failed.add(n)
                self._add_failure(video, n, refusal)
        if video.streams:
            self._videos[vid] = video
            return True
        self._release(video)
        self._count(video)
        self._tick()
        return False

    def _take_over_deferred(self) -> list[_Video]:
        """Wait until some of the deferred videos are let go by the run that held them, then decide
        again: what that run stored is counted as its work, what is still missing (it failed, or
        died: the kernel drops a dead process's locks) is returned to be done here. Never blocks
        while holding a claim, so two runs cannot wait for each other."""
        pending, self._deferred = self._deferred, []
        said = False
        while True:
            ready, still = [], []
            for video in pending:
                if not self._claim(video):
                    still.append(video)
                elif self._recheck(video, waited=True):
                    ready.append(video)
            if ready or not still:
                self._deferred = still
                return ready
            if not said:
                first = still[0]
                pid = holder_pid(self._streams[sorted(first.streams)[0]].store.claim_path(first.source.video_id))
                msg = (f"waiting for another run{f' (pid {pid})' if pid else ''} on {self.out_dir} to finish "
                       f"{len(still)} video(s) it is working on")
                if self._bar is not None:
                    self._say(msg)
                else:
                    self.log(f"mrhd extract: {msg}")
                said = True
            time.sleep(CLAIM_POLL_S)
            pending = still

    # -- encoding
    def _take_batch(self, name: str, st: _Stream, limit: int) -> list[tuple]:
        """The next ``limit`` pending clips of a stream as ``(vid, start, payload, n)`` parts, in
        arrival order (a chunk is split where the batch ends); parts of videos that already failed
        in this stream are dropped after being counted, so batch boundaries do not depend on when a
        failure became known."""
        parts, taken = [], 0
        while st.pending and taken < limit:
            vid, start, payload, n = st.pending.popleft()
            take = min(n, limit - taken)
            if take < n:  # split the chunk; the rest stays in front
                st.pending.appendleft((vid, start + take, payload[take:], n - take))
                payload = payload[:take]
            parts.append((vid, start, payload, take))
            taken += take
        st.pending_rows -= taken
        return [p for p in parts if p[0] in self._videos and name in self._videos[p[0]].streams]

    def _encode_batch(self, name: str, st: _Stream, limit: int) -> None:
        live = self._take_batch(name, st, limit)
        if not live:
            return
        enc = st.encoder
        t0 = time.perf_counter()
        try:
            tensors = [torch.from_numpy(p[2]) if isinstance(p[2], np.ndarray)
                       else p[2] if isinstance(p[2], torch.Tensor) else enc.preprocess(p[2]) for p in live]
            batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            feats = encode_clips(enc, batch)
            if feats.shape[0] != batch.shape[0]:
                raise RuntimeError(f"returned {feats.shape[0]} rows for {batch.shape[0]} clips")
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: these videos fail, the job goes on
            self._batch_failed(name, live, str(err))
            return
        finally:
            self.summary.encode_s += time.perf_counter() - t0
        self._batch_done(name, live, feats)

    def _batch_failed(self, name: str, live: list[tuple], error: str) -> None:
        """The encoder raised on a batch: its videos fail in this stream, the job goes on."""
        if device_oom(error):
            error = "out of device memory; lower --batch-size"
        first_line = (error.splitlines() or [""])[0][:200]
        for vid in dict.fromkeys(p[0] for p in live):
            self._fail(vid, name, f"encoder {name} failed ({first_line})")

    def _batch_done(self, name: str, live: list[tuple], feats: np.ndarray) -> None:
        """Hand the rows of an encoded batch to their videos; a video with all rows is written."""
        offset = 0
        for vid, start, _payload, n in live:
            rows, offset = feats[offset: offset + n], offset + n
            video = self._videos.get(vid)
            if video is None or name not in video.streams:
                continue
            video.rows[name][start] = rows
            self.summary.clips[name] += n
            self._maybe_finish(vid, name)

    def _encode_ready(self, force: bool) -> None:
        for name, st in self._streams.items():
            while st.pending_rows >= self.batch_size or (force and st.pending_rows > 0):
                self._encode_batch(name, st, self.batch_size)

    # -- bookkeeping
    def _maybe_finish(self, vid: str, name: str) -> None:
        video = self._videos.get(vid)
        if video is None or name not in video.expected or name not in video.streams:
            return
        n_clips, duration = video.expected[name]
        rows = video.rows[name]
        if sum(len(r) for r in rows.values()) < n_clips:
            return
        feats = np.concatenate([rows[k] for k in sorted(rows)])
        try:
            self._streams[name].store.write(vid, feats, duration, source=video.source_file)
        except (OSError, MrhdError) as err:
            self._fail(vid, name, f"cannot write the store ({err})")
            return
        video.stored.add(name)
        video.streams.discard(name)
        del video.rows[name]
        self._maybe_close(vid)

    def _add_failure(self, video: _Video, name: str | None, reason: str) -> None:
        self.summary.failures.append(Failure(str(video.source.path), name, reason))
        self._say(f"FAILED {video.source.path}" + (f" [{name}]" if name else "") + f": {reason}")

    def _fail(self, vid: str, name: str | None, reason: str) -> None:
        video = self._videos.get(vid)
        if video is None:
            return
        names = [name] if name else sorted(video.streams)
        for n in names:
            if n in video.streams:
                video.streams.discard(n)
                video.failed.add(n)
                video.rows.pop(n, None)
                self._add_failure(video, n, reason)
        self._maybe_close(vid)

    def _count(self, video: _Video) -> None:
        """Put a finished video in exactly one category of the summary."""
        s = self.summary
        if video.failed:
            if video.stored or video.skipped or video.by_other:
                s.partial += 1
            else:
                s.failed += 1
        elif video.stored:
            s.stored += 1
        elif video.by_other:
            s.by_other_run += 1
        else:
            s.skipped += 1

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            self._bar.set_postfix_str(f"{sum(self.summary.clips.values()) / elapsed:.1f} clips/s")

    def _maybe_close(self, vid: str) -> None:
        video = self._videos[vid]
        if video.streams or not video.ended:
            return
        self._release(video)  # its parts are written: another run may look at it now
        self._count(video)
        if video.stored:
            dur = max(exp[1] for s, exp in video.expected.items() if s in video.stored)
            self.summary.video_seconds += max(dur, 0.0)
        del self._videos[vid]
        self._tick()
        self._commit()

    def _handle(self, msg: tuple) -> None:
        kind, vid = msg[0], msg[1]
        if kind == "start":
            return
        video = self._videos.get(vid)
        if video is None:
            return
        if kind == "chunk":
            _, _, name, start, payload, n = msg
            if name in video.streams:
                st = self._streams[name]
                st.pending.append((vid, start, payload, n))
                st.pending_rows += n
        elif kind == "source":
            video.source_file = msg[2]
        elif kind == "warning":
            self.summary.warnings.append(Failure(str(video.source.path), None, msg[2]))
            self._say(f"warning: {video.source.path}: {msg[2]}")
        elif kind == "done":
            _, _, name, n_clips, duration = msg
            if video.video_duration is not None:   # an audio-only pass (see _stored_video_duration)
                duration = video.video_duration
            video.expected[name] = (n_clips, duration)
            self._maybe_finish(vid, name)
        elif kind == "error":
            self._fail(vid, msg[2], msg[3])
        elif kind == "end":
            self.summary.decode_s += msg[2]
            if not self._inline:  # a worker's CPU time is its own (decoder threads included)
                self.summary.decode_cpu_s += msg[4]
                self.summary.worker_rss_mb = max(self.summary.worker_rss_mb, msg[3])
            video.ended = True
            self._maybe_close(vid)

    # -- running
    def _run_inline(self, work: list[_Video], specs: dict[str, StreamSpec], claimed: bool = False) -> None:
        """Decode in this process (``--num-workers 0``): simple, and all decoding time is exposed."""
        for video in work:
            if not claimed and not self._start(video):
                continue
            path, vid, todo, sha256 = self._task(video, specs)
            for msg in timed_messages(path, vid, todo, self.chunk, sha256=sha256):
                if msg[0] == "end":
                    self.summary.wait_s += msg[2]
                self._handle(msg)
                self._encode_ready(force=False)
        self._encode_ready(force=True)

    def _run_workers(self, work: list[_Video], specs: dict[str, StreamSpec], claimed: bool = False) -> None:
        """Hand videos to the decoding workers a few at a time (each claimed as it is handed out, so
        that another run on the folder takes the ones not yet handed out) and encode what comes back."""
        pool = self._pool
        backlog = deque(work)
        workers, results = pool.workers, pool.results
        current: dict[int, str] = {}
        remaining = 0  # handed out, not yet ended
        ahead = 2 * pool.num_workers + 2  # queued tasks: enough to keep every worker busy
        started = False
        idle_since = None

        def hand_out() -> None:
            nonlocal remaining
            while backlog and remaining < ahead:
                video = backlog.popleft()
                if claimed or self._start(video):
                    pool.tasks.put(self._task(video, specs))
                    remaining += 1

        hand_out()
        while remaining > 0:
            try:
                msg = results.get(timeout=0.05)
            except queue.Empty:
                if any(st.pending_rows for st in self._streams.values()):
                    self._encode_ready(force=True)  # nothing new: encode what is there
                    continue
                if idle_since is None:
                    idle_since = time.perf_counter()
                try:
                    msg = results.get(timeout=1.0)
                except queue.Empty:
                    msg = None
                if msg is None:
                    for pid, p in list(workers.items()):
                        if not p.is_alive() and p.exitcode not in (0, None):
                            vid = current.pop(pid, None)
                            del workers[pid]
                            if vid is not None and vid in self._videos:
                                self._fail(vid, None, f"decoder crashed (exit code {p.exitcode})")
                                self._videos[vid].ended = True
                                self._maybe_close(vid)
                                remaining -= 1
                                hand_out()
                            pool.spawn()
                    continue
            if idle_since is not None:  # the model had nothing to do: decoding was not hidden
                waited = time.perf_counter() - idle_since
                if started:
                    self.summary.wait_s += waited
                else:
                    self.summary.startup_s += waited
                idle_since = None
            started = True
            if msg[0] == "start":
                current[msg[2]] = msg[1]
            elif msg[0] == "end":
                remaining -= 1
                for pid, v in list(current.items()):
                    if v == msg[1]:
                        del current[pid]
            self._handle(received(msg))
            self._encode_ready(force=False)
            hand_out()
        self._encode_ready(force=True)

    def _run_tasks(self, work: list[_Video], specs: dict[str, StreamSpec], pooled: bool,
                   claimed: bool = False) -> None:
        """Decode the videos of ``work`` and encode their clips: in the decoding workers, or inline
        (the cluster job, :mod:`mrhd.extract.ray_job`, replaces this with Ray tasks and actors).
        ``claimed``: the videos are claimed and live already (taken over from another run)."""
        run = self._run_workers if pooled else self._run_inline
        run(work, specs, claimed)

    def run_videos(self, sources: list[Source]) -> Summary:
        self._t0 = time.perf_counter()
        pool = self.num_workers > 0 and len(sources) > 0
        if pool:
            if self._pool is None or self._pool.chunk != self.chunk:
                if self._pool is not None:
                    self._pool.stop()
                self._pool = DecodePool(self.num_workers, self.chunk, self.worker_threads)
            self._pool.start()
        elif self._pool is not None:
            self._pool.stop()
        try:
            self._open_stores()
            specs = self._specs()
            work = self._plan(sources)
            if self.progress and work:
                from tqdm import tqdm

                self._bar = tqdm(total=len(work), unit="video", desc="extract", dynamic_ncols=True,
                                 file=sys.stderr)
            self._run_tasks(work, specs, pooled=pool)
            while self._deferred:  # left to another run: wait for it, take over what it did not do
                self._run_tasks(self._take_over_deferred(), specs, pooled=pool, claimed=True)
        finally:
            for video in list(self._videos.values()) + self._deferred:
                self._release(video)
            if pool:
                self._pool.stop()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.summary.wall_s += time.perf_counter() - self._t0
            for st in self._streams.values():
                try:
                    with self._store_warnings():
                        st.store.commit()
                except OSError as err:
                    self.log(f"warning: could not merge {st.store.path} now ({err}); the next run does")
        return self.summary

    # -- queries
    def run_queries(self, annotations: str | Path | list, batch: int = 64) -> Summary:
        """Encode the queries of one or more annotation files with every text encoder. A qid already
        stored with the same text is skipped; stored with another text (another annotation set
        with the same qid numbers) it is refused, not overwritten (``--overwrite`` replaces)."""
        rows = read_queries(annotations, self.summary)
        for enc in self.text_encoders:
            path = store_path(self.out_dir, enc.info.stream)
            with self._store_warnings():
                store = FeatureStore(path, "a", info_at_clip_len(enc.info, self.clip_len),
                                     store_dtype=getattr(enc, "store_dtype", "float32"))
                store.commit()
            todo = []
            for qid, query, where in rows:
                if self.overwrite or not store.has(f"qid{qid}"):
                    todo.append((qid, query))
                    continue
                had = store.entry_attrs(f"qid{qid}").get("query")
                had = had.decode() if isinstance(had, bytes) else had
                if had is not None and had != query:
                    self.summary.query_failures.append(Failure(where, enc.info.stream, (
                        f"qid {qid} is already in {path.name} with another query ({had!r}); use another "
                        "--out folder for another annotation set, or --overwrite to replace it")))
            store.close_reader()
            for i in range(0, len(todo), batch):
                part = todo[i: i + batch]
                t0 = time.perf_counter()
                outs = enc.encode_texts([q for _, q in part])
                self.summary.encode_s += time.perf_counter() - t0
                store.write_texts(
                    ((qid, tok.float().cpu().numpy(), None if pooled is None else pooled.float().cpu().numpy(), q)
                     for (qid, q), (tok, pooled) in zip(part, outs)),
                    batch_name=f"qid-{enc.info.stream}-{os.getpid()}-{i}")
                self.summary.queries += len(part)
            with self._store_warnings():
                store.commit()
        return self.summary


def device_oom(err: Exception | str) -> bool:
    return "out of memory" in str(err).lower()


def read_queries(paths: str | Path | list, summary: Summary | None = None) -> list[tuple[str, str, str]]:
    """``(qid, query, "file:line")`` of QVHighlights-style JSONL files (one object per line with
    ``qid`` and ``query``); a qid seen again with the same text is one query, with another text it is
    a problem (its features could only match one of them). Problems go to ``summary`` in file order
    (or the first raises when there is none)."""
    rows: list[tuple[str, str, str]] = []
    first: dict[str, tuple[str, str]] = {}  # qid -> (query, where)
    for path in [paths] if isinstance(paths, str | Path) else list(paths):
        path = Path(path)
        if not path.is_file():
            raise MrhdError(f"--queries {path}: file not found")
        unreadable: list[int] = []
        objects = read_jsonl_numbered(path, on_bad_line=lambda bad, u=unreadable: u.append(bad.lineno))
        for lineno, obj in sorted(objects + [(n, None) for n in unreadable], key=lambda row: row[0]):
            where = f"{path}:{lineno}"
            if obj is None or "qid" not in obj or "query" not in obj:
                problem = Failure(where, None, "not a JSON object with 'qid' and 'query'")
            elif not isinstance(obj["query"], str) or not obj["query"].strip():
                problem = Failure(where, None, f"query {obj['qid']} is empty")
            elif str(obj["qid"]) in first and first[str(obj["qid"])][0] != obj["query"]:
                problem = Failure(where, None, f"qid {obj['qid']} has another query at {first[str(obj['qid'])][1]}; "
                                               "a qid must name one query (its features are stored by qid)")
            else:
                qid = str(obj["qid"])
                if qid not in first:
                    first[qid] = (obj["query"], where)
                    rows.append((qid, obj["query"], where))
                continue
            if summary is None:
                raise MrhdError(f"{problem.path}: {problem.reason}")
            summary.query_failures.append(problem)
    return rows


def install_sigterm() -> Callable[[], None]:
    """SIGTERM behaves like Ctrl-C (stores are merged, the summary printed); returns the undo."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
