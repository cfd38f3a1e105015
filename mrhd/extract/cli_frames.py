"""The pixels of a decoded frame, as the official extractors received them.

HERO_Video_Feature_Extractor (CLIP, SlowFast) and VideoLights (BLIP-2) ran the ffmpeg command line::

    ffmpeg -i VIDEO -vf fps=fps=F,scale=W:H,crop=S:S:X:Y -f rawvideo -pix_fmt rgb24 pipe:

and took its bytes. Equal bytes need more than "resize, crop, convert": the CLI (the 5.1 of the
official runs) first **autorotates** (a phone video's display matrix becomes transpose/flip filters),
its ``scale`` filter honours the frame's colour range and matrix tags, and the chain is negotiated
by libavfilter. :func:`cli_frame` runs that very chain on PyAV's own libavfilter
(``av.filter.Graph``: buffer -> autorotation -> ``scale=W:H:flags=bicubic`` -> ``crop`` ->
``format=rgb24``), which reproduces the CLI's frames byte for byte (``fixtures/pixels``). The fps
filter is not in the graph: which frame goes where is decided on timestamps by
:mod:`mrhd.extract.sampling` (exact, tested on ``fixtures/sampling``); the graph only turns each
chosen frame into pixels.

A graph costs about as much to build as a few conversions, so one graph per thread and frame
geometry (size, pixel format, colour tags, display matrix) is kept and reused (:class:`_Graphs`).

InternVideo2 (``window_frames``) took whole frames: decord's native-size rgb24 (its own filter
graph: autorotation, ``scale`` to the same size, rgb24 -- :func:`upright_frame`), then
``InternVideo2_CLIP.transform``'s ``Resize((224, 224), bicubic)`` of the whole frame
(:func:`mrhd.encoders.pixels.square_resize`; no crop). The recipe strings these frames are recorded
under (``CLI_PIXELS``, ``WINDOW_PIXELS``) live with the encoders, in :mod:`mrhd.encoders.pixels`.
"""

from __future__ import annotations

import math
import struct
import threading
from collections import OrderedDict

import av
import numpy as np
from av.filter import Graph
from av.sidedata.sidedata import Type as SideDataType

FRAME_SIZE = 224  # short side and crop of FEATURES.md

def scaled_size(width: int, height: int, size: int = FRAME_SIZE) -> tuple[int, int]:
    """Short side to ``size``, long side ``int(long * size / short)`` (HERO video_loader.py
    ``_get_output_dim``), of the frame as shown (after autorotation)."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def crop_origin(width: int, height: int, size: int = FRAME_SIZE) -> tuple[int, int]:
    """HERO's centre crop: ``x = int((W - size) / 2)``, ``y = int((H - size) / 2)``."""
    return int((width - size) / 2), int((height - size) / 2)


# ------------------------------------------------------------------------------- autorotation
def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's 3x3 display matrix (FFmpeg's 16.16 fixed point, row-major), None when absent.
    FFmpeg >= 7 attaches the stream's matrix (mp4 ``tkhd``) to every decoded frame."""
    side = frame.side_data.get(SideDataType.DISPLAYMATRIX)   # PyAV 19 iterates keys, 18 values: ask by key
    if side is None:
        return None
    data = bytes(side)
    return struct.unpack("<9i", data[:36]) if len(data) >= 36 else None


def display_rotation(matrix) -> float:
    """``av_display_rotation_get``: the counter-clockwise angle the matrix rotates by (ffprobe's
    ``rotation``); NaN for a degenerate matrix."""
    a, b, _, c, d = (v / 65536 for v in matrix[:5])
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return math.nan
    return -math.degrees(math.atan2(b / scale_y, a / scale_x))


def autorotate_filters(matrix) -> list[tuple[str, str | None]]:
    """The filters the ffmpeg CLI (5.1, ``configure_input_video_filter``) inserts for a display
    matrix: ``theta = -round(rotation)`` folded into [0, 360), then a transpose for 90/270 (its
    ``_flip`` form when the matrix also mirrors), hflip/vflip for 180 as the matrix's signs say, a
    ``rotate`` for any other angle, vflip for an upright matrix that mirrors vertically."""
    if matrix is None:
        return []
    rotation = display_rotation(matrix)
    if math.isnan(rotation):
        return []
    theta = -float(round_half_away(rotation))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        return ([("hflip", None)] if matrix[0] < 0 else []) + ([("vflip", None)] if matrix[4] < 0 else [])
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
    if abs(theta) > 1:
        return [("rotate", f"{theta:f}*PI/180")]
    return [("vflip", None)] if matrix[4] < 0 else []


def round_half_away(x: float) -> float:
    """C ``round()``: halves away from zero (Python's ``round`` goes to even)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def upright_size(width: int, height: int, filters) -> tuple[int, int]:
    """The frame size after the autorotation filters (a transpose swaps the sides)."""
    return (height, width) if any(name == "transpose" for name, _ in filters) else (width, height)


# ------------------------------------------------------------------------------- the graphs
class _Graphs:
    """Configured filter graphs of this thread, one per (geometry, chain), least recently used
    dropped past ``keep``: decoding reuses one graph for every frame of a video."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._graphs: OrderedDict[tuple, Graph] = OrderedDict()

    def convert(self, frame: av.VideoFrame, size: int | None) -> np.ndarray:
        matrix = display_matrix(frame)
        key = (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range),
               matrix, size)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = _build(frame, matrix, size)
            while len(self._graphs) > self.keep:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        try:
            graph.push(frame)
            return graph.pull().to_ndarray()
        except Exception:
            self._graphs.pop(key, None)  # a graph left mid-frame is not reused
            raise


def _build(frame: av.VideoFrame, matrix, size: int | None) -> Graph:
    """buffer -> autorotation -> scale (to W:H, or to the same size for ``size=None``) -> crop ->
    rgb24 -> sink, configured for this frame's geometry and colour tags."""
    graph = Graph()
    # pixel_aspect: the CLI's scale=W:H has an explicit size, so the sample aspect never changes a byte
    nodes = [graph.add("buffer", video_size=f"{frame.width}x{frame.height}", pix_fmt=frame.format.name,
                       time_base="1/1000000", pixel_aspect="1/1",
                       colorspace=str(int(frame.colorspace)), range=str(int(frame.color_range)))]
    rotation = autorotate_filters(matrix)
    nodes += [graph.add(name, args) if args is not None else graph.add(name) for name, args in rotation]
    width, height = upright_size(frame.width, frame.height, rotation)
    if size is None:
        nodes.append(graph.add("scale", f"{width}:{height}:flags=bicubic"))
    else:
        w, h = scaled_size(width, height, size)
        x, y = crop_origin(w, h, size)
        nodes.append(graph.add("scale", f"{w}:{h}:flags=bicubic"))
        nodes.append(graph.add("crop", f"{size}:{size}:{x}:{y}"))
    nodes.append(graph.add("format", "rgb24"))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


_local = threading.local()


def _graphs() -> _Graphs:
    graphs = getattr(_local, "graphs", None)
    if graphs is None:
        graphs = _local.graphs = _Graphs()
    return graphs


def cli_frame(frame: av.VideoFrame, size: int = FRAME_SIZE) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the bytes the ffmpeg CLI chain gives for this frame (autorotated,
    short side ``size`` bicubic, centre crop, rgb24)."""
    return _graphs().convert(frame, size)


def upright_frame(frame: av.VideoFrame) -> np.ndarray:
    """uint8 ``[H, W, 3]`` at the frame's own size, autorotated, rgb24 (decord's frames; the
    frames the CLI shows before its scale)."""
    return _graphs().convert(frame, None)


