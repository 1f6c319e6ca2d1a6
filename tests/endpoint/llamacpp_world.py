"""The optional llama.cpp tier: tiny Qwen3 dense/MoE models converted with llama.cpp's own convert_hf_to_gguf.py,
GGUF LoRAs from `regraft port lora --runtime llama.cpp` (and from llama.cpp's convert_lora_to_gguf.py, to compare),
llama-cpp-python loading them in process and as its OpenAI server.

Needs llama-cpp-python (``pip install 'regraft[llamacpp]'``, compiled from source) and the llama.cpp converters,
which ship only in the llama-cpp-python sdist: ``pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36``,
unpack it, and point ``LLAMA_CPP_SRC`` at ``llama_cpp_python-0.3.36/vendor/llama.cpp``.

The tiny models use the hybrid tests' byte-level BPE tokenizer (GPT-2 pre-tokenizer regex); convert_hf_to_gguf.py
only knows the pre-tokenizers of published models by the hash of their output, so the conversion runs with
``get_vocab_base_pre`` answering "gpt-2" (the same regex) - the only change to llama.cpp's converter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CANDIDATES = [os.environ.get("LLAMA_CPP_SRC", ""), "/work/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp"]


def llama_cpp_src() -> Path | None:
    for c in CANDIDATES:
        if c and (Path(c) / "convert_hf_to_gguf.py").is_file():
            return Path(c)
    return None


_CONVERT = """
import sys
lc = sys.argv[1]
sys.argv = [lc + "/" + sys.argv[2]] + sys.argv[3:]
sys.path[:0] = [lc, lc + "/gguf-py"]
import conversion.base as B
B.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_converter(script: str, args: list[str], log: Path) -> None:
    lc = llama_cpp_src()
    cmd = [sys.executable, "-c", _CONVERT, str(lc), script, *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as fh:
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=300, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{log.read_text()[-3000:]}")


def to_gguf(model_dir: Path, out: Path) -> Path:
    run_converter("convert_hf_to_gguf.py", [model_dir, "--outfile", out, "--outtype", "f32"], out.with_suffix(".log"))
    return out


def reference_lora_gguf(adapter_dir: Path, base_dir: Path, out: Path) -> Path:
    """llama.cpp's own convert_lora_to_gguf.py (the recipe most guides give)."""
    run_converter("convert_lora_to_gguf.py", [adapter_dir, "--base", base_dir, "--outfile", out, "--outtype", "f32"],
                  out.with_suffix(".log"))
    return out


def build_moe(out: Path, seed: int = 0, norm_topk_prob: bool = True) -> Path:
    """A tiny Qwen3-MoE (4 experts, top-2) with the same tokenizer as tests.hybrid.tiny."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.hybrid.tiny import build_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    cfg = AutoConfig.for_model("qwen3_moe", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                               tie_word_embeddings=True, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                               pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), bos_token_id=None,
                               decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=norm_topk_prob)  # True as Qwen3-30B-A3B
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    return out


def port_gguf(adapter: Path, model: Path, out: Path) -> Path:
    from regraft.cli.main import main

    rc = main(["port", "lora", str(adapter), "--to", str(model), "--runtime", "llama.cpp", "--out", str(out)])
    if rc != 0 or not out.is_file():
        raise RuntimeError(f"regraft port lora --runtime llama.cpp exited {rc}")
    return out


def llama_logits(gguf: Path, lora: Path | None, ids: list[int]):
    """Logits of every position, llama-cpp-python in process (n_threads 1; float32 KV cache: with the default f16
    cache llama.cpp itself deviates ~1e-3 from float32 transformers, with f32 ~1e-6)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, logits_all=True, n_ctx=256,
                n_threads=1, verbose=False, seed=0, type_k=0, type_v=0)  # 0 = GGML_TYPE_F32
    llm.eval(ids)
    out = np.array(llm.scores[:len(ids)], dtype=np.float64)
    llm.close() if hasattr(llm, "close") else None
    return out


def hf_logits(model_dir: Path, adapter: Path | None, ids: list[int]):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    if adapter is not None:
        from peft import PeftModel

        m = PeftModel.from_pretrained(m, str(adapter)).eval()
    with torch.no_grad():
        return m(input_ids=torch.tensor([ids])).logits[0].double().numpy()


def compare(a, b) -> dict:
    return {"max_abs_logit": float(abs(a - b).max()), "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
            "max_abs_reference_logit": float(abs(b).max())}


def start_server(gguf: Path, lora: Path | None, log: Path, alias: str = "tiny"):
    from tests.hybrid.procs import PY, free_port, start

    port = free_port()
    cmd = [PY, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "512", "--n_threads", "1", "--model_alias", alias, "--type_k", "0", "--type_v", "0"]
    if lora is not None:
        cmd += ["--lora_path", str(lora)]
    url = f"http://127.0.0.1:{port}/v1"
    return start(cmd, url + "/models", log, timeout=60), url
