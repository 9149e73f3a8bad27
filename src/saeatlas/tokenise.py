"""Corpus text to token ids, with the text treated as text.

Why this needs care: a tokenizer matches its special tokens' *strings* anywhere in its input, so
a document that merely contains ``<|endoftext|>`` or ``<|im_start|>`` (a chat log, a tokenizer's
own documentation, a hostile file) would come out with the separator and BOS ids the pipeline
relies on for document boundaries and for the massive activations it flags. Here the tokenizer
is called with ``split_special_tokens=True``: such strings are encoded as ordinary text
(``<``, ``|``, ``end``, ...), and the result is checked to hold no special id at all.

Characters a reader cannot see (NUL, other C0/C1 controls, bidirectional overrides) are kept,
since they are part of the text the model reads, and counted, so the corpus manifest says how
much of it there was.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from saeatlas.errors import CorpusError

# What is counted in the text of the documents a corpus uses (``text.<name>`` in its metrics).
PATTERNS = {
    "nul_chars": re.compile("\x00"),
    "control_chars": re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"),  # C0/C1 minus NUL, tab, newlines
    "bidi_controls": re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"),
}


def special_strings(tokenizer: Any) -> list[str]:
    return sorted({str(t) for t in getattr(tokenizer, "all_special_tokens", [])}, key=len, reverse=True)


def count_text(text: str, specials: Sequence[str]) -> Counter:
    """How many invisible characters and special-token strings ``text`` holds."""
    counts = Counter({name: len(pattern.findall(text)) for name, pattern in PATTERNS.items()})
    counts["special_token_strings"] = sum(text.count(s) for s in specials if s)
    return counts


def encode_texts(tokenizer: Any, texts: list[str], titles: Sequence[str]) -> list[np.ndarray]:
    """Token ids (int32) of each text, special-token strings encoded as text. A special id in the
    result would mean the tokenizer ignored that request: refused, naming the document."""
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    special_ids = np.asarray(sorted(set(getattr(tokenizer, "all_special_ids", []))), dtype=np.int32)
    out = []
    for title, row in zip(titles, ids):
        arr = np.asarray(row, dtype=np.int32)
        if special_ids.size and np.isin(arr, special_ids).any():
            raise CorpusError(f"document {title!r}: the tokenizer produced a special token id from text; "
                              "this tokenizer cannot encode special-token strings as text")
        out.append(arr)
    return out


def _byte_level_alphabet() -> dict[str, int]:
    """The printable stand-ins byte-level BPE vocabularies (GPT-2, SmolLM2, ...) use for raw bytes:
    printable Latin-1 bytes stand for themselves, the other 68 are shifted to U+0100 onwards in
    byte order. Inverted here: stand-in character -> byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {chr(b): b for b in kept}
    shifted = (b for b in range(256) if b not in mapping.values())
    for i, b in enumerate(shifted):
        mapping[chr(256 + i)] = b
    return mapping


def token_bytes(tokenizer: Any) -> list[bytes]:
    """The raw bytes of every token id.

    Why bytes and not ``decode([id])``: one character can span several tokens (an emoji, a
    bidi override, most non-Latin text), and each of those tokens alone decodes to U+FFFD. A
    reader joins a context's bytes and decodes them once, so the text shows as it was written.
    Tokenizers that are not byte-level fall back to the UTF-8 of their decoded token."""
    alphabet = _byte_level_alphabet()
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    specials = set(special_strings(tokenizer))
    out = []
    for i, piece in enumerate(pieces):
        piece = piece or ""
        if piece not in specials and piece and all(ch in alphabet for ch in piece):
            out.append(bytes(alphabet[ch] for ch in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out
