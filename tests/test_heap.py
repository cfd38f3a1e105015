"""mrhd.heap: `mrhd train`'s glibc setting keeps freed memory for reuse (no page faults again)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mrhd.heap import keep_freed_memory

# a child holds ten 8-MB blocks at once, as a step holds its activations, frees them and does it
# again 10 times; it prints its minor page faults over the last 10 rounds
CHILD = """
import resource, sys
import numpy as np
from mrhd.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():
    return [np.ones(8 << 18, dtype=np.float32) for _ in range(10)]
step()   # one round before counting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env={**clean, **(env or {})})
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")
def test_freed_blocks_are_reused_without_faulting_their_pages_again():
    kept, faults_kept = _faults("keep")
    if not kept:
        pytest.skip("this Linux has no glibc mallopt (musl?)")
    _, faults_default = _faults("default")
    pages = 10 * 10 * (8 << 20) // 4096
    assert faults_default > pages // 10         # glibc's defaults: trimmed and mapped anew, faulted again
    assert faults_kept < pages // 100           # kept: the heap's pages are reused


def test_a_malloc_setting_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    if sys.platform.startswith("linux"):
        kept, _ = _faults("keep", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"})
        assert kept is False


@pytest.mark.parametrize("device, kept", [("cpu", True), ("cuda", False)])
def test_mrhd_serve_keeps_the_heap_on_cpu(monkeypatch, device, kept):
    """Every query frees and allocates the same activations again: the server keeps its heap (CPU only),
    before it binds its port (here a busy one, so the command stops right after)."""
    import socket

    import mrhd.extract.cpu_sharing
    import mrhd.heap
    from mrhd.cli import build_parser
    from mrhd.errors import MrhdError

    calls = []
    monkeypatch.setattr(mrhd.heap, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(mrhd.extract.cpu_sharing, "share_cores_with_decoders", lambda *a: None)  # no env change
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        args = build_parser().parse_args(["serve", "--port", str(busy.getsockname()[1]), "--device", device])
        with pytest.raises(MrhdError, match="in use"):
            args._run(args)
    finally:
        busy.close()
    assert bool(calls) is kept
