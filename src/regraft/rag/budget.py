"""Token budget of a RAG prompt on a target: system + template + top_k x chunk + question + answer + thinking.

Chunk sizes in tokens carry over unchanged between models of one vocabulary (Qwen2/2.5/3 share one); otherwise
they are re-measured on sample text (the setup's ``samples``, else regraft's built-in sample) with both
tokenizers. Every number says whether it is exact, approximate (an unverified tokenizer) or an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from regraft.rag.tokenizer import TokenCounter


@lru_cache(maxsize=1)
def builtin_sample() -> str:
    return resources.files("regraft.rag").joinpath("sample_text.txt").read_text(encoding="utf-8")


@dataclass
class ChunkMeasure:
    tokens: int  # tokens of one chunk on the target
    how: str  # "same vocabulary", "measured on samples", ...
    quality: str  # exact | measured | approximate | estimate
    ratio: float | None = None  # target tokens per source unit (token or character)


def chunk_tokens_on_target(size: int, unit: str, src: TokenCounter | None, tgt: TokenCounter, samples: list[str],
                           same_vocab: bool | None) -> ChunkMeasure:
    texts = samples or [builtin_sample()]
    label = "the setup's samples" if samples else "regraft's built-in sample text"
    tgt_n = sum(tgt.count_batch(texts))
    if unit == "tokens":
        if same_vocab and src is not None:
            return ChunkMeasure(size, "same vocabulary: token counts carry over", "exact", 1.0)
        if src is None:
            return ChunkMeasure(size, "the tokenizer the chunks were counted with is unknown: taken as target tokens",
                                "estimate", 1.0)
        src_n = sum(src.count_batch(texts)) or 1
        r = tgt_n / src_n
        if src.backend is None or tgt.backend is None:
            q = "estimate"
        else:
            q = "measured" if (src.exact and tgt.exact) else "approximate"
        return ChunkMeasure(math.ceil(size * r), f"re-measured on {label}: {r:.3f} target tokens per source token "
                            f"({src.name} -> {tgt.name})", q, r)
    chars = sum(len(t) for t in texts) or 1
    r = tgt_n / chars
    q = "measured" if tgt.exact else ("approximate" if tgt.backend is not None else "estimate")
    n = math.ceil(size * r)
    return ChunkMeasure(n, f"{size} characters = ~{n} tokens at {chars / max(tgt_n, 1):.2f} characters per token on "
                        f"{label}", q, r)


@dataclass
class Budget:
    usable: int
    usable_from: str
    overhead: int  # rendered prompt with empty context and question (template, roles, system text)
    chunk_tokens: int
    top_k: int
    separator_tokens: int
    question: int
    answer: int
    thinking: int
    quality: str  # worst of the parts
    parts_quality: dict = field(default_factory=dict)

    @property
    def context_tokens(self) -> int:
        return self.top_k * self.chunk_tokens + max(0, self.top_k - 1) * self.separator_tokens

    @property
    def total(self) -> int:
        return self.overhead + self.context_tokens + self.question + self.answer + self.thinking

    @property
    def margin(self) -> int:
        return self.usable - self.total

    def max_top_k(self) -> int:
        room = self.usable - (self.overhead + self.question + self.answer + self.thinking) + self.separator_tokens
        per = self.chunk_tokens + self.separator_tokens
        return max(0, room // per) if per > 0 else 0

    def text(self) -> str:
        return (f"{self.overhead:,} prompt + {self.top_k} x {self.chunk_tokens:,} chunk"
                + (f" (+{self.separator_tokens} sep)" if self.separator_tokens else "")
                + f" + {self.question:,} question + {self.answer:,} answer + {self.thinking:,} thinking = "
                  f"{self.total:,} of {self.usable:,} ({self.usable_from}); margin {self.margin:,}")

    def to_dict(self) -> dict:
        return {"usable": self.usable, "usable_from": self.usable_from, "overhead": self.overhead,
                "chunk_tokens": self.chunk_tokens, "top_k": self.top_k, "separator_tokens": self.separator_tokens,
                "question": self.question, "answer": self.answer, "thinking": self.thinking, "total": self.total,
                "margin": self.margin, "max_top_k": self.max_top_k(), "quality": self.quality,
                "parts_quality": self.parts_quality}


_ORDER = ["exact", "measured", "approximate", "estimate"]


def worst_quality(qs) -> str:
    qs = [q for q in qs if q]
    return max(qs, key=_ORDER.index) if qs else "exact"
