"""Strategies for the text setup files: serving configs, RAG setups, policies, chat templates, store metadata, GGUF."""

from __future__ import annotations

import json
import struct

from hypothesis import strategies as st

from tests.hostile.strategies import CHAT_TEMPLATES, rare, CONFIG_NUMS, HUGE, json_text_mutation, json_values

YAML_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
             "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
             "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
             "{key}: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n")
HOSTILE_TEXTS = [
    YAML_BOMB.replace("{key}", "temperature"), YAML_BOMB.replace("{key}", "retrieval"),
    YAML_BOMB.replace("{key}", "stop"), YAML_BOMB.replace("{key}", "escalate_if"),
    "!!python/object/apply:os.system ['touch /tmp/regraft-pwned']\n",
    "a: !!python/name:os.system\n", "a: !!binary aGVsbG8=\n", "[" * 100_000 + "]" * 100_000,
    "a:\n" + "  " * 5000 + "b: 1\n", "- " * 20000 + "x\n", "x: " + "9" * 5000 + "\n", "{\"a\": 1e999999}",
    "\ufeffmax-model-len: 4096\n", "max-model-len: 0x10\n", "temperature: .nan\ntop_p: -.inf\n",
    "vllm serve \"unterminated", "vllm serve " + "--x " * 20000, "llama-server -m \\\n\\\n\\\n",
    "FROM\nPARAMETER\nPARAMETER num_ctx\nPARAMETER num_ctx abc\nTEMPLATE \"\"\"{{ .Prompt }}",
    "FROM x\nPARAMETER num_ctx 99999999999999999999999999999\n", "\x00\x01\x02", "", "---\n---\n", "~",
    "model: {model_id: 1, variants: [1, 2]}\nvariants: {a: null}\n", "model: {}\nfeatures: 3\nmeta: [1]\n",
    "regraft: {gpu_memory_gb: -1, concurrent_requests: 1e308, mode: 7}\n", "hf_overrides: '{not json'\n",
    "sampling: [1, 2]\nchat_template_kwargs: 5\n", "command: [1, {a: 2}]\n", "rope_scaling: {factor: -1}\n",
]

VLLM_KEYS = ["model", "max-model-len", "max_model_len", "rope-scaling", "rope_theta", "hf-overrides", "enable-lora",
             "max-lora-rank", "max-loras", "lora-modules", "tensor-parallel-size", "tp", "chat-template",
             "default-chat-template-kwargs", "reasoning-parser", "gpu-memory-utilization", "kv-cache-dtype", "dtype",
             "max-num-seqs", "quantization", "served-model-name", "trust-remote-code", "runtime", "sampling",
             "chat_template_kwargs", "regraft", "command", "generation", "temperature", "top_p", "top_k", "stop",
             "context-length", "ctx-size", "n-gpu-layers", "lora", "unknown-flag", "enable-thinking"]
