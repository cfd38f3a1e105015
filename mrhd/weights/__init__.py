"""Checkpoint registry, download + cache, safe loading and conversion of the authors' formats.

Public entry points (implemented in the modules of this package):
- ``resolve_weights(id_or_path) -> Path``: a local file, a cached download, or a download now.
- ``mrhd.weights.checkpoint``: mrhd's own checkpoint format (save/load).
"""
