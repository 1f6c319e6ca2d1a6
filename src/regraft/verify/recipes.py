"""The `regraft verify --endpoint` command that ends each serving recipe `check --runtime R` prints (RG407).

Default ports and names are those of the printed recipe: vLLM 8000 (``--lora-modules adapter=...``), SGLang 30000
(``--lora-paths adapter=...``; the OpenAI API selects it as ``BASE:adapter``), llama-server 8080 (the LoRA is
applied at load, so the base is a second llama-server without ``--lora`` on 8081), Ollama 11434 (the model created
from the Modelfile, here ``adapter``, against its FROM model).
"""

from __future__ import annotations

import shlex

_TEMPLATES = {
    "vllm": "regraft verify --endpoint http://127.0.0.1:8000/v1 --model {name} --base-model {model} --adapter {adapter}",
    "sglang": "regraft verify --endpoint http://127.0.0.1:30000/v1 --model {model}:{name} --base-model {model} "
              "--adapter {adapter}",
    "llama.cpp": "regraft verify --endpoint http://127.0.0.1:8080/v1 --model model.gguf --base-endpoint "
                 "http://127.0.0.1:8081/v1 --adapter {adapter}  # base: llama-server -m model.gguf --port 8081",
    "ollama": "regraft verify --endpoint http://127.0.0.1:11434/v1 --model {name} --base-model {model} "
              "--adapter {adapter}  # after: ollama create {name} -f Modelfile",
}


def verify_command(runtime: str, model: str, adapter: str, name: str = "adapter") -> str | None:
    """The verify command for a served adapter, or None for runtimes that are not servers (peft)."""
    t = _TEMPLATES.get(runtime)
    if t is None:
        return None
    return t.format(model=shlex.quote(str(model)), adapter=shlex.quote(str(adapter)), name=shlex.quote(name))
