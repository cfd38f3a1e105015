"""The feature streams mrhd knows: one row per store name (``<stream>.h5``).

Why one table: the encoder factory (which module builds a stream), ``mrhd extract`` (the text
stream of a video encoder), the feature profiles (input widths before any store is opened) and the
checkpoint converter (the stream behind an authors' feature folder name) all need these facts.

Import-only streams (``module`` None) have no encoder in mrhd: their numbers come only from the
authors' released files through ``mrhd features import`` (:mod:`mrhd.features.importing`), e.g. the
Charades-STA VGG features, GloVe word vectors and the TVSum I3D features.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    name: str                        # store name, and the encoder's name for `mrhd extract --encoders`
    kind: str                        # "video" and "audio": one row per clip; "text": one per token
    dim: int                         # feature width (docs/FEATURES.md); a store's ``dim`` must equal it
    module: str | None               # the module that registers the stream's encoder; None: import-only
    text: str | None = None          # a video encoder's query stream, read from the same checkpoint
    folder_hint: str | None = None   # part of the authors' feature folder names (opt.v_feat_dirs)


STREAMS: dict[str, Stream] = {s.name: s for s in (
    Stream("clip", "video", 512, "mrhd.encoders.clip", text="clip_text", folder_hint="clip"),
    Stream("slowfast", "video", 2304, "mrhd.encoders.slowfast", folder_hint="slowfast"),
    Stream("pann", "audio", 2048, "mrhd.encoders.pann", folder_hint="pann"),
    Stream("blip2", "video", 768, "mrhd.encoders.blip2", text="blip2_text", folder_hint="blip"),
    Stream("internvideo2", "video", 768, "mrhd.encoders.internvideo2", text="internvideo2_text",
           folder_hint="internvideo"),
    Stream("clip_text", "text", 512, "mrhd.encoders.clip"),
    Stream("blip2_text", "text", 768, "mrhd.encoders.blip2"),
    Stream("internvideo2_text", "text", 1024, "mrhd.encoders.internvideo2"),   # the 1B default's BERT-large tokens (6B: 4096, profile internvideo2_6b)
    # import-only (docs/FEATURES.md, "Released features"): no encoder here, `mrhd features import`
    Stream("vgg", "video", 4096, None, folder_hint="vgg"),   # Charades-STA VGG16 fc7 (UMT/CG-DETR release)
    Stream("i3d_rgb", "video", 1024, None),     # TVSum I3D RGB stream (UMT release, <vid>_rgb.npy)
    Stream("i3d_flow", "video", 1024, None),    # TVSum I3D optical-flow stream (<vid>_opt.npy)
    Stream("glove", "text", 300, None),         # GloVe 6B 300-d word vectors of the query words
)}

# what `mrhd extract --encoders` takes: the per-clip streams that have an encoder
VIDEO_ENCODERS: tuple[str, ...] = tuple(s.name for s in STREAMS.values() if s.kind != "text" and s.module)
# streams whose numbers only `mrhd features import` writes
IMPORT_ONLY: tuple[str, ...] = tuple(s.name for s in STREAMS.values() if s.module is None)
# video encoder -> its text stream (`mrhd extract --queries`)
TEXT_STREAM_OF: dict[str, str] = {s.name: s.text for s in STREAMS.values() if s.text}


def encoder_of(stream: str) -> str:
    """The ``--encoders`` name that writes ``stream`` (a text stream is written by its video encoder)."""
    return next((name for name, text in TEXT_STREAM_OF.items() if text == stream), stream)


def stream_of_folder(folder_name: str) -> str | None:
    """The stream whose features an authors' feature folder holds (``slowfast_features`` ->
    ``slowfast``), or None when the name says nothing known."""
    name = folder_name.lower()
    return next((s.name for s in STREAMS.values() if s.folder_hint and s.folder_hint in name), None)
