"""Write a ported config in the target runtime's own form.

- vllm: a YAML file for ``vllm serve --config FILE`` (long option names as keys; JSON-valued options as JSON
  strings), plus the equivalent command line;
- sglang: a YAML file of ``launch_server`` options (same convention), plus the command line;
- llama.cpp: a ``llama-server`` command line;
- ollama: a Modelfile;
- transformers: a generation_config.json (config.json overrides such as rope_parameters are listed to apply).

Settings a runtime only takes per request (e.g. chat_template_kwargs on SGLang) are left out and named.
"""

from __future__ import annotations

import json
import shlex

from regraft.configs.port import ConfigPortResult

VLLM_OUT = [  # canonical -> vLLM option
    ("model", "model"), ("max_model_len", "max-model-len"), ("tensor_parallel_size", "tensor-parallel-size"),
    ("pipeline_parallel_size", "pipeline-parallel-size"), ("data_parallel_size", "data-parallel-size"),
    ("enable_expert_parallel", "enable-expert-parallel"), ("enable_lora", "enable-lora"),
    ("max_lora_rank", "max-lora-rank"), ("max_loras", "max-loras"), ("lora_modules", "lora-modules"),
    ("chat_template", "chat-template"), ("reasoning_parser", "reasoning-parser"),
    ("tool_call_parser", "tool-call-parser"), ("enable_auto_tool_choice", "enable-auto-tool-choice"),
    ("gpu_memory_utilization", "gpu-memory-utilization"), ("kv_cache_dtype", "kv-cache-dtype"), ("dtype", "dtype"),
    ("max_num_seqs", "max-num-seqs"), ("quantization", "quantization"),
]
SGLANG_OUT = [
    ("model", "model-path"), ("max_model_len", "context-length"), ("tensor_parallel_size", "tp-size"),
    ("data_parallel_size", "dp-size"), ("expert_parallel_size", "ep-size"), ("enable_lora", "enable-lora"),
    ("max_lora_rank", "max-lora-rank"), ("max_loras", "max-loras-per-batch"), ("lora_modules", "lora-paths"),
    ("chat_template", "chat-template"), ("reasoning_parser", "reasoning-parser"),
    ("tool_call_parser", "tool-call-parser"), ("gpu_memory_utilization", "mem-fraction-static"),
    ("kv_cache_dtype", "kv-cache-dtype"), ("dtype", "dtype"), ("max_num_seqs", "max-running-requests"),
    ("quantization", "quantization"),
]
LLAMACPP_OUT = [("max_model_len", "-c"), ("temperature", "--temp"), ("top_p", "--top-p"), ("top_k", "--top-k"),
                ("min_p", "--min-p"), ("presence_penalty", "--presence-penalty"),
                ("frequency_penalty", "--frequency-penalty"), ("repetition_penalty", "--repeat-penalty"),
                ("max_tokens", "-n"), ("max_num_seqs", "-np"), ("reasoning_format", "--reasoning-format"),
                ("chat_template", "--chat-template-file"), ("kv_cache_dtype", "-ctk")]
