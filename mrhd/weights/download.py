"""Download one file into the cache: progress bar, resume with HTTP Range, sha256 check, atomic rename.

Bytes go to ``<dest>.part`` first; only a complete file whose sha256 matches (when one is known) is
renamed to ``dest``, so a file at ``dest`` is always whole. An interrupted download leaves the
``.part`` file and the next attempt continues from its length.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mrhd.errors import MrhdError, OfflineError
from mrhd.io import file_sha256

CHUNK = 1 << 20


def _is_offline(err: BaseException) -> bool:
    """Connection-level failures (no route, refused, DNS, timeout), as opposed to an HTTP answer."""
    reason = getattr(err, "reason", err)
    return isinstance(reason, (ConnectionError, socket.gaierror, socket.timeout, TimeoutError, OSError)) \
        and not isinstance(err, urllib.error.HTTPError)


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "mrhd"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310  (http/https urls from the registry)


def _progress(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, file=sys.stderr, leave=False)


def download(url: str, dest: str | Path, *, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); verify ``sha256`` when given.

    Raises :class:`OfflineError` when the host cannot be reached and :class:`MrhdError` for an HTTP
    error or a checksum mismatch (the bad bytes are deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:   # the partial file already holds every byte
                response = None
            else:
                raise
        if response is not None:
            with response:
                resumed = offset > 0 and response.status == 206
                if not resumed:
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with open(part, "ab" if resumed else "wb") as fh, \
                        _progress(total, offset, dest.name, progress) as bar:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        fh.write(block)
                        bar.update(len(block))
                    fh.flush()
                    os.fsync(fh.fileno())
                if total is not None and part.stat().st_size < total:
                    raise MrhdError(f"download of {url} stopped early at {part.stat().st_size} of {total} "
                                    "bytes; run the command again to resume")
    except urllib.error.HTTPError as err:
        raise MrhdError(f"cannot download {url}: HTTP {err.code} {err.reason}; "
                        "check the URL or download the file by hand and pass its path") from None
    except (urllib.error.URLError, OSError) as err:
        if isinstance(err, MrhdError):
            raise
        if _is_offline(err):
            reason = getattr(err, "reason", err)
            raise OfflineError(f"no network: cannot reach {url} ({reason}); download the file on a "
                               f"connected machine and pass its path, or copy it to {dest}") from None
        raise
    if sha256:
        got = file_sha256(part)
        if got != sha256.lower():
            part.unlink(missing_ok=True)
            raise MrhdError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the file was "
                            "deleted, try again or report a changed upstream file")
    os.replace(part, dest)
    return dest
