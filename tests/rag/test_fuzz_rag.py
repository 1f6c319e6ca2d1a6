"""Bad RAG setups never crash: they parse (unknown keys reported) or raise one InputError naming the file."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regraft.checks.area_rag import RagContext
from regraft.checks.registry import rules_for
from regraft.errors import InputError
from regraft.inspection.resolve import resolve_model
from regraft.rag.setup import parse_rag

SECTIONS = {
    "chunking": st.fixed_dictionaries({}, optional={"size": st.integers(-1, 5000) | st.text(max_size=3),
                                                    "unit": st.sampled_from(["tokens", "chars", "bytes"]),
                                                    "overlap": st.integers(0, 600), "zz": st.none()}),
    "retrieval": st.fixed_dictionaries({}, optional={"top_k": st.integers(-1, 200) | st.booleans(),
                                                     "topk": st.integers()}),
    "prompt": st.fixed_dictionaries({}, optional={
        "system": st.sampled_from(["S {context}", "S", "{x}", "{", "<|eot_id|>"]) | st.integers(),
        "user": st.sampled_from(["{context} {question}", "{question}", "Q {question} <|im_start|>", "{context}"])}),
    "generation": st.fixed_dictionaries({}, optional={"answer_tokens": st.integers(0, 300000),
                                                      "thinking_budget": st.integers(0, 100000),
                                                      "enable_thinking": st.booleans() | st.text(max_size=2),
                                                      "stop": st.lists(st.sampled_from(["<|im_end|>", "<|eot_id|>",
                                                                                        "x"]), max_size=2)}),
    "embedding": st.sampled_from(["bge", None, 3]),
    "index": st.fixed_dictionaries({}, optional={"chunks": st.integers(0, 10 ** 6),
                                                 "embedding_model": st.sampled_from(["bge", "e5"])}),
}
TARGETS = ["Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-235B-A22B-Thinking-2507"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({}, optional=SECTIONS))
def test_random_setups(qwen_dir, doc):
    try:
        setup = parse_rag(doc, Path("fuzz-rag.yaml"))
    except InputError as e:
        assert "fuzz-rag.yaml" in str(e)
        return
    src = resolve_model("Qwen/Qwen3-8B")
    for name in TARGETS:
        ctx = RagContext(src, resolve_model(name), setup)
        for r in rules_for("rag"):
            list(r.func(ctx))
