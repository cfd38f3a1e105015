"""``--device`` values: one parser for every command and the Python API.

Checked before any work starts, so a wrong device is a one-line error rather than a CUDA traceback
after minutes of decoding or data loading.
"""

from __future__ import annotations

import torch

from mrhd.errors import MrhdError


def parse_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a :class:`torch.device` that exists on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MrhdError(f"unknown device {device!r}; use cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MrhdError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MrhdError(f"device {device!r} does not exist ({torch.cuda.device_count()} GPU(s))")
    elif dev.type != "cpu":
        raise MrhdError(f"unsupported device {device!r}; use cpu or cuda[:N]")
    return dev
