"""Small JPEGs of single frames, for the page's top-clip thumbnails.

A thumbnail is the frame shown at the middle of its 2-s clip: one seek to the keyframe before it
and the few frames up to it, not a pass over the video (features are never recomputed for them).
Any format ffmpeg reads works, including the ones a browser cannot play. Recent thumbnails are
kept in memory.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from mrhd.errors import MrhdError

THUMB_WIDTH = 240


def frame_jpeg(path: str | Path, t: float, width: int = THUMB_WIDTH) -> bytes:
    """The frame on screen at ``t`` seconds, ``width`` pixels wide, as JPEG bytes."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise MrhdError(f"cannot read {Path(path).name} for a thumbnail ({err.__class__.__name__})") from None
    try:
        if not container.streams.video:
            raise MrhdError(f"{Path(path).name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.time_base is not None and t > 0:
            start = stream.start_time or 0
            container.seek(start + int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        shown = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > t and shown is not None:
                break
            shown = frame
        if shown is None:
            raise MrhdError(f"{Path(path).name} has no frame at {t:.1f} s")
        height = max(2, round(shown.height * width / shown.width / 2) * 2)
        image = shown.to_image(width=width, height=height)
    except av.error.FFmpegError as err:
        raise MrhdError(f"cannot decode {Path(path).name} at {t:.1f} s ({err.__class__.__name__})") from None
    finally:
        container.close()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


class ThumbnailCache:
    """``(video id, clip index) -> JPEG``, the newest ``slots`` of them."""

    def __init__(self, slots: int = 1024):
        self.slots = slots
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, video_id: str, clip: int, path: Path, t: float) -> bytes:
        key = (video_id, clip)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        data = frame_jpeg(path, t)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.slots:
                self._items.popitem(last=False)
        return data
