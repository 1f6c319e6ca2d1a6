"""Read what users actually have into one ServingConfig, reporting every key that is not understood.

Formats (detected from the name and content):

- ``generation_config.json`` (transformers);
- vLLM / SGLang serving files (YAML or JSON, the keys of ``vllm serve --config``: ``max-model-len`` or
  ``max_model_len``), with optional ``sampling:``, ``chat_template_kwargs:``, ``hf_overrides:``, ``command:`` and
  ``regraft:`` (gpu_memory_gb, concurrent_requests, mode, adapter_rank) sections;
- vllm-project/recipes YAML (``model.model_id``, ``base_args``, ``features``, ``variants``);
- command lines: ``vllm serve ...``, ``python -m sglang.launch_server ...``, ``llama-server ...`` (backslash
  continuations and leading ``VAR=value`` assignments are fine);
- Ollama Modelfiles (``FROM``, ``PARAMETER``, ``TEMPLATE``, ``SYSTEM``, ``ADAPTER``).
"""

from __future__ import annotations

import json
import re
import shlex
from functools import lru_cache
from pathlib import Path

from regraft.configs.model import KEY_TYPES, SAMPLING_KEYS, ServingConfig
from regraft.errors import FileFormatError, InputError

RUNTIMES = ("vllm", "sglang", "llama.cpp", "ollama", "transformers")

