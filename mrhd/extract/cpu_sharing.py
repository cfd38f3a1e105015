"""How the model's CPU threads share the cores with the decoding workers.

On a CPU the encoder runs on OpenMP threads (libgomp in the torch wheels) while the decoding workers
run beside it. libgomp lets a thread that reached a barrier spin 300,000 rounds before it sleeps, so
a model thread that waits for its partner keeps a core busy that a worker needs, and the worker in
turn delays the partner. A shorter spin gives the worker those idle moments: on the 2-core CPU of
``benchmarks/extract.py`` (ViT-B/32, 640x360 H.264) end-to-end CLIP extraction went from 23.1 to
24.2-25.5 clips/s (two runs each of default, 30,000 and 10,000 rounds) while the model alone stayed
within its run-to-run spread (about 31 clips/s against 32 with the default).

On a GPU the model's arithmetic leaves the CPU, but the main process still assembles every batch
from the decoded clips and copies it to the GPU on torch's CPU threads, one per core by default,
while the decoding workers need those cores: on a 16-core H200 host with 15 workers (``docs/cluster.md``) four main
threads and the shorter spin together took CLIP from 406 to 616 clips/s after start-up and PANNs
from 653 to 781, and the main process's share in the encode step from 62 % to 27-30 %.
"""

from __future__ import annotations

import os
import sys

OPENMP_SPIN_ROUNDS = 30_000
GPU_MAIN_THREADS = 4   # torch threads of the extracting process when a GPU encodes (measured above)


def share_cores_with_decoders(device: str, rounds: int = OPENMP_SPIN_ROUNDS, gpu_too: bool = False) -> bool:
    """Shorten libgomp's spin-wait to ``rounds`` for a CPU run (and a GPU run with ``gpu_too``: `mrhd
    extract`, whose decoding workers share the cores either way), unless the user set
    ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` already. libgomp reads them once, when torch loads it,
    so this must run before the first ``import torch``; returns whether the setting was made. (`mrhd
    serve` passes its own, shorter count: mrhd.serve.server.OPENMP_SPIN_ROUNDS.)"""
    if not (device.startswith("cpu") or gpu_too) or "torch" in sys.modules:
        return False
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(rounds)
    return True


def main_process_threads(device: str, requested: int | None, cores: int | None = None) -> int:
    """Torch threads for the process that encodes: ``requested`` when given; on a CPU every core
    (the model is the work); on a GPU at most :data:`GPU_MAIN_THREADS`, leaving the cores to the
    decoding workers."""
    cores = cores or os.cpu_count() or 1
    if requested is not None:
        return max(1, requested)
    return cores if device.startswith("cpu") else min(GPU_MAIN_THREADS, cores)
