"""Locations mrhd reads from and writes to."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The YAML configs shipped inside the package: ``datasets/``, ``features/``, ``models/``, ``train/``."""
    return Path(__file__).resolve().parent / "configs"


def cache_dir() -> Path:
    """``$MRHD_CACHE`` or ``~/.cache/mrhd``: downloaded weights and cached video features."""
    root = os.environ.get("MRHD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mrhd"


def shared_dir() -> Path:
    """``$MRHD_SHARED`` (default ``../shared``): public annotation files and golden fixtures."""
    return Path(os.environ.get("MRHD_SHARED", "../shared")).expanduser()


def fixtures_dir() -> Path:
    """``$MRHD_FIXTURES`` (default ``$MRHD_SHARED/fixtures``)."""
    env = os.environ.get("MRHD_FIXTURES")
    return Path(env).expanduser() if env else shared_dir() / "fixtures"
