"""The folder layouts of the authors' released features, read from the loaders that consume them.

Why a table: every release names its folders, files and array keys its own way, and a researcher's
first job is to train on exactly those numbers. Each :class:`Source` says where one stream's files
lie in a release and how the authors' loader reads one of them (file:line of the authors' code,
at the commits named in docs/FEATURES.md "Released features"); :mod:`mrhd.features.importing`
copies them into ``<stream>.h5`` stores without changing a value.

Clip length: a release seldom says it in its files. It comes, first to last, from ``--clip-len``,
from the source itself (Charades-STA VGG: 1/6 s; InternVideo2 folders ``..._w2s`` / ``..._w1s``),
or from the benchmark its video ids belong to (:func:`dataset_of_ids`): Charades-STA releases use
1-s clips (CG-DETR ``cg_detr/scripts/charades_sta/train.sh:65`` ``--clip_length 1``; MESM
``config/charades/C+SF_C.json`` ``"clip_len": 1``; VideoLights
``video_lights/scripts/charades_sta/train.sh:74``), the others 2 s (Moment-DETR
``start_end_dataset.py:31`` ``clip_len=2``; CG-DETR ``scripts/tacos/train.sh:42``). Training then
checks the clip length against the annotations' durations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mrhd.encoders.streams import STREAMS
from mrhd.errors import MrhdError

DEFAULT_CLIP_LEN = 2.0
# the clip length of the released features of a benchmark where it is not 2 s (module docstring)
RELEASE_CLIP_LEN = {"charades_sta": 1.0}
VGG_CLIP_LEN = 1 / 6   # 24 fps, one VGG16 feature every 4 frames; CG-DETR train_vgg.sh:62 --clip_length 0.166666


@dataclass(frozen=True)
class Source:
    """One stream of a release: where its files are and how one of them is read."""

    stream: str
    places: tuple[str, ...]          # folders (or merged .hdf5 files) relative to SRC; glob patterns allowed
    suffix: str = ""                 # file name = <id><suffix>; "" for a merged .hdf5 file
    key: str | None = None           # array inside a .npz or a .pt dict (None: the file is the array)
    pooled_key: str | None = None    # text: the pooled vector's key in the same .npz
    cite: str = ""                   # the authors' loader that reads it
    clip_len: float | None = None    # fixed by the release (None: --clip-len, the folder name or the dataset)
    normalized: bool = False         # the release stores L2-normalised rows (UniVTG's h5py cache)
    dim: int | None = None           # width where the release's encoder variant is not the stream's default

    @property
    def merged(self) -> bool:
        return not self.suffix

    @property
    def width(self) -> int:
        """The width of one row: ``dim``, else the stream's (encoders/streams.py)."""
        return self.dim or STREAMS[self.stream].dim


