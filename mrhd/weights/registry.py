"""The released checkpoints mrhd knows by id: grounding models and the frozen encoders.

Every URL below was read from the authors' own README or repository (``page`` says where). A file
that is only published in a Google Drive *folder* has no direct URL (``urls`` empty): the user
downloads it by hand and passes its path. ``sha256`` is given only where the publisher states it
(OpenAI puts it in the CLIP URL); elsewhere it is None and the download is not verified.

Numbers: ``val`` are the metrics files the authors committed beside the released checkpoint
(QVHighlights val, official evaluation); ``paper`` are numbers from the authors' README/paper where
we read them; both are left empty rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrhd.errors import MrhdError


@dataclass(frozen=True)
class WeightsEntry:
    id: str
    kind: str                    # "model" (a grounding checkpoint) or "encoder"
    model: str                   # model name (mrhd.models registry) or encoder stream name
    filename: str                # name of the cached file
    urls: tuple[str, ...] = ()   # direct download URLs, tried in order (empty: manual download)
    sha256: str | None = None
    profile: str | None = None   # feature profile the checkpoint was trained on (models only)
    dataset: str | None = None
    licence: str = "unknown"
    page: str = ""               # where the link is published
    val: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)
    notes: str = ""
    # files that must lie beside the main file (same folder), as (filename, url): LAVIS' BLIP-2
    # checkpoint leaves the frozen EVA ViT-g in its own file
    companions: tuple[tuple[str, str], ...] = ()


def _gh_raw(repo: str, branch: str, path: str) -> str:
    return f"https://github.com/{repo}/raw/{branch}/{path}"


_ENTRIES: tuple[WeightsEntry, ...] = (
    # --- grounding models -------------------------------------------------------------------
    WeightsEntry(
        id="moment_detr-clip-qvhighlights", kind="model", model="moment_detr", filename="moment_detr_clip_qvh.ckpt",
        urls=(_gh_raw("jayleicn/moment_detr", "main", "run_on_video/moment_detr_ckpt/model_best.ckpt"),),
        profile="clip", dataset="qvhighlights", licence="MIT (code); annotations CC BY-NC-SA 4.0",
        page="https://github.com/jayleicn/moment_detr/tree/main/run_on_video/moment_detr_ckpt",
        val={"MR-full-R1@0.5": 53.23, "MR-full-R1@0.7": 34.0, "MR-full-mAP": 30.58,
             "HL-min-VeryGood-mAP": 35.51, "HL-min-VeryGood-Hit1": 55.87},
        notes="the authors' demo checkpoint: CLIP image + text features only, no ASR pre-training "
              "(run_on_video/moment_detr_ckpt/README.md)"),
    WeightsEntry(
        id="moment_detr-slowfast_clip-qvhighlights", kind="model", model="moment_detr",
        filename="moment_detr_sf_clip_qvh.ckpt", profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://github.com/jayleicn/moment_detr#training",
        notes="the README publishes no trained SlowFast+CLIP checkpoint; train one with `mrhd train` "
              "(moment_detr/scripts/train.sh settings)"),
    WeightsEntry(
        id="qd_detr-clip-qvhighlights", kind="model", model="qd_detr", filename="qd_detr_clip_qvh.ckpt",
        urls=(_gh_raw("wjun0830/QD-DETR", "main", "results/QDDETR_onlyclip/model_best.ckpt"),),
        profile="clip", dataset="qvhighlights", licence="MIT",
        page="https://github.com/wjun0830/QD-DETR/tree/main/results/QDDETR_onlyclip",
        val={"MR-full-R1@0.5": 60.58, "MR-full-R1@0.7": 43.35, "MR-full-mAP": 38.66,
             "HL-min-VeryGood-mAP": 37.73, "HL-min-VeryGood-Hit1": 61.1}),
    WeightsEntry(
        id="qd_detr-slowfast_clip-qvhighlights", kind="model", model="qd_detr", filename="qd_detr_sf_clip_qvh.ckpt",
        urls=(_gh_raw("wjun0830/QD-DETR", "main", "results/video_checkpoint/model_best.ckpt"),
              "https://www.dropbox.com/s/yygwyljw8514d9r/videoonly.ckpt?dl=1"),
        profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://github.com/wjun0830/QD-DETR#qvhighlights-pretrained-checkpoints",
        val={"MR-full-R1@0.5": 62.9, "MR-full-R1@0.7": 46.77, "MR-full-mAP": 41.24,
             "HL-min-VeryGood-mAP": 39.49, "HL-min-VeryGood-Hit1": 64.13}),
    WeightsEntry(
        id="qd_detr-slowfast_clip_pann-qvhighlights", kind="model", model="qd_detr",
        filename="qd_detr_sf_clip_pann_qvh.ckpt",
        urls=(_gh_raw("wjun0830/QD-DETR", "main", "results/audio_checkpoint/model_best.ckpt"),
              "https://www.dropbox.com/s/hsc7jk21ppqasjt/videoaudio.ckpt?dl=1"),
        profile="slowfast_clip_pann", dataset="qvhighlights", licence="MIT",
        page="https://github.com/wjun0830/QD-DETR#qvhighlights-pretrained-checkpoints",
        val={"MR-full-R1@0.5": 63.74, "MR-full-R1@0.7": 47.74, "MR-full-mAP": 41.72,
             "HL-min-VeryGood-mAP": 39.34, "HL-min-VeryGood-Hit1": 65.03}),
    WeightsEntry(
        id="tr_detr-slowfast_clip-qvhighlights", kind="model", model="tr_detr", filename="tr_detr_sf_clip_qvh.ckpt",
        urls=(_gh_raw("mingyao1120/TR-DETR", "master",
                      "checkpoint/%5BV_SOTA%5Dhl-video_tef-exp-2023_07_24_20_09_00/model_best.ckpt"),),
        profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://github.com/mingyao1120/TR-DETR/tree/master/checkpoint",
        val={"MR-full-R1@0.5": 67.1, "MR-full-R1@0.7": 51.48, "MR-full-mAP": 45.09,
             "HL-min-VeryGood-mAP": 40.55, "HL-min-VeryGood-Hit1": 64.77}),
    WeightsEntry(
        id="cg_detr-clip-qvhighlights", kind="model", model="cg_detr", filename="cg_detr_clip_qvh.ckpt",
        # stored with Git LFS (.gitattributes): the media host serves the file, raw/ redirects there
        urls=("https://media.githubusercontent.com/media/wjun0830/CGDETR/main/"
              "run_on_video/CLIP_ckpt/qvhighlights_onlyCLIP/model_best.ckpt",
              _gh_raw("wjun0830/CGDETR", "main", "run_on_video/CLIP_ckpt/qvhighlights_onlyCLIP/model_best.ckpt")),
        profile="clip", dataset="qvhighlights", licence="MIT",
        page="https://github.com/wjun0830/CGDETR/tree/main/run_on_video/CLIP_ckpt/qvhighlights_onlyCLIP",
        val={"MR-full-R1@0.5": 65.42, "MR-full-R1@0.7": 49.61, "MR-full-mAP": 43.56,
             "HL-min-VeryGood-mAP": 39.03, "HL-min-VeryGood-Hit1": 62.97}),
    WeightsEntry(
        id="cg_detr-slowfast_clip-qvhighlights", kind="model", model="cg_detr", filename="cg_detr_sf_clip_qvh.ckpt",
        profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://drive.google.com/drive/folders/1_hEqXbvDv4AyEn5unyn_kE784ruqrzEJ",
        notes="Google Drive folder (README 'Model Zoo'): download by hand and pass the file path"),
    WeightsEntry(
        id="univtg-slowfast_clip-qvhighlights", kind="model", model="univtg", filename="univtg_sf_clip_qvh.ckpt",
        profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://drive.google.com/drive/folders/1EqwZSOVeKBCjcHe6SfeUjxM4fN6xrPf3",
        paper={"test MR-mAP": 35.47, "test HL-Hit1": 60.96, "val MR-mAP": 36.13, "val HL-Hit1": 61.81},
        notes="Google Drive folder (model.md, QVHL row): download by hand and pass the file path"),
    WeightsEntry(
        id="univtg-slowfast_clip-qvhighlights-pt", kind="model", model="univtg", filename="univtg_sf_clip_qvh_pt.ckpt",
        profile="slowfast_clip", dataset="qvhighlights", licence="MIT",
        page="https://drive.google.com/drive/folders/1ms53Lfm__zrzlvBsadIT6b17vUjFhRG7",
        paper={"test MR-mAP": 43.63, "test HL-Hit1": 66.28, "val MR-mAP": 45.44, "val HL-Hit1": 68.77},
        notes="with 4M-corpus pre-training; Google Drive folder (model.md): download by hand"),
    WeightsEntry(
        id="univtg-clip-pretrain-ft", kind="model", model="univtg", filename="univtg_clip_omni.ckpt",
        profile="clip", dataset="qvhighlights+charades+nlq+tacos+anet+didemo", licence="MIT",
        page="https://drive.google.com/drive/folders/1l6RyjGuqkzfZryCC6xwTZsvjWaIMVxIO",
        notes="CLIP-only demo checkpoint (README 'Run on your video'); Google Drive folder, download by hand"),
    # --- encoders ---------------------------------------------------------------------------
    WeightsEntry(
        id="clip-vit-b32-openai", kind="encoder", model="clip", filename="ViT-B-32.pt",
        urls=("https://openaipublic.azureedge.net/clip/models/"
              "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",),
        # OpenAI publishes the file's sha256 as the URL's folder name (CLIP clip/clip.py checks it).
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        licence="MIT", page="https://github.com/openai/CLIP (open_clip pretrained.py, ViT-B-32 openai)"),
    WeightsEntry(
        id="slowfast-r50-8x8-k400-pyslowfast", kind="encoder", model="slowfast", filename="SLOWFAST_8x8_R50.pkl",
        urls=("https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl",),
        licence="Apache-2.0", page="https://github.com/facebookresearch/SlowFast/blob/main/MODEL_ZOO.md",
        notes="Caffe2 pickle of the Kinetics-400 model the official QVHighlights features used"),
    WeightsEntry(
        id="slowfast-r50-pytorchvideo", kind="encoder", model="slowfast", filename="SLOWFAST_8x8_R50.pyth",
        urls=("https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth",),
        licence="Apache-2.0", page="https://github.com/facebookresearch/pytorchvideo/blob/main/docs/source/model_zoo.md"),
    WeightsEntry(
        id="panns-cnn14-32k", kind="encoder", model="pann", filename="Cnn14_mAP=0.431.pth",
        urls=("https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",),
        licence="CC BY 4.0 (zenodo record 3987831)", page="https://zenodo.org/record/3987831"),
    WeightsEntry(
        id="blip2-pretrain", kind="encoder", model="blip2", filename="blip2_pretrained.pth",
        urls=("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained.pth",),
        licence="BSD-3-Clause (LAVIS)", page="https://github.com/salesforce/LAVIS (blip2_feature_extractor, pretrain)",
        companions=(("eva_vit_g.pth",
                     "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"),),
        notes="Q-Former weights; the frozen EVA ViT-g comes beside it as eva_vit_g.pth (LAVIS eva_vit.py)"),
    WeightsEntry(
        id="internvideo2-1b-stage2", kind="encoder", model="internvideo2", filename="InternVideo2-stage2_1b-224p-f4.pt",
        urls=("https://huggingface.co/OpenGVLab/InternVideo2-Stage2_1B-224p-f4/resolve/main/"
              "InternVideo2-stage2_1b-224p-f4.pt",),
        page="https://huggingface.co/OpenGVLab/InternVideo2-Stage2_1B-224p-f4",
        notes="gated on the Hugging Face hub: accept the licence there, download by hand if refused"),
    WeightsEntry(
        id="internvideo2-clip-6b", kind="encoder", model="internvideo2", filename="InternVideo2_CLIP_6B.pth",
        urls=("https://huggingface.co/OpenGVLab/InternVideo2-CLIP-6B-224p-f8/resolve/main/InternVideo2_CLIP_6B.pth",),
        page="https://huggingface.co/OpenGVLab/InternVideo2-CLIP-6B-224p-f8",
        notes="gated on the Hugging Face hub; the released QVHighlights features (SG-DETR) came from this model"),
)

# Preference order for `mrhd predict` without --weights/--model: checkpoints that need only CLIP
# features, best QVHighlights val R1@0.5 first (numbers above). The first whose model is available
# in this build is the default.
CLIP_ONLY_PREFERENCE = ("cg_detr-clip-qvhighlights", "qd_detr-clip-qvhighlights", "moment_detr-clip-qvhighlights")


_REGISTRY: dict[str, WeightsEntry] = {e.id: e for e in _ENTRIES}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    """Add (or replace) an entry: site-specific mirrors, private checkpoints, tests."""
    _REGISTRY[entry.id] = entry
    return entry


def entries() -> list[WeightsEntry]:
    return list(_REGISTRY.values())


def find_entry(weights_id: str) -> WeightsEntry | None:
    return _REGISTRY.get(weights_id)


def get_entry(weights_id: str) -> WeightsEntry:
    entry = find_entry(weights_id)
    if entry is None:
        raise MrhdError(f"unknown weights id {weights_id!r} and no such file; see `mrhd weights list`")
    return entry
