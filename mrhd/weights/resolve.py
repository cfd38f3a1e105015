"""``resolve_weights``: a local file, a cached download, or a download now."""

from __future__ import annotations

from pathlib import Path

from mrhd.errors import MrhdError, OfflineError
from mrhd.paths import cache_dir
from mrhd.weights.download import download
from mrhd.weights.registry import WeightsEntry, find_entry

LFS_POINTER = b"version https://git-lfs.github.com/spec"


def cached_path(entry: WeightsEntry) -> Path:
    """Where the file of ``entry`` lives in the cache: ``$MRHD_CACHE/weights/<id>/<filename>``."""
    return cache_dir() / "weights" / entry.id / entry.filename


def resolve_weights(id_or_path: str, *, progress: bool = True) -> Path:
    """The local file for ``id_or_path``: an existing file as is, else the registry entry's cached
    file, downloading it first (trying each URL in turn) when it is not there yet."""
    path = Path(str(id_or_path)).expanduser()
    if path.is_file():
        return path
    entry = find_entry(str(id_or_path))
    if entry is None:
        if path.suffix or "/" in str(id_or_path) or "\\" in str(id_or_path):
            raise MrhdError(f"weights file {path} not found; check the path or use a registry id "
                            "(`mrhd weights list`)")
        raise MrhdError(f"unknown weights id {id_or_path!r}; see `mrhd weights list`, or give a file path")
    dest = cached_path(entry)
    for filename, url in entry.companions:
        if not (dest.parent / filename).is_file():
            download(url, dest.parent / filename, progress=progress)
    if dest.is_file():
        return dest
    if not entry.urls:
        raise MrhdError(f"{entry.id} has no direct download: get it from {entry.page} and pass the file's "
                        f"path, or save it as {dest}")
    errors: list[MrhdError] = []
    for url in entry.urls:
        try:
            path = download(url, dest, sha256=entry.sha256, progress=progress)
        except MrhdError as err:
            errors.append(err)
            continue
        with open(path, "rb") as fh:
            is_pointer = fh.read(len(LFS_POINTER)) == LFS_POINTER
        if not is_pointer:
            return path
        path.unlink()
        errors.append(MrhdError(f"{url} served a Git LFS pointer, not the file"))
    if all(isinstance(e, OfflineError) for e in errors):
        raise errors[0]
    raise next(e for e in errors if not isinstance(e, OfflineError))