@dataclass(frozen=True)
class Layout:
    """A release's folder layout: the sources it may hold (a release need not hold all)."""

    name: str
    release: str
    sources: tuple[Source, ...]
    needs_queries: bool = False      # computed from the query texts (GloVe): --queries required
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---- the layouts ---------------------------------------------------------------------------------
_MDETR = "jayleicn/moment_detr moment_detr/start_end_dataset.py"
_QD_AUDIO = "wjun0830/QD-DETR qd_detr/start_end_dataset_audio.py"
_CG = "wjun0830/CGDETR cg_detr/start_end_dataset.py"
_VL = "dpaul06/VideoLights video_lights/start_end_dataset.py"

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout(
        "moment_detr",
        "Moment-DETR's QVHighlights features (moment_detr_features.tar.gz) and the releases that copy its "
        "folder names: QD-DETR/TR-DETR audio, CG-DETR's Charades-STA and TACoS, VideoLights' BLIP-2",
        (
            Source("slowfast", ("slowfast_features",), ".npz", "features",
                   cite=f"{_MDETR}:197-201 (np.load(<vid>.npz)['features']); {_CG}:489-494 (.npy fallback)"),
            Source("clip", ("clip_features",), ".npz", "features", cite=f"{_MDETR}:197-201"),
            Source("clip_text", ("clip_text_features",), ".npz", "last_hidden_state", "pooler_output",
                   cite=f"{_MDETR}:174-176 (qid<qid>.npz, last_hidden_state or pooler_output); "
                        f"{_CG}:413-415 (TACoS: <qid>.npz)"),
            Source("pann", ("pann_features", "umt_pann_features"), ".npy",
                   cite=f"{_QD_AUDIO}:356-358 (<vid>.npy); mingyao1120/TR-DETR tr_detr/scripts/train_audio.sh:40; "
                        "QD-DETR qd_detr/scripts/train_audio.sh:40 (umt_pann_features)"),
            Source("blip2", ("blip_video_features",), ".npz", "features",
                   cite=f"{_VL}:390-398; video_lights/scripts/qvhl/train.sh:33"),
            Source("blip2_text", ("blip_aug_text_features_openai", "blip_text_features"), ".npz",
                   "last_hidden_state",
                   cite=f"{_VL}:351-364; video_lights/scripts/qvhl/train.sh:48, scripts/charades_sta/train.sh:40"),
            Source("vgg", ("vgg_features/rgb_features", "rgb_features"), ".npy", clip_len=VGG_CLIP_LEN,
                   cite=f"{_CG}:489-494; cg_detr/scripts/charades_sta/train_vgg.sh:20,62"),
        ),
    ),
    Layout(
        "univtg",
        "UniVTG's releases (vid_slowfast/, vid_clip/, txt_clip/ per benchmark; or its h5py/ cache)",
        (
            Source("slowfast", ("vid_slowfast",), ".npz", "features",
                   cite="showlab/UniVTG main/dataset.py:376-382; scripts/qvhl_pretrain.sh:76"),
            Source("clip", ("vid_clip",), ".npz", "features", cite="showlab/UniVTG main/dataset.py:376-382"),
            Source("clip_text", ("txt_clip",), ".npz", "last_hidden_state",
                   cite="showlab/UniVTG main/dataset.py:342-344 (<qid>.npz)"),
            Source("slowfast", ("h5py/vid_slowfast.hdf5",), normalized=True,
                   cite="showlab/UniVTG data/create_h5py.py:28-32 (L2-normalised before writing)"),
            Source("clip", ("h5py/vid_clip.hdf5",), normalized=True, cite="showlab/UniVTG data/create_h5py.py:28-32"),
            Source("clip_text", ("h5py/txt_clip.hdf5",), normalized=True,
                   cite="showlab/UniVTG data/create_h5py.py:35-39"),
        ),
        notes=("the h5py/ cache holds L2-normalised rows (recorded in the recipe); the .npz folders win "
               "where both exist",),
    ),
    Layout(
        "mesm",
        "MESM's merged HDF5 files (clip_image.hdf5, slowfast.hdf5, vgg.hdf5: one dataset per video)",
        (
            Source("clip", ("clip_image.hdf5",), cite="lntzm/MESM dataset/qvhighlights.py:201-211; data/npy2hdf5.py"),
            Source("slowfast", ("slowfast.hdf5",), cite="lntzm/MESM dataset/charades.py:108-118"),
            Source("vgg", ("vgg.hdf5",), clip_len=VGG_CLIP_LEN,
                   cite="lntzm/MESM config/charades/VGG_GloVe.json (feat_files vgg.hdf5, clip_len 0.17)"),
        ),
        notes=("MESM encodes the query text online: import clip_text from the Moment-DETR release or run "
               "`mrhd extract --queries`",),
    ),
    Layout(
        "umt",
        "UMT's TVSum release (video_features/<vid>_rgb.npy + <vid>_opt.npy I3D, audio_features/, "
        "query_features/), as QD-DETR, TR-DETR, CG-DETR and VideoLights read it",
        (
            Source("i3d_rgb", ("video_features",), "_rgb.npy",
                   cite=f"{_QD_AUDIO}:321-332 (np.load(<vid>_rgb.npy), concatenated with _opt); "
                        "TencentARC/UMT datasets/tvsum.py:33-38"),
            Source("i3d_flow", ("video_features",), "_opt.npy", cite=f"{_QD_AUDIO}:329-332"),
            Source("pann", ("audio_features",), ".npy",
                   cite="TencentARC/UMT datasets/tvsum.py:35; QD-DETR qd_detr/scripts/tvsum/train_tvsum_audio.sh:27"),
            Source("clip_text", ("query_features",), ".npz", "token",
                   cite=f"{_QD_AUDIO}:291-294 (tvsum: <qid>.npz ['token'], not normalised, not cut); "
                        "TencentARC/UMT datasets/tvsum.py:85-88"),
            Source("slowfast", ("sf_features",), ".npz", "features", cite=f"{_VL}:390-398 (tvsum)"),
            Source("clip", ("clip_features",), ".npz", "features", cite=f"{_VL}:390-398 (tvsum)"),
            Source("blip2", ("video_features_blip",), ".npz", "features", cite=f"{_VL}:390-398 (tvsum)"),
            Source("blip2_text", ("query_features_blip",), ".npz", "token", cite=f"{_VL}:355-358 (tvsum: 'token')"),
        ),
        notes=("TVSum's qid is its vid: text is stored as qid<vid>",),
    ),
    Layout(
        "internvideo2",
        "InternVideo2-6B video and LLaMA text features (.pt per video / query) that the InternVideo2 "
        "CG-DETR port, FlashVTG and SG-DETR train on",
        (
            Source("internvideo2", ("*internvideo2_videoclip_6b_w*s", "*_6b"), ".pt", "features",
                   cite="OpenGVLab/InternVideo InternVideo2/grounding/CGDETR-main/cg_detr/start_end_dataset.py "
                        "_get_video_feat_by_vid (torch.load(<vid>.pt)['features'] or the tensor); "
                        "Zhuo-Cao/FlashVTG FlashVTG/start_end_dataset.py:515-520"),
            Source("internvideo2_text", ("*llama_text_feature",), ".pt", dim=4096,   # LLaMA-7B tokens of CLIP-6B
                   cite="OpenGVLab/InternVideo .../cg_detr/start_end_dataset.py _get_query_feat_by_qid "
                        "(torch.load(qid<qid>.pt)); Zhuo-Cao/FlashVTG FlashVTG/start_end_dataset.py:440-441"),
        ),
        notes=("clip length from the folder name: _w2s = 2 s (QVHighlights), _w1s = 1 s (Charades-STA; "
               "cg_detr/scripts/charades_sta/train.sh --clip_length 1)",
               "the text is InternVideo2-CLIP-6B's LLaMA tokens (4096-d): train with --profile internvideo2_6b"),
    ),
    Layout(
        "glove",
        "GloVe 6B 300-d word vectors (glove.6B.300d.txt) of each query's words, as CG-DETR and UMT embed "
        "Charades-STA queries for the VGG features",
        (
            Source("glove", ("glove.6B.300d.txt",),
                   cite=f"{_CG}:136-141,221-223 (vocab.stoi.get(w.lower(), 400000) over query.split(); "
                        "unknown words: the appended zero row)"),
        ),
        needs_queries=True,
        notes=("needs --queries ANN.jsonl: one row per whitespace-separated word of each query",),
    ),
)}