# --- flag tables: normalised flag (dashes -> underscores, no leading dashes) -> canonical key ---------------------
VLLM = {
    "model": "model", "max_model_len": "max_model_len", "rope_scaling": "rope_scaling", "rope_theta": "rope_theta",
    "hf_overrides": "hf_overrides", "enable_lora": "enable_lora", "max_lora_rank": "max_lora_rank",
    "max_loras": "max_loras", "lora_modules": "lora_modules", "tensor_parallel_size": "tensor_parallel_size",
    "tp": "tensor_parallel_size", "pipeline_parallel_size": "pipeline_parallel_size", "pp": "pipeline_parallel_size",
    "data_parallel_size": "data_parallel_size", "dp": "data_parallel_size",
    "enable_expert_parallel": "enable_expert_parallel", "chat_template": "chat_template",
    "default_chat_template_kwargs": "chat_template_kwargs", "chat_template_kwargs": "chat_template_kwargs",
    "reasoning_parser": "reasoning_parser", "enable_reasoning": "enable_reasoning",
    "tool_call_parser": "tool_call_parser", "enable_auto_tool_choice": "enable_auto_tool_choice",
    "gpu_memory_utilization": "gpu_memory_utilization", "kv_cache_dtype": "kv_cache_dtype", "dtype": "dtype",
    "max_num_seqs": "max_num_seqs", "quantization": "quantization", "q": "quantization",
    "override_generation_config": "@sampling_json",
}
VLLM_PASS = {
    "host", "port", "trust_remote_code", "served_model_name", "disable_log_requests", "enable_log_requests",
    "swap_space", "distributed_executor_backend", "max_num_batched_tokens", "enable_prefix_caching",
    "no_enable_prefix_caching", "enforce_eager", "async_scheduling", "api_key", "download_dir", "seed", "load_format",
    "language_model_only", "mm_encoder_tp_mode", "speculative_config", "enable_chunked_prefill",
    "no_enable_chunked_prefill", "block_size", "uvicorn_log_level", "tokenizer", "revision", "max_cpu_loras",
    "fully_sharded_loras", "compilation_config", "cpu_offload_gb", "data_parallel_size_local", "data_parallel_address",
    "data_parallel_rpc_port", "data_parallel_start_rank", "headless", "all2all_backend", "enable_eplb",
    "limit_mm_per_prompt", "allowed_local_media_path", "tokenizer_mode", "config_format", "disable_custom_all_reduce",
    "generation_config", "kv_transfer_config", "chat_template_content_format", "response_role", "enable_lora_bias",
    "max_seq_len_to_capture", "num_scheduler_steps", "disable_log_stats", "worker_cls", "kv_offloading_size",
    "lora_target_modules", "lora_extra_vocab_size",  # checked by the LoRA rules (configs/serve_cmdline.py)
}
SGLANG = {
    "model_path": "model", "model": "model", "context_length": "max_model_len",
    "json_model_override_args": "hf_overrides", "tp_size": "tensor_parallel_size", "tp": "tensor_parallel_size",
    "tensor_parallel_size": "tensor_parallel_size", "dp_size": "data_parallel_size", "dp": "data_parallel_size",
    "ep_size": "expert_parallel_size", "enable_ep_moe": "enable_expert_parallel",
    "reasoning_parser": "reasoning_parser", "tool_call_parser": "tool_call_parser", "chat_template": "chat_template",
    "enable_lora": "enable_lora", "max_lora_rank": "max_lora_rank", "max_loras_per_batch": "max_loras",
    "lora_paths": "lora_modules", "mem_fraction_static": "gpu_memory_utilization", "kv_cache_dtype": "kv_cache_dtype",
    "dtype": "dtype", "max_running_requests": "max_num_seqs", "quantization": "quantization",
}
SGLANG_PASS = {
    "host", "port", "trust_remote_code", "served_model_name", "chunked_prefill_size", "enable_torch_compile",
    "attention_backend", "disable_radix_cache", "cuda_graph_max_bs", "log_level", "speculative_algorithm",
    "speculative_num_steps", "speculative_eagle_topk", "speculative_num_draft_tokens", "enable_dp_attention",
    "api_key", "random_seed", "download_dir", "tokenizer_path", "revision", "max_prefill_tokens", "nnodes",
    "node_rank", "dist_init_addr", "enable_metrics", "moe_a2a_backend", "enable_mixed_chunk",
}
LLAMACPP = {
    "m": "model", "model": "model", "hf": "model", "hf_repo": "model", "c": "max_model_len",
    "ctx_size": "max_model_len", "rope_scaling": "@rope_type", "rope_scale": "@rope_factor",
    "yarn_orig_ctx": "@rope_orig", "rope_freq_base": "rope_theta", "lora": "lora_modules",
    "np": "max_num_seqs", "parallel": "max_num_seqs", "temp": "temperature", "temperature": "temperature",
    "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "repeat_penalty": "repetition_penalty", "n": "max_tokens",
    "n_predict": "max_tokens", "jinja": "jinja", "chat_template": "chat_template",
    "chat_template_file": "chat_template", "reasoning_format": "reasoning_format",
    "reasoning_budget": "reasoning_budget", "override_kv": "@override_kv", "ctk": "kv_cache_dtype",
    "cache_type_k": "kv_cache_dtype",
}
LLAMACPP_PASS = {
    "ngl", "n_gpu_layers", "gpu_layers", "t", "threads", "host", "port", "fa", "flash_attn", "ctv", "cache_type_v",
    "no_mmap", "mlock", "b", "batch_size", "ub", "ubatch_size", "sm", "split_mode", "ts", "tensor_split", "s", "seed",
    "a", "alias", "api_key", "cont_batching", "metrics", "log_disable", "verbose", "v", "no_webui", "rope_freq_scale",
    "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_slow", "yarn_beta_fast", "no_context_shift", "keep",
    "repeat_last_n", "mg", "main_gpu", "slots", "props", "embeddings", "pooling", "hff", "hf_file",
}
BOOL_FLAGS = {
    "enable_lora", "enable_expert_parallel", "enable_reasoning", "enable_auto_tool_choice", "trust_remote_code",
    "disable_log_requests", "enable_log_requests", "enforce_eager", "no_enable_prefix_caching",
    "enable_prefix_caching", "async_scheduling", "language_model_only", "enable_chunked_prefill",
    "no_enable_chunked_prefill", "fully_sharded_loras", "headless", "enable_eplb", "disable_custom_all_reduce",
    "jinja", "no_mmap", "mlock", "enable_ep_moe", "cont_batching", "metrics", "log_disable", "verbose", "v",
    "no_webui", "enable_torch_compile", "disable_radix_cache", "enable_dp_attention", "enable_metrics",
    "enable_lora_bias", "disable_log_stats", "no_context_shift", "embeddings", "enable_mixed_chunk",
}
TABLES = {"vllm": (VLLM, VLLM_PASS), "sglang": (SGLANG, SGLANG_PASS), "llama.cpp": (LLAMACPP, LLAMACPP_PASS)}

