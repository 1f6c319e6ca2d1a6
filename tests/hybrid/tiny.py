"""Build a tiny random Qwen3 model directory that `transformers serve` can load offline.

A byte-level BPE tokenizer is trained in code on a few sentences (no download), the official Qwen3 chat
template (ChatML + tools + <think>) is attached, and a 2-layer, hidden-32 Qwen3 is saved next to it.
Build time is about 2 s on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN3_TEMPLATE = Path("/work/shared/reference/chat_templates/Qwen-Qwen3-0.6B.jinja")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
NON_SPECIAL_ADDED = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

_CORPUS = [
    "The capital of France is Paris.",
    "LoRA adapters are small low-rank matrices added to attention projections.",
    "Qwen3 uses a ChatML chat template with im_start and im_end markers.",
    "A retrieval augmented generation system stores chunks in a vector index.",
    "The answer is 42. Two plus two is four. Seven times six is forty-two.",
    "system user assistant tool function name arguments description parameters",
    "You are a helpful assistant. Answer briefly using the evidence.",
] * 20


def _template_text() -> str:
    if QWEN3_TEMPLATE.exists():
        return QWEN3_TEMPLATE.read_text()
    # minimal ChatML fallback (no tools) when the reference file is not present
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def build_tokenizer(out: Path, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in NON_SPECIAL_ADDED])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = _template_text()
    fast.save_pretrained(out)
    return fast


def build_tiny_qwen3(out: Path, seed: int = 0, hidden: int = 32, layers: int = 2, max_pos: int = 2048) -> Path:
    """Save a tiny random Qwen3ForCausalLM + tokenizer + chat template into `out` (created)."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=max_pos,
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, do_sample=False, max_new_tokens=16
    )
    model.save_pretrained(out)
    (out / "regraft_tiny.json").write_text(json.dumps({"seed": seed, "hidden": hidden, "layers": layers}))
    return out


if __name__ == "__main__":
    import sys

    print(build_tiny_qwen3(Path(sys.argv[1])))
