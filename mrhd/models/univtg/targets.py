"""UniVTG's dense per-clip targets, as the official dataset builds them (main/dataset.py, DatasetMR).

Each clip gets a reference time ``(t + clip_len/2) / L`` (a clip index plus half a clip length in
seconds, i.e. (t+1)/L for 2-second clips -- kept because the checkpoints were trained with it), the
ground-truth window that contains it (normalised by ``L * clip_len``), and a flag saying whether it
lies inside that window. The criterion only needs these plus the saliency labels of the dataset.
"""

from __future__ import annotations

import torch


def clip_targets(windows: list[list[float]], n_clips: int, clip_len: float) -> dict[str, torch.Tensor]:
    """timestamp (L, 2), span_labels_nn (L, 2) and timestamp_window (L,) of one sample."""
    stamps = ((torch.arange(0, n_clips) + clip_len / 2) / n_clips).unsqueeze(1).repeat(1, 2)
    gt = torch.tensor(windows, dtype=torch.float32) / (n_clips * clip_len)            # (W, 2)
    left = stamps[:, None, 0] - gt[None, :, 0]
    right = gt[None, :, 1] - stamps[:, None, 1]
    rows, cols = torch.where((left >= 0) & (right >= 0))
    if rows.numel() == 0:  # no clip centre inside any window (short moments): upstream's fallback
        nearest = gt[:1].repeat(n_clips, 1)
    else:
        nearest = torch.zeros_like(stamps)
        nearest[rows] = gt[cols]
    inside = (stamps[:, 0] >= nearest[:, 0]) & (stamps[:, 1] <= nearest[:, 1])
    inside = inside.long()
    if inside.sum() < 1:
        inside[max(0, min(int(windows[0][0] / clip_len), n_clips - 1))] = 1
    return {"timestamp": stamps, "span_labels_nn": nearest, "timestamp_window": inside}


def batch_targets(windows: list[list[list[float]]], n_clips: list[int], clip_len: float,
                  max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Per-sample :func:`clip_targets` padded with zeros to ``max_len`` plus ``timestamp_mask``.

    Saliency labels (``saliency_scores``, ``saliency_pos_labels``) come from the dataset and are
    added by the caller.
    """
    max_len = max_len or max(n_clips)
    out = {"timestamp": torch.zeros(len(n_clips), max_len, 2),
           "timestamp_mask": torch.zeros(len(n_clips), max_len),
           "timestamp_window": torch.zeros(len(n_clips), max_len),
           "span_labels_nn": torch.zeros(len(n_clips), max_len, 2)}
    for i, (w, n) in enumerate(zip(windows, n_clips)):
        t = clip_targets(w, n, clip_len)
        for key in ("timestamp", "span_labels_nn", "timestamp_window"):
            out[key][i, :n] = t[key]
        out["timestamp_mask"][i, :n] = 1
    return out