GENERATION_CONFIG = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "do_sample": "do_sample",
    "eos_token_id": "eos_token_id", "bos_token_id": "bos_token_id", "pad_token_id": "pad_token_id",
    "repetition_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "max_new_tokens": "max_tokens",
}
GENERATION_PASS = {"transformers_version", "_from_model_config", "use_cache", "max_length", "num_beams",
                   "output_attentions", "output_hidden_states", "return_dict_in_generate", "cache_implementation"}

OLLAMA_PARAMS = {
    "num_ctx": "max_model_len", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repeat_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "num_predict": "max_tokens", "stop": "stop",
}
OLLAMA_PARAMS_PASS = {"seed", "repeat_last_n", "num_gpu", "num_thread", "mirostat", "mirostat_eta", "mirostat_tau",
                      "tfs_z", "num_keep", "typical_p", "num_batch", "use_mmap", "use_mlock", "numa", "penalize_newline"}
OLLAMA_INSTR = {"from": "model", "template": "template", "system": "system", "adapter": "adapter"}
OLLAMA_INSTR_PASS = {"license", "message", "requires"}

REGRAFT_KEYS = {"gpu_memory_gb", "concurrent_requests", "mode", "adapter_rank"}
SECTION_SAMPLING = {"sampling", "generation", "default_sampling_params", "sampling_params"}

_COMMAND_RE = re.compile(r"(^|\s)(vllm\s+serve|python3?\s+-m\s+sglang\.launch_server|sglang\s+serve|"
                         r"llama-server|llama-cli|\./llama-server|\./llama-cli|\S*/llama-server|\S*/llama-cli)\b")
_MODELFILE_RE = re.compile(r"^\s*(FROM|PARAMETER|TEMPLATE|SYSTEM|ADAPTER|LICENSE|MESSAGE)\s", re.IGNORECASE | re.MULTILINE)


def norm_key(k: str) -> str:
    return str(k).lstrip("-").replace("-", "_").lower()


