"""The stage-2 BERT tokenizer (bert-large-uncased WordPiece) without any download."""

from __future__ import annotations

from pathlib import Path

from mrhd.errors import MrhdError


def synthetic_vocab() -> dict[str, int]:
    """Character-level WordPiece vocabulary for ``--random-weights``: BERT's special tokens at
    BERT's ids, then each printable lower-case ASCII character and its ``##`` continuation."""
    vocab = {"[PAD]": 0}
    vocab.update({f"[unused{i}]": i + 1 for i in range(99)})
    vocab.update({"[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103})
    for ch in (chr(c) for c in range(33, 127) if not chr(c).isupper()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("##" + ch, len(vocab))
    return vocab


def bert_tokenizer(folder: Path | None):
    """``folder/vocab.txt`` (bert-large-uncased), or the synthetic vocabulary when ``folder`` is None."""
    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert import load_vocab

    if folder is None:
        return BertTokenizer(vocab=synthetic_vocab(), do_lower_case=True)
    vocab_file = Path(folder) / "vocab.txt"
    if not vocab_file.is_file():
        raise MrhdError(f"no vocab.txt beside the InternVideo2 checkpoint in {folder}; copy "
                        "bert-large-uncased's vocab.txt there")
    return BertTokenizer(vocab=load_vocab(str(vocab_file)), do_lower_case=True)
