"""Batches of similar lengths, so that padding (computed, then masked away) shrinks.

Why: the collate pads every batch to its longest video and query; a shuffled batch of QVHighlights
mixes 6-token queries with 30-token ones, Charades-STA mixes 10-clip videos with 75-clip ones, and
the padded positions cost as much compute as real ones. :class:`LengthBucketSampler` draws a random
permutation each epoch (from the global torch RNG, as ``DataLoader(shuffle=True)`` does, so a seed
fixes the run and a resumed run continues it), cuts it into pools of ``pool`` batches, sorts each
pool by length, cuts the pool into batches and shuffles the order of all batches. Every item is
seen once per epoch and there are as many batches as without bucketing.

What changes: which items share a batch, hence the batch-level terms (a DETR loss averages over the
batch; QD-DETR's and CG-DETR's negative pairs take the next item's query). Per-item results are
unchanged: the models mask padded positions (``tests/test_train_speed.py`` checks that a batch's
losses do not depend on its padding). See docs/training-speed.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def item_lengths(metas: Sequence[dict], clip_len: float, max_v_l: int | None,
                 max_q_l: int | None) -> list[tuple[int, int]]:
    """(clips, tokens) of each annotation line, estimated without reading features: clips from
    ``duration / clip_len``, tokens from the query's words + 2 (a CLIP query's start and end
    tokens), each capped as the profile caps them. Only the order matters, so estimates suffice."""
    out = []
    for meta in metas:
        clips = int(round(float(meta.get("duration") or 0.0) / clip_len)) if clip_len else 0
        tokens = len(str(meta.get("query") or "").split()) + 2
        if max_v_l is not None:
            clips = min(clips, max_v_l)
        if max_q_l is not None:
            tokens = min(tokens, max_q_l)
        out.append((clips, tokens))
    return out


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler (``DataLoader(batch_sampler=...)``) of length-sorted pools; see the module
    docstring. ``lengths[i]`` is any sortable length of item i, e.g. (clips, tokens)."""

    def __init__(self, lengths: Sequence, batch_size: int, pool: int = 50):
        if batch_size < 1 or pool < 1:
            raise ValueError("batch_size and pool must be at least 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.pool = pool

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())   # as RandomSampler draws it
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=gen).tolist()
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, n, size):
            chunk = sorted(order[start:start + size], key=lambda i: self.lengths[i])
            batches.extend(chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size))
        for b in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[b]
