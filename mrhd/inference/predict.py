"""The Python API behind `mrhd predict`: a video and sentences in, moments and saliency out.

    predictor = Predictor.from_pretrained("qd_detr-clip-qvhighlights", device="cpu")
    feats = predictor.encode_video("video.mp4")          # reusable, cached by file content
    for pred in predictor.predict(feats, ["a man opens the fridge"]):
        print(pred.to_json())

A :class:`Predictor` holds only the network, its feature profile and the frozen encoders; every call
takes its video and queries as arguments and keeps nothing from them, so results never depend on
what ran before. Videos longer than the model's window (``max_v_l`` clips, 150 s for the official
checkpoints) run as overlapping windows (:mod:`mrhd.inference.windows`).
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrhd.devices import parse_device
from mrhd.encoders.streams import STREAMS
from mrhd.errors import MrhdError
from mrhd.inference.results import CLIP_LEN, Prediction
from mrhd.inference.video_features import FeatureCache, VideoFeatures, extract_video_features
from mrhd.inference.windows import Window, merge_window_moments, plan_windows, stitch_saliency
from mrhd.models.registry import get_spec

RANDOM = "random"
MERGE_IOU = 0.7          # NMS between overlapping windows (the official NMS threshold of UniVTG/QD-DETR runs)


def inside_video(rows: list, duration: float) -> list[list[float]]:
    """The official post-processing's windows as moments of this video: rounding to clip multiples
    can end a window past the video's end (kept at ``duration``) or collapse a short one to zero
    length (it becomes the one clip it lies on, inside ``[0, duration]``)."""
    out = []
    for st, ed, score in rows:
        st, ed = min(max(float(st), 0.0), duration), min(max(float(ed), 0.0), duration)
        if ed <= st:
            st, ed = (st, min(st + CLIP_LEN, duration)) if st + CLIP_LEN <= duration else \
                (max(duration - CLIP_LEN, 0.0), duration)
        out.append([st, ed, float(score)])
    return out


def _encoders_for(prof, encoder_size: str | None, random_encoders: bool | None, label: str) -> tuple[str, bool]:
    """``(size, random weights)`` of the encoders for a checkpoint trained on ``prof``'s features:
    what it recorded, unless asked otherwise; a request that would give other features than those
    it was trained on is refused (the numbers would mean nothing)."""
    size = encoder_size or prof.encoder_size
    random_weights = prof.random_encoders if random_encoders is None else random_encoders
    if size != prof.encoder_size:
        raise MrhdError(f"{label} was trained on features of {prof.encoders_text()}; --encoder-size {size} "
                        f"gives features it cannot read (drop --encoder-size)")
    if prof.random_encoders and not random_weights:
        raise MrhdError(f"{label} was trained on features of {prof.encoders_text()}; the released encoders "
                        "give other features (leave random_encoders unset)")
    if size != "full" and not random_weights:
        raise MrhdError("--encoder-size tiny exists only with random encoders (--random-encoders)")
    return size, random_weights


class QueryTruncatedWarning(UserWarning):
    """A query longer than the text encoder's context was cut."""


class CompileFailedWarning(UserWarning):
    """:meth:`Predictor.compile_model` could not compile; the eager network answers."""


def default_weights_id() -> str:
    """The best released checkpoint that needs only CLIP features and whose model this build has."""
    from mrhd.weights.registry import CLIP_ONLY_PREFERENCE, get_entry

    for wid in CLIP_ONLY_PREFERENCE:
        try:
            get_spec(get_entry(wid).model)
        except MrhdError:
            continue
        return wid
    raise MrhdError("no CLIP-only model is available in this build; pass --model and --weights")


@dataclass
class LoadedModel:
    name: str
    cfg: object
    net: torch.nn.Module
    profile: object
    weights: str


def _load_profile(profile):
    from mrhd.features.profiles import load_profile, profile_from_dict

    return profile_from_dict(profile) if isinstance(profile, dict) else load_profile(profile)