OLLAMA_OUT = [("max_model_len", "num_ctx"), ("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
              ("min_p", "min_p"), ("repetition_penalty", "repeat_penalty"), ("presence_penalty", "presence_penalty"),
              ("frequency_penalty", "frequency_penalty"), ("max_tokens", "num_predict")]
GEN_OUT = [("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("min_p", "min_p"),
           ("repetition_penalty", "repetition_penalty"), ("do_sample", "do_sample"), ("max_tokens", "max_new_tokens"),
           ("eos_token_id", "eos_token_id"), ("bos_token_id", "bos_token_id"), ("pad_token_id", "pad_token_id")]
GEN_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                "frequency_penalty")


def _header(res: ConfigPortResult) -> list[str]:
    lines = [f"# ported by regraft for {res.target} ({res.runtime})" + (f" from {res.source}" if res.source else "")]
    for c in res.changes:
        lines.append("# " + c.text())
    for k, why in res.left_out:
        lines.append(f"# ? {k}: left out: {why}")
    for n in res.notes:
        if n.startswith("regraft settings"):
            lines.append(f"# {n}")
    return lines


def _rope_parameters(res: ConfigPortResult) -> dict | None:
    rs = res.values.get("rope_scaling")
    return dict(rs) if rs else None


REGRAFT_ONLY = ("gpu_memory_gb", "concurrent_requests", "mode", "adapter_rank")
EMITTED = {
    "vllm": {c for c, _ in VLLM_OUT} | {"rope_scaling", "hf_overrides", "chat_template_kwargs", "max_tokens",
                                         *GEN_SAMPLING, "stop", "stop_token_ids"},
    "sglang": {c for c, _ in SGLANG_OUT} | {"rope_scaling", "hf_overrides", "chat_template_kwargs", "max_tokens",
                                           *GEN_SAMPLING, "stop", "stop_token_ids"},
    "llama.cpp": {c for c, _ in LLAMACPP_OUT} | {"rope_scaling", "jinja", "chat_template_kwargs", "stop", "model"},
    "ollama": {c for c, _ in OLLAMA_OUT} | {"stop", "system", "template", "chat_template_kwargs", "model"},
    "transformers": {c for c, _ in GEN_OUT} | {"rope_scaling", "chat_template_kwargs"},
}


def render(res: ConfigPortResult) -> tuple[str, str | None]:
    """(file text, equivalent command line or None). Values the runtime has no setting for are named in left_out."""
    rt = res.runtime
    done = EMITTED.get(rt, set())
    for k, val in res.values.items():
        if k not in done and k not in REGRAFT_ONLY and val not in (None, False):
            res.left_out.append((k, f"{rt} has no setting for it in regraft's writer (value {json.dumps(val)})"))
    extra = [f"{k}={res.values[k]}" for k in REGRAFT_ONLY if res.values.get(k) is not None]
    if extra:
        res.notes.append("regraft settings (not runtime options): " + ", ".join(extra))
    if rt in ("vllm", "sglang"):
        return _render_server(res)
    if rt == "llama.cpp":
        cmd = _llamacpp_command(res)
        return "\n".join(_header(res)) + "\n" + cmd + "\n", cmd
    if rt == "ollama":
        return _modelfile(res), None
    return _generation_config(res), None


def _render_server(res: ConfigPortResult) -> tuple[str, str]:
    import yaml

    v = res.values
    table = VLLM_OUT if res.runtime == "vllm" else SGLANG_OUT
    doc: dict = {}
    for canon, opt in table:
        if v.get(canon) is not None and v.get(canon) is not False:
            doc[opt] = v[canon]
    rope = _rope_parameters(res)
    overrides = dict(v.get("hf_overrides") or {})
    if res.runtime == "vllm":
        if rope:
            overrides["rope_parameters"] = rope  # vLLM >= 0.11.1 (PR#28006 removed --rope-scaling; recipes PR#856)
        if overrides:
            doc["hf-overrides"] = json.dumps(overrides)
        if v.get("chat_template_kwargs"):
            doc["default-chat-template-kwargs"] = json.dumps(v["chat_template_kwargs"])  # vllm PR#31343
        gen = {k: v[k] for k in GEN_SAMPLING if v.get(k) is not None}
        if v.get("max_tokens") is not None:
            gen["max_new_tokens"] = v["max_tokens"]
        if gen:
            doc["override-generation-config"] = json.dumps(gen)
        per_request = [k for k in ("stop", "stop_token_ids") if v.get(k)]
    else:
        if rope:
            overrides["rope_scaling"] = rope  # Qwen docs (sglang.md): --json-model-override-args rope_scaling
        if overrides:
            doc["json-model-override-args"] = json.dumps(overrides)
        per_request = [k for k in ("chat_template_kwargs", "stop", "stop_token_ids", *GEN_SAMPLING, "max_tokens")
                       if v.get(k) is not None]
    for k in per_request:
        res.left_out.append((k, f"{res.runtime} takes it per request (send {k} = {json.dumps(v[k])})"))
    for k, val in res.passthrough.items():
        name = k.split(": ")[-1].lstrip("-").replace("_", "-")
        doc.setdefault(name, val)
    text = "\n".join(_header(res)) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=4096)
    return text, _command(res.runtime, doc)


