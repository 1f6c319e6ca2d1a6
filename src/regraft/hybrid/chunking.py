"""Token-aware chunking.

``chunk_text`` packs sentences (and, for over-long sentences, word runs) into chunks of at most ``max_tokens``
tokens as counted by the *target model's* tokenizer, so a retrieved chunk has a known cost in the prompt.
Any object with ``encode(str) -> list[int]`` works (a ``tokenizers.Tokenizer`` or a transformers tokenizer);
without one, ``CharEstimate`` counts ~4 characters per token and every chunk says ``estimate=True``.
Chunks are exact substrings of the source (no decode round-trip), so their ids are stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


class TokenCounter(Protocol):
    def encode(self, text: str): ...


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets in the source text
    end: int
    n_tokens: int
    estimate: bool  # True when n_tokens is a character estimate, not a real tokenizer count


class CharEstimate:
    """Fallback token counter: ceil(len/4). Clearly an estimate (``is_estimate = True``)."""

    is_estimate = True
    name = "char-estimate(4 chars/token)"

    def __init__(self, chars_per_token: float = 4.0):
        self.chars_per_token = chars_per_token

    def encode(self, text: str) -> list[int]:
        n = int(-(-len(text) // self.chars_per_token)) if text else 0
        return [0] * n

    def decode(self, ids) -> str:  # pragma: no cover - not meaningful for an estimate
        raise NotImplementedError("a character estimate cannot decode")


def count_tokens(tokenizer, text: str) -> int:
    count = getattr(tokenizer, "count", None)  # regraft.rag.tokenizer.TokenCounter (exact or estimate)
    if callable(count):
        return int(count(text))
    enc = tokenizer.encode(text)
    ids = getattr(enc, "ids", enc)  # tokenizers.Tokenizer returns an Encoding
    return len(ids)


def load_tokenizer(model_dir) -> object | None:
    """The tokenizer of a model directory (tokenizer.json via `tokenizers`, no transformers import), or None."""
    from pathlib import Path

    p = Path(model_dir) / "tokenizer.json" if model_dir else None
    if p is None or not p.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception for a broken file
        from regraft.errors import FileFormatError

        raise FileFormatError(f"Cannot read tokenizer '{p}': {' '.join(str(e).split())[:200]}. Re-download the "
                              "model's tokenizer.json.") from None

    class _NoSpecials:
        name = f"tokenizer.json ({p.parent.name})"
        is_estimate = False

        def encode(self, text: str):
            return tok.encode(text, add_special_tokens=False).ids

        def decode(self, ids):
            return tok.decode(ids)

    return _NoSpecials()


_SENT = re.compile(r"[^\n.!?]*(?:[.!?]+[\"')\]]*|\n+|$)\s*")
_WORD = re.compile(r"\S+\s*|\s+")


def _segments(text: str) -> list[tuple[int, int]]:
    """Sentence/line spans covering the text exactly."""
    spans = []
    for m in _SENT.finditer(text):
        if m.end() > m.start():
            spans.append((m.start(), m.end()))
    return spans


def chunk_text(text: str, tokenizer=None, max_tokens: int = 256, overlap_sentences: int = 0) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens (whitespace-only chunks are dropped)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    tok = tokenizer or CharEstimate()
    estimate = bool(getattr(tok, "is_estimate", False)) or getattr(tok, "exact", True) is False

    def n(s: str) -> int:
        return count_tokens(tok, s)

    # 1. sentence spans; split any sentence that alone exceeds the budget into word runs
    units: list[tuple[int, int]] = []
    for s, e in _segments(text):
        if n(text[s:e]) <= max_tokens:
            units.append((s, e))
            continue
        ws = s
        pieces = []
        for m in _WORD.finditer(text, s, e):
            if m.start() > ws and n(text[ws : m.end()]) > max_tokens:
                pieces.append((ws, m.start()))
                ws = m.start()
        pieces.append((ws, e))
        for ps, pe in pieces:
            while n(text[ps:pe]) > max_tokens:  # one "word" longer than the budget: cut by characters
                lo, hi = ps + 1, pe
                while lo < hi:  # largest cut with n <= max_tokens
                    mid = (lo + hi + 1) // 2
                    if n(text[ps:mid]) <= max_tokens:
                        lo = mid
                    else:
                        hi = mid - 1
                units.append((ps, lo))
                ps = lo
            if pe > ps:
                units.append((ps, pe))

    # 2. greedy packing, verified against the real count of the joined span
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        s = units[i][0]
        j = i + 1
        while j < len(units) and n(text[s : units[j][1]]) <= max_tokens:
            j += 1
        e = units[j - 1][1]
        body = text[s:e]
        if body.strip():
            stripped_start = s + (len(body) - len(body.lstrip()))
            stripped_end = e - (len(body) - len(body.rstrip()))
            t = text[stripped_start:stripped_end]
            chunks.append(Chunk(t, stripped_start, stripped_end, n(t), estimate))
        nxt = j - overlap_sentences if overlap_sentences and j - overlap_sentences > i else j
        i = nxt
    return chunks
