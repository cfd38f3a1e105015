"""Pixels: the bytes the ffmpeg CLI gives the official CLIP and SlowFast extractors (fixtures/pixels,
every frame of both streams), autorotation of phone videos, colour tags, odd sizes and formats on
generated videos, InternVideo2's whole-frame pixels, and a rotated phone video through `mrhd extract`
and `mrhd predict`.

The fixture tests read everything (names, sizes, rates, counts, hashes) from ``pixels.json``, so they
hold for any set made the same way. Generated videos are lossless (x264 qp 0) where a test compares
two videos' frames exactly: then the decoded frames are exactly what was written.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from mrhd.encoders import pixels as encoder_pixels
from mrhd.encoders.clip import ClipFrames
from mrhd.encoders.slowfast import SlowFastFrames
from mrhd.extract import cli_frames as pixels
from mrhd.extract import sampling
from mrhd.extract.decode import VideoDecoder, iter_fps_frames, probe, to_rgb
from mrhd.extract.synthetic import frame_pattern
from tests.conftest import _fixtures_dir, open_case
from tests.helpers.videos import scaled_whole

PIXELS = "pixels"


# ------------------------------------------------------------------------------- fixture helpers
def _manifest() -> dict | None:
    path = _fixtures_dir() / PIXELS / "pixels.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _video_names() -> list:
    manifest = _manifest()
    if manifest is None:
        return [pytest.param(None, id="missing-pixels")]
    return [pytest.param(name, id=name) for name in manifest["videos"]]


def _case(name: str | None) -> tuple[Path, dict, Path]:
    """(video path, its record, the fixture folder); skips (fails under CI=true) without the set."""
    folder = open_case(_fixtures_dir() / PIXELS, "pixels.json")
    record = json.loads((folder / "pixels.json").read_text())["videos"][name]
    return folder / "videos" / f"{name}.mp4", record, folder


def _sha(frame: np.ndarray) -> str:
    assert frame.shape == (224, 224, 3) and frame.dtype == np.uint8
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


def _stored(folder: Path, stream: dict) -> np.ndarray | None:
    """The frames stored whole (``stored_frames``: "frames/<file>.npy (k of n)"), None if none."""
    note = stream.get("stored_frames")
    if not note:
        return None
    return np.load(folder / note.split()[0])


def _check_stream(frames: list[np.ndarray], stream: dict, folder: Path) -> None:
    assert len(frames) == stream["n_frames"] == len(stream["sha256"])
    mismatched = [i for i, (f, h) in enumerate(zip(frames, stream["sha256"])) if _sha(f) != h]
    assert not mismatched, f"{len(mismatched)} of {len(frames)} frames differ, first {mismatched[:5]}"
    stored = _stored(folder, stream)
    if stored is not None:
        np.testing.assert_array_equal(np.stack(frames[: len(stored)]), stored)
    np.testing.assert_allclose([f.mean() for f in frames], stream["mean"], atol=1e-3)


# ------------------------------------------------------------------------------- fixtures/pixels
@pytest.mark.fidelity
@pytest.mark.parametrize("name", _video_names())
def test_the_cli_command_geometry_is_the_rule(name):
    """The recorded command's scale and crop are HERO's rule applied to the upright size, and the
    decoder's autorotation swaps the sides exactly when the recorded rotation is a quarter turn."""
    path, record, _ = _case(name)
    facts = record["facts"]
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    turns = pixels.autorotate_filters(pixels.display_matrix(frame))
    width, height = pixels.upright_size(frame.width, frame.height, turns)
    quarter = facts["rotation"] % 180 == 90
    assert (frame.width, frame.height) == (facts["coded_width"], facts["coded_height"])
    assert (width, height) == ((facts["coded_height"], facts["coded_width"]) if quarter
                               else (facts["coded_width"], facts["coded_height"]))
    w, h = pixels.scaled_size(width, height)
    x, y = pixels.crop_origin(w, h)
    for stream in ("clip", "slowfast"):
        found = re.search(r"scale=(\d+):(\d+),crop=(\d+):(\d+):(\d+):(\d+)", record[stream]["command"])
        assert tuple(map(int, found.groups())) == (w, h, 224, 224, x, y), stream
    assert float(sampling.clip_rate(probe(path).stream_duration)) == pytest.approx(facts["clip_fps_used"])


@pytest.mark.fidelity
@pytest.mark.parametrize("seek", [True, False], ids=["seek", "sequential"])
@pytest.mark.parametrize("name", _video_names())
def test_clip_stream_is_the_cli_bytes(name, seek):
    """Every CLIP frame, through the decoder as the extraction job calls it (alone: the seeking
    pass) and in order, then the encoder's worker-side preprocessing."""
    path, record, folder = _case(name)
    frames = [array for _, _, array in VideoDecoder(path, ["clip_frame"], seek=seek)]
    _check_stream(list(ClipFrames(224)(frames).numpy()) if frames else [], record["clip"], folder)


