"""How the model's CPU threads share the cores with the decoding workers.

On a CPU the encoder runs on OpenMP threads (libgomp in the torch wheels) while the decoding workers
run beside it. libgomp lets a thread that reached a barrier spin 300,000 rounds before it sleeps, so
a model thread that waits for its partner keeps a core busy that a worker needs, and the worker in
turn delays the partner. A shorter spin gives the worker those idle moments: on the 2-core CPU of
``benchmarks/extract.py`` (ViT-B/32, 640x360 H.264) end-to-end CLIP extraction went from 23.1 to
24.2-25.5 clips/s (two runs each of default, 30,000 and 10,000 rounds) while the model alone stayed
within its run-to-run spread (about 31 clips/s against 32 with the default).
"""

from __future__ import annotations

import os
import sys

OPENMP_SPIN_ROUNDS = 30_000


def share_cores_with_decoders(device: str, rounds: int = OPENMP_SPIN_ROUNDS) -> bool:
    """Shorten libgomp's spin-wait to ``rounds`` for a CPU run, unless the user set ``GOMP_SPINCOUNT``
    or ``OMP_WAIT_POLICY`` already. libgomp reads them once, when torch loads it, so this must run
    before the first ``import torch``; returns whether the setting was made. (`mrhd serve` passes
    its own, shorter count: mrhd.serve.server.OPENMP_SPIN_ROUNDS.)"""
    if not device.startswith("cpu") or "torch" in sys.modules:
        return False
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(rounds)
    return True
