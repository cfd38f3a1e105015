"""Checkpoint registry, download + cache, safe loading and conversion of the authors' formats.

- ``resolve_weights(id_or_path) -> Path``: a local file, a cached download, or a download now.
- ``mrhd.weights.checkpoint``: mrhd's own checkpoint format (save/load) and safe loading of the
  authors' checkpoints.
- ``mrhd.weights.registry``: the released checkpoints by id.
"""

from mrhd.weights.checkpoint import load_checkpoint, save_checkpoint
from mrhd.weights.registry import WeightsEntry, entries, find_entry, get_entry, register_weights
from mrhd.weights.resolve import cached_path, resolve_weights

__all__ = ["WeightsEntry", "cached_path", "entries", "find_entry", "get_entry", "load_checkpoint",
           "register_weights", "resolve_weights", "save_checkpoint"]
