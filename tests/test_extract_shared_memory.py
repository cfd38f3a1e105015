"""Chunks from the decoding workers travel through shared memory, not through the results pipe."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from mrhd.extract import worker
from mrhd.extract.worker import SHARED_MIN_BYTES, DecodePool, SharedArray, received, shipped

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs POSIX shared memory (/dev/shm)")


def _blocks() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _send(q, shape, seed, n=1):
    """A worker's side: n chunk messages as `_worker_main` puts them."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        q.put(shipped(("chunk", "vid", "slowfast", 0, rng.integers(0, 255, shape, dtype=np.uint8), shape[0])))


def test_a_large_chunk_crosses_processes_by_name_and_arrives_equal():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    shape = (2, 32, 96, 96, 3)   # 0.9 MB per clip, 1.8 MB per chunk: over the threshold
    assert np.prod(shape) >= SHARED_MIN_BYTES
    before = _blocks()
    p = ctx.Process(target=_send, args=(q, shape, 7))
    p.start()
    msg = q.get(timeout=60)
    p.join(timeout=60)
    assert isinstance(msg[4], SharedArray) and msg[4].name.lstrip("/") in _blocks() - before
    kind, vid, stream, start, payload, n = received(msg)
    expected = np.random.default_rng(7).integers(0, 255, shape, dtype=np.uint8)
    assert (kind, vid, stream, start, n) == ("chunk", "vid", "slowfast", 0, 2)
    np.testing.assert_array_equal(payload, expected)
    assert _blocks() == before   # taken once, then removed


def test_small_chunks_and_other_messages_travel_by_value():
    small = np.ones((4, 8), np.float32)
    msg = shipped(("chunk", "v", "clip", 0, small, 4))
    assert msg[4] is small
    for other in (("done", "v", "clip", 4, 8.0), ("chunk", "v", "pann", 0, [small], 1)):
        assert shipped(other) is other and received(other) is other


def test_without_room_in_shared_memory_the_chunk_travels_by_value(monkeypatch):
    """A full tmpfs kills whoever writes into a mapped block (SIGBUS): check the room first."""
    monkeypatch.setattr(worker, "_shm_has_room", lambda nbytes: False)
    big = np.zeros(SHARED_MIN_BYTES, np.uint8)
    assert shipped(("chunk", "v", "slowfast", 0, big, 1))[4] is big


def test_room_is_read_from_the_filesystem(monkeypatch, tmp_path):
    monkeypatch.setattr(worker, "SHM_DIR", str(tmp_path))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert worker._shm_has_room(free // 4)
    assert not worker._shm_has_room(free)


UNREAD = """
import multiprocessing as mp, sys
sys.path.insert(0, sys.argv[1])
from test_extract_shared_memory import _send
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_send, args=(q, (2, 32, 96, 96, 3), 1))
    p.start()
    print(q.get(timeout=60)[4].name, flush=True)   # seen, never taken: a job stopped half-way
    p.join(timeout=60)
"""


def test_a_block_nobody_took_is_removed_when_the_program_ends(tmp_path):
    """Workers share the main process's resource tracker, which removes what is left at exit."""
    import subprocess
    import sys

    script = tmp_path / "unread.py"
    script.write_text(UNREAD)
    out = subprocess.run([sys.executable, str(script), os.path.dirname(__file__)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip().lstrip("/")
    assert name
    deadline = time.monotonic() + 10   # the tracker is a process of its own: it may finish just after
    while name in _blocks() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name not in _blocks()


def test_a_job_with_workers_stores_what_inline_decoding_stores(tmp_path, monkeypatch):
    """End to end: SlowFast-like chunks (32 frames a clip) come back from a worker by shared
    memory, and the store holds the same features as a job that decodes in its own process."""
    import mrhd.extract.job as job_module
    from mrhd.extract.job import ExtractJob
    from mrhd.extract.sources import expand_inputs
    from mrhd.extract.synthetic import write_video
    from mrhd.features.store import FeatureStore, store_path
    from tests.helpers.extract_encoders import StatsEncoder

    video = write_video(tmp_path / "v.mp4", duration=8.0, fps=25, width=96, height=64, audio=False)
    arrived = []

    def recording(msg):
        arrived.append(type(msg[4]).__name__ if msg[0] == "chunk" else None)
        return received(msg)

    monkeypatch.setattr(job_module, "received", recording)
    stores = {}
    for workers in (1, 0):
        out = tmp_path / f"out{workers}"
        ExtractJob([StatsEncoder("slowfast", "slowfast_clip")], out, num_workers=workers, batch_size=4,
                   chunk=2, progress=False).run_videos(expand_inputs([str(video)]).sources)
        stores[workers] = FeatureStore(store_path(out, "slowfast")).read("v")
    assert arrived.count("SharedArray") >= 2   # 2 clips of 32 x 64 x 96 x 3 float32: 4.7 MB a chunk
    assert len(stores[0]) == 4
    np.testing.assert_array_equal(stores[1], stores[0])


def test_a_block_gone_before_it_is_read_fails_that_stream_only():
    msg = shipped(("chunk", "vid", "slowfast", 0, np.zeros(SHARED_MIN_BYTES, np.uint8), 1))
    received(msg)   # taken once: the block is removed
    kind, vid, stream, reason = received(msg)
    assert (kind, vid, stream) == ("error", "vid", "slowfast")
    assert "lost in shared memory" in reason and "again" in reason


def test_a_stopped_pool_removes_the_blocks_nobody_read():
    """A job stopped half-way (Ctrl-C) leaves chunks on the queue: stop() removes their blocks."""
    pool = DecodePool(num_workers=1, chunk=4).start()
    before = _blocks()
    try:
        ctx = mp.get_context("spawn")
        sender = ctx.Process(target=_send, args=(pool.results, (2, 32, 96, 96, 3), 0, 3))
        sender.start()
        sender.join(timeout=60)   # a sender's queue is flushed before it exits
        assert len(_blocks() - before) == 3
    finally:
        pool.stop()
    assert _blocks() - before == set()
