"""BERT's uncased WordPiece tokenizer for the text towers that use it (BLIP-2's Q-Former,
InternVideo2 stage 2), read from a ``vocab.txt`` beside the checkpoint: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from mrhd.errors import MrhdError


def synthetic_vocab() -> dict[str, int]:
    """A character-level WordPiece vocabulary for ``--random-weights`` (no tokenizer download):
    BERT's special tokens at BERT's ids, then each printable lower-case ASCII character and its
    ``##`` continuation."""
    vocab = {"[PAD]": 0}
    vocab.update({f"[unused{i}]": i + 1 for i in range(99)})
    vocab.update({"[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103})
    for ch in (chr(c) for c in range(33, 127) if not chr(c).isupper()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("##" + ch, len(vocab))
    return vocab


def wordpiece_tokenizer(folder: Path | None, *, missing: str, saved_ok: bool = False):
    """``folder/vocab.txt`` as a lower-casing ``BertTokenizer`` (with ``saved_ok``, a saved
    ``tokenizer.json`` too), or the synthetic vocabulary when ``folder`` is None. ``missing``: the
    message when the folder has neither."""
    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert import load_vocab

    if folder is None:
        return BertTokenizer(vocab=synthetic_vocab(), do_lower_case=True)
    folder = Path(folder)
    if (folder / "vocab.txt").is_file():
        return BertTokenizer(vocab=load_vocab(str(folder / "vocab.txt")), do_lower_case=True)
    if saved_ok and (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    raise MrhdError(missing)
