"""How a golden fixture's raw features and batch were drawn, read from the fixture's own files.

Each fixture states its recipe in words: ``config.json["seeds"]`` (for example ``"torch.manual_seed(1)
then per sample i in order: randn(L_i,2304) slowfast, randn(L_i,512) clip, randn(Lq_i,512) text; then
randn(512) pooler per sample"``) or, in older cases, the README's "Raw features:" sentence. This
module parses those sentences into draws, so the dataset and profile tests rebuild the raw features
of any fixture made the same way (other seeds, sizes, streams, lengths) instead of assuming the first
set's. Lengths: video clips from the annotations (duration / clip length), text tokens from
``config.json["raw_txt_lens"]``, or, where absent, the fixture's valid length when that is below the
cap (no truncation can have happened); otherwise the test fails and says what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# words of a recipe -> our store streams; "text" is the query's token features
_STREAM_WORDS = (("blip video", "blip2"), ("blip text", "blip2_text"), ("clip-text", "clip_text"),
                 ("clip text", "clip_text"), ("slowfast", "slowfast"), ("clip", "clip"), ("text", "clip_text"),
                 ("pooler", None), ("pooled", None))
_SEED = re.compile(r"manual_seed\((\d+)\)")
_DRAW = re.compile(r"randn\(\s*([A-Za-z_]+(?:\s*\+\s*\d+)?)\s*,\s*(\d+)\s*\)\s*([A-Za-z][\w-]*(?:\s+(?:video|text))?)?")


@dataclass(frozen=True)
class Draw:
    length: str          # "video" or "text" (raw lengths), plus ``extra`` rows
    extra: int
    dim: int
    stream: str | None   # None: drawn but not stored (a pooled vector)


@dataclass(frozen=True)
class Recipe:
    seed: int
    unit: str            # "sample" (one per annotation) or "vid" (one per distinct vid)
    draws: tuple[Draw, ...]


def _length(expr: str) -> tuple[str, int]:
    name, _, plus = expr.replace(" ", "").partition("+")
    base = name.split("_")[0] if name not in ("n_words_raw",) else name
    kind = {"L": "video", "Lq": "text", "n_words_raw": "text"}.get(base)
    if kind is None:
        raise AssertionError(f"fixture recipe: unknown length {expr!r}")
    return kind, int(plus or 0)


def _stream(words: str | None, default: str | None) -> str | None:
    if not words:
        return default
    low = words.lower()
    for key, stream in _STREAM_WORDS:
        if low.startswith(key):
            return stream
    raise AssertionError(f"fixture recipe: no stream for {words!r}")


def parse_recipe(text: str, default_stream: str | None = None) -> Recipe:
    """One sentence -> its seed, its loop unit and the draws inside the loop (draws after
    "then"/"afterwards" at the end of the loop run once all samples are drawn and change nothing)."""
    seed = _SEED.search(text)
    assert seed, f"fixture recipe states no seed: {text!r}"
    body = text[seed.end():]
    unit = "vid" if re.search(r"per distinct vid", body) else "sample"
    loop = re.split(r";\s*(?:then|afterwards)|\bafterwards\b", body)[0]
    draws = []
    for m in _DRAW.finditer(loop):
        kind, extra = _length(m.group(1))
        draws.append(Draw(kind, extra, int(m.group(2)), _stream(m.group(3), default_stream)))
    assert draws, f"fixture recipe states no draw: {text!r}"
    return Recipe(int(seed.group(1)), unit, tuple(draws))


def data_source(case: Path, config: dict) -> Path:
    """The case whose README describes this case's inputs: a perturbed twin copies inputs.pt from
    the case named in ``perturbation.twin_of`` (config.json says so in ``copied_unchanged``)."""
    pert = config.get("perturbation") or {}
    if pert.get("twin_of") and "inputs.pt" in pert.get("copied_unchanged", []):
        twin = case.parent / Path(pert["twin_of"]).name
        if twin.is_dir():
            return twin
        pytest.fail(f"{case}: its inputs are those of {pert['twin_of']}, which is not at {twin}")
    return case


def _readme_sentences(case: Path) -> list[str]:
    readme = (case / "README.md").read_text() if (case / "README.md").exists() else ""
    flat = re.sub(r"\s+", " ", readme.replace("`", ""))
    return [m.group(0) for m in re.finditer(r"manual_seed\(\d+\)[^.]*?randn[^.]*", flat)]


def feature_recipes(case: Path, config: dict) -> list[Recipe]:
    """Every feature recipe of the fixture: ``config.json["seeds"]`` (``features``, then ``text``),
    else the README's sentences. Recipes whose streams the first ones already draw are dropped."""
    seeds = config.get("seeds") or {}
    texts = [seeds[k] for k in ("features", "text") if k in seeds]
    recipes = [parse_recipe(t, default_stream="clip_text" if k == "text" else None)
               for k, t in zip(("features", "text"), texts)]
    drawn = {d.stream for r in recipes for d in r.draws}
    for sentence in _readme_sentences(data_source(case, config)):   # streams config.json omits (BLIP-2)
        if not _DRAW.search(sentence):
            continue
        r = parse_recipe(sentence)
        if not recipes or not {d.stream for d in r.draws if d.stream} <= drawn:
            recipes.append(r)
            drawn |= {d.stream for d in r.draws}
    if not recipes:
        pytest.fail(f"{case}: neither config.json['seeds'] nor README.md states how the raw features were drawn")
    return recipes


