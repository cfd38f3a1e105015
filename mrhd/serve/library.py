"""The videos a page may use: uploads (kept for the server's life) and the files of ``--videos`` folders.

A page names a video only by the id this library gave it; no path from a browser is ever opened, so
a request cannot reach a file outside the upload folder and the folders given on the command line.
An upload is hashed while it arrives (the feature cache then needs no second read) and checked
before it is accepted: something that is not a video, or a video longer than the server's limit,
is refused with a message and deleted.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from mrhd.errors import MrhdError
from mrhd.inference.results import fmt_time

MAX_LISTED = 10_000   # folder entries a page lists


class VideoNotFound(MrhdError):
    """A video id this server does not know (or a folder file that is gone)."""


class UploadTooLarge(MrhdError):
    """An upload over ``--max-upload-mb``."""


@dataclass
class Video:
    id: str
    name: str            # what the page shows: the uploaded file name, or the path inside the folder
    path: Path
    origin: str          # "upload" or "folder"
    size: int
    duration: float | None = None   # seconds, known once probed
    content_hash: str | None = None  # uploads: sha256 of the bytes
    checked: bool = False            # probed and within the limits

    @property
    def vid(self) -> str:
        """The ``vid`` of the predictions (the file stem, as `mrhd predict` names it)."""
        return Path(self.name).stem or "video"

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "origin": self.origin, "size": self.size,
                "duration": self.duration, "url": f"/api/videos/{self.id}/file"}


def _safe_name(name: str) -> str:
    """The last path component of a browser-given name, without characters a file system or a
    header would trip on."""
    base = re.split(r"[\\/]", name or "")[-1].strip()
    base = re.sub(r"[\x00-\x1f\x7f\"<>|:*?]", "_", base)[:120].lstrip(".")
    return base or "video"


class Upload:
    """One upload in progress: bytes go to a private file while the hash and size are counted."""

    def __init__(self, library: VideoLibrary, name: str):
        self.library = library
        self.name = _safe_name(name)
        self.id = "u" + uuid.uuid4().hex[:16]
        self.folder = library.upload_dir / self.id
        self.folder.mkdir(parents=True)
        self.path = self.folder / self.name
        self._fh = open(self.path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.library.max_upload_bytes:
            raise UploadTooLarge(self.library.too_large_message(self.name))
        self._hash.update(chunk)
        self._fh.write(chunk)

    def finish(self) -> Video:
        """Close, check it is a video within the limits, and add it to the library."""
        self._fh.close()
        video = Video(self.id, self.name, self.path, "upload", self.size, content_hash=self._hash.hexdigest())
        try:
            self.library.check(video)
        except BaseException:
            self.abort()
            raise
        return self.library.add(video)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class VideoLibrary:
    def __init__(self, upload_dir: str | Path, folders: list[str | Path] = (), *, max_duration: float = 3600.0,
                 max_upload_mb: float = 4096.0):
        self.upload_dir = Path(upload_dir)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.folders = [Path(f).expanduser().resolve() for f in folders]
        self.max_duration = float(max_duration)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self._videos: dict[str, Video] = {}
        self._lock = threading.Lock()

    # ---- limits ---------------------------------------------------------------------------
    def too_large_message(self, name: str) -> str:
        return (f"{name} is larger than this server's upload limit of "
                f"{self.max_upload_bytes / 2 ** 20:.0f} MB; trim the video or start mrhd serve with a larger "
                "--max-upload-mb")

    def check(self, video: Video) -> Video:
        """Probe ``video`` (no decoding): a readable video stream, within ``max_duration``."""
        from mrhd.extract.decode import probe

        try:
            info = probe(video.path)
        except MrhdError as err:
            reason = str(err).split(": ", 1)[-1]
            raise MrhdError(f"{video.name}: {reason}; upload a video file (mp4, mkv, webm, mov, avi, ...)") from None
        video.duration = info.duration if info.duration > 0 else None
        if video.duration is not None and video.duration > self.max_duration:
            raise MrhdError(self.too_long_message(video.name, video.duration))
        video.checked = True
        return video

    def too_long_message(self, name: str, duration: float | None) -> str:
        length = f"is {fmt_time(duration)} long" if duration is not None else "runs longer than that"
        return (f"{name} {length}; this server takes videos up to {fmt_time(self.max_duration)}; "
                "trim it, or start mrhd serve with a larger --max-duration")

    # ---- the library ----------------------------------------------------------------------
    def begin_upload(self, name: str) -> Upload:
        return Upload(self, name)

    def add(self, video: Video) -> Video:
        with self._lock:
            self._videos[video.id] = video
        return video

    def folder_videos(self) -> list[Video]:
        """The video files under the ``--videos`` folders now (files may come and go)."""
        from mrhd.extract.sources import VIDEO_EXTENSIONS

        found = []
        for root in self.folders:
            for path in sorted(root.rglob("*")):
                if len(found) >= MAX_LISTED:
                    break
                if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                    rel = path.relative_to(root).as_posix()
                    name = f"{root.name}/{rel}" if len(self.folders) > 1 else rel
                    vid = "f" + hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
                    found.append((vid, name, path))
        videos = []
        with self._lock:
            for vid, name, path in found:
                known = self._videos.get(vid)
                if known is None or known.path != path:
                    known = self._videos[vid] = Video(vid, name, path, "folder", path.stat().st_size)
                videos.append(known)
        return videos

    def get(self, video_id: str) -> Video:
        with self._lock:
            video = self._videos.get(video_id)
        if video is None and video_id.startswith("f") and self.folders:
            self.folder_videos()   # a file added to the folder since the page listed it
            with self._lock:
                video = self._videos.get(video_id)
        if video is None:
            raise VideoNotFound(f"no video {video_id!r} on this server (it restarted?); upload or pick the video again")
        if not video.path.is_file():
            raise VideoNotFound(f"{video.name} is no longer on the server; pick another video")
        return video

    def usable(self, video_id: str) -> Video:
        """The video, probed and within the limits (a folder file is checked when first used)."""
        video = self.get(video_id)
        if not video.checked:
            self.check(video)
        return video

    def close(self) -> None:
        shutil.rmtree(self.upload_dir, ignore_errors=True)
