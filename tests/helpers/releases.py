"""Released feature folders written the way each authors' release lays them out (names, keys,
shapes, dtypes; docs/FEATURES.md "Released features"), with small random numbers. Each writer
returns what it wrote: ``{stream: {key: array}}`` (key = video id, or the qid for text) and the
pooled text vectors, so a test can compare a store with the source arrays.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

QVH_VIDS = ["RoripwjYFp8_60.0_210.0", "NUsG9BgSes0_210.0_360.0", "j7rJstUseKg_360.0_510.0"]
CHARADES_VIDS = ["AO8RW", "Y6R7T", "3MSZA"]
TACOS_VIDS = ["s13-d21", "s17-d69"]
TVSUM_VIDS = ["akI8YFjEmUw", "AwmHb44_ouw"]


class Release(dict):
    """``{stream: {key: array}}`` plus ``pooled`` (text stream -> {qid: vector}) and ``broken``
    (file names written damaged)."""

    def __init__(self):
        super().__init__()
        self.pooled: dict[str, dict] = {}
        self.broken: list[str] = []

    def put(self, stream: str, key: str, array: np.ndarray) -> np.ndarray:
        self.setdefault(stream, {})[key] = array
        return array


def _rows(rng, n, dim, dtype):
    return rng.normal(size=(n, dim)).astype(dtype)


def moment_detr(root: Path, *, vids=QVH_VIDS, qids=(2579, 7803, 12), text_prefix="qid", audio=True, blip=True,
                broken=True, seed=0, clip_rows=75) -> Release:
    """moment_detr_features.tar.gz: clip_features/ and slowfast_features/ <vid>.npz ['features'] (SlowFast
    one clip longer, as HERO's ceil against CLIP's round), clip_text_features/qid<qid>.npz
    ['last_hidden_state', 'pooler_output' [1, 512]]; QD-DETR/TR-DETR pann_features/<vid>.npy;
    VideoLights blip_video_features/<vid>.npz, blip_aug_text_features_openai/qid<qid>.npz."""
    rng = np.random.default_rng(seed)
    out = Release()
    folders = {"clip": "clip_features", "slowfast": "slowfast_features", "clip_text": "clip_text_features",
               "pann": "pann_features", "blip2": "blip_video_features", "blip2_text": "blip_aug_text_features_openai"}
    for f in folders.values():
        (root / f).mkdir(parents=True, exist_ok=True)
    for i, vid in enumerate(vids):
        n = clip_rows - i
        np.savez(root / "clip_features" / f"{vid}.npz", features=out.put("clip", vid, _rows(rng, n, 512, np.float32)))
        np.savez(root / "slowfast_features" / f"{vid}.npz",
                 features=out.put("slowfast", vid, _rows(rng, n + 1, 2304, np.float16)))
        if audio:
            np.save(root / "pann_features" / f"{vid}.npy", out.put("pann", vid, _rows(rng, n - 1, 2048, np.float32)))
        if blip:
            np.savez(root / "blip_video_features" / f"{vid}.npz",
                     features=out.put("blip2", vid, _rows(rng, n, 768, np.float32)))
    for q in qids:
        tokens = out.put("clip_text", str(q), _rows(rng, 5 + len(str(q)), 512, np.float32))
        pooled = rng.normal(size=(1, 512)).astype(np.float32)
        out.pooled.setdefault("clip_text", {})[str(q)] = pooled[0]
        np.savez(root / "clip_text_features" / f"{text_prefix}{q}.npz", last_hidden_state=tokens, pooler_output=pooled)
        if blip:
            np.savez(root / "blip_aug_text_features_openai" / f"{text_prefix}{q}.npz",
                     last_hidden_state=out.put("blip2_text", str(q), _rows(rng, 9, 768, np.float32)))
    for stream in ("pann", "blip2", "blip2_text"):
        if stream not in out:
            (root / folders[stream]).rmdir()
    if broken:   # a truncated download
        good = (root / "clip_features" / f"{vids[0]}.npz").read_bytes()
        (root / "clip_features" / "zzBroken_0.0_150.0.npz").write_bytes(good[: len(good) // 3])
        out.broken.append("clip_features/zzBroken_0.0_150.0.npz")
    return out


def cg_detr_charades(root: Path, seed=1) -> Release:
    """CG-DETR's Charades-STA release: the moment_detr folders at 1-s clips, plus
    vgg_features/rgb_features/<vid>.npy (4096, 1/6-s clips)."""
    out = moment_detr(root, vids=CHARADES_VIDS, qids=(0, 1, 12404), audio=False, blip=False, broken=False,
                      seed=seed, clip_rows=31)
    rng = np.random.default_rng(seed + 10)
    (root / "vgg_features" / "rgb_features").mkdir(parents=True)
    for vid in CHARADES_VIDS:
        np.save(root / "vgg_features" / "rgb_features" / f"{vid}.npy", out.put("vgg", vid, _rows(rng, 186, 4096, np.float32)))
    return out


def cg_detr_tacos(root: Path, seed=2) -> Release:
    """CG-DETR's TACoS release: text files <qid>.npz without the qid prefix; a video as .npy (the
    loader's fallback)."""
    out = moment_detr(root, vids=TACOS_VIDS, qids=("s13-d21_0", "s17-d69_3"), text_prefix="", audio=False,
                      blip=False, broken=False, seed=seed, clip_rows=40)
    vid = TACOS_VIDS[1]
    (root / "clip_features" / f"{vid}.npz").unlink()
    np.save(root / "clip_features" / f"{vid}.npy", out["clip"][vid])
    return out