@pytest.mark.fidelity
@pytest.mark.parametrize("name", _video_names())
def test_30fps_stream_is_the_cli_bytes(name):
    """Every frame of the fps=30 stream SlowFast's clips are cut from (the decoder's conversion path)."""
    path, record, folder = _case(name)
    frames = [rgb for _, _, rgb in iter_fps_frames(path, sampling.SLOWFAST_FPS)]
    _check_stream(frames, record["slowfast"], folder)


@pytest.mark.fidelity
@pytest.mark.parametrize("name", _video_names())
def test_one_pass_streams_are_the_cli_bytes(name):
    """CLIP and SlowFast from one pass, as the job decodes a video for both: each SlowFast clip holds
    the CLI's frames at its fast offsets (the last frame repeated as padding)."""
    path, record, _ = _case(name)
    decoder = VideoDecoder(path, ["clip_frame", "slowfast_clip"])
    got: dict[str, list] = {"clip_frame": [], "slowfast_clip": []}
    for kind, _, array in decoder:
        got[kind].append(array)
    assert [_sha(f) for f in got["clip_frame"]] == record["clip"]["sha256"]
    hashes = record["slowfast"]["sha256"]
    fast = sampling.slowfast_fast_indices(decoder.info.avg_frame_rate)
    block = sampling.CLIP_LEN * sampling.SLOWFAST_FPS
    clips = SlowFastFrames()(got["slowfast_clip"]).numpy() if got["slowfast_clip"] else []
    assert len(clips) == sampling.slowfast_n_clips(len(hashes), decoder.info.stream_duration)
    for c, clip in enumerate(clips):
        assert [_sha(f) for f in clip] == [hashes[min(c * block + off, len(hashes) - 1)] for off in fast], c


# ------------------------------------------------------------------------------- generated videos
def write_lossless(path: Path, frames: list[np.ndarray], *, fps: int = 10, pix_fmt: str = "yuv444p",
                   rotation: float | None = None, hflip: bool = False, vflip: bool = False) -> Path:
    """RGB frames -> lossless H.264 (qp 0): decoding gives back exactly the YUV that was written, so
    two videos whose frames are permutations of each other decode to permuted pixels."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"qp": "0", "preset": "ultrafast"}
        if rotation is not None or hflip or vflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_flat_yuv(path: Path, y: int, u: int, v: int, *, width: int = 96, height: int = 64,
                   pix_fmt: str = "yuv420p", colorspace: int | None = None, color_range: int | None = None,
                   n: int = 25, fps: int = 10) -> Path:
    """Lossless frames of one YUV value written as YUV (no RGB conversion on the way in), tagged
    with ``colorspace`` (AVColorSpace: 1 BT.709, 5 BT.470BG) and ``color_range`` (1 tv, 2 pc)."""
    bits16 = pix_fmt.endswith("10le")
    dtype = np.uint16 if bits16 else np.uint8
    planes = [np.full(height * width, y, dtype)] + [np.full(height * width // 4, c, dtype) for c in (u, v)]
    layout = np.concatenate(planes).reshape(height * 3 // 2, width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"qp": "0", "preset": "ultrafast"}
        ctx = stream.codec_context
        if colorspace is not None:
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = colorspace
        if color_range is not None:
            ctx.color_range = color_range
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(layout, format=pix_fmt)
            if colorspace is not None:
                frame.colorspace = colorspace
            if color_range is not None:
                frame.color_range = color_range
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _displayed(frames: list[np.ndarray], rotation: int, hflip: bool, vflip: bool) -> list[np.ndarray]:
    """What a display matrix says to show: rotate counter-clockwise by ``rotation``, then mirror."""
    out = []
    for f in frames:
        g = np.rot90(f, (rotation // 90) % 4)
        g = g[:, ::-1] if hflip else g
        g = g[::-1] if vflip else g
        out.append(np.ascontiguousarray(g))
    return out


def _clip_frames(path) -> list[np.ndarray]:
    return [a for _, _, a in VideoDecoder(path, ["clip_frame"])]


def _all_streams(path, size=pixels.FRAME_SIZE) -> dict[str, list[np.ndarray]]:
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    out: dict[str, list] = {}
    for kind, _, array in VideoDecoder(path, ["clip_frame", "slowfast_clip", "window_frames"], size=size,
                                       window_picker=SegmentMiddles(8)):
        out.setdefault(kind, []).append(array)
    return out


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A landscape pattern (160x96, 3 s at 10 fps) written without a display matrix."""
    frames = [frame_pattern(i, 160, 96) for i in range(30)]
    folder = tmp_path_factory.mktemp("rotation")
    return frames, write_lossless(folder / "plain.mp4", frames), folder


