"""Claims: which `mrhd extract` run works on which video, so that runs sharing an output folder
share the list instead of each doing all of it.

A claim is an exclusive ``flock`` on a small file beside the store's parts
(``FeatureStore.claim_path``), held from the moment a video is handed to a decoder until its part
is written (or it failed). Another run that finds the lock taken leaves the video, goes on with the
rest of its list, and at the end looks again (every ``CLAIM_POLL_S``) until it can claim each video
it left: stored by the other run, it is counted as such; not stored (the other run failed on it, or was killed: the kernel drops the lock of
a dead process), it takes the video over. The holder deletes the file while it still holds the
lock; a run that locked a file that was deleted meanwhile sees another inode at the path and tries
again, so one claim is held by one run at a time.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Claim:
    """A held claim; ``release()`` deletes the file and drops the lock."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the lock alone still works
        os.close(self._fd)  # closing drops the lock
        self._fd = None


def try_claim(path: str | Path) -> Claim | None:
    """The claim, or None when another run holds it (never waits: a run that waits for others
    holds no claim meanwhile, so two runs cannot wait for each other)."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # minus the umask, as open() does
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder deleted it between our open and our lock
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return Claim(path, fd)


def holder_pid(path: str | Path) -> int | None:
    """The process id written by the holder (for messages), or None."""
    try:
        return int(Path(path).read_text().strip() or "x")
    except (OSError, ValueError):
        return None