def read_config(path: str | Path, runtime: str | None = None) -> ServingConfig:
    """Read a serving / generation config file into a ServingConfig (unknown keys are kept in ``.unknown``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Config file '{path}' does not exist (or is not a file). Expected a vLLM/SGLang YAML/JSON "
                         "serving file, a generation_config.json, a command line or an Ollama Modelfile.")
    st = p.stat()
    return _read_cached(str(p.resolve()), st.st_mtime_ns, st.st_size, runtime)


@lru_cache(maxsize=32)
def _read_cached(path: str, _mtime: int, _size: int, runtime: str | None) -> ServingConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{p}: not a UTF-8 text file; expected a YAML/JSON serving file, a generation_config."
                              "json, a command line or an Ollama Modelfile.") from None
    return parse_config_text(text, p, runtime)


def parse_config_text(text: str, path: Path, runtime: str | None = None) -> ServingConfig:
    name = path.name.lower()
    if name == "modelfile" or name.endswith(".modelfile") or (_MODELFILE_RE.search(text) and not
                                                               text.lstrip().startswith(("{", "-"))
                                                               and _looks_modelfile(text)):
        return read_modelfile(text, path)
    if _starts_with_command(text):
        return parse_command(text, path)
    doc = _load_mapping(text, path)
    try:
        from regraft.inspection.files import check_depth

        check_depth(doc)
    except ValueError as e:
        raise FileFormatError(f"{path}: settings {e}. Expected a mapping of settings.") from None
    if isinstance(doc, str):
        return parse_command(doc, path)
    if not isinstance(doc, dict):
        raise FileFormatError(f"{path}: expected a mapping of settings (YAML/JSON object), a command line or a "
                              f"Modelfile, got a {type(doc).__name__}.")
    if name == "generation_config.json" or _looks_generation_config(doc):
        return read_generation_config(doc, path)
    if isinstance(doc.get("model"), dict) and ("variants" in doc or "meta" in doc or "features" in doc):
        return read_recipe(doc, path)
    return read_mapping(doc, path, runtime)


def _starts_with_command(text: str) -> bool:
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        ln = re.sub(r"^([A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", ln)
        return bool(_COMMAND_RE.match(" " + ln))
    return False


def _looks_modelfile(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return bool(lines) and lines[0].split()[0].upper() == "FROM"


def _looks_generation_config(doc: dict) -> bool:
    keys = set(doc)
    return bool(keys) and keys <= set(GENERATION_CONFIG) | GENERATION_PASS and (
        "transformers_version" in keys or "do_sample" in keys or "eos_token_id" in keys)


def _load_mapping(text: str, path: Path):
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise FileFormatError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. Expected a JSON "
                                  "object of settings.") from None
        except (ValueError, RecursionError) as e:  # an integer over 4300 digits; nesting deeper than Python's stack
            raise FileFormatError(f"{path}: unreadable JSON ({type(e).__name__}: {str(e).split(';')[0][:80]}). "
                                  "Expected a JSON object of settings.") from None
    import yaml

    from regraft.inspection.files import load_yaml

    try:
        return load_yaml(text)
    except (RecursionError, ValueError) as e:
        raise FileFormatError(f"{path}: unreadable YAML ({type(e).__name__}: {str(e).split(';')[0][:80]}). "
                              "Expected a YAML mapping of settings (or a command line / Modelfile).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FileFormatError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}. Expected a YAML "
                              "mapping of settings (or a command line / Modelfile).") from None


# --- generation_config.json ----------------------------------------------------------------------------------------

def read_generation_config(doc: dict, path: Path) -> ServingConfig:
    cfg = ServingConfig(path, "generation_config", "transformers")
    for k, v in doc.items():
        if k in GENERATION_CONFIG:
            cfg.set(GENERATION_CONFIG[k], v, k)
        elif k in GENERATION_PASS:
            cfg.passthrough[k] = v
        else:
            cfg.unknown.append((k, "not a generation_config.json field regraft knows"))
    return cfg


# --- mappings (vLLM / SGLang --config files) -----------------------------------------------------------------------

def _guess_runtime(keys: set[str]) -> str:
    sg = {"context_length", "model_path", "mem_fraction_static", "json_model_override_args", "tp_size",
          "max_running_requests", "max_loras_per_batch", "lora_paths"}
    return "sglang" if keys & sg else "vllm"


def read_mapping(doc: dict, path: Path, runtime: str | None = None) -> ServingConfig:
    keys = {norm_key(k) for k in doc}
    rt = doc.get("runtime") if isinstance(doc.get("runtime"), str) else None
    rt = (rt or runtime or _guess_runtime(keys)).lower()
    if rt not in TABLES:
        if rt in ("transformers",):
            rt = "vllm"
        else:
            raise FileFormatError(f"{path}: 'runtime: {rt}' is not one of vllm, sglang, llama.cpp for a settings "
                                  "mapping. Use one of them (Ollama takes a Modelfile).")
    cfg = ServingConfig(path, rt, rt)
    table, passthrough = TABLES[rt]
    for k, v in doc.items():
        nk = norm_key(k)
        if nk == "runtime":
            continue
        if v is None and nk not in ("rope_scaling", "rope_parameters"):  # `key:` with no value: not set
            if nk not in KEY_TYPES and nk not in table and nk not in passthrough and nk not in REGRAFT_KEYS | \
                    SECTION_SAMPLING | {"regraft", "command", "args", "cmd", "max_position_embeddings"}:
                cfg.unknown.append((k, f"not a {rt} setting regraft knows"))
            continue
        if nk == "regraft":
            _regraft_section(cfg, v, k)
        elif nk in SECTION_SAMPLING:
            _sampling_section(cfg, v, k)
        elif nk in ("command", "args", "cmd"):
            cmd = " ".join(shlex.quote(str(a)) for a in v) if isinstance(v, list) else v
            if not isinstance(cmd, str):
                raise FileFormatError(f"{path}: '{k}' must be a command line string or a list of arguments.")
            _apply_args(cfg, _split_command(cmd, path), table, passthrough, f"{k}: ")
        elif nk in ("rope_scaling", "rope_parameters") and nk not in table or nk == "rope_parameters":
            _set_rope(cfg, v, k, f"{k}")
        elif nk == "max_position_embeddings":
            cfg.set("max_model_len", v, k)
            cfg.notes.append(f"'{k}' read as the requested context length")
        elif nk in KEY_TYPES and nk in SAMPLING_KEYS + ("stop", "stop_token_ids", "eos_token_id", "max_tokens"):
            cfg.set(nk, v, k)
        else:
            _apply_one(cfg, nk, k, v, table, passthrough)
    _post(cfg)
    return cfg


def _regraft_section(cfg: ServingConfig, v, written: str) -> None:
    if not isinstance(v, dict):
        raise FileFormatError(f"{cfg.path}: '{written}' must be a mapping of regraft settings "
                              f"({', '.join(sorted(REGRAFT_KEYS))}).")
    for k, x in v.items():
        nk = norm_key(k)
        if nk in REGRAFT_KEYS:
            cfg.set(nk, x, f"{written}.{k}")
        else:
            cfg.unknown.append((f"{written}.{k}", f"not a regraft setting ({', '.join(sorted(REGRAFT_KEYS))})"))


def _sampling_section(cfg: ServingConfig, v, written: str) -> None:
    if not isinstance(v, dict):
        raise FileFormatError(f"{cfg.path}: '{written}' must be a mapping of sampling settings (temperature, top_p...).")
    known = set(SAMPLING_KEYS) | {"stop", "stop_token_ids", "max_tokens", "max_new_tokens", "eos_token_id"}
    for k, x in v.items():
        nk = norm_key(k)
        if nk == "max_new_tokens":
            nk = "max_tokens"
        if nk in known:
            cfg.set(nk, x, f"{written}.{k}")
        else:
            cfg.unknown.append((f"{written}.{k}", "not a sampling setting regraft knows"))


def _set_rope(cfg: ServingConfig, v, written: str, field: str) -> None:
    if v is None:
        cfg.given["rope_scaling"] = written
        cfg.rope_field = field
        return
    cfg.set("rope_scaling", v, written)
    rs = dict(cfg.values["rope_scaling"])
    cfg.values["rope_scaling"] = rs
    cfg.rope_field = field


def _apply_one(cfg: ServingConfig, nk: str, written: str, value, table: dict, passthrough: set) -> None:
    canon = table.get(nk)
    if canon is None:
        if nk in passthrough:
            cfg.passthrough[written] = value
        else:
            cfg.unknown.append((written, f"not a {cfg.runtime} setting regraft knows"))
        return
    if canon == "@sampling_json":
        doc = cfg_coerce_json(cfg, value, written)
        _sampling_section(cfg, doc, written)
    elif canon == "hf_overrides":
        doc = cfg_coerce_json(cfg, value, written)
        _hf_overrides(cfg, doc, written)
    elif canon == "rope_scaling":
        _set_rope(cfg, value, written, "--rope-scaling" if cfg.runtime == "vllm" else written)
    elif canon == "@rope_type":
        rs = dict(cfg.values.get("rope_scaling") or {})
        rs["rope_type"] = str(value)
        cfg.values["rope_scaling"] = rs
        cfg.given["rope_scaling"] = written
        cfg.rope_field = "llama.cpp flags"
    elif canon in ("@rope_factor", "@rope_orig"):
        rs = dict(cfg.values.get("rope_scaling") or {})
        key = "factor" if canon == "@rope_factor" else "original_max_position_embeddings"
        try:
            rs[key] = float(value) if key == "factor" else int(value)
        except (TypeError, ValueError):
            raise FileFormatError(f"{cfg.path}: '{written}' must be a number, got {value!r}.") from None
        cfg.values["rope_scaling"] = rs
        cfg.given.setdefault("rope_scaling", written)
        cfg.rope_field = "llama.cpp flags"
    elif canon == "@override_kv":
        for item in (value if isinstance(value, list) else [value]):
            m = re.match(r"^[\w.]*expert_used_count=int:(\d+)$", str(item))
            if m:
                cfg.set("num_experts_per_tok", int(m.group(1)), written)
            else:
                cfg.passthrough.setdefault(written, []).append(item)
    elif canon == "lora_modules":
        prev = cfg.values.get("lora_modules") or []
        cfg.set("lora_modules", value, written)
        cfg.values["lora_modules"] = prev + cfg.values["lora_modules"]
    else:
        cfg.set(canon, value, written)


def cfg_coerce_json(cfg: ServingConfig, value, written: str) -> dict:
    from regraft.configs.model import coerce

    KEY_TYPES.setdefault("_json", "json")
    return coerce("_json", value, written, str(cfg.path))


def _hf_overrides(cfg: ServingConfig, doc: dict, written: str) -> None:
    rest = {}
    for k, v in doc.items():
        if k in ("rope_scaling", "rope_parameters"):
            _set_rope(cfg, v, f"{written}.{k}", f"hf_overrides.{k}")
        elif k == "num_experts_per_tok":
            cfg.set("num_experts_per_tok", v, f"{written}.{k}")
        elif k == "max_position_embeddings":
            rest[k] = v
            cfg.notes.append(f"{written}.max_position_embeddings = {v} overrides the model's position limit")
        elif k == "rope_theta":
            cfg.set("rope_theta", v, f"{written}.{k}")
        else:
            rest[k] = v
    if rest:
        cfg.values["hf_overrides"] = rest
        cfg.given["hf_overrides"] = written


def _post(cfg: ServingConfig) -> None:
    rs = cfg.values.get("rope_scaling")
    if isinstance(rs, dict) and "type" in rs and "rope_type" not in rs:
        cfg.notes.append("rope scaling uses the legacy key 'type'; current libraries read 'rope_type'")


# --- command lines ---------------------------------------------------------------------------------------------------

def _split_command(text: str, path: Path) -> list[str]:
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = [ln for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    cmd_lines = [ln for ln in lines if _COMMAND_RE.search(ln)]
    line = cmd_lines[0] if cmd_lines else " ".join(lines)
    try:
        return shlex.split(line)
    except ValueError as e:
        raise FileFormatError(f"{path}: cannot split the command line ({e}). Check the quotes.") from None


def parse_command(text: str, path: Path) -> ServingConfig:
    argv = _split_command(text, path)
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):  # env assignments
        argv.pop(0)
    rt = None
    joined = " ".join(argv[:4])
    if re.search(r"vllm\s+serve", joined):
        rt, skip = "vllm", 2
    elif "sglang" in joined:
        rt, skip = "sglang", 3 if argv and argv[0].startswith("python") else 2
    elif "llama-server" in joined or "llama-cli" in joined:
        rt, skip = "llama.cpp", 1
    else:
        raise FileFormatError(f"{path}: not a command regraft reads; expected 'vllm serve MODEL ...', 'python -m "
                              "sglang.launch_server ...' or 'llama-server ...'.")
    cfg = ServingConfig(path, rt, rt)
    args = argv[skip:]
    table, passthrough = TABLES[rt]
    if rt == "vllm" and args and not args[0].startswith("-"):
        cfg.set("model", args.pop(0), "MODEL (positional)")
    _apply_args(cfg, args, table, passthrough, "")
    _post(cfg)
    return cfg


def _is_value(tok: str) -> bool:
    return not tok.startswith("-") or bool(re.match(r"^-\d", tok))


def _apply_args(cfg: ServingConfig, args: list[str], table: dict, passthrough: set, prefix: str) -> None:
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("-"):
            cfg.unknown.append((prefix + tok, "stray argument (not after a flag)"))
            i += 1
            continue
        flag, _, inline = tok.partition("=")
        nk = norm_key(flag)
        if inline:
            value = inline
            i += 1
        elif nk in BOOL_FLAGS or i + 1 >= len(args) or not _is_value(args[i + 1]):
            value = True
            i += 1
        else:
            value = args[i + 1]
            i += 2
            if nk in ("lora_modules", "lora_paths", "lora", "lora_target_modules"):  # several values may follow
                vals = [value]
                while i < len(args) and _is_value(args[i]):
                    vals.append(args[i])
                    i += 1
                value = vals
        if nk.startswith("no_") and nk[3:] in table and KEY_TYPES.get(table[nk[3:]]) == "bool":
            cfg.set(table[nk[3:]], False, prefix + flag)
            continue
        _apply_one(cfg, nk, prefix + flag, value, table, passthrough)


# --- vllm-project/recipes YAML ---------------------------------------------------------------------------------------

RECIPE_KEYS = {"meta", "model", "features", "opt_in_features", "variants", "compatible_strategies",
               "kv_offload_support", "hardware_overrides", "strategy_overrides", "guide", "dependencies"}


def read_recipe(doc: dict, path: Path) -> ServingConfig:
    cfg = ServingConfig(path, "recipe", "vllm")
    for k in doc:
        if k not in RECIPE_KEYS:
            cfg.unknown.append((k, "not a vllm-project/recipes section"))
    def section(parent: dict, key: str, want: type, where: str):
        v = parent.get(key)
        if v is None or v == {} or v == []:
            return want()
        if not isinstance(v, want):
            raise FileFormatError(f"{path}: '{where}' must be a {'mapping' if want is dict else 'list'}, got "
                                  f"{type(v).__name__}. Expected a vllm-project/recipes file.")
        return v

    model = section(doc, "model", dict, "model")
    if model.get("model_id"):
        cfg.set("model", model["model_id"], "model.model_id")
    table, passthrough = VLLM, VLLM_PASS
    _apply_args(cfg, [str(a) for a in section(model, "base_args", list, "model.base_args")], table, passthrough,
                "model.base_args: ")
    opt_in = {x for x in section(doc, "opt_in_features", list, "opt_in_features") if isinstance(x, str)}
    for name, feat in section(doc, "features", dict, "features").items():
        if name in opt_in or not isinstance(feat, dict):
            continue
        _apply_args(cfg, [str(a) for a in section(feat, "args", list, f"features.{name}.args")], table, passthrough,
                    f"features.{name}: ")
    default = section(section(doc, "variants", dict, "variants"), "default", dict, "variants.default")
    if default.get("tp"):
        cfg.set("tensor_parallel_size", default["tp"], "variants.default.tp")
    if model.get("context_length"):
        cfg.notes.append(f"recipe states the model's context_length {model['context_length']}; the recipe command "
                         "sets no --max-model-len (vLLM then uses the model's max_position_embeddings)")
    cfg.notes.append("recipe read as: base_args + default features + variants.default; guide commands are not read")
    _post(cfg)
    return cfg


# --- Ollama Modelfile ------------------------------------------------------------------------------------------------

def read_modelfile(text: str, path: Path) -> ServingConfig:
    cfg = ServingConfig(path, "ollama", "ollama")
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        instr = parts[0].lower()
        rest = parts[1] if len(parts) > 1 else ""
        if rest.startswith('"""'):  # up to the closing quotes, linear in the lines (an unclosed one runs to the end)
            chunks = [rest[3:]]
            while '"""' not in chunks[-1] and i < len(lines):
                chunks.append(lines[i])
                i += 1
            chunks[-1] = chunks[-1].split('"""', 1)[0]
            rest = "\n".join(chunks)
        elif len(rest) >= 2 and rest[0] == rest[-1] == '"':
            rest = rest[1:-1]
        if instr == "parameter":
            name, _, value = rest.partition(" ")
            name, value = name.strip().lower(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            written = f"PARAMETER {name} (line {i})"
            if name == "stop":
                cfg.values.setdefault("stop", []).append(value)
                cfg.given.setdefault("stop", "PARAMETER stop")
            elif name in OLLAMA_PARAMS:
                cfg.set(OLLAMA_PARAMS[name], value, written)
            elif name in OLLAMA_PARAMS_PASS:
                cfg.passthrough[f"PARAMETER {name}"] = value
            else:
                cfg.unknown.append((written, "not an Ollama Modelfile PARAMETER regraft knows"))
        elif instr in OLLAMA_INSTR:
            cfg.set(OLLAMA_INSTR[instr], rest, instr.upper())
        elif instr in OLLAMA_INSTR_PASS:
            cfg.passthrough.setdefault(instr.upper(), []).append(rest)
        else:
            cfg.unknown.append((f"{parts[0]} (line {i})", "not a Modelfile instruction"))
    return cfg
