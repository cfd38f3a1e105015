"""Inputs of ``mrhd extract``: video files, folders searched recursively and ``.txt`` lists of paths.

Sources are expanded once, sorted, given ids (the file stem) and sharded by position, so every shard
of a ``--shard I/N`` run sees the same ordering and no video goes to two shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrhd.errors import MrhdError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".3gp", ".ogv", ".vob", ".mxf",
})


@dataclass(frozen=True)
class Source:
    path: Path
    video_id: str


@dataclass
class Listing:
    """What the inputs expanded to, plus the inputs that could not be used (reported, not fatal)."""

    sources: list[Source]
    problems: list[tuple[str, str]]  # (input, reason)


def _from_txt(txt: Path) -> list[Path]:
    lines = []
    for raw in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            lines.append(p if p.is_absolute() else (txt.parent / p))
    return lines


def expand_inputs(inputs: list[str | Path]) -> Listing:
    """Files as given (any extension: a non-video is reported when it fails to decode), folders
    recursively (video extensions only), ``.txt`` files as lists of paths (relative to the list)."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            videos = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                problems.append((str(p), "folder holds no video files"))
            found.extend(videos)
        elif p.suffix.lower() == ".txt" and p.is_file():
            listed = _from_txt(p)
            if not listed:
                problems.append((str(p), "list is empty"))
            for entry in listed:
                if entry.is_dir():
                    sub = expand_inputs([entry])
                    found.extend(s.path for s in sub.sources)
                    problems.extend(sub.problems)
                elif entry.exists():
                    found.append(entry)
                else:
                    problems.append((str(entry), f"file not found (listed in {p.name})"))
        elif p.exists():
            found.append(p)
        else:
            problems.append((str(p), "file not found"))
    seen: dict[str, Path] = {}
    sources = []
    for path in sorted(dict.fromkeys(f.resolve() if f.exists() else f for f in found)):
        vid = path.stem
        if vid in seen:
            problems.append((str(path), f"same video id {vid!r} as {seen[vid]}; rename one of them"))
            continue
        seen[vid] = path
        sources.append(Source(path, vid))
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