def batch_seeds(case: Path, config: dict) -> tuple[int, int]:
    """(random.seed, np.random.seed) set before the batch was drawn (saliency pair sampling)."""
    text = (config.get("seeds") or {}).get("saliency_label_sampling")
    readme = data_source(case, config) / "README.md"
    if text is None and readme.exists():
        text = next((s for s in re.split(r"(?<=\.)\s", re.sub(r"\s+", " ", readme.read_text()))
                     if "random.seed" in s and "batch" in s), None)
    if text is None:
        pytest.fail(f"{case}: no seeds['saliency_label_sampling'] and no README sentence on the batch seeds")
    text = text.replace("`", "")
    py = re.search(r"(?<![.\w])random\.seed\((\d+)\)", text)
    npy = re.search(r"np\.random\.seed\((\d+)\)", text)
    assert py and npy, f"{case}: batch seeds not understood: {text!r}"
    return int(py.group(1)), int(npy.group(1))


def raw_lengths(config: dict, inputs_valid_text: list[int], clip_len: float, max_q_l: int | None
                ) -> tuple[list[int], list[int]]:
    """(video clips, text tokens) per annotation before any truncation."""
    anns = config["fixture_annotations"]
    video = [int(round(a["duration"] / clip_len)) for a in anns]
    if "raw_txt_lens" in config:
        text = [int(n) for n in config["raw_txt_lens"]]
    else:
        text = []
        for i, n in enumerate(inputs_valid_text):
            if max_q_l is not None and n >= max_q_l:
                pytest.fail(f"query {i} fills max_q_l {max_q_l}: its raw length is unknown and config.json "
                            "has no raw_txt_lens")
            text.append(int(n))
    return video, text


def draw_raw_features(recipes: list[Recipe], anns: list[dict], video_lens: list[int], text_lens: list[int]
                      ) -> tuple[dict, dict]:
    """Replay the recipes -> ({video stream: {vid: array}}, {text stream: {qid: array}})."""
    videos: dict[str, dict] = {}
    texts: dict[str, dict] = {}
    for recipe in recipes:
        torch.manual_seed(recipe.seed)
        seen = set()
        for ann, lv, lq in zip(anns, video_lens, text_lens):
            if recipe.unit == "vid":
                if ann["vid"] in seen:
                    continue
                seen.add(ann["vid"])
            for d in recipe.draws:
                n = (lv if d.length == "video" else lq) + d.extra
                x = torch.randn(n, d.dim).numpy()
                if d.stream is None:
                    continue
                if d.length == "video":
                    videos.setdefault(d.stream, {})[ann["vid"]] = x
                else:
                    texts.setdefault(d.stream, {})[ann["qid"]] = x
    return videos, texts
