"""Planted-moment data: feature stores + QVHighlights-format annotations a model must learn.

Why: real QVHighlights features are not available here, and a training loop that runs is not one
that learns. Each query belongs to one of ``n_concepts`` concepts; its text tokens carry that
concept's direction plus noise. Its video carries the same concept's (per-stream) direction inside
the annotated windows, noise elsewhere, and one distractor segment of ANOTHER concept, so only a
model that reads the query finds the moment. Window lengths and positions vary; some queries have
2-3 windows. Saliency scores (3 raters, 0-4) are higher near the window centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrhd.features.profiles import Profile
from mrhd.features.write import write_store
from mrhd.io import jsonl_text


@dataclass
class SyntheticSpec:
    n_train: int = 400
    n_val: int = 100
    n_concepts: int = 8
    min_clips: int = 30
    max_clips: int = 75
    signal: float = 1.0       # planted direction's norm relative to the noise norm
    text_signal: float = 1.5
    seed: int = 0
    # Length mix: this share of videos has exactly max_clips clips (QVHighlights: 97 % are 150 s);
    # query token counts drawn with these weights from token_counts (None: uniform 6..19).
    full_length_share: float = 0.0
    token_counts: tuple[int, ...] | None = None
    token_weights: tuple[float, ...] | None = None


# QVHighlights train (7,218 queries): words per query 4..28 and how often each occurs; a CLIP query
# has about two tokens more (start and end of text).
QVHIGHLIGHTS_WORDS = dict(zip(range(4, 29), (4, 289, 602, 771, 916, 834, 715, 674, 539, 470, 393, 281, 209,
                                              166, 96, 82, 63, 31, 27, 18, 17, 7, 5, 3, 4)))


def qvhighlights_like(**changes) -> SyntheticSpec:
    """Clip and token counts distributed as in QVHighlights train, for speed measurements whose
    padding should be the real one: 97 % of videos at 75 clips, the rest 30..74; queries of
    QVHighlights' word counts + 2 tokens."""
    return SyntheticSpec(**{"min_clips": 30, "max_clips": 75, "full_length_share": 0.97,
                            "token_counts": tuple(w + 2 for w in QVHIGHLIGHTS_WORDS),
                            "token_weights": tuple(float(n) for n in QVHIGHLIGHTS_WORDS.values()), **changes})


def _windows(rng: np.random.Generator, n_clips: int) -> list[list[int]]:
    """1 window (70 %), else 2-3 disjoint windows; each 1..12 clips, in clip units [st, ed)."""
    n_win = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    taken = np.zeros(n_clips, bool)
    out = []
    for _ in range(n_win * 10):
        if len(out) == n_win:
            break
        length = int(rng.integers(1, min(12, n_clips // (2 * n_win)) + 1))
        st = int(rng.integers(0, n_clips - length + 1))
        if taken[max(0, st - 1): st + length + 1].any():
            continue
        taken[st: st + length] = True
        out.append([st, st + length])
    return sorted(out)


def make_synthetic(out_dir: str | Path, profile: Profile, spec: SyntheticSpec | None = None) -> dict:
    """Write ``<stream>.h5`` for every stream of ``profile`` and ``train.jsonl`` / ``val.jsonl``
    into ``out_dir``; returns their paths."""
    spec = spec or SyntheticSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    dirs = {s: rng.normal(size=(spec.n_concepts, profile.dim_of(s))) for s in profile.streams}
    dirs = {s: d / np.linalg.norm(d, axis=1, keepdims=True) for s, d in dirs.items()}
    video_streams = profile.video + profile.audio
    videos: dict[str, dict] = {s: {} for s in video_streams}
    texts: dict[str, dict] = {s: {} for s in profile.text}
    splits: dict[str, list] = {"train": [], "val": []}
    for i in range(spec.n_train + spec.n_val):
        n_clips = int(rng.integers(spec.min_clips, spec.max_clips + 1))
        if spec.full_length_share and rng.random() < spec.full_length_share:
            n_clips = spec.max_clips
        concept = int(rng.integers(spec.n_concepts))
        distractor = int((concept + rng.integers(1, spec.n_concepts)) % spec.n_concepts) \
            if spec.n_concepts > 1 else None
        wins = _windows(rng, n_clips)
        inside = np.zeros(n_clips, bool)
        for st, ed in wins:
            inside[st:ed] = True
        free = np.flatnonzero(~inside)
        d_len = int(rng.integers(2, 8))
        d_start = int(free[rng.integers(len(free))]) if len(free) else 0
        dis = np.zeros(n_clips, bool)
        dis[d_start: d_start + d_len] = True
        dis &= ~inside
        vid = f"syn{i:05d}_0.0_{2.0 * n_clips:.1f}"
        for s in video_streams:
            dim = profile.dim_of(s)
            x = rng.normal(size=(n_clips, dim))
            scale = spec.signal * np.sqrt(dim)
            x[inside] += scale * dirs[s][concept]
            if distractor is not None:
                x[dis] += scale * dirs[s][distractor]
            videos[s][vid] = x.astype(np.float32)
        if spec.token_counts is None:
            n_tok = int(rng.integers(6, 20))
        else:
            weights = None if spec.token_weights is None else np.asarray(spec.token_weights, float)
            n_tok = int(rng.choice(spec.token_counts, p=None if weights is None else weights / weights.sum()))
        for s in profile.text:
            dim = profile.dim_of(s)
            t = rng.normal(size=(n_tok, dim)) + spec.text_signal * np.sqrt(dim) * dirs[s][concept]
            texts[s][i] = t.astype(np.float32)
        clip_ids = [int(c) for c in np.flatnonzero(inside)]
        scores = []
        for c in clip_ids:
            st, ed = next(w for w in wins if w[0] <= c < w[1])
            centre = 1.0 - abs((c + 0.5) - (st + ed) / 2) / max(1.0, (ed - st) / 2)
            scores.append([int(np.clip(round(2 + 2 * centre + rng.normal(0, 0.5)), 0, 4)) for _ in range(3)])
        # as many CLIP BPE tokens as stored text tokens (SOT + body + EOT), so MESM can map the
        # query text onto its stored token features (FW-MESM word classes)
        query = " ".join([f"concept {concept}"] + ["clip"] * (n_tok - 4))
        line = {"qid": i, "query": query, "duration": 2.0 * n_clips, "vid": vid,
                "relevant_windows": [[2.0 * st, 2.0 * ed] for st, ed in wins],
                "relevant_clip_ids": clip_ids, "saliency_scores": scores}
        splits["train" if i < spec.n_train else "val"].append(line)
    for s in video_streams:
        write_store(out / f"{s}.h5", s, videos=videos[s], dtype="float16")
    for s in profile.text:
        write_store(out / f"{s}.h5", s, texts=texts[s])
    paths = {}
    for name, lines in splits.items():
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text(jsonl_text(lines))
    paths["features"] = out
    return paths
