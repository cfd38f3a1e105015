"""Clips per second the decoding workers' results queue carries, by value against shared memory.

Each producer process puts chunk messages as a decoding worker does (``mrhd.extract.worker``: a
chunk of uint8 clips, SlowFast-sized by default: 32 x 224 x 224 x 3 = 4.8 MB a clip); the main
process takes them as the job does. "by value" pickles the array through the queue's pipe (the
job before shared memory), "shared memory" sends it as a named block (``shipped`` / ``received``).

    python benchmarks/worker_transport.py [--producers 2] [--chunk 16] [--chunks 12]
    python benchmarks/worker_transport.py --clip-shape 224,224,3        # CLIP-sized clips
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from mrhd.extract.worker import received, shipped  # noqa: E402


def _produce(q, shape, n, shared):
    chunk = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    for _ in range(n):
        msg = ("chunk", "v", "stream", 0, chunk, shape[0])
        q.put(shipped(msg) if shared else msg)


def measure(shape, producers: int, chunks: int, shared: bool) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=4 * producers)   # bounded as the job's
    procs = [ctx.Process(target=_produce, args=(q, shape, chunks, shared)) for _ in range(producers)]
    for p in procs:
        p.start()
    received(q.get(timeout=120))   # the clock starts once the producers run
    t0 = time.perf_counter()
    for _ in range(producers * chunks - 1):
        msg = received(q.get(timeout=120))
        assert msg[4].shape == shape
    dt = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
    return (producers * chunks - 1) * shape[0] / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16, help="clips per message (the job's default for batch >= 16)")
    ap.add_argument("--chunks", type=int, default=12, help="messages per producer")
    ap.add_argument("--clip-shape", default="32,224,224,3", help="one clip's uint8 array")
    args = ap.parse_args(argv)
    shape = (args.chunk, *(int(x) for x in args.clip_shape.split(",")))
    mb = np.prod(shape[1:]) / 1e6
    print(f"# {args.producers} producer(s), chunks of {args.chunk} clips of {shape[1:]} uint8 ({mb:.2f} MB a clip), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for shared in (False, True):
        rate = measure(shape, args.producers, args.chunks, shared)
        print(f"{'shared memory' if shared else 'by value':>14}: {rate:7.0f} clips/s ({rate * mb:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