ORIENTATIONS = [(90, False, False), (180, False, False), (270, False, False), (-90, False, False),
                (0, True, False), (0, False, True), (90, True, False), (270, False, True), (180, True, True)]


@pytest.mark.parametrize("rotation, hflip, vflip", ORIENTATIONS,
                         ids=[f"rot{r}{'-h' if h else ''}{'-v' if v else ''}" for r, h, v in ORIENTATIONS])
def test_display_matrix_turns_every_stream_upright(coded, rotation, hflip, vflip):
    """A video whose display matrix rotates/mirrors its coded frames reaches every stream exactly as
    a video written upright: the frames as shown, the 224 crops and InternVideo2's whole frames."""
    frames, plain, folder = coded
    tag = f"{rotation}{hflip:d}{vflip:d}"
    turned = write_lossless(folder / f"turned{tag}.mp4", frames, rotation=rotation, hflip=hflip, vflip=vflip)
    upright = write_lossless(folder / f"upright{tag}.mp4", _displayed(frames, rotation, hflip, vflip))
    # as shown: the plain video's frames rotated and mirrored as the matrix says
    shown = _all_streams(turned, size=None)["clip_frame"]
    expected = _displayed(_all_streams(plain, size=None)["clip_frame"], rotation, hflip, vflip)
    assert len(shown) == len(expected) == 2
    for got, want in zip(shown, expected):
        np.testing.assert_array_equal(got, want)
    # at 224, every stream: byte-equal to the video written upright
    a, b = _all_streams(turned), _all_streams(upright)
    assert a.keys() == b.keys() == {"clip_frame", "slowfast_clip", "window_frames"}
    for kind in a:
        assert len(a[kind]) == len(b[kind])
        for x, y in zip(a[kind], b[kind]):
            assert x.shape[-3:] == (224, 224, 3)
            np.testing.assert_array_equal(x, y, err_msg=kind)
    if rotation % 180:   # a quarter turn is not the sideways crop
        assert not np.array_equal(a["clip_frame"][0], _clip_frames(plain)[0])


def _yuv_to_rgb(y, u, v, *, bits=8, matrix="bt601", full=False) -> np.ndarray:
    """The textbook conversion (ITU-R BT.601 / BT.709), for one YUV value."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    top = (1 << bits) - 1
    scale = top / 255
    if full:
        luma, cb, cr = y / top, (u - 128 * scale) / top, (v - 128 * scale) / top
    else:
        luma = (y - 16 * scale) / (219 * scale)
        cb, cr = (u - 128 * scale) / (224 * scale), (v - 128 * scale) / (224 * scale)
    r = luma + 2 * (1 - kr) * cr
    b = luma + 2 * (1 - kb) * cb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]) * 255, 0, 255)


COLOURS = [  # (pix_fmt, colorspace tag, range tag, matrix, full range, bit depth)
    ("yuv420p", None, None, "bt601", False, 8),
    ("yuv420p", 1, 1, "bt709", False, 8),
    ("yuvj420p", None, 2, "bt601", True, 8),
    ("yuv420p", 1, 2, "bt709", True, 8),
    ("yuv420p10le", None, None, "bt601", False, 10),
    ("yuv420p10le", 1, 1, "bt709", False, 10),
]


@pytest.mark.parametrize("pix_fmt, colorspace, color_range, matrix, full, bits", COLOURS,
                         ids=["tv601", "tv709", "yuvj", "pc709", "10bit", "10bit-709"])
def test_colour_range_and_matrix_tags_are_honoured(tmp_path, pix_fmt, colorspace, color_range, matrix, full, bits):
    """A flat colour comes out as the textbook conversion for the frame's own tags (within the
    fixed-point rounding of swscale), and far from what the other matrix would give."""
    shift = bits - 8
    y, u, v = 120 << shift, 90 << shift, 180 << shift
    path = write_flat_yuv(tmp_path / "flat.mp4", y, u, v, pix_fmt=pix_fmt, colorspace=colorspace,
                          color_range=color_range)
    frame = _clip_frames(path)[0]
    assert frame.shape == (224, 224, 3)
    assert np.ptp(frame.reshape(-1, 3), axis=0).max() <= 1   # flat stays flat
    got = frame.reshape(-1, 3).mean(0)
    want = _yuv_to_rgb(y, u, v, bits=bits, matrix=matrix, full=full)
    other = _yuv_to_rgb(y, u, v, bits=bits, matrix="bt709" if matrix == "bt601" else "bt601", full=full)
    np.testing.assert_allclose(got, want, atol=2.5)
    assert np.abs(got - other).max() > 6



FORMATS = [("yuv444p", 161, 91), ("yuv444p", 91, 161), ("yuv420p10le", 160, 90), ("yuvj420p", 96, 64),
           ("yuv420p", 90, 160), ("yuv444p", 225, 224)]


@pytest.mark.parametrize("pix_fmt, width, height", FORMATS, ids=[f"{f}-{w}x{h}" for f, w, h in FORMATS])
def test_odd_sizes_and_formats_crop_the_scaled_frame(tmp_path, pix_fmt, width, height):
    """Any size and format: the 224 crop is the scaled RGB frame cut at HERO's offsets."""
    frames = [frame_pattern(i, width, height) for i in range(25)]
    path = write_lossless(tmp_path / "v.mp4", frames, pix_fmt=pix_fmt)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == pix_fmt
    w, h = pixels.scaled_size(width, height)
    x, y = pixels.crop_origin(w, h)
    assert min(w, h) == 224 and max(w, h) == int(max(width, height) * 224 / min(width, height))
    np.testing.assert_array_equal(to_rgb(frame), scaled_whole(frame, w, h)[y: y + 224, x: x + 224])
    assert [f.shape for f in _clip_frames(path)] == [(224, 224, 3)]


