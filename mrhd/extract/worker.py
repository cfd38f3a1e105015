"""The worker side of ``mrhd extract``: decoding processes that turn one video at a time into chunks
of clips for the main process (:mod:`mrhd.extract.job` schedules them and runs the encoders).

A worker takes a video, decodes every stream it needs in one pass (``decode.VideoDecoder``,
``audio``), runs the encoder's CPU-side ``preprocess`` where the encoder offers a picklable
``preprocessor``, and sends chunks of clips through a bounded queue, so a 3-hour video never piles up
in memory and decoding overlaps model compute; a chunk's array of 1 MB or more goes in a shared-memory
block whose name travels on the queue (:class:`SharedArray`). Workers are spawned (not forked: the main process
holds CUDA and HDF5 handles) and die with the main process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import resource
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import torch

from mrhd.extract import sampling
from mrhd.extract.audio import AudioChunks
from mrhd.extract.decode import VIDEO_KINDS, DecodeError, VideoDecoder
from mrhd.extract.sources import source_file


@dataclass(frozen=True)
class StreamSpec:
    """What a decoding worker needs to know about one stream (picklable)."""

    stream: str
    kind: str
    preprocessor: Callable | None  # None: the main process runs encoder.preprocess
    window_picker: Callable | None = None  # window_frames: the encoder's window_frame_picker
    clip_len: float = sampling.CLIP_LEN    # seconds per clip (mrhd extract --clip-len)


def _short(reason: str, path: str) -> str:
    """The message without the path prefix (the summary prints the path)."""
    prefix = f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _shared_picker(specs: list[StreamSpec]) -> Callable | None:
    """The window picker when every window_frames stream picks the same frames; otherwise None
    (whole windows, which each encoder's preprocess picks from: pickers are idempotent)."""
    pickers = {s.window_picker for s in specs}
    return pickers.pop() if len(pickers) == 1 else None


SHARED_MIN_BYTES = 1 << 20   # smaller arrays travel by value: a block costs a few system calls
SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class SharedArray:
    """A chunk's array in a shared-memory block: the results queue carries this name, not the bytes.

    Why: the queue pickles a payload and pushes it through one pipe that every worker shares; it
    moved ~55-60 SlowFast clips (4.8 MB each) per second, which capped a GPU's extraction at 65
    clips/s against 357 for the model alone (docs/cluster.md). A block costs the worker one copy and
    the main process one copy (:meth:`take`). The block is registered with the resource tracker
    the spawned workers share with the main process, so one left behind by a killed job is removed
    when the program exits."""

    name: str
    shape: tuple
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> SharedArray | np.ndarray:
        """The array in a new block, or the array itself where it is small or shared memory lacks
        the room (a full tmpfs would kill the writer with SIGBUS, e.g. Docker's 64-MB /dev/shm)."""
        # POSIX only: a Windows mapping dies with its creator's last handle, before the reader opens it
        if os.name != "posix" or array.nbytes < SHARED_MIN_BYTES or not _shm_has_room(array.nbytes):
            return array
        try:
            block = shared_memory.SharedMemory(create=True, size=array.nbytes)
        except OSError:
            return array
        try:
            np.ndarray(array.shape, array.dtype, buffer=block.buf)[...] = array
        finally:
            block.close()
        return cls(block.name, tuple(array.shape), array.dtype.str)

    def take(self) -> np.ndarray:
        """The array (a copy in this process's memory); the block is removed."""
        block = shared_memory.SharedMemory(name=self.name)
        try:
            return np.ndarray(self.shape, np.dtype(self.dtype), buffer=block.buf).copy()
        finally:
            block.close()
            block.unlink()

    def remove(self) -> None:
        """Remove the block unread (a chunk nobody will encode)."""
        try:
            block = shared_memory.SharedMemory(name=self.name)
        except OSError:   # already gone
            return
        block.close()
        block.unlink()


def _shm_has_room(nbytes: int) -> bool:
    """Room for the block and as much again (other workers write theirs at the same time)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return True   # no /dev/shm to look at (not Linux): let SharedMemory say
    return st.f_bavail * st.f_frsize >= 2 * nbytes


def shipped(msg: tuple) -> tuple:
    """A worker's message as it goes on the results queue: a chunk's large array in shared memory."""
    if msg[0] == "chunk" and isinstance(msg[4], np.ndarray):
        return msg[:4] + (SharedArray.of(msg[4]),) + msg[5:]
    return msg


def received(msg: tuple) -> tuple:
    """A message from the results queue with its chunk's array back in this process; a block that
    is gone (e.g. systemd's RemoveIPC at logout) fails that video's stream, not the job."""
    if msg[0] == "chunk" and isinstance(msg[4], SharedArray):
        try:
            return msg[:4] + (msg[4].take(),) + msg[5:]
        except OSError as err:
            return ("error", msg[1], msg[2], f"decoded clips lost in shared memory ({err.strerror or err}); "
                                             "extract this video again")
    return msg


def decode_messages(path: str, vid: str, specs: list[StreamSpec], chunk: int, threads: int = 0,
                    sha256: str | None = None) -> Iterator[tuple]:
    """Everything one video sends to the main process, in order: ``("source", vid, source_file)``
    (the file's hash, size, path: the store records it), then ``("chunk", vid, stream, start,
    payload, n)``, ``("done", vid, stream, n_clips, duration)`` or ``("error", vid, stream, reason)``
    per stream, and ``("warning", vid, text)`` for a file that ends before its header says. The
    caller sends ``("end", vid, seconds)`` after. ``duration`` is what was decoded.
    ``threads``: decoder threads (0: FFmpeg's choice, one per core plus one). ``sha256``: the
    file's hash when the main process already has it (hashed once)."""
    video_specs = [s for s in specs if s.kind in VIDEO_KINDS]
    audio_specs = [s for s in specs if s.kind == "audio_chunk"]
    clip_len = specs[0].clip_len if specs else sampling.CLIP_LEN
    duration = -1.0
    try:
        yield ("source", vid, source_file(path, sha256))
    except OSError:
        pass  # gone or unreadable: decoding says so

    def pack(spec: StreamSpec, arrays: list):
        # numpy, not torch: torch shares tensors between processes through file descriptors that
        # die with the worker; an array travels by value or in a named block (shipped())
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
                                   window_picker=_shared_picker(by_kind.get("window_frames", [])), clip_len=clip_len)
            for kind, _index, array in decoder:
                for spec in by_kind[kind]:
                    buf = buffers[spec.stream]
                    buf.append(array)
                    if len(buf) >= chunk:
                        yield ("chunk", vid, spec.stream, starts[spec.stream], pack(spec, buf), len(buf))
                        starts[spec.stream] += len(buf)
                        buf.clear()
            info = decoder.info
            duration = float(decoder.t_end) if decoder.t_end is not None else info.duration
            short = sampling.ends_early(duration, info.stream_duration if info.stream_duration > 0 else info.duration)
            if short:
                sent.append(("warning", vid, short))
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
            audio = AudioChunks(path)
            for _index, samples in audio:
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
                if duration <= 0:  # no video decoded in this pass: the audio's length
                    duration = audio.seconds
                    short = sampling.ends_early(audio.seconds, audio.header_seconds, "audio")
                    if short:
                        yield ("warning", vid, short)
                yield ("done", vid, spec.stream, start, duration)
        except DecodeError as err:
            yield ("error", vid, spec.stream, _short(str(err), path))
        except Exception as err:  # noqa: BLE001
            yield ("error", vid, spec.stream, f"audio decoding failed ({type(err).__name__}: {err})")


def timed_messages(path: str, vid: str, specs: list[StreamSpec], chunk: int, threads: int = 0,
                   sha256: str | None = None) -> Iterator[tuple]:
    """``decode_messages`` then ``("end", vid, seconds)``, seconds = time spent producing them (not
    time the consumer held the generator)."""
    spent = cpu = 0.0
    gen = decode_messages(path, vid, specs, chunk, threads, sha256)
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
        path, vid, specs, sha256 = task
        put(("start", vid, os.getpid()))
        # one decoder thread: the workers already run side by side with the model, and FFmpeg's
        # frame threads cost ~30% more CPU per clip (13.5 vs 10.5 ms, 640x360 H.264, 2-core CPU)
        for msg in timed_messages(path, vid, specs, chunk, threads=max(1, threads), sha256=sha256):
            put(shipped(msg))


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
        self._remove_unread_blocks()
        self.results.cancel_join_thread()
        self.tasks.cancel_join_thread()
        self.workers.clear()
        self.started = False

    def _remove_unread_blocks(self, wait: float = 2.0) -> None:
        """Remove the shared blocks of chunks nobody will read (a job stopped half-way), which the
        resource tracker would otherwise remove at exit with a warning. In a thread of its own: a
        message that a terminated worker cut short would block the reader for good."""
        def drain() -> None:
            while True:
                try:
                    msg = self.results.get(timeout=0.1)
                except Exception:  # noqa: BLE001  (empty, or the queue is closed)
                    return
                if msg[0] == "chunk" and isinstance(msg[4], SharedArray):
                    msg[4].remove()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        reader.join(wait)


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
