"""Moment-retrieval datasets: annotation lines + feature stores -> one official training sample.

Inputs are assembled by a feature profile (:mod:`mrhd.features.profiles`); labels follow the
official dataset classes, which differ per model (its ``ModelSpec.labels``, a
:class:`~mrhd.models.registry.LabelRecipe`):

- Moment-DETR (jayleicn/moment_detr ``moment_detr/start_end_dataset.py``): span labels in
  normalised (center, width); saliency pairs = the hard pos/neg (max/min of the summed three-rater
  scores) + one easy pos (random relevant clip) and one easy neg (random clip outside).
- QD-DETR (``qd_detr/start_end_dataset.py``): the same plus ``saliency_all_labels`` (summed
  scores per clip).
- TR-DETR: plus ``src_pos_mask`` (relevant clips as a 0/1 mask). CG-DETR: plus ``relevant_clips``
  (= all labels) and ``vid``/``qid`` for its forward. VideoLights: plus ``saliency_pos_index``.
- UniVTG (showlab/UniVTG ``main/dataset.py`` DatasetMR): dense per-clip targets (timestamp, nearest
  window, in-window flag, mean saliency) and easy pairs only.

Every random draw (``random.sample``/``random.shuffle``) happens in the official order, so with the
same seeds a batch equals the authors' batch exactly (tests/test_datasets_fidelity.py).
Meta inputs: a model whose forward() reads annotation fields (``vid``, ``qid``, the ``query``
text) lists them in ``ModelSpec.forward_inputs``; ``DatasetConfig.inputs`` (by default those of
the ``labels`` model, :func:`meta_inputs`) copies them into ``model_inputs``, and the collate keeps
them as lists. E.g. MESM's word reconstruction (FW-MESM) needs the query texts.
Annotation formats: QVHighlights (``relevant_clip_ids``/``saliency_scores``), Charades-STA and TACoS
(windows only: pairs sampled inside/outside the first window, CG-DETR's ``duration / n_clips`` clip
length), TVSum (``label`` matrix of 20 raters, QD-DETR's ``(sum(label-1))/80*12``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from mrhd.annotations import annotation_kind
from mrhd.errors import MrhdError
from mrhd.features.profiles import Profile, StoreReader, read_text_arrays, read_video_arrays, video_streams
from mrhd.models.registry import get_spec

# annotation fields a model may take as forward() inputs (kept as Python lists by the collate)
META_INPUTS = ("vid", "qid", "query")


def meta_inputs(forward_inputs) -> tuple[str, ...]:
    """The annotation fields among a model's ``ModelSpec.forward_inputs``."""
    return tuple(k for k in META_INPUTS if k in tuple(forward_inputs or ()))


@dataclass
class DatasetConfig:
    """Options of the official datasets (their ``dataset_kwargs``)."""

    labels: str = "qd_detr"        # the model whose official labels (ModelSpec.labels) to build
    clip_len: float = 2.0
    max_windows: int = 5
    load_labels: bool = True
    domain: str | None = None      # TVSum category (BK, BT, ...): keep only that domain's lines
    skip: list = field(default_factory=list)
    inputs: tuple | None = None    # META_INPUTS passed as inputs; None: those the ``labels`` model reads


# ---- label functions (official semantics, official RNG order) ------------------------------
def span_labels(windows: list, ctx_l: int, clip_len: float, max_windows: int) -> torch.Tensor:
    """Normalised (center, width) spans; more than ``max_windows`` windows are shuffled and cut."""
    if len(windows) > max_windows:
        random.shuffle(windows)
        windows = windows[:max_windows]
    xx = torch.Tensor(windows) / (ctx_l * clip_len)
    return torch.stack([xx.sum(-1) * 0.5, xx[..., 1] - xx[..., 0]], dim=-1)