def test_autorotation_rule_of_the_cli():
    """The filters the CLI inserts for display matrices (16.16 fixed point, row-major), including the
    mirrored ones and angles that are not quarter turns."""
    assert pixels.autorotate_filters(None) == []
    c, s = 65536, 0
    assert pixels.autorotate_filters((c, s, 0, s, c, 0, 0, 0, 1 << 30)) == []
    assert pixels.autorotate_filters((0, -c, 0, c, 0, 0, 0, 0, 1 << 30)) == [("transpose", "cclock")]
    assert pixels.autorotate_filters((0, c, 0, -c, 0, 0, 0, 0, 1 << 30)) == [("transpose", "clock")]
    assert pixels.autorotate_filters((-c, 0, 0, 0, -c, 0, 0, 0, 1 << 30)) == [("hflip", None), ("vflip", None)]
    assert pixels.autorotate_filters((c, 0, 0, 0, -c, 0, 0, 0, 1 << 30)) == [("vflip", None)]
    assert pixels.autorotate_filters((0, 0, 0, 0, 0, 0, 0, 0, 1 << 30)) == []   # degenerate: ignored
    # 45 degrees: the CLI's rotate filter, angle printed as %f
    r = round(65536 * 2 ** -0.5)
    assert pixels.autorotate_filters((r, -r, 0, r, r, 0, 0, 0, 1 << 30)) == [("rotate", "315.000000*PI/180")]


# ------------------------------------------------------------------------------- InternVideo2 pixels
def test_window_frames_are_the_whole_frame_squeezed(tmp_path):
    """window_frames keep the whole frame (a stripe at the left edge survives; the CLIP crop cuts it
    away), resized as torchvision's Resize((224, 224), BICUBIC) on uint8 without antialias."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    frames = []
    for i in range(25):
        f = frame_pattern(i, 160, 96)
        f[:, :12] = (255, 0, 0)
        frames.append(f)
    path = write_lossless(tmp_path / "stripe.mp4", frames)
    streams = _all_streams(path)
    window = streams["window_frames"][0][0]
    assert window.shape == (224, 224, 3)
    assert (window[:, :8, 0] > 200).all() and (window[:, :8, 1:] < 60).all()
    assert not (streams["clip_frame"][0][:, :8, 0] > 200).all()
    native = _all_streams(path, size=None)["window_frames"][0][0]
    assert native.shape == (96, 160, 3)
    reference = TF.resize(torch.from_numpy(native).permute(2, 0, 1), [224, 224],
                          interpolation=InterpolationMode.BICUBIC, antialias=False).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(window, reference)
    np.testing.assert_array_equal(encoder_pixels.square_resize(native), reference)



def test_display_matrix_is_read_by_key_as_pyav_19_serves_it(coded):
    """PyAV 19 (Python >= 3.12) hands out side data as a mapping whose iteration yields the types
    (PyAV 18 yields the side data): reading the matrix must not depend on it (iterating crashed
    every extraction under PyAV 19)."""
    frames, _, folder = coded
    turned = write_lossless(folder / "keyed.mp4", frames, rotation=90)
    with av.open(str(turned)) as container:
        frame = next(container.decode(video=0))
    expected = pixels.display_matrix(frame)
    assert expected is not None and pixels.display_rotation(expected) == pytest.approx(90)
    by_type = {side.type: side for side in frame.side_data}   # PyAV 18 here: iteration yields SideData
    as_pyav_19 = SimpleNamespace(side_data=by_type)           # a dict: iteration yields the keys
    assert pixels.display_matrix(as_pyav_19) == expected
    assert pixels.display_matrix(SimpleNamespace(side_data={})) is None
