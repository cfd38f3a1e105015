"""The batch job behind ``mrhd extract``: decode in worker processes, encode in device batches that
pack clips of several videos, write each finished video atomically, resume, report.

Flow: the main process owns the encoders and the stores; ``num_workers`` spawned processes each take
a video, decode every stream it needs in one pass (``decode.VideoDecoder``, ``audio``), run the
encoder's CPU-side ``preprocess`` where the encoder offers a picklable ``preprocessor``, and send
chunks of clips through a bounded queue (so a 3-hour video never piles up in memory). The main
process fills batches of ``batch_size`` clips from whatever videos are ready, encodes them, and writes
a video to its store once all its clips are encoded. Decoding thus overlaps model compute.

Resume: a video already complete in a stream's store is skipped for that stream (``--overwrite``
recomputes). A killed job leaves at most finished part files (see ``store.py``), which the next run
merges; the video that was in flight is simply recomputed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import queue
import resource
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrhd.errors import MrhdError
from mrhd.extract import sampling
from mrhd.extract.audio import iter_audio_chunks
from mrhd.extract.decode import VIDEO_KINDS, DecodeError, VideoDecoder, probe
from mrhd.extract.sources import Source
from mrhd.features.store import FeatureStore, store_path

COMMIT_EVERY_S = 30.0  # merge finished parts into the main files at least this often


@dataclass(frozen=True)
class StreamSpec:
    """What a decoding worker needs to know about one stream (picklable)."""

    stream: str
    kind: str
    preprocessor: Callable | None  # None: the main process runs encoder.preprocess
    window_picker: Callable | None = None  # window_frames: the encoder's window_frame_picker


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


# ------------------------------------------------------------------------------------ worker side
def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False


def _short(reason: str, path: str) -> str:
    """The message without the path prefix (the summary prints the path)."""
    prefix = f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _shared_picker(specs: list[StreamSpec]) -> Callable | None:
    """The window picker when every window_frames stream picks the same frames; otherwise None
    (whole windows, which each encoder's preprocess picks from: pickers are idempotent)."""
    pickers = {s.window_picker for s in specs}
    return pickers.pop() if len(pickers) == 1 else None


def decode_messages(path: str, vid: str, specs: list[StreamSpec], chunk: int, threads: int = 0) -> Iterator[tuple]:
    """Everything one video sends to the main process, in order:
    ``("chunk", vid, stream, start, payload, n)``, ``("done", vid, stream, n_clips, duration)`` or
    ``("error", vid, stream, reason)`` per stream. The caller sends ``("end", vid, seconds)`` after.
    ``threads``: decoder threads (0: FFmpeg's choice, one per core plus one)."""
    video_specs = [s for s in specs if s.kind in VIDEO_KINDS]
    audio_specs = [s for s in specs if s.kind == "audio_chunk"]
    duration = -1.0

    def pack(spec: StreamSpec, arrays: list):
        # numpy, not torch: torch shares tensors between processes through file descriptors that
        # die with the worker; a pickled array travels by value
        if spec.preprocessor is None:
            return list(arrays)
        out = spec.preprocessor(arrays)
        return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    if video_specs:
        buffers: dict[str, list] = {s.stream: [] for s in video_specs}
        starts = dict.fromkeys(buffers, 0)
        by_kind: dict[str, list[StreamSpec]] = defaultdict(list)
        for s in video_specs:
            by_kind[s.kind].append(s)
        sent: list[tuple] = []
        try:
            decoder = VideoDecoder(path, list(by_kind), threads=threads,
                                   window_picker=_shared_picker(by_kind.get("window_frames", [])))
            duration = decoder.info.duration
            for kind, _index, array in decoder:
                for spec in by_kind[kind]:
                    buf = buffers[spec.stream]
                    buf.append(array)
                    if len(buf) >= chunk:
                        yield ("chunk", vid, spec.stream, starts[spec.stream], pack(spec, buf), len(buf))
                        starts[spec.stream] += len(buf)
                        buf.clear()
            if duration <= 0 and decoder.t_end is not None:
                duration = float(decoder.t_end)
            for spec in video_specs:
                buf = buffers[spec.stream]
                if buf:
                    yield ("chunk", vid, spec.stream, starts[spec.stream], pack(spec, buf), len(buf))
                    starts[spec.stream] += len(buf)
                    buf.clear()
                if starts[spec.stream] == 0:
                    sent.append(("error", vid, spec.stream,
                                 "video too short: the sampler gives no clip"))
                else:
                    sent.append(("done", vid, spec.stream, starts[spec.stream], duration))
        except DecodeError as err:
            sent = [("error", vid, s.stream, _short(str(err), path)) for s in video_specs]
        except Exception as err:  # noqa: BLE001  (a damaged file must not end the batch)
            sent = [("error", vid, s.stream, f"decoding failed ({type(err).__name__}: {err})")
                    for s in video_specs]
        yield from sent

    for spec in audio_specs:
        buf, start = [], 0
        try:
            for _index, samples in iter_audio_chunks(path):
                buf.append(samples)
                if len(buf) >= chunk:
                    yield ("chunk", vid, spec.stream, start, pack(spec, buf), len(buf))
                    start += len(buf)
                    buf = []
            if buf:
                yield ("chunk", vid, spec.stream, start, pack(spec, buf), len(buf))
                start += len(buf)
            if start == 0:
                yield ("error", vid, spec.stream, "audio shorter than 2 s: no chunk")
            else:
                if duration <= 0:
                    duration = start * sampling.CLIP_LEN
                    try:
                        duration = probe(path).duration
                    except DecodeError:
                        pass
                yield ("done", vid, spec.stream, start, duration)
        except DecodeError as err:
            yield ("error", vid, spec.stream, _short(str(err), path))
        except Exception as err:  # noqa: BLE001
            yield ("error", vid, spec.stream, f"audio decoding failed ({type(err).__name__}: {err})")


def timed_messages(path: str, vid: str, specs: list[StreamSpec], chunk: int, threads: int = 0) -> Iterator[tuple]:
    """``decode_messages`` then ``("end", vid, seconds)``, seconds = time spent producing them (not
    time the consumer held the generator)."""
    spent = cpu = 0.0
    gen = decode_messages(path, vid, specs, chunk, threads)
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            msg = next(gen)
        except StopIteration:
            msg = None
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if msg is None:
            break
        yield msg
    yield ("end", vid, spent, peak_rss_mb(), cpu)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the main process dies (even by kill -9), so no
    orphan keeps decoding; elsewhere the ppid checks in :func:`_worker_main` do it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(tasks, results, chunk: int, threads: int, parent: int) -> None:
    """A decoding process: Ctrl-C is left to the main process, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:  # the main process died while this one was starting
        return
    torch.set_num_threads(max(1, threads))

    def put(msg) -> None:
        while True:
            try:
                results.put(msg, timeout=1.0)
                return
            except queue.Full:
                if os.getppid() != parent:
                    os._exit(0)

    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None:
            return
        path, vid, specs = task
        put(("start", vid, os.getpid()))
        # one decoder thread: the workers already run side by side with the model, and FFmpeg's
        # frame threads cost ~30% more CPU per clip (13.5 vs 10.5 ms, 640x360 H.264, 2-core CPU)
        for msg in timed_messages(path, vid, specs, chunk, threads=max(1, threads)):
            put(msg)


# ------------------------------------------------------------------------------------ main side
class _Interrupted(Exception):
    pass


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


class DecodePool:
    """The spawned decoding workers. Start it early (``mrhd extract`` starts it before building the
    encoders): each worker imports torch and the preprocessors, which takes seconds, and that can
    overlap with loading the models."""

    def __init__(self, num_workers: int, chunk: int, threads: int = 1):
        self.num_workers = num_workers
        self.chunk = chunk
        self.threads = threads
        self.workers: dict[int, mp.Process] = {}
        self.started = False

    def start(self) -> DecodePool:
        if not self.started:
            self.ctx = mp.get_context("spawn")
            self.tasks = self.ctx.Queue()
            self.results = self.ctx.Queue(maxsize=max(4, 4 * self.num_workers))
            for _ in range(self.num_workers):
                self.spawn()
            self.started = True
        return self

    def spawn(self) -> None:
        p = self.ctx.Process(target=_worker_main, daemon=True,
                             args=(self.tasks, self.results, self.chunk, self.threads, os.getpid()))
        p.start()
        self.workers[p.pid] = p

    def stop(self) -> None:
        if not self.started:
            return
        for p in self.workers.values():
            if p.is_alive():
                p.terminate()
        for p in self.workers.values():
            p.join(timeout=5)
        self.results.cancel_join_thread()
        self.tasks.cancel_join_thread()
        self.workers.clear()
        self.started = False


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
    def _encode_batch(self, name: str, st: _Stream, limit: int) -> None:
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
        live = [p for p in parts if p[0] in self._videos and name in self._videos[p[0]].streams]
        if not live:
            return
        enc = st.encoder
        t0 = time.perf_counter()
        try:
            tensors = [torch.from_numpy(p[2]) if isinstance(p[2], np.ndarray)
                       else p[2] if isinstance(p[2], torch.Tensor) else enc.preprocess(p[2]) for p in live]
            batch = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            device = getattr(enc, "device", torch.device("cpu"))
            dtype = getattr(enc, "autocast_dtype", None)
            ctx = (torch.autocast(device_type="cuda", dtype=dtype)
                   if device.type == "cuda" and dtype is not None else nullcontext())
            with torch.inference_mode(), ctx:
                feats = enc.encode(batch.to(device, non_blocking=True))
            feats = feats.float().cpu().numpy()
            if feats.shape[0] != batch.shape[0]:
                raise RuntimeError(f"returned {feats.shape[0]} rows for {batch.shape[0]} clips")
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: these videos fail, the job goes on
            if device_oom(err):
                err = RuntimeError("out of device memory; lower --batch-size")
            for vid in dict.fromkeys(p[0] for p in live):
                self._fail(vid, name, f"encoder {name} failed ({str(err).splitlines()[0][:200]})")
            return
        finally:
            self.summary.encode_s += time.perf_counter() - t0
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
            if not pool:
                self._run_inline(tasks)
            else:
                self._run_workers(tasks)
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


def device_oom(err: Exception) -> bool:
    return "out of memory" in str(err).lower()


def read_queries(path: str | Path, summary: Summary | None = None) -> list[tuple[str, str]]:
    """``(qid, query)`` of a QVHighlights-style JSONL file (one object per line with ``qid`` and
    ``query``); bad lines are reported in ``summary`` (or raise when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"--queries {path}: file not found")
    rows, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            qid, query = obj["qid"], obj["query"]
        except (ValueError, KeyError, TypeError):
            problem = Failure(f"{path}:{lineno}", None, "not a JSON object with 'qid' and 'query'")
        else:
            if not isinstance(query, str) or not query.strip():
                problem = Failure(f"{path}:{lineno}", None, f"query {qid} is empty")
            else:
                if str(qid) not in seen:
                    seen.add(str(qid))
                    rows.append((str(qid), query))
                continue
        if summary is None:
            raise MrhdError(f"{problem.path}: {problem.reason}")
        summary.failures.append(problem)
    return rows


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB. ``VmHWM`` rather than ``ru_maxrss``: a spawned
    worker inherits ru_maxrss from the fork of its (large) parent, VmHWM starts afresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def install_sigterm() -> Callable[[], None]:
    """SIGTERM behaves like Ctrl-C (stores are merged, the summary printed); returns the undo."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


__all__ = ["DecodePool", "ExtractJob", "Summary", "Failure", "StreamSpec", "decode_messages", "read_queries",
           "peak_rss_mb", "install_sigterm"]