def _command(runtime: str, doc: dict) -> str:
    if runtime == "vllm":
        parts = ["vllm", "serve", str(doc.get("model", "MODEL"))]
        items = [(k, x) for k, x in doc.items() if k != "model"]
    else:
        parts = ["python", "-m", "sglang.launch_server"]
        items = list(doc.items())
    for k, x in items:
        if x is True:
            parts.append(f"--{k}")
        elif isinstance(x, list):
            parts.append(f"--{k}")
            parts.extend(shlex.quote(str(i)) for i in x)
        else:
            parts += [f"--{k}", shlex.quote(str(x))]
    return " ".join(parts)


def _llamacpp_command(res: ConfigPortResult) -> str:
    v = res.values
    parts = ["llama-server", "-m", "TARGET.gguf"]
    for canon, opt in LLAMACPP_OUT:
        if v.get(canon) is not None:
            parts += [opt, shlex.quote(str(v[canon]))]
    rope = v.get("rope_scaling")
    if rope:
        parts += ["--rope-scaling", "yarn", "--rope-scale", f"{rope['factor']:g}", "--yarn-orig-ctx",
                  str(rope["original_max_position_embeddings"])]
    if v.get("jinja") or v.get("chat_template_kwargs") or v.get("reasoning_format"):
        parts.append("--jinja")
    if (v.get("chat_template_kwargs") or {}).get("enable_thinking") is False:
        parts += ["--reasoning-budget", "0"]
    for s in v.get("stop") or []:
        res.left_out.append(("stop", f"llama-server takes stop strings per request ({s!r})"))
    for k, val in res.passthrough.items():
        flag = k.split(": ")[-1]
        parts.append(flag) if val is True else parts.extend([flag, shlex.quote(str(val))])
    return " ".join(parts)


def _modelfile(res: ConfigPortResult) -> str:
    v = res.values
    lines = []
    lines.append("# FROM <the Ollama tag or GGUF of the target: regraft cannot know it>")
    for canon, opt in OLLAMA_OUT:
        if v.get(canon) is not None:
            lines.append(f"PARAMETER {opt} {v[canon]}")
    for s in v.get("stop") or []:
        lines.append(f'PARAMETER stop "{s}"')
    if v.get("system"):
        lines.append(f'SYSTEM """{v["system"]}"""')
    if v.get("template"):
        res.left_out.append(("TEMPLATE", "the Go template is per model; use the target's own (ollama show --template)"))
    if v.get("chat_template_kwargs"):
        res.left_out.append(("chat_template_kwargs", "Ollama sets thinking per request (think: true/false)"))
    for k, val in res.passthrough.items():
        for item in (val if isinstance(val, list) else [val]):
            lines.append(f"{k} {item}")
    return "\n".join(_header(res) + lines) + "\n"


def _generation_config(res: ConfigPortResult) -> str:
    v = res.values
    doc = {}
    for canon, key in GEN_OUT:
        if v.get(canon) is not None:
            val = v[canon]
            if canon == "eos_token_id" and isinstance(val, list) and len(val) == 1:
                val = val[0]
            doc[key] = val
    if any(k in doc for k in ("temperature", "top_p", "top_k")) and "do_sample" not in doc:
        doc["do_sample"] = True
    if v.get("rope_scaling"):
        rp = dict(v["rope_scaling"])
        why = f"apply to config.json (transformers >= 5): {json.dumps(rp)} with the model's rope_theta inside"
        res.left_out.append(("rope_parameters", why))
    if v.get("chat_template_kwargs"):
        res.left_out.append(("chat_template_kwargs", "pass to apply_chat_template(..., **kwargs) per call: "
                                                     + json.dumps(v["chat_template_kwargs"])))
    return json.dumps(doc, indent=2) + "\n"