SUBKEYS = {"sampling": ["temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "presence_penalty"],
           "regraft": ["gpu_memory_gb", "concurrent_requests", "mode", "adapter_rank"],
           "chat_template_kwargs": ["enable_thinking", "thinking_budget"],
           "hf-overrides": ["rope_scaling", "max_position_embeddings", "text_config"],
           "rope-scaling": ["rope_type", "factor", "original_max_position_embeddings", "type"]}

values = st.one_of(CONFIG_NUMS, json_values, st.sampled_from(["auto", "bfloat16", "yarn", "fp8", "true", "--x",
                                                              "qwen3", "{\"a\": 1}", "../../etc/passwd"]))


@st.composite
def mapping_docs(draw, keys, subkeys):
    doc = {}
    for k in draw(st.lists(st.sampled_from(keys), max_size=8)):
        if k in subkeys and draw(st.booleans()):
            doc[k] = {sk: draw(values) for sk in draw(st.lists(st.sampled_from(subkeys[k]), max_size=4))}
        else:
            doc[k] = draw(values)
    return doc


def _yaml(doc) -> str:
    import yaml

    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except Exception:  # noqa: BLE001 - e.g. a surrogate the emitter refuses
        return json.dumps(doc)


@st.composite
def command_lines(draw):
    prog = draw(st.sampled_from(["vllm serve", "python -m sglang.launch_server", "llama-server", "./llama-cli",
                                 "CUDA_VISIBLE_DEVICES=0 vllm serve", "sglang serve"]))
    parts = [prog, draw(st.sampled_from(["Qwen/Qwen3-8B", "--model-path Qwen/Qwen3-8B", "-m x.gguf", ""]))]
    for k in draw(st.lists(st.sampled_from(VLLM_KEYS), max_size=6)):
        parts.append("--" + k)
        if draw(st.booleans()):
            v = draw(values)
            parts.append(json.dumps(v) if not isinstance(v, str) else v)
    sep = draw(st.sampled_from([" ", " \\\n  ", "  "]))
    return sep.join(parts)


@st.composite
def modelfiles(draw):
    lines = [f"FROM {draw(st.sampled_from(['qwen3:8b', './x.gguf', '', '../../etc/passwd']))}"]
    for _ in range(draw(st.integers(0, 6))):
        instr = draw(st.sampled_from(["PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "BOGUS"]))
        if instr == "PARAMETER":
            k = draw(st.sampled_from(["num_ctx", "temperature", "top_p", "stop", "num_predict", "seed", "x"]))
            lines.append(f"PARAMETER {k} {draw(values)}")
        else:
            lines.append(f"{instr} {json.dumps(draw(st.one_of(CHAT_TEMPLATES, st.text(max_size=20))))}")
    return "\n".join(lines) + "\n"


@st.composite
def serving_files(draw):
    """(file name, text) of a serving/generation config in one of the formats regraft reads."""
    kind = draw(st.sampled_from(["yaml", "yaml", "json", "genconf", "command", "modelfile", "recipe", "hostile"]))
    if kind == "hostile":
        return draw(st.sampled_from(["serve.yaml", "Modelfile", "config.json", "serve.sh"])), \
            draw(st.sampled_from(HOSTILE_TEXTS))
    if kind == "command":
        return "serve.sh", draw(command_lines())
    if kind == "modelfile":
        return "Modelfile", draw(modelfiles())
    if kind == "genconf":
        doc = {k: draw(values) for k in draw(st.lists(st.sampled_from(
            ["temperature", "top_p", "top_k", "eos_token_id", "max_new_tokens", "do_sample", "transformers_version",
             "repetition_penalty", "pad_token_id", "bos_token_id", "min_p"]), max_size=6))}
        return "generation_config.json", draw(json_text_mutation(json.dumps(doc)))
    if kind == "recipe":
        doc = {"model": {"model_id": draw(values)}, "base_args": draw(st.one_of(
            st.lists(st.sampled_from(["--max-model-len", "8192", "--tp", "2", "--enable-lora"]), max_size=5),
            json_values)), "features": draw(json_values), "variants": draw(json_values)}
        return "recipe.yaml", _yaml(doc)
    doc = draw(mapping_docs(VLLM_KEYS, SUBKEYS))
    if kind == "json":
        return "serve.json", draw(json_text_mutation(json.dumps(doc)))
    return "serve.yaml", _yaml(doc)


RAG_SECTIONS = {"embedding": ["model", "dimensions"], "chunking": ["size", "unit", "overlap", "tokenizer"],
                "retrieval": ["top_k"], "prompt": ["system", "user", "separator", "question_tokens", "chunk_template",
                                                   "format", "rendered_example", "template"],
                "generation": ["answer_tokens", "thinking_budget", "enable_thinking", "stop", "context_length"],
                "index": ["chunks", "embedding_model", "path"],
                "retriever": ["top_k"], "llm": ["answer_tokens"], "templates": ["user"]}
RAG_FLAT = ["model", "samples", "embedding_model", "chunk_size", "chunk_unit", "top_k", "system_prompt", "user_template",
            "answer_tokens", "max_tokens", "thinking_budget", "enable_thinking", "stop", "context_length", "unknown"]
rag_values = st.one_of(values, st.sampled_from(["Context:\n{context}\n\nQuestion: {question}", "{context}", "{",
                                                "{question} {missing}", "{0}", "{context.__class__}", "{context!r:>99999999}",
                                                "tokens", "characters", "Qwen/Qwen3-8B", "plain", "chat", "<|im_end|>"]))


VALID_RAG = {"embedding": {"model": "BAAI/bge-m3"}, "chunking": {"size": 512, "unit": "tokens", "overlap": 64},
             "retrieval": {"top_k": 8}, "prompt": {"system": "Answer from the context.",
                                                   "user": "Context:\n{context}\n\nQuestion: {question}"},
             "generation": {"answer_tokens": 1024, "enable_thinking": False, "stop": ["<|im_end|>"]}}


@st.composite
def rag_files(draw):
    """A valid RAG setup with a few sections or keys replaced by hostile values (or a hostile text)."""
    kind = draw(st.sampled_from(["yaml", "yaml", "json", "hostile"]))
    if kind == "hostile":
        return "rag.yaml", draw(st.sampled_from(HOSTILE_TEXTS))
    doc = json.loads(json.dumps(VALID_RAG))
    for sec in draw(st.lists(st.sampled_from(list(RAG_SECTIONS)), max_size=3)):
        if draw(rare(4)):
            doc[sec] = draw(rag_values)
        else:
            part = doc.get(sec)
            if not isinstance(part, dict):
                part = doc[sec] = {}
            for k in draw(st.lists(st.sampled_from(RAG_SECTIONS[sec]), max_size=3)):
                part[k] = draw(rag_values)
    for k in draw(st.lists(st.sampled_from(RAG_FLAT), max_size=2)):
        doc[k] = draw(rag_values) if k != "samples" else draw(st.one_of(
            st.lists(st.sampled_from(["sample.txt", "missing.txt", "../outside.txt", "/etc/hostname", "sub",
                                      "link.txt"]), max_size=3), rag_values))
    if kind == "json":
        return "rag.json", draw(json_text_mutation(json.dumps(doc)))
    return "rag.yaml", _yaml(doc)


POLICY_KEYS = ["escalate_if", "missing_signal", "timeout", "retries", "max_tool_calls", "version", "self_check",
               "unknown"]
ESCALATE_KEYS = ["answer_chars_above", "answer_chars_below", "finish_reason_length", "format", "mean_logprob_below",
                 "min_logprob_below", "phrases", "retrieval_score_below", "self_check_below", "tool_failures_at_least"]


@st.composite
def policy_files(draw):
    kind = draw(st.sampled_from(["yaml", "yaml", "json", "hostile"]))
    if kind == "hostile":
        return "policy.yaml", draw(st.sampled_from(HOSTILE_TEXTS))
    doc = draw(st.one_of(mapping_docs(POLICY_KEYS, {"escalate_if": ESCALATE_KEYS}), st.fixed_dictionaries(
        {"escalate_if": st.dictionaries(st.sampled_from(ESCALATE_KEYS), st.one_of(
            st.floats(0, 1), st.integers(0, 10), st.booleans(), st.lists(st.text(max_size=8), max_size=3))),
         "missing_signal": st.sampled_from(["ignore", "escalate", "x"])})))
    if "escalate_if" in doc and isinstance(doc["escalate_if"], dict) and draw(st.booleans()):
        doc["escalate_if"]["format"] = draw(st.sampled_from(["json", "(a+)+$", "[", "^\\d+$", "((a*)*)*b"]))
    if kind == "json":
        return "policy.json", draw(json_text_mutation(json.dumps(doc)))
    return "policy.yaml", _yaml(doc)


@st.composite
def store_metas(draw):
    """regraft_store.json of a downloaded store folder."""
    doc = draw(st.one_of(st.fixed_dictionaries({"format": st.one_of(st.just(1), values),
                                                "embedder": st.one_of(st.sampled_from(["hashing-64", "hashing-0",
                                                                                       "hashing--3", "hashing-x",
                                                                                       "hashing-99999999999"]), values),
                                                "dim": st.one_of(st.just(64), values)}), json_values))
    return draw(st.one_of(json_text_mutation(json.dumps(doc)), st.binary(max_size=40).map(
        lambda b: b.decode("latin-1"))))


TEMPLATE_TOKENS = list("{}%#-+*~|()[]'\".,: abx\n") + [
    "{{", "}}", "{%", "%}", "for ", "in ", "endfor", "if ", "endif", "messages", "loop", "set ", "namespace",
    "range(", "tojson", "raise_exception(", "|length", "['content']", "macro ", "endmacro", "call", "filter "]


@st.composite
def templates(draw):
    return draw(st.one_of(CHAT_TEMPLATES, st.lists(st.sampled_from(TEMPLATE_TOKENS), max_size=40).map("".join)))


messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", ""]),
                                           "content": st.one_of(st.text(max_size=30), st.none(), json_values)}),
                    max_size=4)


@st.composite
def gguf_files(draw, valid: bytes):
    """A GGUF file: a valid small LoRA GGUF (from the writer) with bytes flipped, spliced, truncated or sizes huge."""
    b = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "u64", "truncate", "splice"]))
        at = draw(st.integers(0, max(0, len(b) - 1)))
        if kind == "flip" and at < len(b):
            b[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "u64" and at + 8 <= len(b):
            b[at:at + 8] = struct.pack("<Q", draw(st.sampled_from(HUGE[:-2] + [0, 1, 2**40])) % 2**64)
        elif kind == "truncate":
            del b[at:]
        else:
            b[at:at] = draw(st.binary(max_size=16))
    return bytes(b)


VALID_TOKENIZER = {"version": "1.0", "added_tokens": [{"id": 2, "content": "<|im_end|>", "special": True,
                                                       "single_word": False, "lstrip": False, "rstrip": False,
                                                       "normalized": False}],
                   "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
                   "decoder": None, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 3}, "merges": ["a b"]}}


@st.composite
def tokenizer_jsons(draw):
    """tokenizer.json: a small valid BPE tokenizer with parts replaced by hostile values, or JSON damage."""
    doc = json.loads(json.dumps(VALID_TOKENIZER))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["version", "added_tokens", "normalizer", "pre_tokenizer", "model", "decoder",
                                    "model.type", "model.vocab", "model.merges", "model.unk_token"]))
        val = draw(st.one_of(json_values, st.sampled_from(["WordPiece", "Unigram", "BPE", "ByteLevel"]),
                             st.dictionaries(st.text(max_size=4), st.integers(-2, 2**40), max_size=4)))
        if "." in key:
            a, b = key.split(".")
            if isinstance(doc.get(a), dict):
                doc[a][b] = val
        else:
            doc[key] = val
    return draw(json_text_mutation(json.dumps(doc)))
