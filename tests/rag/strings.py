"""A few thousand varied, deterministic test strings (prose, numbers, code, whitespace, scripts, emoji, markup)."""

from __future__ import annotations

import random

WORDS = ["the", "model", "Qwen3", "LoRA", "adapter", "context", "tokens", "budget", "retrieval", "chunk", "über",
         "naïve", "résumé", "Zusammenfassung", "東京", "北京大学", "Привет", "мир", "مرحبا", "שלום", "नमस्ते", "こんにちは",
         "안녕하세요", "🙂", "🚀🔥", "e\u0301", "A\u030a", "ﬁ", "ǅ", "don't", "we're", "I'll", "it's", "THEY'VE",
         "x86_64", "v0.11.2", "RG611", "<|im_start|>", "</think>", "<think>", "<tool_call>", "\t", "\u00a0",
         "\u200b", "\r\n", "\n\n", "   ", "def", "return", "lambda", "{", "}", "[]", "()", "::", "->", "=>", "//",
         "#", "@", "$", "%", "&&", "||", "..."]


def _number(rng: random.Random) -> str:
    k = rng.randrange(6)
    if k == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 12)))
    if k == 1:
        return f"{rng.random() * 10 ** rng.randrange(0, 6):.{rng.randrange(0, 7)}f}"
    if k == 2:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if k == 3:
        return f"{rng.randrange(1, 999):,}".replace(",", rng.choice([",", ".", " ", "'"]))
    if k == 4:
        return f"0x{rng.randrange(16 ** 8):x}"
    return f"{rng.randrange(100)}%"


def _code(rng: random.Random) -> str:
    name = rng.choice(["budget", "top_k", "chunk_size", "render", "count_tokens", "__init__"])
    return rng.choice([
        f"def {name}(x: int = {rng.randrange(100)}) -> int:\n    return x * {rng.randrange(1, 9)}\n",
        f"for (int i = 0; i < {rng.randrange(50)}; ++i) {{ s += a[i]; }}",
        f'{{"{name}": {rng.randrange(1000)}, "ok": true, "list": [1, 2, 3]}}',
        f"SELECT {name} FROM t WHERE id = {rng.randrange(99)};",
        f"    if {name} is None:\n\t\traise ValueError('{name} missing')\n",
        f"https://example.org/{name}?id={rng.randrange(10 ** 6)}&q=a%20b#frag",
    ])


def varied_strings(n: int = 3000, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            s = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 30)))
        elif kind == 1:
            s = "".join(rng.choice([rng.choice(WORDS), _number(rng), " ", "\n", ", ", ". "])
                        for _ in range(rng.randrange(1, 25)))
        elif kind == 2:
            s = _code(rng)
        elif kind == 3:  # random code points from several blocks
            blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
                      (0x3040, 0x30ff), (0x4e00, 0x4fff), (0xac00, 0xacff), (0x1f300, 0x1f64f), (0x2000, 0x206f)]
            s = "".join(chr(rng.randrange(*rng.choice(blocks))) for _ in range(rng.randrange(1, 60)))
        elif kind == 4:  # whitespace and punctuation runs
            s = "".join(rng.choice([" ", "  ", "\n", "\t", "\r\n", "!", "?", "...", "'s", "'LL", "-", "_", "a", "1"])
                        for _ in range(rng.randrange(1, 40)))
        else:
            s = rng.choice(WORDS).upper() + " " + _number(rng) + rng.choice([" ", "\n", ""]) + _code(rng)[:40]
        out.append(s)
    return out