def saliency_pairs_hl(rel_clip_ids: list, scores: list, ctx_l: int, max_n: int = 1,
                      easy_only: bool = False, tie_to_pos: bool = False) -> tuple[list, list]:
    """Hard pos/neg = highest/lowest summed score among the relevant clips (clamped to ctx_l-1, as
    upstream); easy pos = a random relevant clip, easy neg = a random clip outside them.
    UniVTG: ``tie_to_pos`` (all scores equal -> hard neg = hard pos), ``easy_only``."""
    agg = np.sum(np.array(scores), 1)
    order = np.argsort(agg)
    hard_pos = [min(rel_clip_ids[i], ctx_l - 1) for i in order[-max_n:]]
    hard_neg = [min(rel_clip_ids[i], ctx_l - 1) for i in order[:max_n]]
    if tie_to_pos and agg[order[-1]] == agg[order[0]]:
        hard_neg = hard_pos
    # list(set(...)) order is CPython's; random.sample over it must see the same order as upstream
    easy_neg_pool = list(set(range(ctx_l)) - set(rel_clip_ids))
    if len(easy_neg_pool) >= max_n:
        easy_pos = random.sample(rel_clip_ids, k=max_n)
        easy_neg = random.sample(easy_neg_pool, k=max_n)
    else:
        easy_pos, easy_neg = hard_pos, hard_neg
    if easy_only:
        return easy_pos, easy_neg
    return hard_pos + easy_pos, hard_neg + easy_neg


def saliency_scores_hl(rel_clip_ids: list, scores: list, ctx_l: int) -> np.ndarray:
    """QD-DETR's ``saliency_all_labels``: the summed score at each relevant clip (grows by one when
    an id is past the end, as upstream does)."""
    agg = np.sum(np.array(scores), 1)
    out = np.zeros(ctx_l)
    for i, cid in enumerate(rel_clip_ids):
        if cid >= len(out):
            grown = np.zeros(len(out) + 1)
            grown[: len(out)] = out
            out = grown
        out[cid] = agg[i]
    return out


def saliency_pairs_window(window: list, ctx_l: int, clip_len: float, max_n: int = 2
                          ) -> tuple[list, list, np.ndarray]:
    """Windows-only datasets (CG-DETR ``get_saliency_labels_sub_as_query``): pos sampled inside the
    first window, neg outside; labels 1 inside. ``clip_len`` is ``duration / ctx_l`` there."""
    st = int(window[0] / clip_len)
    ed = max(0, min(int(window[1] / clip_len), ctx_l) - 1)
    if st > ed:
        st = ed
    pos = random.sample(range(st, ed + 1), k=max_n) if st != ed else [st] * max_n
    neg_pool = list(range(0, st)) + list(range(ed + 1, ctx_l))
    neg = random.sample(neg_pool, k=max_n) if len(neg_pool) >= max_n else list(pos)
    labels = np.zeros(ctx_l)
    labels[st: ed + 1] = 1
    return pos, neg, labels


def saliency_tvsum(label: list, ctx_l: int, max_n: int = 1) -> tuple[list, list, np.ndarray]:
    """TVSum (QD-DETR ``get_saliency_labels_all_tvsum``): summed (score-1) of 20 raters, scaled
    /80*12; hard pos/neg only. Shorter label rows are zero-padded to ctx_l (VideoLights)."""
    agg = np.sum(np.asarray(label) - 1, axis=-1)[:ctx_l]
    if len(agg) < ctx_l:
        agg = np.concatenate([agg, np.zeros(ctx_l - len(agg))])
    order = np.argsort(agg)
    pos = [min(int(i), ctx_l - 1) for i in order[-max_n:]]
    neg = [min(int(i), ctx_l - 1) for i in order[:max_n]]
    return pos, neg, agg / 80 * 12


def tr_detr_pos_mask(rel_clip_ids: list, ctx_l: int) -> torch.Tensor:
    """TR-DETR ``pos_mask``: 1 on relevant clips. Upstream quirk kept: where an id is past the end
    the mask is grown, then its first ctx_l entries are overwritten with the (all-zero) old mask."""
    pos = torch.tensor(rel_clip_ids)
    mask = torch.zeros(ctx_l)
    if int(pos.max()) >= ctx_l:
        grown = torch.zeros(int(pos.max()) + 1)
        grown[pos] = 1
        grown[:ctx_l] = mask
        return grown
    mask[pos] = 1
    return mask


