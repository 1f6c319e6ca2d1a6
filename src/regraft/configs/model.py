"""ServingConfig: every accepted format read into one set of canonical keys, with unknown keys kept and named."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import FileFormatError

# canonical key -> type. Types: int, float, bool, str, json (dict), strlist, intlist, any
KEY_TYPES: dict[str, str] = {
    "model": "str",
    "max_model_len": "int",
    "rope_scaling": "json",  # {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    "rope_theta": "float",
    "hf_overrides": "json",
    "enable_lora": "bool", "max_lora_rank": "int", "max_loras": "int", "lora_modules": "strlist",
    "tensor_parallel_size": "int", "pipeline_parallel_size": "int", "data_parallel_size": "int",
    "expert_parallel_size": "int", "enable_expert_parallel": "bool",
    "num_experts_per_tok": "int",
    "chat_template": "str", "chat_template_kwargs": "json",
    "reasoning_parser": "str", "enable_reasoning": "bool", "tool_call_parser": "str",
    "enable_auto_tool_choice": "bool", "reasoning_budget": "int", "reasoning_format": "str", "jinja": "bool",
    "temperature": "float", "top_p": "float", "top_k": "int", "min_p": "float", "presence_penalty": "float",
    "frequency_penalty": "float", "repetition_penalty": "float", "max_tokens": "int", "do_sample": "bool",
    "stop": "strlist", "stop_token_ids": "intlist", "eos_token_id": "intlist", "bos_token_id": "int",
    "pad_token_id": "int",
    "gpu_memory_utilization": "float", "kv_cache_dtype": "str", "dtype": "str", "max_num_seqs": "int",
    "quantization": "str",
    "system": "str", "template": "str", "adapter": "str",  # Ollama Modelfile
    # regraft's own keys (under `regraft:` in a YAML/JSON file): what the checks need and no runtime states
    "gpu_memory_gb": "float", "concurrent_requests": "int", "mode": "str", "adapter_rank": "int",
}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty")


@dataclass
class ServingConfig:
    path: Path
    format: str  # generation_config | vllm | sglang | llama.cpp | ollama | recipe
    runtime: str | None  # vllm | sglang | llama.cpp | ollama | transformers
    values: dict = field(default_factory=dict)  # canonical key -> value
    given: dict = field(default_factory=dict)  # canonical key -> the key as written in the file
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (key as written, why)
    passthrough: dict = field(default_factory=dict)  # known, unchecked keys as written -> value (host, port...)
    notes: list[str] = field(default_factory=list)
    rope_field: str | None = None  # how rope scaling was written: --rope-scaling | hf_overrides.rope_scaling | ...

    def get(self, key, default=None):
        v = self.values.get(key)
        return default if v is None else v

    def has(self, key) -> bool:
        return self.values.get(key) is not None

    def where(self, key) -> str:
        return self.given.get(key, key)

    @property
    def sampling(self) -> dict:
        return {k: self.values[k] for k in SAMPLING_KEYS if self.values.get(k) is not None}

    @property
    def requested_context(self) -> int | None:
        return self.values.get("max_model_len")

    @property
    def yarn(self) -> dict | None:
        rs = self.values.get("rope_scaling")
        if isinstance(rs, dict) and (rs.get("rope_type") or rs.get("type")) == "yarn":
            return rs
        return None

    @property
    def thinking_flag(self) -> bool | None:
        kw = self.values.get("chat_template_kwargs") or {}
        v = kw.get("enable_thinking")
        if isinstance(v, bool):
            return v
        if self.values.get("reasoning_budget") == 0:  # llama-server --reasoning-budget 0 disables thinking
            return False
        return None

    def set(self, key: str, value, written: str, file_label: str | None = None) -> None:
        self.values[key] = coerce(key, value, written, file_label or str(self.path))
        self.given[key] = written

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "runtime": self.runtime, "values": self.values,
                "given": self.given, "unknown": [{"key": k, "why": w} for k, w in self.unknown],
                "passthrough": self.passthrough, "notes": self.notes}


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "json": "a mapping (YAML mapping or JSON object)", "strlist": "a string or a list of strings",
               "intlist": "an integer or a list of integers"}


_ROPE_NUMBERS = {"factor": (float, 0.0, 1e6), "original_max_position_embeddings": (int, 1, 1 << 40),
                 "beta_fast": (float, -1e6, 1e6), "beta_slow": (float, -1e6, 1e6), "low_freq_factor": (float, 0, 1e6),
                 "high_freq_factor": (float, 0, 1e6), "attention_factor": (float, 0, 1e6), "mscale": (float, 0, 1e6),
                 "mscale_all_dim": (float, 0, 1e6)}


def _check_rope_numbers(doc: dict, written: str, file_label: str) -> None:
    """The numbers a rope scaling block carries, through regraft.numbers (a '1e400' factor, a NaN, a string)."""
    from regraft.numbers import parse_float, parse_int

    for k, (kind, lo, hi) in _ROPE_NUMBERS.items():
        if doc.get(k) is not None:
            what = f"{file_label}: '{written}' field '{k}'"
            if kind is int:
                doc[k] = parse_int(doc[k], what, lo, hi)
            else:
                doc[k] = parse_float(doc[k], what, lo, hi)


def lora_module_path(item) -> str | None:
    """The adapter path of one --lora-modules entry (``name=path``, ``path``, or a JSON object with "path"); None
    when the entry is not usable as one (wrong type, not UTF-8, too long, nested JSON, NUL)."""
    if not isinstance(item, str) or len(item) > 4096 or "\0" in item:
        return None
    path = item.split("=", 1)[-1] if not item.lstrip().startswith("{") else item
    if path.lstrip().startswith("{"):
        try:
            doc = json.loads(path)
        except (ValueError, RecursionError):
            return None
        path = doc.get("path") if isinstance(doc, dict) else None
    if not isinstance(path, str) or not path or "\0" in path or len(path) > 4096:
        return None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return None
    return path


def coerce(key: str, value, written: str, file_label: str):
    """Check and convert a value to the canonical key's type; a wrong type is a FileFormatError naming the key."""
    t = KEY_TYPES.get(key, "any")

    def bad():
        try:
            shown = repr(value)
        except (ValueError, RecursionError):  # an int over 4300 digits, a structure nested too deeply
            shown = f"<{type(value).__name__}>"
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return FileFormatError(f"{file_label}: '{written}' must be {_TYPE_WORDS.get(t, t)}, got {shown} "
                               f"({type(value).__name__}). Fix the value of '{written}'.")

    if value is None or t == "any":
        return value
    if t == "int":  # larger than 2**53 is no setting: it overflows every estimate
        from regraft.numbers import NumberError, parse_int

        mult, v = 1, value
        if isinstance(v, str):
            v = v.strip()
            if v[-1:] in ("k", "K"):  # vLLM accepts 32k / 128K
                v, mult = v[:-1], 1024
        try:
            return parse_int(v, written, -(2**53), 2**53) * mult
        except NumberError:
            raise bad() from None
    if t == "float":
        from regraft.numbers import NumberError, parse_float

        try:
            return parse_float(value.strip() if isinstance(value, str) else value, written)
        except NumberError:
            raise bad() from None
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad()
    if t == "str":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if t == "json":
        doc = value
        if isinstance(value, str):
            if len(value) > 1_000_000:
                raise FileFormatError(f"{file_label}: '{written}' is {len(value)} characters; expected a small JSON "
                                      "object.")
            try:
                doc = json.loads(value)
            except json.JSONDecodeError as e:
                raise FileFormatError(f"{file_label}: '{written}' must be a JSON object, but {value[:60]!r} is not "
                                      f"valid JSON ({e.msg} at column {e.colno}). Quote it as one JSON object.") from None
            except (ValueError, RecursionError):  # nested thousands deep; an integer past the digit limit
                raise FileFormatError(f"{file_label}: '{written}' is JSON nested too deeply (or with a number too "
                                      "long); expected a small JSON object.") from None
        if not isinstance(doc, dict):
            raise bad()
        from regraft.inspection.files import check_depth

        try:
            check_depth(doc)
        except ValueError as e:
            raise FileFormatError(f"{file_label}: '{written}' {e}; expected a small JSON object.") from None
        if key == "rope_scaling":
            _check_rope_numbers(doc, written, file_label)
        return doc
    if t == "strlist":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad()
    if t == "intlist":
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        if isinstance(value, str):
            try:
                return [int(x) for x in value.replace(",", " ").split()]
            except ValueError:
                raise bad() from None
        raise bad()
    return value
