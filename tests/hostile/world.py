"""A tiny but real world for the command-level hostile tests: models, adapters, serving/RAG files, docs, a store.

Built once per session (torch + transformers, seeded, a few seconds); ``build(root)`` is also used by
``bench/fuzz.py`` for the kill loops.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def build(root: Path) -> dict[str, Path]:
    from tests import factories as T

    root = Path(root)
    w: dict[str, Path] = {"root": root}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w["dense"] = T.make_model(root / "dense", "qwen3", seed=0)
        w["sib"] = T.sibling_of(w["dense"], root / "dense-sib")
        w["moe"] = T.make_model(root / "moe", "qwen3_moe", seed=0)
        w["lora"] = T.peft_adapter(w["dense"], root / "lora")
        w["v4"] = T.v4_moe_adapter(w["moe"], root / "v4")
    for m in ("dense", "sib", "moe"):
        (w[m] / "tokenizer_config.json").write_text(json.dumps({
            "eos_token": "<|im_end|>", "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
            "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}))
    w["vllm"] = root / "vllm.yaml"
    w["vllm"].write_text("model: Qwen/Qwen3-8B\nmax-model-len: 32768\ngpu-memory-utilization: 0.9\n"
                         "enable-lora: true\nmax-lora-rank: 16\nsampling:\n  temperature: 0.6\n  top_p: 0.95\n")
    w["genconf"] = root / "generation_config.json"
    w["genconf"].write_text(json.dumps({"temperature": 0.7, "top_p": 0.8, "top_k": 20, "eos_token_id": [1, 2]}))
    w["modelfile"] = root / "Modelfile"
    w["modelfile"].write_text("FROM qwen3:8b\nPARAMETER temperature 0.6\nPARAMETER num_ctx 8192\n")
    w["command"] = root / "serve.sh"
    w["command"].write_text("vllm serve Qwen/Qwen3-8B --max-model-len 16384 --enable-lora --max-lora-rank 8\n")
    w["rag"] = root / "rag.yaml"
    w["rag"].write_text("embedding: {model: BAAI/bge-m3}\nchunking: {size: 256, unit: tokens, "
                        "overlap: 32}\nretrieval: {top_k: 4}\nprompt:\n  system: Answer from the context.\n"
                        "  user: \"Context:\\n{context}\\n\\nQuestion: {question}\"\n"
                        "generation: {answer_tokens: 512, stop: [\"<|im_end|>\"]}\n")
    w["policy"] = root / "policy.yaml"
    w["policy"].write_text("escalate_if:\n  retrieval_score_below: 0.2\n")
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    for i in range(2):
        (docs / f"doc{i}.md").write_text(f"# Doc {i}\n" + " ".join(f"word{i}_{j} lora adapter qwen" for j in range(60)))
    (docs / "sub" / "notes.txt").write_text("LoRA adapters carry over between siblings. " * 20)
    w["docs"] = docs
    return w