def tr_detr_pos_mask_tvsum(label: list, ctx_l: int) -> torch.Tensor:
    """TR-DETR on TVSum: the top half of clips by summed score are positive."""
    agg = np.sum(np.asarray(label) - 1, axis=-1)[:ctx_l]
    pos = torch.tensor(np.argsort(agg)[ctx_l // 2:])
    mask = torch.zeros(max(ctx_l, int(pos.max()) + 1 if len(pos) else ctx_l))
    mask[pos] = 1
    return mask


def univtg_dense_targets(meta: dict, ctx_l: int, clip_len: float) -> dict:
    """UniVTG per-clip targets: ``timestamp = (t + clip_len/2)/L`` (seconds added to an index, as
    upstream), the GT window containing each clip (``span_labels_nn``, zeros where none) and the
    in-window flag ``timestamp_window``."""
    timestamp = ((torch.arange(0, ctx_l) + clip_len / 2) / ctx_l).unsqueeze(1).repeat(1, 2)
    windows = torch.Tensor(meta["relevant_windows"])
    n_win = windows.shape[0]
    windows_ts = (windows / (ctx_l * clip_len)).unsqueeze(0).repeat(ctx_l, 1, 1)
    ts = timestamp.unsqueeze(1).repeat(1, n_win, 1)
    nn_window = torch.zeros_like(timestamp)
    left = ts[..., 0] - windows_ts[..., 0]
    right = windows_ts[..., 1] - ts[..., 1]
    assign = torch.where((left >= 0) * (right >= 0))
    if min(assign[0].shape) == 0:
        nn_window = windows_ts.squeeze(1)
    else:
        nn_window[assign[0]] = windows_ts[assign[0], assign[1]]
    in_window = 1 * (timestamp[:, 0] >= nn_window[:, 0]) & (timestamp[:, 1] <= nn_window[:, 1])
    if in_window.sum() < 1:
        idx = max(0, min(int(meta["relevant_windows"][0][0] / clip_len), ctx_l - 1))
        in_window[idx] = 1
    return {"timestamp": timestamp, "span_labels_nn": nn_window, "timestamp_window": in_window}


# ---- the dataset ---------------------------------------------------------------------------
class MomentDataset(Dataset):
    """Annotation lines whose features exist in the stores; each item is
    ``{"meta": line, "model_inputs": {...}}`` like the official ``StartEndDataset``.

    Lines whose video or query is missing from a store are skipped and listed in ``self.skipped``
    (``(qid, vid, reason)``); an empty result is a user error.
    """

    def __init__(self, annotations: list[dict], stores: dict[str, StoreReader], profile: Profile,
                 cfg: DatasetConfig | None = None, name: str = "annotations"):
        self.cfg = cfg or DatasetConfig()
        spec = get_spec(self.cfg.labels)
        self.recipe = spec.labels
        if self.cfg.inputs is None:
            self.cfg = dataclasses.replace(self.cfg, inputs=meta_inputs(spec.forward_inputs))
        unknown = [k for k in self.cfg.inputs if k not in META_INPUTS]
        if unknown:
            raise MrhdError(f"unknown dataset inputs {unknown}; choose from {', '.join(META_INPUTS)}")
        self.profile = profile
        self.stores = stores
        self.name = name
        if self.cfg.domain is not None:
            annotations = [a for a in annotations if a.get("domain") == self.cfg.domain]
        self.skipped: list[tuple] = []
        self.data: list[dict] = []
        vstreams = video_streams(profile, stores)
        for meta in annotations:
            missing_v = [s for s in vstreams if not stores[s].has(str(meta["vid"]))]
            missing_q = [s for s in profile.text if not stores[s].has_text(meta["qid"])]
            if missing_v or missing_q:
                what = ", ".join([f"video in {s}" for s in missing_v] + [f"query in {s}" for s in missing_q])
                self.skipped.append((meta["qid"], meta["vid"], f"missing {what}"))
                continue
            absent = [k for k in self.cfg.inputs if meta.get(k) is None]
            if absent:
                self.skipped.append((meta["qid"], meta["vid"], f"no {', '.join(absent)} (the model reads it)"))
                continue
            if self.cfg.load_labels and annotation_kind(meta) == "none":
                self.skipped.append((meta["qid"], meta["vid"], "no relevant_windows / labels"))
                continue
            self.data.append(meta)
        if not self.data:
            why = f" ({len(self.skipped)} lines skipped, e.g. qid {self.skipped[0][0]}: {self.skipped[0][2]})" \
                if self.skipped else ""
            raise MrhdError(f"{name} has no usable lines{why}; check the annotation file and --features")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        meta = self.data[index]
        inputs: dict = {}
        inputs["query_feat"] = torch.from_numpy(
            self.profile.assemble_text(read_text_arrays(self.profile, self.stores, meta["qid"])))
        video, audio = self.profile.assemble_clips(read_video_arrays(self.profile, self.stores, str(meta["vid"])))
        inputs["video_feat"] = torch.from_numpy(video)
        if audio is not None:
            inputs["audio_feat"] = torch.from_numpy(audio)
        ctx_l = len(video)
        if self.recipe.dense:
            inputs.update(univtg_dense_targets(meta, ctx_l, self.cfg.clip_len))
        if self.cfg.load_labels:
            self._add_labels(meta, ctx_l, inputs)
        for key in self.cfg.inputs:
            inputs[key] = meta[key]
        return {"meta": meta, "model_inputs": inputs}

    def _add_labels(self, meta: dict, ctx_l: int, inputs: dict) -> None:
        kind = annotation_kind(meta)
        r, clip_len = self.recipe, self.cfg.clip_len
        if kind == "tvsum":
            inputs["span_labels"] = torch.tensor([[0.0, 0.0]])
            pos, neg, all_labels = saliency_tvsum(meta["label"], ctx_l)
        else:
            inputs["span_labels"] = span_labels(meta["relevant_windows"], ctx_l, clip_len, self.cfg.max_windows)
            if kind == "hl":
                if r.dense:
                    pos, neg = saliency_pairs_hl(meta["relevant_clip_ids"], meta["saliency_scores"], ctx_l,
                                                 easy_only=True, tie_to_pos=True)
                else:
                    pos, neg = saliency_pairs_hl(meta["relevant_clip_ids"], meta["saliency_scores"], ctx_l)
                all_labels = saliency_scores_hl(meta["relevant_clip_ids"], meta["saliency_scores"], ctx_l)
            elif r.dense:   # UniVTG on windows-only data: one pair, pos drawn from the in-window clips
                pos, neg, all_labels = saliency_pairs_window(meta["relevant_windows"][0], ctx_l, clip_len, 1)
                pos = [random.choice(torch.where(inputs["timestamp_window"])[0].tolist())]
            else:
                pos, neg, all_labels = saliency_pairs_window(
                    meta["relevant_windows"][0], ctx_l, float(meta["duration"]) / ctx_l)
        inputs["saliency_pos_labels"], inputs["saliency_neg_labels"] = pos, neg
        if r.dense:
            inputs["saliency_scores"] = self._univtg_saliency(meta, kind, ctx_l, inputs)
        if r.all_labels:
            inputs["saliency_all_labels"] = all_labels
        if r.relevant_clips:
            inputs["relevant_clips"] = all_labels
        if r.pos_index:
            inputs["saliency_pos_index"] = (all_labels > 0).astype(int)
        if r.pos_mask:
            inputs["pos_mask"] = (tr_detr_pos_mask_tvsum(meta["label"], ctx_l) if kind == "tvsum"
                                  else tr_detr_pos_mask(meta["relevant_clip_ids"], ctx_l) if kind == "hl"
                                  else torch.from_numpy(all_labels).float())

    @staticmethod
    def _univtg_saliency(meta: dict, kind: str, ctx_l: int, inputs: dict) -> torch.Tensor:
        """UniVTG ``saliency_scores``: mean rater score on relevant clips (ids at or past the end cut
        off at the first such id), else the in-window flag."""
        if kind != "hl":
            return inputs["timestamp_window"]
        ids = meta["relevant_clip_ids"]
        limit = ids.index(ctx_l) if (np.array(ids) >= ctx_l).any() and ctx_l in ids else None
        out = torch.zeros(ctx_l).double()
        out[ids[:limit]] = torch.tensor(np.mean(np.array(meta["saliency_scores"][:limit]), -1))
        return out

    def summary(self) -> str:
        return f"{self.name}: {len(self.data)} lines used, {len(self.skipped)} skipped"
