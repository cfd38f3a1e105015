"""``mrhd features info`` and ``verify``: what a folder of stores holds, and whether all of it is sound.

Why: a store may come from ``mrhd extract``, ``mrhd features import`` or another tool (docs/STORE.md);
before training on it one wants its streams, widths, clip length, counts and provenance at a glance
(``info``: root attributes, the listing, a sample of entries, the first problems), and a full check
of every entry (``verify``: shape, width, dtype, finite numbers, ``n_clips``) before a long run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrhd.encoders.streams import STREAMS
from mrhd.errors import MrhdError
from mrhd.features.store import FORMAT, POOLED, FeatureStore

SAMPLE = 50          # entries info looks at per store
MAX_PROBLEMS = 10    # problems info prints


@dataclass
class StoreSummary:
    path: Path
    info: dict = field(default_factory=dict)
    videos: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    rows: tuple[int, int] | None = None      # min, max rows over the sampled entries
    dtypes: set = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return str(self.info.get("encoder", self.path.stem))

    @property
    def kind(self) -> str:
        known = STREAMS.get(self.stream)
        if known is not None:
            return known.kind
        return "text" if self.queries and not self.videos else "video"

    def line(self) -> str:
        info = self.info
        counts = f"{len(self.queries)} queries" if self.kind == "text" else f"{len(self.videos)} videos"
        rows = f", {self.rows[0]}-{self.rows[1]} rows" if self.rows else ""
        clip = "" if self.kind == "text" else f"  clip_len {info.get('clip_len', '?')} s"
        dtypes = "/".join(sorted(self.dtypes)) or "-"
        return (f"{self.path.name:<22} {self.kind:<5} dim {info.get('dim', '?')!s:<5}{clip}  {counts}{rows}, "
                f"{dtypes}  weights {info.get('weights', '-')}")

    def details(self) -> list[str]:
        out = []
        recipe = self.info.get("recipe")
        if recipe:
            text = json.dumps(recipe, sort_keys=True)
            out.append(f"    recipe: {text if len(text) <= 160 else text[:157] + '...'}")
        if self.info.get("source"):
            out.append(f"    source: {self.info['source']}")
        return out


def store_files(folder: str | Path) -> list[Path]:
    """The stores of a folder: every ``<stream>.h5``, and those that exist only as parts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MrhdError(f"{folder} is not a folder; give the folder of the <stream>.h5 stores")
    names = {p.stem for p in folder.glob("*.h5") if not p.name.startswith(".")}
    names |= {p.name[1:-len(".parts")] for p in folder.glob(".*.parts") if p.is_dir() and any(p.glob("*.h5"))}
    return [folder / f"{n}.h5" for n in sorted(names)]


def _root_problems(s: StoreSummary, raw: dict) -> None:
    fmt = raw.get("format")
    if fmt is not None and str(fmt) != FORMAT:
        s.problems.append(f"{s.path.name}: format {fmt!r}, not {FORMAT!r}")
    for key in ("encoder", "dim"):
        if key not in raw:
            s.problems.append(f"{s.path.name}: no {key!r} root attribute (docs/STORE.md)")
    stream = STREAMS.get(s.stream)
    if "encoder" in raw and s.stream != s.path.stem:
        s.problems.append(f"{s.path.name}: holds encoder {s.stream!r}, but the file name says {s.path.stem!r}")
    if stream is None:
        s.problems.append(f"{s.path.name}: stream {s.stream!r} is not one mrhd knows ({', '.join(STREAMS)})")
    elif "dim" in raw and int(raw["dim"]) != stream.dim:
        s.problems.append(f"{s.path.name}: dim {raw['dim']}, but stream {s.stream} is {stream.dim}-d")
    if s.kind != "text" and "clip_len" not in raw:
        s.problems.append(f"{s.path.name}: no 'clip_len' root attribute (seconds per row; docs/STORE.md)")
    elif s.kind != "text" and not float(raw["clip_len"]) > 0:
        s.problems.append(f"{s.path.name}: clip_len {raw['clip_len']} is not a positive number of seconds")


def entry_problem(store: FeatureStore, name: str, dim: int, full: bool) -> tuple[str | None, tuple, str]:
    """``(problem or None, shape, dtype)`` of one entry; ``full`` reads its numbers too."""
    described = store.describe(name)
    if described is None:
        return f"{name}: listed but not readable", (), "-"
    shape, dtype, attrs = described
    pooled = name.startswith(f"{POOLED}/")
    if pooled and len(shape) != 1 or not pooled and len(shape) != 2:
        return f"{name}: shape {list(shape)}, expected {'[dim]' if pooled else '[n, dim]'}", shape, str(dtype)
    if dim and shape[-1] != dim:
        return f"{name}: width {shape[-1]}, the store's dim is {dim}", shape, str(dtype)
    if not pooled and shape[0] == 0:
        return f"{name}: no rows", shape, str(dtype)
    if not np.issubdtype(dtype, np.floating):
        return f"{name}: dtype {dtype}, not a float type", shape, str(dtype)
    if "n_clips" in attrs and not pooled and int(attrs["n_clips"]) != shape[0]:
        return f"{name}: n_clips {int(attrs['n_clips'])} but {shape[0]} rows", shape, str(dtype)
    if full:
        try:
            values = _read_entry(store, name)
        except Exception as err:  # noqa: BLE001  (any read error is a finding)
            return f"{name}: not readable ({type(err).__name__}: {err})", shape, str(dtype)
        if not np.isfinite(values).all():
            return f"{name}: {int((~np.isfinite(values)).sum())} values are NaN or infinite", shape, str(dtype)
    return None, shape, str(dtype)