def load_model(weights: str, *, model: str | None = None, profile: str | None = None,
               video_dim: int | None = None, text_dim: int | None = None,
               random_config: dict | None = None) -> LoadedModel:
    """The network for ``weights`` (registry id, checkpoint file, or ``random``), checked to be of
    ``model`` (when given) and to fit its feature profile. ``random_config``: config fields for a
    random network (those the model's config does not have are ignored)."""
    from mrhd.models.convert import build_and_load, profile_from_opt
    from mrhd.models.registry import make_config
    from mrhd.weights import find_entry, resolve_weights
    from mrhd.weights.checkpoint import (
        MODEL_CHECKPOINT_FIX,
        is_mrhd_checkpoint,
        load_checkpoint,
        official_opt,
        official_state_dict,
    )

    if weights == RANDOM:
        name = model or find_entry(default_weights_id()).model
        spec = get_spec(name)
        prof = _load_profile(profile or "clip")
        overrides = {**(random_config or {}), "v_feat_dim": video_dim or prof.video_dim,
                     "t_feat_dim": text_dim or prof.text_dim}
        if prof.audio and "a_feat_dim" not in spec.config_cls.__dataclass_fields__:
            raise MrhdError(f"model {name!r} has no audio input; choose a profile without audio")
        cfg = make_config(name, None, **{k: v for k, v in overrides.items()
                                         if k in spec.config_cls.__dataclass_fields__})
        torch.manual_seed(0)   # random weights are reproducible
        net = spec.build(cfg)
        return LoadedModel(name, cfg, net.eval(), prof, RANDOM)

    entry = find_entry(weights) if not Path(weights).is_file() else None
    if entry is not None and entry.kind != "model":
        raise MrhdError(f"{weights} holds {entry.model} encoder weights, not a grounding model; "
                        "see `mrhd weights list` for model checkpoints")
    if entry is not None and model and entry.model != model:
        raise MrhdError(f"{weights} holds a {entry.model} checkpoint, not {model}")
    path = resolve_weights(weights)
    ckpt = load_checkpoint(path, what="model checkpoint", fix=MODEL_CHECKPOINT_FIX)
    label = entry.id if entry is not None else Path(path).name
    if is_mrhd_checkpoint(ckpt):
        name = ckpt["model"]
        if model and model != name:
            raise MrhdError(f"{path} is a {name} checkpoint, not {model}; drop --model or pick other weights")
        spec = get_spec(name)
        cfg = make_config(name, ckpt["config"])
        state_dict = ckpt["state_dict"]
        ckpt_profile = ckpt.get("profile")
        trained_on = ckpt.get("profile_spec")   # mrhd train: the profile as trained, encoders included
    else:
        name = model or (entry.model if entry is not None else None)
        if name is None:
            raise MrhdError(f"{path} is an authors' checkpoint; say which model it is with --model "
                            "(or convert it with `mrhd weights convert`)")
        spec = get_spec(name)
        opt = official_opt(ckpt)
        if not opt or spec.config_from_opt is None:
            raise MrhdError(f"{path} has no saved options; convert it with `mrhd weights convert` first")
        try:
            cfg = spec.config_from_opt(opt)
        except (KeyError, TypeError, ValueError) as err:
            raise MrhdError(f"{path}: its options do not describe a {name} model ({err})") from None
        state_dict = official_state_dict(ckpt)
        if spec.convert_state_dict:
            state_dict = spec.convert_state_dict(state_dict)
        ckpt_profile = profile_from_opt(opt, default=entry.profile if entry else spec.default_profile,
                                        preferred=spec.default_profile)
        trained_on = None
    state_dict = {k: v for k, v in state_dict.items() if torch.is_tensor(v)}
    net = build_and_load(spec, cfg, state_dict, what=str(path))
    ckpt_profile = ckpt_profile or spec.default_profile
    prof = _load_profile(ckpt_profile)
    if isinstance(trained_on, dict):
        prof = prof.with_encoders_of(_load_profile(trained_on))
    if profile is not None and _load_profile(profile).name != prof.name:
        raise MrhdError(f"{path} was trained on feature profile {prof.name!r}, not {profile!r}")
    v_dim, t_dim = getattr(cfg, "v_feat_dim", None), getattr(cfg, "t_feat_dim", None)
    a_dim = getattr(cfg, "a_feat_dim", 0) or 0
    if a_dim and a_dim != prof.audio_dim:
        raise MrhdError(f"{path} expects {a_dim}-dim audio features but profile {prof.name!r} gives "
                        f"{prof.audio_dim or 'none'}; is it a checkpoint of another profile?")
    if (v_dim is not None and v_dim != prof.video_dim) or (t_dim is not None and t_dim != prof.text_dim):
        raise MrhdError(f"{path} expects {v_dim}-dim video / {t_dim}-dim text features but profile "
                        f"{prof.name!r} gives {prof.video_dim} / {prof.text_dim}; is it a checkpoint "
                        "of another profile?")
    return LoadedModel(name, cfg, net.eval(), prof, label)


