"""Batching: the official ``start_end_collate`` + ``prepare_batch_inputs`` as one contract.

Variable-length sequences are zero-padded to the longest item with a float mask (1 = valid);
span labels stay a list of ``{"spans": [n, 2]}``; saliency pairs become LongTensors; per-clip label
arrays are padded like the official numpy branch (QD-DETR ``saliency_all_labels``, VideoLights
``saliency_pos_index``). ``prepare_batch`` maps the batch to the forward() keyword names and the
criterion's targets dict.
"""

from __future__ import annotations

import numpy as np
import torch

# keys kept as Python lists (official collate: vid, qid; query: the text, for MESM's FW-MESM)
_LIST_KEYS = ("vid", "qid", "query")
_PAIR_KEYS = ("saliency_pos_labels", "saliency_neg_labels")
# per-clip labels padded by value only (no mask): QD-DETR's numpy branch; VideoLights casts to long
_NUMPY_PADDED = {"saliency_all_labels": torch.float32, "relevant_clips": torch.float32,
                 "saliency_pos_index": torch.long}


def pad_sequences(sequences: list, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad along the first dim to the longest sequence; mask is float32, 1 where valid."""
    lengths = [len(s) for s in sequences]
    extra = tuple(sequences[0].shape[1:])
    padded = torch.zeros((len(sequences), max(lengths)) + extra, dtype=dtype)
    mask = torch.zeros((len(sequences), max(lengths)), dtype=torch.float32)
    for i, seq in enumerate(sequences):
        padded[i, : lengths[i]] = seq
        mask[i, : lengths[i]] = 1
    return padded, mask


def _pad_numpy(arrays: list) -> np.ndarray:
    out = np.zeros((len(arrays), max(len(a) for a in arrays)), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def collate(batch: list[dict]) -> tuple[list[dict], dict]:
    """``[{"meta", "model_inputs"}]`` -> ``(metas, batched)``; batched values are tensors,
    ``(padded, mask)`` pairs, or lists."""
    metas = [e["meta"] for e in batch]
    batched: dict = {}
    for key in batch[0]["model_inputs"]:
        values = [e["model_inputs"][key] for e in batch]
        if key == "span_labels":
            batched[key] = [{"spans": v} for v in values]
        elif key in _PAIR_KEYS:
            batched[key] = torch.LongTensor(values)
        elif key in _LIST_KEYS:
            batched[key] = values
        elif key in _NUMPY_PADDED:
            batched[key] = torch.tensor(_pad_numpy(values)).to(_NUMPY_PADDED[key])
        else:
            batched[key] = pad_sequences(values, dtype=torch.float32)
    return metas, batched


def prepare_batch(batched: dict, device: str | torch.device = "cpu", non_blocking: bool = False
                  ) -> tuple[dict, dict | None]:
    """``(model_inputs, targets)``: forward() keyword arguments and the criterion's targets."""
    def to(x):
        return x.to(device, non_blocking=non_blocking)

    inputs = {
        "src_txt": to(batched["query_feat"][0]), "src_txt_mask": to(batched["query_feat"][1]),
        "src_vid": to(batched["video_feat"][0]), "src_vid_mask": to(batched["video_feat"][1]),
    }
    if "audio_feat" in batched:
        inputs["src_aud"] = to(batched["audio_feat"][0])
        inputs["src_aud_mask"] = to(batched["audio_feat"][1])
    for key in _LIST_KEYS:
        if key in batched:
            inputs[key] = batched[key]

    targets: dict = {}
    if "timestamp" in batched:   # UniVTG dense targets
        targets["timestamp"] = to(batched["timestamp"][0])
        targets["timestamp_mask"] = to(batched["timestamp"][1])
        targets["timestamp_window"] = to(batched["timestamp_window"][0])
        targets["span_labels_nn"] = to(batched["span_labels_nn"][0])
        if "saliency_scores" in batched:
            targets["saliency_scores"] = to(batched["saliency_scores"][0])
    if "span_labels" in batched:
        targets["span_labels"] = [{"spans": to(e["spans"])} for e in batched["span_labels"]]
    for key in _PAIR_KEYS:
        if key in batched:
            targets[key] = to(batched[key])
    if "saliency_pos_index" in batched:
        targets["saliency_pos_index"] = to(batched["saliency_pos_index"])
    if "saliency_all_labels" in batched:
        targets["saliency_all_labels"] = to(batched["saliency_all_labels"])
    if "pos_mask" in batched:
        targets["src_pos_mask"] = to(batched["pos_mask"][0])
    if "relevant_clips" in batched:   # CG-DETR
        targets["relevant_clips"] = to(batched["relevant_clips"])
    return inputs, (targets or None)
