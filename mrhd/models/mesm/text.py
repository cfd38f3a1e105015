"""MESM's frozen CLIP text tower fed token ids, its tokenisation, and its word-class vocabulary.

MESM (lntzm/MESM ``model/text_encoder.py`` ``CLIPTextEncoder``, ``dataset/tokenizer.py``) encodes
queries online: CLIP BPE ids ``[SOT, body[:max_words_l - 2], EOT]`` zero-padded to the 77-token
context, the text transformer under the causal mask, ``ln_final``; the model keeps the first
``max_words_l`` states (so EOT survives, FEATURES.md). Frame-word reconstruction on this CLIP path
classifies every word into ``vocab_size`` frequent CLIP ids + <unknown>, <start>, <end>
(``load_CLIP_keep_vocab``: the first ``vocab_size`` lines of ``CLIP_tokenized_count.txt``,
"token_id count" sorted by count); the stored-word-feature path has <unknown> only.

The tower is the one of :mod:`mrhd.encoders.clip` (open_clip), so its keys are OpenAI's
(``transformer.resblocks.N.*``, ``token_embedding``, ``positional_embedding``, ``ln_final``,
``text_projection``), as the official ``text_encoder.*``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from mrhd.encoders.clip import EOT_TOKEN, SOT_TOKEN, load_clip, read_openai_state_dict
from mrhd.errors import MrhdError

CLIP_VOCAB = 49408
CLIP_CONTEXT = 77


class ClipTokenEncoder(nn.Module):
    """The frozen text transformer of CLIP: ids (B, 77) -> ``ln_final`` states (B, 77, width)."""

    def __init__(self, clip_model):
        super().__init__()
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection   # kept so official weights load 1:1
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)   # frozen: always in eval mode, as the official .eval()

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.transformer(x, attn_mask=self.attn_mask[: ids.shape[1], : ids.shape[1]])
        return self.ln_final(x)


TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def load_text_only(path: Path) -> ClipTokenEncoder:
    """The official ``pretrained_models/clip_text_encoder.pth``: OpenAI's text-tower tensors only
    (``runner.py build_CLIP_text_encoder`` reads the sizes off them, heads = width / 64)."""
    from open_clip.model import CLIP, CLIPTextCfg

    sd = {k: v.float() for k, v in read_openai_state_dict(path).items() if k.startswith(TEXT_KEYS)}
    try:
        width = sd["ln_final.weight"].shape[0]
        text = CLIPTextCfg(context_length=sd["positional_embedding"].shape[0],
                           vocab_size=sd["token_embedding.weight"].shape[0], width=width, heads=width // 64,
                           layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}))
        model = CLIP(sd["text_projection"].shape[1], vision_cfg={"layers": 1, "width": 64, "patch_size": 32,
                                                               "head_width": 64}, text_cfg=text, quick_gelu=True)
    except KeyError as err:
        raise MrhdError(f"{path} is not a CLIP text tower (no {err.args[0]!r}); give OpenAI's ViT-B-32.pt "
                        "or MESM's clip_text_encoder.pth") from None
    tower = ClipTokenEncoder(model)
    missing, unexpected = tower.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise MrhdError(f"{path} does not match a CLIP text tower: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    return tower


def build_text_encoder(kind: str, weights: str | None) -> ClipTokenEncoder | None:
    """``none`` (stored token features are fed instead), ``clip`` (ViT-B/32 text tower; weights from
    ``weights``: OpenAI's ViT-B-32.pt, MESM's text-only clip_text_encoder.pth, a registry id, the
    default CLIP when None, random when ``'random'``), ``clip_tiny`` (a small random tower for
    tests). Built under a forked RNG so it never shifts the model's init."""
    if kind == "none":
        return None
    if kind not in ("clip", "clip_tiny"):
        raise MrhdError(f"mesm: text_encoder {kind!r} is unknown; choose none, clip or clip_tiny")
    random_weights = kind == "clip_tiny" or weights == "random"
    with torch.random.fork_rng(devices=[]):
        if not random_weights and weights and Path(weights).expanduser().is_file():
            sd_keys = read_openai_state_dict(Path(weights).expanduser()).keys()
            if not any(k.startswith("visual.") for k in sd_keys):
                return load_text_only(Path(weights).expanduser())
        model, _, _ = load_clip(None if random_weights else weights, random_weights,
                                "tiny" if kind == "clip_tiny" else "full")
    return ClipTokenEncoder(model)


@lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def tokenize_queries(texts: list[str], max_words_l: int) -> torch.Tensor:
    """CLIP ids (B, 77): SOT, the first ``max_words_l - 2`` body tokens, EOT, zeros (MESM's
    ``CLIPTokenizer.tokenize`` with ``max_valid_length = max_words_l``)."""
    tok = _bpe()
    out = torch.zeros(len(texts), CLIP_CONTEXT, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT_TOKEN] + tok.encode(text)[: max_words_l - 2] + [EOT_TOKEN]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def frequent_token_ids(id_lists: Iterable[Iterable[int]], vocab_size: int) -> list[int]:
    """The ``vocab_size`` most frequent body ids (ties by id), as ``data/tokenized_count.py`` counts."""
    counts = Counter(int(t) for ids in id_lists for t in ids if int(t) not in (0, SOT_TOKEN, EOT_TOKEN))
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]]


def read_count_file(path: str | Path, vocab_size: int) -> list[int]:
    """Token ids of the first ``vocab_size`` lines of an official ``CLIP_tokenized_count.txt``."""
    try:
        lines = Path(path).read_text().splitlines()
        return [int(line.split()[0]) for line in lines if line.strip()][:vocab_size]
    except (OSError, ValueError, IndexError) as err:
        raise MrhdError(f"mesm: cannot read word vocabulary {path} ({err.__class__.__name__}); give a "
                        "'token_id count' file such as the official CLIP_tokenized_count.txt") from None


def label_map(token_ids: list[int], vocab_size: int) -> torch.Tensor:
    """CLIP id -> word class: listed ids 0..n-1, others <unknown> = vocab_size, SOT <start>, EOT <end>."""
    table = torch.full((CLIP_VOCAB,), vocab_size, dtype=torch.long)
    if token_ids:
        table[torch.tensor(token_ids[:vocab_size], dtype=torch.long)] = torch.arange(len(token_ids[:vocab_size]))
    table[SOT_TOKEN] = vocab_size + 1
    table[EOT_TOKEN] = vocab_size + 2
    return table