# ---- finding what a folder holds -----------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    """A source present in SRC: its resolved location (a folder, or a merged file)."""

    source: Source
    path: Path

    @property
    def label(self) -> str:
        return self.path.name + ("" if self.source.merged else "/")


def suffixes(source: Source) -> tuple[str, ...]:
    """File endings a folder source reads: a video ``.npz`` folder may also hold ``.npy`` files
    (CG-DETR start_end_dataset.py:489-494 tries ``<vid>.npz``, then ``<vid>.npy``)."""
    if source.suffix == ".npz" and source.key == "features":
        return (".npz", ".npy")
    return (source.suffix,)


def _places(src: Path, pattern: str) -> list[Path]:
    if any(ch in pattern for ch in "*?["):
        return sorted(p for p in src.glob(pattern))
    path = src / pattern
    return [path] if path.exists() else []


def find_sources(src: Path, layout: Layout) -> list[Found]:
    """The sources of ``layout`` present in ``src``: per stream the first place that exists (a
    folder holding at least one ``*<suffix>`` file, or the merged file)."""
    found: list[Found] = []
    taken: set[str] = set()
    for source in layout.sources:
        if source.stream in taken:
            continue
        for pattern in source.places:
            hit = None
            for place in _places(src, pattern):
                if source.merged and place.is_file():
                    hit = place
                elif not source.merged and place.is_dir() and any(
                        next(place.glob(f"*{suffix}"), None) for suffix in suffixes(source)):
                    hit = place
                if hit:
                    break
            if hit:
                found.append(Found(source, hit))
                taken.add(source.stream)
                break
    return found


