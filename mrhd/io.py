"""Files every layer reads and writes: JSON lines, atomic writes, content hashes.

The bottom layer (stdlib and :mod:`mrhd.errors` only), so annotations, evaluation, predictions,
checkpoints, the feature store and the feature cache share one implementation of each.

Atomic writes go to a temporary file beside the target and are renamed onto it (``os.replace`` is
atomic), so a reader or a crash never sees a half-written file. The temporary file is created with
mode ``0o666`` minus the umask, as ``open()`` would create it (``mkstemp`` would leave ``0o600``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from mrhd.errors import MrhdError

HASH_BLOCK = 1 << 22


# ---- JSON lines ----------------------------------------------------------------------------------
class BadJsonLine(MrhdError):
    """A line of a JSON-lines file that is not one JSON object. ``json_error`` is the parser's
    message, or None when the line is valid JSON of another type (``got``); callers that word their
    own message read these."""

    def __init__(self, path: str | Path, lineno: int, json_error: str | None = None, got: str | None = None):
        self.path, self.lineno, self.json_error, self.got = Path(path), lineno, json_error, got
        if json_error is not None:
            message = f"{path}:{lineno}: not valid JSON ({json_error}); each line must be one JSON object"
        else:
            message = f"{path}:{lineno}: expected a JSON object per line, got {got}"
        super().__init__(message)


def read_jsonl_numbered(path: str | Path, *, on_bad_line: Callable[[BadJsonLine], None] | None = None
                        ) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line. A line that is not a JSON object raises
    :class:`BadJsonLine`, or goes to ``on_bad_line`` and is skipped."""
    path = Path(path)
    if not path.is_file():
        raise MrhdError(f"{path}: file not found; pass an existing .jsonl file")
    rows = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad = BadJsonLine(path, lineno, json_error=err.msg)
            else:
                if isinstance(obj, dict):
                    rows.append((lineno, obj))
                    continue
                bad = BadJsonLine(path, lineno, got=type(obj).__name__)
            if on_bad_line is None:
                raise bad
            on_bad_line(bad)
    return rows


def read_jsonl(path: str | Path) -> list[dict]:
    """Every object of a JSON-lines file, in order (blank lines skipped)."""
    return [obj for _, obj in read_jsonl_numbered(path)]


def jsonl_text(rows: Iterable[dict]) -> str:
    """One JSON object per line, each line ending in a newline."""
    return "".join(json.dumps(row) + "\n" for row in rows)


def json_safe(value):
    """``value`` with every NaN or infinite float (an empty length range in the metrics) replaced by
    None, at any depth: ``json.dumps`` would write the tokens ``NaN``/``Infinity``, which strict JSON
    parsers (``jq``, JavaScript, Go) reject."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# ---- atomic writes -------------------------------------------------------------------------------
def check_writable(path: str | Path, what: str = "output", *, make_parents: bool = False) -> Path:
    """Fail with one line before any work when ``path`` cannot be written: a folder, a missing folder
    (``make_parents``: the nearest existing one must be writable; the caller creates the rest when it
    writes), or no permission. Nothing is created here."""
    path = Path(path)
    if path.is_dir():
        raise MrhdError(f"{what} path {path} is a folder; give a file name")
    parent = path.parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise MrhdError(f"cannot write {what} {path}: {parent} is a file, not a folder; choose another path")
    if not parent.is_dir():
        raise MrhdError(f"cannot write {what} {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MrhdError(f"cannot write {what} {path}: permission denied; choose another location")
    return path


def _new_file_beside(path: Path, prefix: str) -> tuple[int, Path]:
    """An empty file next to ``path`` that did not exist before, mode 0o666 minus the umask."""
    while True:
        tmp = path.with_name(f"{prefix}{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False, tmp_prefix: str = ".") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that open a file by name (h5py, zipfile). It is
    renamed onto ``path`` when the block ends and removed when the block raises. ``durable``: fsync
    the file before and the folder after the rename, so the result survives a power cut.
    ``tmp_prefix`` starts the temporary name (the feature store puts its pid there)."""
    path = Path(path)
    fd, tmp = _new_file_beside(path, tmp_prefix)
    os.close(fd)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, durable: bool = False) -> Iterator[IO]:
    """``open(path, mode)`` for writing ("w": UTF-8 text, "wb": bytes) that replaces ``path`` only
    when the block ends without an error; see :func:`atomic_path` for ``durable``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes with mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, encoding="utf-8" if mode == "w" else None) as fh:
        yield fh


def write_atomic(path: str | Path, data: bytes | str, *, durable: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; the folder must exist."""
    with atomic_open(path, "wb" if isinstance(data, bytes | bytearray) else "w", durable=durable) as fh:
        fh.write(data)
    return Path(path)


# ---- content hashes ------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (videos and checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
