"""The scheduler behind ``mrhd extract``: list the work, pack clips of several videos into device
batches, write each finished video atomically, resume, report.

Flow: the main process owns the encoders and the stores; ``num_workers`` decoding processes
(:mod:`mrhd.extract.worker`) each take a video and send its clips in chunks. The main process fills
batches of ``batch_size`` clips from whatever videos are ready, encodes them, and writes a video to
its store once all its clips are encoded; finished parts are merged into the stores every
:data:`COMMIT_EVERY_S` seconds and at the end.

Resume: a video already complete in a stream's store is skipped for that stream (``--overwrite``
recomputes). A killed job leaves at most finished part files (see ``features/store.py``), which the
next run merges; the video that was in flight is simply recomputed.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrhd.encoders.base import encode_clips
from mrhd.errors import MrhdError
from mrhd.extract.sources import Source
from mrhd.extract.worker import DecodePool, StreamSpec, timed_messages
from mrhd.features.store import FeatureStore, store_path
from mrhd.io import read_jsonl_numbered

COMMIT_EVERY_S = 30.0  # merge finished parts into the main files at least this often


@dataclass
class Failure:
    path: str
    stream: str | None
    reason: str


@dataclass
class Summary:
    stored: int = 0  # videos written (every asked stream done or failed, at least one stored)
    skipped: int = 0  # videos already complete in every asked stream
    failures: list[Failure] = field(default_factory=list)
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

    @property
    def failed_paths(self) -> list[str]:
        return sorted({f.path for f in self.failures})

    def report(self) -> str:
        lines = [f"stored {self.stored} video(s), skipped {self.skipped} already stored, "
                 f"failed {len(self.failed_paths)}"
                 + (f"; {self.queries} quer{'y' if self.queries == 1 else 'ies'} encoded" if self.queries else "")
                 + (f"; {self.queries_note}" if self.queries_note else "")
                 + (" (interrupted: re-run the same command to finish)" if self.interrupted else "")]
        by_path: dict[str, list[Failure]] = defaultdict(list)
        for f in self.failures:
            by_path[f.path].append(f)
        for path in sorted(by_path):
            reasons: dict[str, list[str]] = defaultdict(list)
            for f in by_path[path]:
                reasons[f.reason].append(f.stream or "")
            for reason, streams in reasons.items():
                names = ",".join(s for s in streams if s)
                lines.append(f"  FAILED {path}" + (f" [{names}]" if names else "") + f": {reason}")
        return "\n".join(lines)


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
    ended: bool = False


class ExtractJob:
    """One ``mrhd extract`` run over already-built encoders (see ``mrhd.commands.extract``).

    ``encoders``: VideoEncoder objects; ``text_encoders``: TextEncoder objects for ``queries``.
    """

    def __init__(self, encoders: list, out_dir: str | Path, *, text_encoders: list | None = None,
                 batch_size: int = 16, num_workers: int = 1, overwrite: bool = False,
                 progress: bool = True, chunk: int | None = None, worker_threads: int = 1,
                 log=None, pool: DecodePool | None = None):
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
        self._last_commit = time.monotonic()
        self._bar = None
        self._inline = self.num_workers == 0
        self._pool = pool

    @staticmethod
    def default_chunk(batch_size: int) -> int:
        """Clips per message from a worker: small enough to start encoding early, large enough to
        keep the queue overhead low."""
        return max(1, min(batch_size, 16))

    # -- stores
    def _open_stores(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MrhdError(f"cannot create output folder {self.out_dir} ({err.strerror}); "
                            "choose a writable --out folder") from err
        for enc in self.encoders:
            path = store_path(self.out_dir, enc.info.stream)
            store = FeatureStore(path, "a", enc.info, store_dtype=getattr(enc, "store_dtype", "float16"))
            store.commit()  # parts left by a killed run join the store first
            self._streams[enc.info.stream] = _Stream(enc, store)

    def _commit(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_commit > COMMIT_EVERY_S:
            for st in self._streams.values():
                st.store.commit()
            self._last_commit = time.monotonic()

    # -- planning
    def _specs(self) -> dict[str, StreamSpec]:
        specs = {}
        for name, st in self._streams.items():
            pre = getattr(st.encoder, "preprocessor", None)
            picker = getattr(st.encoder, "window_frame_picker", None) if st.encoder.input_kind == "window_frames" \
                else None
            specs[name] = StreamSpec(name, st.encoder.input_kind, pre if pre is not None and _picklable(pre) else None,
                                     picker if picker is not None and _picklable(picker) else None)
        return specs

    def _plan(self, sources: list[Source]) -> list[tuple[str, str, list[StreamSpec]]]:
        specs = self._specs()
        tasks = []
        for src in sources:
            todo = [spec for name, spec in specs.items()
                    if self.overwrite or not self._streams[name].store.has(src.video_id)]
            if not todo:
                self.summary.skipped += 1
                continue
            self._videos[src.video_id] = _Video(src, {s.stream for s in todo})
            tasks.append((str(src.path), src.video_id, todo))
        return tasks

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
            self._streams[name].store.write(vid, feats, duration)
        except (OSError, MrhdError) as err:
            self._fail(vid, name, f"cannot write the store ({err})")
            return
        video.stored.add(name)
        video.streams.discard(name)
        del video.rows[name]
        self._maybe_close(vid)

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
                self.summary.failures.append(Failure(str(video.source.path), n, reason))
        self._maybe_close(vid)

    def _maybe_close(self, vid: str) -> None:
        video = self._videos[vid]
        if video.streams or not video.ended:
            return
        if video.stored:
            self.summary.stored += 1
            dur = max(exp[1] for s, exp in video.expected.items() if s in video.stored)
            self.summary.video_seconds += max(dur, 0.0)
        del self._videos[vid]
        if self._bar is not None:
            self._bar.update(1)
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            self._bar.set_postfix_str(f"{sum(self.summary.clips.values()) / elapsed:.1f} clips/s")
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
        elif kind == "done":
            _, _, name, n_clips, duration = msg
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
    def _run_inline(self, tasks) -> None:
        """Decode in this process (``--num-workers 0``): simple, and all decoding time is exposed."""
        for path, vid, specs in tasks:
            for msg in timed_messages(path, vid, specs, self.chunk):
                if msg[0] == "end":
                    self.summary.wait_s += msg[2]
                self._handle(msg)
                self._encode_ready(force=False)
        self._encode_ready(force=True)

    def _run_workers(self, tasks) -> None:
        pool = self._pool
        for task in tasks:
            pool.tasks.put(task)
        for _ in range(pool.num_workers):
            pool.tasks.put(None)
        workers, results = pool.workers, pool.results
        current: dict[int, str] = {}
        remaining = len(tasks)
        started = False
        idle_since = None
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
            self._handle(msg)
            self._encode_ready(force=False)
        self._encode_ready(force=True)

    def _run_tasks(self, tasks, pooled: bool) -> None:
        """Decode the planned videos and encode their clips: in the decoding workers, or inline
        (the cluster job, :mod:`mrhd.extract.ray_job`, replaces this with Ray tasks and actors)."""
        if pooled:
            self._run_workers(tasks)
        else:
            self._run_inline(tasks)

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
            tasks = self._plan(sources)
            if self.progress and tasks:
                from tqdm import tqdm

                self._bar = tqdm(total=len(tasks), unit="video", desc="extract", dynamic_ncols=True,
                                 file=sys.stderr)
            self._run_tasks(tasks, pooled=pool)
        finally:
            if pool:
                self._pool.stop()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.summary.wall_s += time.perf_counter() - self._t0
            for st in self._streams.values():
                try:
                    st.store.commit()
                except OSError as err:
                    self.log(f"warning: could not merge {st.store.path} now ({err}); the next run does")
        return self.summary

    # -- queries
    def run_queries(self, annotations: str | Path, batch: int = 64) -> Summary:
        rows = read_queries(annotations, self.summary)
        for enc in self.text_encoders:
            path = store_path(self.out_dir, enc.info.stream)
            store = FeatureStore(path, "a", enc.info, store_dtype=getattr(enc, "store_dtype", "float32"))
            store.commit()
            todo = [r for r in rows if self.overwrite or not store.has(f"qid{r[0]}")]
            for i in range(0, len(todo), batch):
                part = todo[i: i + batch]
                t0 = time.perf_counter()
                outs = enc.encode_texts([q for _, q in part])
                self.summary.encode_s += time.perf_counter() - t0
                store.write_texts(
                    ((qid, tok.float().cpu().numpy(), None if pooled is None else pooled.float().cpu().numpy())
                     for (qid, _), (tok, pooled) in zip(part, outs)),
                    batch_name=f"qid-{enc.info.stream}-{os.getpid()}-{i}")
                self.summary.queries += len(part)
            store.commit()
        return self.summary


def device_oom(err: Exception | str) -> bool:
    return "out of memory" in str(err).lower()


def read_queries(path: str | Path, summary: Summary | None = None) -> list[tuple[str, str]]:
    """``(qid, query)`` of a QVHighlights-style JSONL file (one object per line with ``qid`` and
    ``query``, first line of a qid wins); bad lines are reported in ``summary`` in file order (or
    the first raises when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"--queries {path}: file not found")
    unreadable: list[int] = []
    objects = read_jsonl_numbered(path, on_bad_line=lambda bad: unreadable.append(bad.lineno))
    rows, seen = [], set()
    for lineno, obj in sorted(objects + [(n, None) for n in unreadable], key=lambda row: row[0]):
        if obj is None or "qid" not in obj or "query" not in obj:
            problem = Failure(f"{path}:{lineno}", None, "not a JSON object with 'qid' and 'query'")
        elif not isinstance(obj["query"], str) or not obj["query"].strip():
            problem = Failure(f"{path}:{lineno}", None, f"query {obj['qid']} is empty")
        else:
            if str(obj["qid"]) not in seen:
                seen.add(str(obj["qid"]))
                rows.append((str(obj["qid"]), obj["query"]))
            continue
        if summary is None:
            raise MrhdError(f"{problem.path}: {problem.reason}")
        summary.failures.append(problem)
    return rows


def install_sigterm() -> Callable[[], None]:
    """SIGTERM behaves like Ctrl-C (stores are merged, the summary printed); returns the undo."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