def _read_entry(store: FeatureStore, name: str) -> np.ndarray:
    if name.startswith(f"{POOLED}/qid"):
        return store.read_text(name[len(POOLED) + 4:])[1]
    if name.startswith("qid"):
        return store.read_text(name[3:])[0]
    return store.read(name)


def summarize(path: str | Path, *, full: bool = False, bar=None) -> StoreSummary:
    """One store's summary; ``full`` checks every entry (verify), else a sample (info)."""
    s = StoreSummary(Path(path))
    try:
        store = FeatureStore(path, "r")
        raw = store.root
    except MrhdError as err:
        s.problems.append(f"{s.path.name}: {err}")
        return s
    s.info = dict(raw)
    try:
        s.info["recipe"] = json.loads(raw["recipe"]) if raw.get("recipe") else None
    except (ValueError, TypeError) as err:
        s.problems.append(f"{s.path.name}: recipe is not JSON ({err})")
        s.info["recipe"] = None
    _root_problems(s, raw)
    s.videos = store.video_ids()
    s.queries = store.query_ids()
    names = s.videos + [f"qid{q}" for q in s.queries]
    if full:
        names += [f"{POOLED}/qid{q}" for q in s.queries if store.describe(f"{POOLED}/qid{q}") is not None]
    dim = int(raw.get("dim") or 0)
    rows = []
    for name in (names if full else names[:SAMPLE]):
        problem, shape, dtype = entry_problem(store, name, dim, full)
        if problem:
            s.problems.append(f"{s.path.name}: {problem}")
        elif not name.startswith(f"{POOLED}/"):
            rows.append(shape[0])
            s.dtypes.add(dtype)
        if bar is not None:
            bar.update(1)
    if rows:
        s.rows = (min(rows), max(rows))
    if not names:
        s.problems.append(f"{s.path.name}: holds no entry")
    store.close_reader()
    return s


def cross_problems(summaries: list[StoreSummary]) -> list[str]:
    """Between the video/audio stores of one folder: clip lengths that disagree, videos one lacks."""
    videos = [s for s in summaries if s.kind != "text" and s.info]
    out = []
    lengths = {float(s.info["clip_len"]) for s in videos if "clip_len" in s.info}
    if len(lengths) > 1:
        out.append("clip lengths disagree: " + ", ".join(f"{s.path.name} {s.info.get('clip_len')} s" for s in videos))
    if len(videos) > 1:
        union = set().union(*(set(s.videos) for s in videos))
        for s in videos:
            lacking = sorted(union - set(s.videos))
            if lacking:
                out.append(f"{s.path.name} lacks {len(lacking)} video(s) the other video stores hold "
                           f"(e.g. {lacking[0]})")
    return out


def folder_report(folder: str | Path, *, full: bool = False, progress: bool = False) -> tuple[str, list[str]]:
    """The text ``mrhd features info`` / ``verify`` print, and every problem found."""
    paths = store_files(folder)
    if not paths:
        raise MrhdError(f"{folder} holds no <stream>.h5 store; extract or import features into it first")
    bar = None
    if progress and full:
        from tqdm import tqdm

        bar = tqdm(unit="entry", desc="verify", dynamic_ncols=True, file=sys.stderr)
    try:
        summaries = [summarize(p, full=full, bar=bar) for p in paths]
    finally:
        if bar is not None:
            bar.close()
    problems = [p for s in summaries for p in s.problems] + cross_problems(summaries)
    lines = [f"{folder}: {len(summaries)} store(s)"]
    for s in summaries:
        lines.append("  " + s.line())
        lines += s.details()
    checked = "every entry" if full else f"root attributes and the first {SAMPLE} entries of each store"
    if problems:
        shown = problems if full else problems[:MAX_PROBLEMS]
        lines.append(f"problems ({len(problems)}; checked {checked}):")
        lines += [f"  {p}" for p in shown]
        if len(shown) < len(problems):
            lines.append(f"  ... and {len(problems) - len(shown)} more (`mrhd features verify` lists all)")
    else:
        lines.append(f"no problems found (checked {checked})")
    return "\n".join(lines), problems
