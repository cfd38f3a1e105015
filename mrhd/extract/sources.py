"""Inputs of ``mrhd extract``: video files, folders searched recursively and ``.txt`` lists of paths.

Sources are expanded once, sorted, given ids and sharded by position, so every shard of a
``--shard I/N`` run sees the same ordering and no video goes to two shards.

Video ids (``--video-id-from``): ``stem`` (default) the file name without extension; ``path`` the
path relative to the folder given (a file given directly or listed in a ``.txt``: the path as
written), extension dropped, folders joined with ``__`` (``cooking/001.mp4`` -> ``cooking__001``);
``hash`` the first 16 hex digits of the file's sha256. Every id is checked before any work: two
inputs with one id are an error (one would silently take the other's place in the store), and an
id the store reserves (``qid...``, ``pooled``) is reported for that input.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mrhd.errors import MrhdError
from mrhd.features.store import video_id_problem
from mrhd.io import file_sha256

ID_RULES = ("stem", "path", "hash")
HASH_ID_LEN = 16  # hex digits of the sha256 kept as a --video-id-from hash id (64 bits)
PATH_ID_JOIN = "__"  # --video-id-from path: what joins the folders of the path

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".3gp", ".ogv", ".vob", ".mxf",
})


@dataclass(frozen=True)
class Source:
    path: Path
    video_id: str
    sha256: str | None = None  # known when it was needed before any work (--video-id-from hash)


def source_file(path: str | Path, sha256: str | None = None) -> dict:
    """What the store records of the file an entry came from (``FeatureStore.write(source=...)``):
    content hash, size, absolute path and modification time (the time only spares a hash when the
    same file is seen again). ``sha256``: already known, not read again."""
    path = Path(path)
    st = path.stat()
    return {"sha256": sha256 or file_sha256(path), "size": int(st.st_size), "path": str(path.resolve()),
            "mtime_ns": int(st.st_mtime_ns)}


@dataclass
class Listing:
    """What the inputs expanded to, plus the inputs that could not be used (reported, not fatal)."""

    sources: list[Source]
    problems: list[tuple[str, str]]  # (input, reason)


def _from_txt(txt: Path) -> list[tuple[Path, Path]]:
    """``(path, as written)`` of every entry; relative entries are relative to the list."""
    lines = []
    for raw in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            lines.append((p if p.is_absolute() else (txt.parent / p), p))
    return lines


def _found(inputs: list[str | Path], found: list[tuple[Path, Path]], problems: list[tuple[str, str]]) -> None:
    """Collect ``(path, name for --video-id-from path)`` of every video the inputs name."""
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            videos = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                problems.append((str(p), "folder holds no video files"))
            found.extend((f, f.relative_to(p)) for f in videos)
        elif p.suffix.lower() == ".txt" and p.is_file():
            listed = _from_txt(p)
            if not listed:
                problems.append((str(p), "list is empty"))
            for entry, written in listed:
                if entry.is_dir():
                    sub: list[tuple[Path, Path]] = []
                    _found([entry], sub, problems)
                    found.extend((f, written / name) for f, name in sub)
                elif entry.exists():
                    found.append((entry, written))
                else:
                    problems.append((str(entry), f"file not found (listed in {p.name})"))
        elif p.exists():
            found.append((p, p))
        else:
            problems.append((str(p), "file not found"))


def path_id(name: Path) -> str:
    """``--video-id-from path``: the path as given, extension dropped, folders joined by ``__``."""
    parts = [part for part in name.with_suffix("").parts if part not in ("/", "\\")]
    return PATH_ID_JOIN.join(parts)


def _hashes(paths: list[Path]) -> dict[Path, str]:
    """sha256 of every file, a few at a time (hashing waits on the disk and releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip(paths, pool.map(file_sha256, paths)))


def expand_inputs(inputs: list[str | Path], id_from: str = "stem") -> Listing:
    """Files as given (any extension: a non-video is reported when it fails to decode), folders
    recursively (video extensions only), ``.txt`` files as lists of paths (relative to the list).
    ``id_from``: see the module docstring. Two inputs with one id raise :class:`MrhdError` (before
    any work: the user decides which one is meant)."""
    if id_from not in ID_RULES:
        raise MrhdError(f"--video-id-from {id_from!r}: choose one of {', '.join(ID_RULES)}")
    found: list[tuple[Path, Path]] = []
    problems: list[tuple[str, str]] = []
    _found(inputs, found, problems)
    names: dict[Path, Path] = {}
    for path, name in found:
        names.setdefault(path.resolve() if path.exists() else path, name)
    paths = sorted(names)
    hashes = _hashes(paths) if id_from == "hash" else {}
    by_id: dict[str, list[Path]] = {}
    sources = []
    for path in paths:
        vid = {"stem": path.stem, "path": path_id(names[path])}.get(id_from) or hashes.get(path, "")[:HASH_ID_LEN]
        problem = video_id_problem(vid)
        if problem:  # said before any work, not after the video was decoded and encoded
            problems.append((str(path), f"video id {vid!r} {problem}; rename the file or use "
                                        "--video-id-from hash"))
            continue
        by_id.setdefault(vid, []).append(path)
        sources.append(Source(path, vid, hashes.get(path)))
    clashes = {vid: ps for vid, ps in by_id.items() if len(ps) > 1}
    if clashes:
        shown = "; ".join(f"{vid!r}: " + ", ".join(str(p) for p in ps) for vid, ps in list(clashes.items())[:3])
        more = f" (and {len(clashes) - 3} more ids)" if len(clashes) > 3 else ""
        other = " or ".join(f"--video-id-from {r}" for r in ID_RULES if r != id_from)
        raise MrhdError(f"{sum(len(ps) for ps in clashes.values())} inputs would share a video id, so one "
                        f"would take the other's place in the store: {shown}{more}; rename them, list only "
                        f"one, or use {other}")
    return Listing(sources, problems)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with ``0 <= I < N``; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise MrhdError(f"--shard {text!r} is not I/N (e.g. 0/4)") from None
    if n < 1 or not 0 <= i < n:
        raise MrhdError(f"--shard {text!r}: need 0 <= I < N (e.g. 0/4 ... 3/4)")
    return i, n


def shard(sources: list[Source], index: int, count: int) -> list[Source]:
    return [s for k, s in enumerate(sources) if k % count == index]