class QueryFeatureCache:
    """A query's assembled token features by its text, the least recently used dropped first. The
    text tower is about half of a warm query's work, and a server sees the same sentences again
    (on another video, or asked again); the features depend only on the text and the predictor's
    text encoders, so a hit gives exactly what the tower would. Arrays are kept read-only."""

    def __init__(self, size: int):
        if size < 0:
            raise MrhdError(f"query cache size must be 0 (off) or more, not {size}")
        self.size = size
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()   # a server's lanes may share one predictor

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> np.ndarray | None:
        with self._lock:
            arr = self._entries.get(query)
            if arr is not None:
                self._entries.move_to_end(query)
            return arr

    def put(self, query: str, arr: np.ndarray) -> np.ndarray:
        """Keep ``arr`` (made read-only) for ``query``; returns it."""
        arr.flags.writeable = False
        if self.size:
            with self._lock:
                self._entries[query] = arr
                self._entries.move_to_end(query)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return arr


QUERY_CACHE_SIZE = 512   # queries; ~30 KB each (15 tokens x 512 floats)


class Predictor:
    """A grounding model, its feature profile and the encoders that feed it (see module docs)."""

    def __init__(self, loaded: LoadedModel, video_encoders: dict, text_encoders: dict,
                 device: torch.device, cache: FeatureCache | None, batch_size: int = 64,
                 query_cache_size: int = QUERY_CACHE_SIZE):
        self.model_name = loaded.name
        self.cfg = loaded.cfg
        self.net = loaded.net.to(device).requires_grad_(False)   # a predictor only predicts: frozen, as its encoders
        self.profile = loaded.profile
        self.weights = loaded.weights
        self.video_encoders = video_encoders
        self.text_encoders = text_encoders
        self.device = device
        self.cache = cache
        self.batch_size = batch_size
        self.spec = get_spec(loaded.name)
        self.forward_inputs = self.spec.forward_inputs
        self.query_features = QueryFeatureCache(query_cache_size)
        self.window = int(getattr(self.cfg, "max_v_l", None) or self.profile.max_v_l or 75)
        self.eager_net = self.net   # what answers where compile_model() was not asked for or failed

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, device: str | torch.device = "cpu", *,
                        model: str | None = None, profile: str | None = None, encoder_size: str | None = None,
                        random_encoders: bool | None = None, cache: bool | str | Path = True,
                        random_config: dict | None = None,
                        query_cache_size: int = QUERY_CACHE_SIZE) -> Predictor:
        """``name_or_path``: a registry id, a checkpoint file, ``"random"`` (random weights for model
        and encoders, no download), or None for the default CLIP-only checkpoint.
        ``encoder_size`` (``full``/``tiny``) and ``random_encoders``: the encoders that make the
        features; None follows the checkpoint (what `mrhd train` recorded, e.g. random tiny encoders
        for a run on ``--random-weights --encoder-size tiny`` features; the official ones otherwise).
        ``cache``: True = ``$MRHD_CACHE/features``, a folder, or False. ``random_config``: config
        fields of a random network (e.g. a small ``hidden_dim`` for tests). ``query_cache_size``:
        queries whose text features are kept (:class:`QueryFeatureCache`; 0: none)."""
        from mrhd.encoders.factory import build_encoder
        from mrhd.features.profiles import load_profile
        from mrhd.inference.lazy_encoders import lazy_encoder
        from mrhd.weights import find_entry

        dev = parse_device(device)
        weights = name_or_path or default_weights_id()
        if encoder_size not in (None, "full", "tiny"):
            raise MrhdError(f"unknown encoder size {encoder_size!r}; choose full or tiny")
        if weights == RANDOM:
            get_spec(model or find_entry(default_weights_id()).model)   # unknown model: fail before any work
            prof = load_profile(profile or "clip")
            size, random_weights = encoder_size or "full", True
        else:
            loaded = load_model(weights, model=model, profile=profile)
            prof = loaded.profile
            trained_clip = getattr(loaded.cfg, "clip_length", getattr(loaded.cfg, "clip_len", CLIP_LEN))
            if not math.isclose(float(trained_clip), CLIP_LEN):
                raise MrhdError(f"{weights} was trained on {float(trained_clip):g}-s clips; mrhd predict extracts "
                                f"{CLIP_LEN:g}-s clips, so its moments would be misplaced: use a checkpoint "
                                f"trained on {CLIP_LEN:g}-s features")
            size, random_weights = _encoders_for(prof, encoder_size, random_encoders, loaded.weights)
        feature_cache = None
        if cache is not False:
            feature_cache = FeatureCache(None if cache is True else cache)

        def make(stream):
            return build_encoder(stream, device=str(dev), random_weights=random_weights, size=size)

        # video encoders are built only when a stream is not in the feature cache
        video_encoders = {s: lazy_encoder(s, functools.partial(make, s), random_weights=random_weights, size=size,
                                          cache_root=feature_cache.root if feature_cache else None)
                          for s in prof.video + prof.audio}
        text_encoders = {s: make(s) for s in prof.text}   # every call encodes its queries
        if weights == RANDOM:
            v_dim = sum(video_encoders[s].dim for s in prof.video) + (2 if prof.tef else 0)
            t_dim = sum(text_encoders[s].dim for s in prof.text)
            random_config = dict(random_config or {})
            if prof.audio:
                random_config["a_feat_dim"] = (sum(video_encoders[s].dim for s in prof.audio)
                                               + (2 if prof.tef and prof.audio_tef else 0))
            loaded = load_model(RANDOM, model=model, profile=prof.name, video_dim=v_dim, text_dim=t_dim,
                                random_config=random_config)
        else:
            wrong = [f"{s} {enc.dim}" for s, enc in {**video_encoders, **text_encoders}.items()
                     if enc.dim != prof.dim_of(s)]
            if wrong:
                raise MrhdError(f"{loaded.weights} expects {prof.encoders_text()} features of other widths than "
                                f"these encoders give ({', '.join(wrong)}); use the encoders it was trained with")
        widths = {s: enc.dim for s, enc in {**video_encoders, **text_encoders}.items()}
        loaded.profile = loaded.profile.replace(
            random_encoders=random_weights, encoder_size=size,
            stream_dims=tuple(sorted((s, d) for s, d in widths.items() if d != STREAMS[s].dim)))
        return cls(loaded, video_encoders, text_encoders, dev, feature_cache, query_cache_size=query_cache_size)

    # ---- video ----------------------------------------------------------------------------
    def encode_video(self, path: str | Path, vid: str | None = None, progress=None) -> VideoFeatures:
        """Raw per-clip features of the streams this model needs (cached by file content);
        ``progress(clips_done, clips_expected)`` hears of the clips while a video is decoded."""
        return extract_video_features(path, self.video_encoders, cache=self.cache, vid=vid, progress=progress)

    # ---- queries --------------------------------------------------------------------------
    def check_queries(self, queries: Sequence[str]) -> list[str]:
        """The queries with their whitespace collapsed; an empty list or query is a user error."""
        if isinstance(queries, str):
            queries = [queries]
        if not queries:
            raise MrhdError("no query given; pass at least one sentence")
        out = []
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise MrhdError("empty query; give a sentence such as \"a man opens the fridge\"")
            out.append(" ".join(q.split()))
        return out

    def truncation_notes(self, queries: Sequence[str]) -> list[str]:
        """One line per query longer than what the model reads (the encoder's context, or
        ``max_q_l`` tokens, 32 for the official checkpoints)."""
        notes = []
        for stream, enc in self.text_encoders.items():
            context = getattr(getattr(enc, "tokenizer", None), "context_length", None)
            if context is not None and hasattr(enc.tokenizer, "encode"):
                limit = min(context, self.profile.max_q_l or context)
                for q in queries:
                    n = len(enc.tokenizer.encode(q)) + 2   # + start and end tokens
                    if n > limit:
                        notes.append(f"query of {n} {stream} tokens cut to the first {limit} the model reads: "
                                     f"\"{q[:40]}...\"")
        return notes

    def encode_queries(self, queries: Sequence[str], warn: bool = True) -> list[np.ndarray]:
        """Per-query token features ``[Lq, text_dim]`` assembled by the profile (first ``max_q_l``
        tokens, each L2-normalised), read-only; the queries not in :attr:`query_features` go
        through each text encoder as one batch. A query longer than what the model reads is cut,
        with a warning unless ``warn`` is False (for callers that report :meth:`truncation_notes`
        themselves)."""
        queries = self.check_queries(queries)
        for note in self.truncation_notes(queries) if warn else ():
            warnings.warn(note, QueryTruncatedWarning, stacklevel=2)
        found = {q: self.query_features.get(q) for q in queries}
        todo = list(dict.fromkeys(q for q, arr in found.items() if arr is None))
        if todo:
            per_stream = {stream: [t.float().numpy() for t, _pooled in enc.encode_texts(todo)]
                          for stream, enc in self.text_encoders.items()}
            for i, q in enumerate(todo):
                found[q] = self.query_features.put(
                    q, self.profile.assemble_text({s: per_stream[s][i] for s in per_stream}))
        return [found[q] for q in queries]

    # ---- prediction -----------------------------------------------------------------------
    def _window_inputs(self, features: VideoFeatures, win: Window):
        arrays = {s: features.streams[s][win.start: win.end] for s in self.profile.video + self.profile.audio
                  if s in features.streams}
        unlimited = self.profile.replace(max_v_l=None)   # the window already has the right length
        return unlimited.assemble_clips(arrays)

    def model_inputs(self, vids: list[np.ndarray], auds: list, txts: list[np.ndarray], metas: list[dict],
                     switched: bool = True) -> dict:
        """forward() keywords of a batch of window features, query features and metas (qid, query,
        vid, duration): padded features and masks (1 = valid) on the device, the id fields the model
        reads, and (``switched``) the spec's :attr:`~mrhd.models.registry.ModelSpec.predict_switches`."""
        def pad(arrs):
            n = max(len(a) for a in arrs)
            x = np.zeros((len(arrs), n, arrs[0].shape[1]), np.float32)
            m = np.zeros((len(arrs), n), np.float32)
            for i, a in enumerate(arrs):
                x[i, : len(a)] = a
                m[i, : len(a)] = 1
            return torch.from_numpy(x).to(self.device), torch.from_numpy(m).to(self.device)

        src_vid, src_vid_mask = pad(vids)
        src_txt, src_txt_mask = pad(txts)
        kwargs = {"src_txt": src_txt, "src_txt_mask": src_txt_mask, "src_vid": src_vid,
                  "src_vid_mask": src_vid_mask}
        if "src_aud" in self.forward_inputs and auds and auds[0] is not None:
            kwargs["src_aud"], kwargs["src_aud_mask"] = pad(auds)
        if "vid" in self.forward_inputs:
            kwargs["vid"] = [m["vid"] for m in metas]
        if "qid" in self.forward_inputs:
            kwargs["qid"] = [m["qid"] for m in metas]
        return {**kwargs, **self.spec.predict_switches} if switched else kwargs

    def compile_model(self) -> None:
        """Run the grounding network through ``torch.compile`` with dynamic shapes (one graph for
        every query length and batch). A warm query is a few hundred small operations, whose
        per-call cost compiling removes: CG-DETR's part of one query went from ~26 to ~16 ms on a
        2-core CPU after ~95 s of compiling (docs/serve.md). The first prediction pays that time
        (`mrhd serve --compile` makes it at start-up); where compiling fails (no C++ compiler, an
        operation the compiler cannot take), that prediction warns once and the eager network
        answers from then on, with the same numbers."""
        if self.net is self.eager_net:
            self.net = torch.compile(self.eager_net, dynamic=True)

    def _forward(self, kwargs: dict) -> dict:
        if self.net is self.eager_net:
            return self.net(**kwargs)
        try:
            return self.net(**kwargs)
        except torch._dynamo.exc.TorchDynamoException as err:
            reason = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            warnings.warn(f"torch.compile of {self.model_name} failed ({reason}); predicting with the eager "
                          "network", CompileFailedWarning, stacklevel=3)
            self.net = self.eager_net
            return self.net(**kwargs)

    def batch_lines(self, vids: list[np.ndarray], auds: list, txts: list[np.ndarray], metas: list[dict]) -> list[dict]:
        """The model's official prediction lines (``ModelSpec.postprocess``) of a batch of window
        features, query features and metas (qid, query, vid, duration): window time, before the
        windows of one video are merged."""
        kwargs = self.model_inputs(vids, auds, txts, metas)
        # inference_mode (no version counters, no autograd records) around the post-processing too:
        # UniVTG's official one edits outputs in place, which inference tensors allow only inside it
        with torch.inference_mode():
            out = self._forward(kwargs)
            return self.spec.postprocess(out, kwargs["src_vid_mask"], metas, self.cfg)

    def predict(self, features: VideoFeatures, queries: Sequence[str], warn: bool = True) -> list[Prediction]:
        """One :class:`Prediction` per query: moments best first, one saliency score per clip
        (``warn``: see :meth:`encode_queries`)."""
        queries = self.check_queries(queries)
        missing = [s for s in self.profile.video if s not in features.streams]
        if missing:
            raise MrhdError(f"these features lack stream(s) {missing} that {self.model_name} needs; "
                            "encode the video with this predictor")
        other = [s for s in self.profile.video if features.encoders.get(s, self.video_encoders[s].info.weights)
                 != self.video_encoders[s].info.weights]
        if other:
            raise MrhdError(f"these features were made with other {other} encoder weights than this "
                            "predictor's; encode the video with this predictor")
        if self.profile.audio and not self.profile.audio_optional and \
                any(s not in features.streams for s in self.profile.audio):
            raise MrhdError(f"{self.model_name} ({self.profile.name}) needs audio features; encode the video "
                            "with this predictor")
        # streams are trimmed to the shortest (FEATURES.md: CLIP round(D/2), SlowFast ceil, PANN floor)
        n_clips = min(len(features.streams[s]) for s in self.profile.video + self.profile.audio
                      if s in features.streams)
        if n_clips == 0:
            raise MrhdError(f"video {features.path} has no clips")
        texts = self.encode_queries(queries, warn=warn)
        windows = plan_windows(n_clips, self.window)
        inputs = [self._window_inputs(features, w) for w in windows]
        # queries of similar length share a batch, so little of it is padding
        by_length = sorted(range(len(queries)), key=lambda qi: len(texts[qi]))
        jobs = [(wi, qi) for qi in by_length for wi in range(len(windows))]
        per_query: list[list] = [[] for _ in queries]
        sal_query: list[list] = [[] for _ in queries]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start: start + self.batch_size]
            metas = []
            for wi, qi in chunk:
                win = windows[wi]
                # a window's own duration: full clips, except the video's real end in the last one
                w_dur = min(win.length * CLIP_LEN, features.duration - win.start * CLIP_LEN)
                w_dur = w_dur if w_dur > 0 else win.length * CLIP_LEN
                metas.append({"qid": qi, "query": queries[qi], "vid": features.vid, "duration": w_dur})
            lines = self.batch_lines([inputs[wi][0] for wi, _ in chunk], [inputs[wi][1] for wi, _ in chunk],
                                  [texts[qi] for _, qi in chunk], metas)
            for (wi, qi), line, meta in zip(chunk, lines, metas):
                offset = windows[wi].start * CLIP_LEN
                per_query[qi].append((offset, inside_video(line["pred_relevant_windows"], meta["duration"])))
                sal_query[qi].append((windows[wi], [float(s) for s in line["pred_saliency_scores"]]))
        preds = []
        for qi, query in enumerate(queries):
            if len(windows) == 1:   # one window: the official output (no NMS between windows)
                rows = [[float(a), float(b), float(s)] for a, b, s in per_query[qi][0][1]]
            else:
                rows = merge_window_moments(per_query[qi], features.duration, MERGE_IOU)
                rows = [[round(a, 4), round(b, 4), round(s, 4)] for a, b, s in rows]
            saliency = stitch_saliency(n_clips, sal_query[qi])
            preds.append(Prediction(query=query, vid=features.vid, duration=features.duration, windows=rows,
                                    saliency=[round(float(s), 4) for s in saliency], model=self.model_name,
                                    weights=self.weights, qid=qi))
        return preds

    def __call__(self, video: str | Path, queries: Sequence[str]) -> list[Prediction]:
        return self.predict(self.encode_video(video), queries)