def detect_layout(src: Path) -> tuple[Layout, list[Found]]:
    """The layout whose sources ``src`` holds most of; a one-line error when none matches."""
    scored = [(len(found), lay, found) for lay in LAYOUTS.values() if (found := find_sources(src, lay))]
    if not scored:
        looked = "; ".join(f"{lay.name}: {', '.join(dict.fromkeys(p for s in lay.sources for p in s.places))}"
                           for lay in LAYOUTS.values())
        raise MrhdError(f"{src} holds no released feature layout mrhd knows (looked for {looked}); "
                        f"pass --layout NAME ({', '.join(LAYOUTS)}) or point SRC at the release's folder")
    # most sources found wins; a tie goes to the layout listed first (a lone clip_features/ folder is
    # read the same way by moment_detr and umt)
    best = max(scored, key=lambda t: t[0])
    return best[1], best[2]


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise MrhdError(f"unknown layout {name!r}; choose one of: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


# ---- ids and clip lengths ------------------------------------------------------------------------
# video id patterns of the benchmarks (docs/FEATURES.md conventions; the shared annotation files)
_DATASET_IDS = (
    ("qvhighlights", re.compile(r".+_\d+(\.\d+)?_\d+(\.\d+)?$")),   # {youtube_id}_{start}_{end}
    ("tacos", re.compile(r"^s\d+-d\d+")),                              # s13-d21
    ("charades_sta", re.compile(r"^[A-Z0-9]{5}$")),                    # AO8RW
    ("tvsum", re.compile(r"^[A-Za-z0-9_-]{11}$")),                     # a YouTube id
)


DATASETS: tuple[str, ...] = tuple(name for name, _ in _DATASET_IDS)


def dataset_of_ids(ids) -> str | None:
    """The benchmark most of ``ids`` (video ids) look like, or None."""
    counts: dict[str, int] = {}
    ids = list(ids)[:500]
    for vid in ids:
        for name, pattern in _DATASET_IDS:
            if pattern.match(vid):
                counts[name] = counts.get(name, 0) + 1
                break
    if not counts:
        return None
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if n * 2 > len(ids) else None


_WINDOW = re.compile(r"_w(\d+(?:\.\d+)?)s$")


def clip_len_of(found: Found, dataset: str | None, given: float | None) -> tuple[float, str]:
    """The clip length of one source's rows and why (module docstring)."""
    if given is not None:
        return float(given), "--clip-len"
    if found.source.clip_len is not None:
        return float(found.source.clip_len), f"the {found.source.stream} release"
    window = _WINDOW.search(found.path.name)
    if window:
        return float(window.group(1)), f"folder name {found.path.name}"
    name = found.path.name.lower()
    if dataset is None and ("charade" in name or "charade" in str(found.path.parent).lower()):
        dataset = "charades_sta"
    if dataset is not None:
        return RELEASE_CLIP_LEN.get(dataset, DEFAULT_CLIP_LEN), f"the {dataset} release"
    return DEFAULT_CLIP_LEN, "default"