def univtg(root: Path, seed=3) -> Release:
    """UniVTG: vid_slowfast/, vid_clip/ <vid>.npz ['features'], txt_clip/<qid>.npz ['last_hidden_state']."""
    rng = np.random.default_rng(seed)
    out = Release()
    for f in ("vid_slowfast", "vid_clip", "txt_clip"):
        (root / f).mkdir(parents=True)
    for vid in QVH_VIDS[:2]:
        np.savez(root / "vid_slowfast" / f"{vid}.npz", features=out.put("slowfast", vid, _rows(rng, 75, 2304, np.float32)))
        np.savez(root / "vid_clip" / f"{vid}.npz", features=out.put("clip", vid, _rows(rng, 75, 512, np.float32)))
    for q in (3, 4):
        np.savez(root / "txt_clip" / f"{q}.npz", last_hidden_state=out.put("clip_text", str(q), _rows(rng, 7, 512, np.float32)))
    return out


def mesm(root: Path, seed=4) -> Release:
    """MESM: clip_image.hdf5 and slowfast.hdf5, one dataset per video (data/npy2hdf5.py)."""
    rng = np.random.default_rng(seed)
    out = Release()
    root.mkdir(parents=True, exist_ok=True)
    for name, stream, dim in (("clip_image.hdf5", "clip", 512), ("slowfast.hdf5", "slowfast", 2304)):
        with h5py.File(root / name, "w") as f:
            for vid in CHARADES_VIDS:
                f.create_dataset(vid, data=out.put(stream, vid, _rows(rng, 30, dim, np.float32)))
    return out


def umt_tvsum(root: Path, seed=5) -> Release:
    """UMT's TVSum: video_features/<vid>_rgb.npy + <vid>_opt.npy (I3D 1024 each), audio_features/<vid>.npy,
    query_features/<vid>.npz ['token'] (TVSum's qid is its vid)."""
    rng = np.random.default_rng(seed)
    out = Release()
    for f in ("video_features", "audio_features", "query_features"):
        (root / f).mkdir(parents=True)
    for vid in TVSUM_VIDS:
        np.save(root / "video_features" / f"{vid}_rgb.npy", out.put("i3d_rgb", vid, _rows(rng, 33, 1024, np.float32)))
        np.save(root / "video_features" / f"{vid}_opt.npy", out.put("i3d_flow", vid, _rows(rng, 33, 1024, np.float32)))
        np.save(root / "audio_features" / f"{vid}.npy", out.put("pann", vid, _rows(rng, 32, 2048, np.float32)))
        np.savez(root / "query_features" / f"{vid}.npz", token=out.put("clip_text", vid, _rows(rng, 6, 512, np.float32)))
    return out


def internvideo2(root: Path, window="w2s", vids=QVH_VIDS[:2], seed=6) -> Release:
    """The InternVideo2 release: <prefix>_internvideo2_videoclip_6b_<window>/<vid>.pt (a float16 tensor,
    one as {'features': tensor}), <prefix>_internvideo2_llama_text_feature/qid<qid>.pt (bfloat16)."""
    rng = np.random.default_rng(seed)
    out = Release()
    prefix = "qvhighlight" if window == "w2s" else "charade_sta"
    vdir = root / f"{prefix}_internvideo2_videoclip_6b_{window}"
    tdir = root / f"{prefix}_internvideo2_llama_text_feature"
    vdir.mkdir(parents=True)
    tdir.mkdir(parents=True)
    for i, vid in enumerate(vids):
        x = out.put("internvideo2", vid, _rows(rng, 20, 768, np.float16))
        torch.save({"features": torch.from_numpy(x)} if i else torch.from_numpy(x), vdir / f"{vid}.pt")
    for q in (5, 6):
        t = torch.from_numpy(_rows(rng, 11, 4096, np.float32)).to(torch.bfloat16)
        out.put("internvideo2_text", str(q), t.float().numpy())
        torch.save(t, tdir / f"qid{q}.pt")
    return out


def glove(root: Path, queries: list[dict], seed=7) -> tuple[Release, dict[str, np.ndarray]]:
    """A small glove.6B.300d.txt: a vector per known word (the file's format: word then 300 numbers)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    words = sorted({w.lower() for q in queries for w in q["query"].split()} - {"zyxunknown"})
    vectors = {w: rng.normal(size=300).astype(np.float32) for w in words}
    lines = [w + " " + " ".join(repr(float(v)) for v in vec) for w, vec in vectors.items()]
    (root / "glove.6B.300d.txt").write_text("\n".join(lines) + "\n")
    out = Release()
    zero = np.zeros(300, np.float32)
    for q in queries:
        out.put("glove", str(q["qid"]), np.stack([vectors.get(w.lower(), zero) for w in q["query"].split()]))
    return out, vectors
