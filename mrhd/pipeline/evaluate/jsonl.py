"""Reading and writing JSON-lines files (predictions, annotations) with line numbers for messages."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mrhd.errors import MrhdError


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line; a bad line is a one-line user error."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"{path}: file not found; pass an existing .jsonl file")
    rows = []
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise MrhdError(f"{path}:{lineno}: not valid JSON ({err.msg}); "
                                "each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise MrhdError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
            rows.append((lineno, obj))
    return rows


def load_jsonl(path: str | Path) -> list[dict]:
    """All objects of a JSON-lines file, in order (blank lines skipped)."""
    return [obj for _, obj in read_jsonl_numbered(path)]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so that a reader
    (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
