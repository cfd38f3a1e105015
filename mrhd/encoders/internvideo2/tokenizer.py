"""The text tokenizers of InternVideo2 (stage 2: bert-large-uncased WordPiece; CLIP: LLaMA) without
any download."""

from __future__ import annotations

from pathlib import Path

from mrhd.encoders.wordpiece import wordpiece_tokenizer
from mrhd.errors import MrhdError


def bert_tokenizer(folder: Path | None):
    """``folder/vocab.txt`` (bert-large-uncased), or the synthetic vocabulary when ``folder`` is None."""
    return wordpiece_tokenizer(folder, missing=f"no vocab.txt beside the InternVideo2 checkpoint in {folder}; "
                                               "copy bert-large-uncased's vocab.txt there")


class ByteTokenizer:
    """A byte-level stand-in for the LLaMA tokenizer under ``--random-weights`` (no download):
    <unk>=0, <s>=1, </s>=2, then one id per UTF-8 byte, like LLaMA's byte-fallback pieces."""

    bos_token_id, eos_token_id = 1, 2

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [3 + b for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids


def synthetic_llama_tokenizer(vocab_size: int) -> ByteTokenizer:
    if vocab_size < 3 + 256:
        raise MrhdError(f"a LLaMA vocabulary of {vocab_size} cannot hold the synthetic byte tokens")
    return ByteTokenizer()


def llama_tokenizer(folder: Path | None, vocab_size: int):
    """The LLaMA tokenizer from ``folder/tokenizer.json`` (saved from chinese_alpaca_lora_7b by
    ``LlamaTokenizerFast.save_pretrained``: no sentencepiece needed here), or the synthetic one."""
    if folder is None:
        return synthetic_llama_tokenizer(vocab_size)
    file = Path(folder) / "tokenizer.json"
    if not file.is_file():
        raise MrhdError(f"no tokenizer.json beside the InternVideo2-CLIP checkpoint in {folder}; save "
                        "chinese_alpaca_lora_7b's tokenizer there with LlamaTokenizerFast.save_pretrained")
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(file))
    for name, piece in (("bos_token", "<s>"), ("eos_token", "</s>")):
        if getattr(tok, name) is None and tok.convert_tokens_to_ids(piece) is not None:
            setattr(tok, name, piece)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise MrhdError(f"{file} has no <s>/</s> tokens; it is not the LLaMA tokenizer")
    return tok
